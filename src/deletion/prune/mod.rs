//! Prune: reclaim what no kept snapshot needs, by the two-phase protocol of
//! vault-format/SPEC.md "Deletion" (read it first: this file follows its
//! numbered steps).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use vault_format::keys::Recipients;
use vault_format::PackId;

mod phases;
mod retention;

use super::gone;
use super::live::LiveSet;
use super::locks::Lock;
use super::marks::{self, StoredMark};
use super::pending::{self, TierDeletions};
use super::refresh::{self, Learned, TierView};
use super::repack::{self, Repacked};
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::pipeline::fetch::ReadContext;
use crate::progress::{Event, Progress};
use crate::tier::{keys, Tier};
use crate::vault::Vault;

/// The grace period when neither the settings nor the command give one:
/// a day less an hour, so that a nightly prune deletes what the previous
/// night's condemned (as rustic's `keep-delete`).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(23 * 3600);
/// Repack while more than this share of stored bytes is unused.
pub const DEFAULT_MAX_UNUSED: f64 = 5.0;
/// Rewrite at most this share of stored bytes in one prune: with 8 KiB
/// chunks, dead data is spread thin over many packs, and reclaiming every
/// last percent at once would rewrite most of the vault every night.
pub const DEFAULT_MAX_REPACK: f64 = 10.0;

/// How to prune.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Decide and report; change nothing.
    pub dry_run: bool,
    /// How long a condemned pack waits before it is deleted.
    pub grace: Duration,
    /// Repack until at most this percentage of stored bytes is unused.
    pub max_unused: f64,
    /// Rewrite at most this percentage of stored bytes per run.
    pub max_repack: f64,
}

/// Per tier, what prune did (`--json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TierPrune {
    /// Tier.
    pub tier: String,
    /// Packs condemned by this run.
    pub condemned: u64,
    /// Packs deleted (or, with `dry_run`, to be).
    pub deleted: u64,
    /// Their bytes.
    pub bytes_freed: u64,
    /// Condemned packs that a snapshot needs again (dropped from marks).
    pub recovered: u64,
    /// Marks not acted on yet because a backup that started before them
    /// is still running (its lock id).
    pub waiting_for: Vec<String>,
    /// Marks younger than the grace period.
    pub marks_in_grace: u64,
    /// Objects whose S3 Object Lock retention was extended.
    pub retention_extended: u64,
    /// Deletions carried out, retained, failed (forgotten manifests too).
    pub deletions: TierDeletions,
}

/// What prune found and did (`--json`; kept in the run's details).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Grace period, seconds.
    pub grace_seconds: u64,
    /// What the refresh learned from the tiers.
    pub learned: Learned,
    /// Snapshots kept (walked for the live set).
    pub snapshots: u64,
    /// Packs and their stored bytes before.
    pub packs: u64,
    /// Stored bytes before.
    pub bytes: u64,
    /// Estimated unused stored bytes before (dead chunks' share of packs).
    pub unused_bytes: u64,
    /// Packs with nothing live.
    pub dead_packs: u64,
    /// What repack did.
    pub repacked: Repacked,
    /// Per reachable tier.
    pub tiers: Vec<TierPrune>,
    /// Tiers that could not be reached: nothing was decided there.
    pub unreachable: Vec<(String, String)>,
    /// Bytes of the live set's Bloom filter.
    pub live_set_bytes: u64,
    /// Wall time.
    pub seconds: f64,
}

/// One pack as the live set sees it.
#[derive(Debug, Clone, Default)]
struct PackStat {
    size: u64,
    /// Raw bytes of chunks that may be live / are certainly dead.
    live: u64,
    dead: u64,
    /// Holds a maybe-live chunk whose first location is here.
    needed: bool,
    /// Maybe-live chunks held here as further copies.
    copies: Vec<vault_format::ChunkId>,
}

impl PackStat {
    fn unused(&self) -> u64 {
        let total = self.live + self.dead;
        if total == 0 {
            self.size
        } else {
            (self.size as u128 * self.dead as u128 / total as u128) as u64
        }
    }
}

/// Everything prune works with.
struct Run<'a> {
    /// The catalog's snapshots and packs before the tiers were listed.
    before: refresh::Before,
    vault: &'a Vault,
    ctx: &'a ReadContext,
    opts: &'a PruneOptions,
    progress: &'a dyn Progress,
    catalog: Catalog,
    views: Vec<TierView>,
    live: LiveSet,
    stats: HashMap<PackId, PackStat>,
    /// Marks per reachable tier (by view index): those found, then those
    /// this run wrote.
    marks: Vec<Vec<StoredMark>>,
    /// Per tier, the index of the first mark this run wrote.
    first_new: Vec<usize>,
    report: PruneReport,
}

