//! What is live where, and what to rewrite: the per-pack analysis, the
//! choice of packs to repack and of blobs to relocate for the newest
//! snapshots, and the rewrite itself (vault-format/SPEC.md "Deletion",
//! prune step 6).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use vault_format::keys::Recipients;
use vault_format::{PackId, SnapshotId};

use super::{BlobUse, PackStat, Run, LOCALITY_SHARE};
use crate::deletion::live::LiveSet;
use crate::deletion::repack::{self, Repacked, Select};
use crate::error::Result;
use crate::tier::{keys, Tier};

impl Run<'_> {
    /// One scan of every stored chunk copy: per pack, live and dead bytes,
    /// and whether it is anyone's only home.
    pub(super) fn analyze(&mut self) -> Result<()> {
        let (packs, blobs) = self.catalog.blob_packs()?;
        let mut stats: Vec<PackStat> = packs
            .iter()
            .map(|(_, size)| PackStat {
                size: *size,
                ..Default::default()
            })
            .collect();
        let (live, newest, locality) = (&self.live, &self.newest, self.opts.locality);
        let mut blob_use: HashMap<i64, BlobUse> = HashMap::new();
        self.catalog.for_each_holding(|h| -> Result<()> {
            let Some(&p) = blobs.get(&h.blob) else {
                return Ok(());
            };
            let s = &mut stats[p as usize];
            let len = u64::from(h.length);
            // Per blob only for locality: a map entry per blob is memory
            // that grows with the vault.
            let mut u = locality.then(|| blob_use.entry(h.blob).or_default());
            if let Some(u) = u.as_deref_mut() {
                u.total += len;
            }
            if live.may_contain(&h.id) {
                s.live += len;
                if h.first {
                    s.needed = true;
                    if let Some(u) = u.filter(|_| newest.may_contain(&h.id)) {
                        u.newest += len;
                    }
                } else {
                    s.copies.push(h.id);
                    s.copy_bytes += len;
                }
            } else {
                s.dead += len;
            }
            Ok(())
        })?;
        self.blob_use = blob_use;
        self.report.packs = packs.len() as u64;
        self.report.bytes = stats.iter().map(|s| s.size).sum();
        self.report.unused_bytes = stats.iter().map(PackStat::unused).sum();
        self.stats = packs.into_iter().map(|(p, _)| p).zip(stats).collect();
        Ok(())
    }

    /// The newest snapshot of each job and host, as a set of chunks.
    pub(super) fn newest_set(&self) -> Result<LiveSet> {
        let mut newest: HashMap<(String, String), (std::time::SystemTime, SnapshotId)> =
            HashMap::new();
        let mut chunks = 0u64;
        for s in self.catalog.snapshots(None)? {
            let Some(t) = crate::util::parse_time(&s.created) else {
                continue;
            };
            let e = newest
                .entry((s.job.clone(), s.host.clone()))
                .or_insert((t, s.id));
            if t >= e.0 {
                *e = (t, s.id);
            }
            chunks = chunks.max(s.chunk_count);
        }
        let mut set = LiveSet::with_capacity(chunks * newest.len() as u64 + (1 << 16));
        for (_, id) in newest.values() {
            let m = self.catalog.manifest(id)?;
            set.add_snapshot(self.ctx, &self.catalog, &m, self.progress)?;
        }
        Ok(set)
    }

    /// Locality: blobs of packs that stay (not dead, not repacked) of
    /// which the newest snapshots read less than [`LOCALITY_SHARE`], the
    /// most wasteful first, within what is left of the `max_repack`
    /// budget after `spent`. Per pack, the blobs' offsets.
    pub(super) fn choose_locality(
        &self,
        dead: &BTreeSet<PackId>,
        sparse: &[PackId],
        spent: u64,
    ) -> Result<HashMap<PackId, HashSet<u64>>> {
        let total: u64 = self.stats.values().map(|s| s.size).sum();
        let raw: u64 = self.blob_use.values().map(|u| u.total).sum();
        let budget = (total as f64 * self.opts.max_repack / 100.0) as u64;
        let mut left = budget.saturating_sub(spent);
        let mut wasteful: Vec<(i64, BlobUse)> = self
            .blob_use
            .iter()
            .filter(|(_, u)| u.newest > 0 && (u.newest as f64) < u.total as f64 * LOCALITY_SHARE)
            .map(|(b, u)| (*b, *u))
            .collect();
        wasteful.sort_by(|a, b| {
            let fa = a.1.newest as f64 / a.1.total as f64;
            let fb = b.1.newest as f64 / b.1.total as f64;
            fa.total_cmp(&fb).then(a.0.cmp(&b.0))
        });
        let skip: HashSet<&PackId> = dead.iter().chain(sparse).collect();
        let ids: Vec<i64> = wasteful.iter().map(|(b, _)| *b).collect();
        let places = self.catalog.blob_places(&ids)?;
        let mut out: HashMap<PackId, HashSet<u64>> = HashMap::new();
        for ((_, u), place) in wasteful.iter().zip(places) {
            let Some((pack, offset)) = place else {
                continue;
            };
            if skip.contains(&pack) {
                continue;
            }
            // What rewriting them costs, in stored bytes at the vault's
            // compression ratio.
            let cost = (u.newest as u128 * total as u128 / raw.max(1) as u128) as u64;
            if cost > left {
                break;
            }
            left -= cost;
            out.entry(pack).or_default().insert(offset);
        }
        Ok(out)
    }

    /// Packs to repack: the sparsest first, until the unused bytes of the
    /// packs kept are within `max_unused`, and no more than `max_repack` of
    /// the stored bytes in one run (the rest waits for the next).
    pub(super) fn choose_repack(&self, dead: &BTreeSet<PackId>) -> (Vec<PackId>, u64) {
        let mut kept: Vec<(&PackId, &PackStat)> = self
            .stats
            .iter()
            .filter(|(p, s)| !dead.contains(p) && s.needed)
            .collect();
        let total: u64 = kept.iter().map(|(_, s)| s.size).sum();
        let mut unused: u64 = kept.iter().map(|(_, s)| s.unused()).sum();
        let limit = (total as f64 * self.opts.max_unused / 100.0) as u64;
        let budget = (total as f64 * self.opts.max_repack / 100.0) as u64;
        let mut spent = 0u64;
        kept.sort_by(|a, b| {
            let fa = a.1.unused() as f64 / a.1.size.max(1) as f64;
            let fb = b.1.unused() as f64 / b.1.size.max(1) as f64;
            fb.total_cmp(&fa).then(a.0.cmp(b.0))
        });
        let mut out = Vec::new();
        for (p, s) in kept {
            if unused <= limit || s.unused() == 0 {
                break;
            }
            // The live part is what repacking it rewrites.
            let cost = s.size - s.unused();
            if spent + cost > budget && !out.is_empty() {
                break;
            }
            spent += cost;
            unused -= s.unused();
            out.push(*p);
        }
        (out, spent)
    }

    /// Rewrites chunks of `packs` into new packs: every live chunk whose
    /// first location is there (repack), or with `local`, only the newest
    /// snapshots' chunks in those blobs (locality). Then re-analyzes.
    pub(super) fn rewrite(
        &mut self,
        packs: &[PackId],
        local: Option<&HashMap<PackId, HashSet<u64>>>,
    ) -> Result<Repacked> {
        let push = self.vault.push_key()?;
        let recipients: Recipients = push.recipients;
        let others: Vec<Arc<dyn Tier>> =
            self.views.iter().skip(1).map(|v| v.tier.clone()).collect();
        let target = repack::Target {
            primary: self.views[0].tier.clone(),
            others: &others,
            catalog: &self.vault.settings.catalog,
            config: &self.vault.config,
            recipients: &recipients,
        };
        let select = match local {
            None => Select::Live(&self.live),
            Some(blobs) => Select::Newest {
                set: &self.newest,
                blobs,
            },
        };
        let out = repack::repack(&target, self.ctx, packs, select, self.progress)?;
        // The new packs are in the tiers now: list them into the views, and
        // see the repacked packs' chunks at their new first location.
        for v in &mut self.views {
            for id in &out.new_packs {
                if let Ok(Some(size)) = v.tier.head(&keys::pack(id)) {
                    v.packs.insert(*id, size);
                }
            }
        }
        self.analyze()?;
        Ok(out)
    }
}
