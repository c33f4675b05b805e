//! Carrying out the deletions the catalog recorded: a forgotten snapshot's
//! manifest, a pruned pack. The decision was made (and recorded) before;
//! this only deletes, tier by tier, and removes each record once its
//! object is gone. A tier that cannot be reached, or S3 Object Lock that
//! retains an object, leaves the record for next time.

use std::sync::Arc;

use serde::Serialize;

use crate::catalog::Catalog;
use crate::error::Result;
use crate::progress::{Event, Progress};
use crate::tier::{keys, Removal, Tier};

/// What carrying out deletions did in one tier.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TierDeletions {
    /// Tier.
    pub tier: String,
    /// Objects deleted.
    pub deleted: u64,
    /// Their keys.
    #[serde(skip)]
    pub removed: Vec<String>,
    /// Objects S3 Object Lock still retains: key, until when.
    pub retained: Vec<(String, Option<String>)>,
    /// Deletes that failed (the tier unreachable, …): key, why.
    pub failed: Vec<(String, String)>,
}

impl TierDeletions {
    /// Deletions still pending in this tier after the run.
    pub fn pending(&self) -> usize {
        self.retained.len() + self.failed.len()
    }
}

/// Carries out every recorded deletion in `tiers` whose key `want`s.
/// Records whose retention has not ended yet are left untouched. A pack
/// deleted from a tier leaves the catalog's copies there, and the catalog
/// once no tier stores it: whoever carries out a deletion another run
/// recorded (sync, the next prune) leaves the catalog as that run would
/// have.
///
/// # Errors
/// Catalog errors; tier failures are reported per object.
pub fn run(
    catalog: &Catalog,
    tiers: &[Arc<dyn Tier>],
    want: impl Fn(&str) -> bool,
    progress: &dyn Progress,
) -> Result<Vec<TierDeletions>> {
    let now = std::time::SystemTime::now();
    let mut out = Vec::new();
    for t in tiers {
        let mut rep = TierDeletions {
            tier: t.name().to_string(),
            ..Default::default()
        };
        let mut unreachable: Option<String> = None;
        for d in catalog.pending_deletions(Some(t.name()))? {
            if !want(&d.key) {
                continue;
            }
            if let Some(until) = d
                .retained_until
                .as_deref()
                .filter(|u| crate::util::parse_time(u).is_some_and(|t| t > now))
            {
                rep.retained.push((d.key, Some(until.to_string())));
                continue;
            }
            if let Some(why) = &unreachable {
                rep.failed.push((d.key, why.clone()));
                continue;
            }
            match t.remove(&d.key) {
                Ok(Removal::Removed) => {
                    if let Some(p) = keys::parse_pack(&d.key) {
                        catalog.pack_copy_deleted(&p, t.name())?;
                    }
                    catalog.deletion_done(&d.key, t.name())?;
                    rep.deleted += 1;
                    progress.event(&Event::Step(format!("deleted {} from {}", d.key, t.name())));
                    rep.removed.push(d.key);
                }
                Ok(Removal::Retained { until }) => {
                    catalog.deletion_failed(
                        &d.key,
                        t.name(),
                        "retained by S3 Object Lock",
                        until.as_deref(),
                    )?;
                    rep.retained.push((d.key, until));
                }
                Err(e) => {
                    let why = e.to_string();
                    catalog.deletion_failed(&d.key, t.name(), &why, None)?;
                    // One failure to reach a tier is enough to know.
                    if matches!(
                        e,
                        crate::tier::TierError::Remote { .. }
                            | crate::tier::TierError::Unavailable { .. }
                    ) {
                        unreachable = Some(why.clone());
                    }
                    rep.failed.push((d.key, why));
                }
            }
        }
        out.push(rep);
    }
    Ok(out)
}
