//! Prune step 7: S3 Object Lock retention of what kept snapshots need is
//! extended before it lapses, so a kept snapshot is never unprotected.

use std::collections::HashSet;
use std::time::Duration;

use vault_format::PackId;

use super::Run;
use crate::error::Result;
use crate::tier::keys;

impl Run<'_> {
    /// Step 7: extend S3 Object Lock retention of every pack and manifest a
    /// kept snapshot needs, where it ends within half the period.
    pub(super) fn extend_retention(&mut self) -> Result<()> {
        for (i, v) in self.views.iter().enumerate() {
            let Some(days) = v.tier.object_lock_days() else {
                continue;
            };
            let period = Duration::from_secs(u64::from(days) * 86_400);
            let horizon = std::time::SystemTime::now() + period / 2;
            let until = std::time::SystemTime::now() + period;
            let mut known = self.catalog.pack_retentions(v.tier.name())?;
            known.extend(
                self.catalog
                    .snapshot_retentions(v.tier.name())?
                    .into_iter()
                    .map(|(id, until)| (keys::snapshot(&id), until)),
            );
            let condemned: HashSet<PackId> = self.marks[i]
                .iter()
                .flat_map(|m| m.mark.packs.iter().copied())
                .collect();
            let mut n = 0;
            let needed = self
                .stats
                .iter()
                .filter(|(p, s)| {
                    (s.needed || !s.copies.is_empty())
                        && !condemned.contains(p)
                        && v.packs.contains_key(p)
                })
                .map(|(p, _)| keys::pack(p));
            let manifests = v.snapshots.iter().map(keys::snapshot);
            for key in needed.chain(manifests).collect::<Vec<_>>() {
                let current = match known.get(&key) {
                    Some(c) => Some(c.clone()),
                    None => {
                        let c = v.tier.retained_until(&key)?;
                        if let Some(c) = &c {
                            self.catalog.set_retention(&key, v.tier.name(), c)?;
                        }
                        c
                    }
                };
                if current
                    .as_deref()
                    .and_then(crate::util::parse_time)
                    .is_some_and(|c| c > horizon)
                {
                    continue;
                }
                v.tier.extend_retention(&key, until)?;
                self.catalog.set_retention(
                    &key,
                    v.tier.name(),
                    &humantime::format_rfc3339_seconds(until).to_string(),
                )?;
                n += 1;
            }
            self.report.tiers[i].retention_extended = n;
        }
        Ok(())
    }
}