/// Prunes (see the module docs).
///
/// # Errors
/// [`Error::Busy`] when another prune runs; a snapshot whose chunk list
/// cannot be read (the live set would be incomplete: nothing is deleted);
/// catalog and primary-tier failures.
pub fn prune(
    vault: &Vault,
    ctx: &ReadContext,
    opts: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    let started = std::time::Instant::now();
    // The catalog's snapshots before the listing: only these can be found
    // gone (a backup committing meanwhile is in the tier, or not yet here).
    let before = refresh::Before::read(&vault.catalog()?)?;
    let (views, unreachable) = refresh::list(&vault.tiers());
    if views.first().map(|v| v.tier.name()) != Some(vault.primary().name()) {
        return Err(Error::Config(format!(
            "the local tier cannot be listed ({}); prune needs it",
            unreachable
                .first()
                .map(|(_, e)| e.as_str())
                .unwrap_or("unknown")
        )));
    }
    // Step 1: the lock, in every reachable tier (not for a dry run, which
    // changes nothing).
    let lock = if opts.dry_run {
        None
    } else {
        Some(Lock::prune(views.iter().map(|v| v.tier.clone()).collect())?)
    };
    progress.event(&Event::Step("prune: lock taken".into()));
    let mut run = Run {
        before,
        vault,
        ctx,
        opts,
        progress,
        catalog: vault.catalog()?,
        live: LiveSet::with_capacity(0),
        stats: HashMap::new(),
        marks: Vec::new(),
        first_new: Vec::new(),
        report: PruneReport {
            dry_run: opts.dry_run,
            grace_seconds: opts.grace.as_secs(),
            unreachable,
            ..Default::default()
        },
        views,
    };
    let r = run.steps();
    if let Some(l) = lock {
        l.release();
    }
    r?;
    run.report.seconds = started.elapsed().as_secs_f64();
    Ok(run.report)
}

impl Run<'_> {
    fn steps(&mut self) -> Result<()> {
        // Step 2: refresh.
        let identity = self.ctx.identity.clone();
        let before = self.report.unreachable.is_empty().then_some(&self.before);
        self.report.learned = refresh::refresh(
            &mut self.catalog,
            &self.views,
            before,
            &self.vault.config,
            Some(&identity),
        )?;
        self.progress.event(&Event::Step(format!(
            "prune: refreshed ({})",
            self.report.learned.summary()
        )));
        for v in &self.views {
            let found = marks::read(&*v.tier)?;
            self.first_new.push(found.len());
            self.marks.push(found);
        }
        // Forgotten manifests still pending (a forget that was cut short).
        if !self.opts.dry_run {
            let tiers: Vec<Arc<dyn Tier>> = self.views.iter().map(|v| v.tier.clone()).collect();
            // Deletions decided earlier that a tier missed (a forget or prune
            // cut short, an unreachable tier, Object Lock): decided with
            // full knowledge then, and their packs still condemned.
            let done = pending::run(&self.catalog, &tiers, |_| true, self.progress)?;
            // What is gone from a tier is gone from its view: the marks that
            // named it are rewritten without it, not taken as recovered.
            for v in &mut self.views {
                if let Some(d) = done.iter().find(|d| d.tier == v.tier.name()) {
                    for p in d.removed.iter().filter_map(|k| keys::parse_pack(k)) {
                        v.packs.remove(&p);
                    }
                }
            }
            self.tier_reports(done);
        } else {
            self.tier_reports(Vec::new());
        }
        // Step 3: the live set.
        self.live = LiveSet::with_capacity(self.catalog.chunk_count()? + (1 << 16));
        self.walk_new_snapshots()?;
        self.report.live_set_bytes = self.live.filter_bytes() as u64;
        self.progress.event(&Event::Step(format!(
            "prune: live set of {} snapshot(s)",
            self.live.snapshots()
        )));
        self.analyze()?;
        self.forget_gone()?;
        // Step 4: phase two of earlier marks.
        self.phase_two(false)?;
        // Steps 5 and 6: repack the sparse, condemn what nothing needs (no
        // chunk has its first location there: dead, or repacked, or a
        // duplicate whose chunks live first elsewhere).
        let unneeded = |stats: &HashMap<PackId, PackStat>| -> BTreeSet<PackId> {
            stats
                .iter()
                .filter(|(_, s)| !s.needed)
                .map(|(p, _)| *p)
                .collect()
        };
        let dead = unneeded(&self.stats);
        self.report.dead_packs = dead.len() as u64;
        let sparse = self.choose_repack(&dead);
        let mut condemn = dead;
        if self.opts.dry_run || sparse.is_empty() {
            condemn.extend(sparse.iter().copied());
            self.report.repacked = Repacked {
                packs: sparse,
                ..Default::default()
            };
        } else {
            self.report.repacked = self.repack(&sparse)?;
            condemn = unneeded(&self.stats);
        }
        self.phase_one(&condemn)?;
        if self.opts.grace.is_zero() {
            self.phase_two(true)?;
        }
        // Step 7: Object Lock retention of what kept snapshots need.
        if !self.opts.dry_run {
            self.extend_retention()?;
        }
        Ok(())
    }

    fn tier_reports(&mut self, done: Vec<TierDeletions>) {
        self.report.tiers = self
            .views
            .iter()
            .map(|v| TierPrune {
                tier: v.tier.name().to_string(),
                deletions: done
                    .iter()
                    .find(|d| d.tier == v.tier.name())
                    .cloned()
                    .unwrap_or_else(|| TierDeletions {
                        tier: v.tier.name().to_string(),
                        ..Default::default()
                    }),
                ..Default::default()
            })
            .collect();
    }

    /// Adds every catalog snapshot not yet walked to the live set; returns
    /// how many were new.
    fn walk_new_snapshots(&mut self) -> Result<usize> {
        let mut n = 0;
        for s in self.catalog.snapshots(None)? {
            if self.live.has_snapshot(&s.id) {
                continue;
            }
            let m = self.catalog.manifest(&s.id)?;
            self.live
                .add_snapshot(self.ctx, &self.catalog, &m, self.progress)?;
            n += 1;
        }
        self.report.snapshots = self.live.snapshots() as u64;
        Ok(n)
    }

    /// One scan of every stored chunk copy: per pack, live and dead bytes,
    /// and whether it is anyone's only home.
    fn analyze(&mut self) -> Result<()> {
        let (packs, blobs) = self.catalog.blob_packs()?;
        let mut stats: Vec<PackStat> = packs
            .iter()
            .map(|(_, size)| PackStat {
                size: *size,
                ..Default::default()
            })
            .collect();
        let live = &self.live;
        self.catalog.for_each_holding(|h| -> Result<()> {
            let Some(&p) = blobs.get(&h.blob) else {
                return Ok(());
            };
            let s = &mut stats[p as usize];
            if live.may_contain(&h.id) {
                s.live += u64::from(h.length);
                if h.first {
                    s.needed = true;
                } else {
                    s.copies.push(h.id);
                }
            } else {
                s.dead += u64::from(h.length);
            }
            Ok(())
        })?;
        self.report.packs = packs.len() as u64;
        self.report.bytes = stats.iter().map(|s| s.size).sum();
        self.report.unused_bytes = stats.iter().map(PackStat::unused).sum();
        self.stats = packs.into_iter().map(|(p, _)| p).zip(stats).collect();
        Ok(())
    }

    /// Packs the catalog knew before the listing and no tier holds (another
    /// host's prune deleted them, or they were lost): one no kept snapshot
    /// needs leaves the catalog; one a kept snapshot needs is lost data,
    /// reported, and kept so restore and verify name it.
    fn forget_gone(&mut self) -> Result<()> {
        if !self.report.unreachable.is_empty() {
            return Ok(());
        }
        let gone: Vec<PackId> = self
            .before
            .packs
            .iter()
            .filter(|p| !self.views.iter().any(|v| v.packs.contains_key(p)))
            .filter(|p| self.stats.contains_key(p))
            .copied()
            .collect();
        if self.opts.dry_run || gone.is_empty() {
            return Ok(());
        }
        let gone = gone::forget_unneeded(&self.catalog, self.ctx, &gone, self.progress)?;
        for p in &gone.needed {
            self.report.learned.problems.push(format!(
                "pack {p} is in no tier and kept snapshots need data only it held: `coffer verify --read-data` names what is lost"
            ));
        }
        for p in &gone.forgotten {
            self.stats.remove(p);
        }
        self.report.learned.forgotten_packs = gone.forgotten.len() as u64;
        self.progress.event(&Event::Step(format!(
            "prune: forgot {} pack(s) no tier holds any more",
            gone.forgotten.len()
        )));
        Ok(())
    }

    /// Packs to repack: the sparsest first, until the unused bytes of the
    /// packs kept are within `max_unused`, and no more than `max_repack` of
    /// the stored bytes in one run (the rest waits for the next).
    fn choose_repack(&self, dead: &BTreeSet<PackId>) -> Vec<PackId> {
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
        out
    }

    fn repack(&mut self, sparse: &[PackId]) -> Result<Repacked> {
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
        let out = repack::repack(&target, self.ctx, sparse, &self.live, self.progress)?;
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
