//! Prune: reclaim what no kept snapshot needs, by the two-phase protocol of
//! vault-format/SPEC.md "Deletion" (read it first: this file follows its
//! numbered steps).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use vault_format::PackId;

mod phases;
mod retention;
mod rewrite;

use super::gone;
use super::live::LiveSet;
use super::locks::Lock;
use super::marks::{self, StoredMark};
use super::pending::{self, TierDeletions};
use super::refresh::{self, Learned, TierView};
use super::repack::Repacked;
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
    /// Move the newest snapshots' chunks out of blobs they read little of
    /// (within the `max_repack` budget).
    pub locality: bool,
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
    /// Locality: the newest snapshots' chunks moved out of blobs they use
    /// little of (`packs`: the packs they were read from, which keep what
    /// older snapshots need).
    pub relocated: Repacked,
    /// Per reachable tier.
    pub tiers: Vec<TierPrune>,
    /// Tiers that could not be reached: nothing was decided there.
    pub unreachable: Vec<(String, String)>,
    /// Bytes of the live set's Bloom filter.
    pub live_set_bytes: u64,
    /// WAL retention, per job that archived WAL.
    pub wal: Vec<crate::wal::retain::WalPlan>,
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
    /// Their raw bytes (redundant: restore reads the first location).
    copy_bytes: u64,
}

impl PackStat {
    /// Stored bytes nothing reads: dead chunks and further copies.
    fn unused(&self) -> u64 {
        let total = self.live + self.dead;
        if total == 0 {
            self.size
        } else {
            let unread = (self.dead + self.copy_bytes).min(total);
            (self.size as u128 * unread as u128 / total as u128) as u64
        }
    }
}

/// One blob as a restore of the newest snapshots sees it.
#[derive(Debug, Clone, Copy, Default)]
struct BlobUse {
    /// Raw bytes of every chunk stored in it (what decoding it costs).
    total: u64,
    /// Raw bytes of the newest snapshots' chunks read from it (first
    /// locations).
    newest: u64,
}

/// Locality (when asked for): a blob whose bytes the newest snapshots use
/// less than this share of has their chunks rewritten into fresh blobs, so
/// that restoring the newest night decodes little besides what it writes.
/// Off by default: measured over 30 nights (docs/benchmarks.md) it made
/// restoring the newest night 21% faster for 10% more stored bytes and a
/// prune 2.7 times as long.
const LOCALITY_SHARE: f64 = 0.5;

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
    /// The newest snapshot of each job and host.
    newest: LiveSet,
    stats: HashMap<PackId, PackStat>,
    /// Per blob id (catalog), what the newest snapshots read of it.
    blob_use: HashMap<i64, BlobUse>,
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
        newest: LiveSet::with_capacity(0),
        stats: HashMap::new(),
        blob_use: HashMap::new(),
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
        if self.opts.locality {
            self.newest = self.newest_set()?;
        }
        self.report.live_set_bytes = self.live.filter_bytes() as u64;
        self.progress.event(&Event::Step(format!(
            "prune: live set of {} snapshot(s)",
            self.live.snapshots()
        )));
        self.analyze()?;
        self.forget_gone()?;
        // Step 4: phase two of earlier marks.
        self.phase_two(false)?;
        // Steps 5 and 6.
        let condemn = self.rewrite_sparse()?;
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

    /// Steps 5 and 6: repack the sparse (and, with locality, relocate the
    /// newest snapshots' chunks); returns what to condemn: every pack no
    /// chunk has its first location in (dead, repacked, or a duplicate
    /// whose chunks live first elsewhere), or with `dry_run`, the dead and
    /// those repack would empty.
    fn rewrite_sparse(&mut self) -> Result<BTreeSet<PackId>> {
        let unneeded = |stats: &HashMap<PackId, PackStat>| -> BTreeSet<PackId> {
            stats
                .iter()
                .filter(|(_, s)| !s.needed)
                .map(|(p, _)| *p)
                .collect()
        };
        let dead = unneeded(&self.stats);
        self.report.dead_packs = dead.len() as u64;
        let (sparse, spent) = self.choose_repack(&dead);
        let local = if self.opts.locality {
            self.choose_locality(&dead, &sparse, spent)?
        } else {
            HashMap::new()
        };
        if self.opts.dry_run {
            let mut condemn = dead;
            condemn.extend(sparse.iter().copied());
            self.report.repacked.packs = sparse;
            self.report.relocated.packs = local.keys().copied().collect();
            return Ok(condemn);
        }
        if !sparse.is_empty() {
            self.report.repacked = self.rewrite(&sparse, None)?;
        }
        if !local.is_empty() {
            let packs: Vec<PackId> = local.keys().copied().collect();
            self.report.relocated = self.rewrite(&packs, Some(&local))?;
        }
        Ok(unneeded(&self.stats))
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

    /// Packs the catalog knew before the listing and no tier holds (another
    /// host's prune deleted them, or they were lost): one no kept snapshot
    /// needs leaves the catalog; one a kept snapshot needs is lost data,
    /// reported, and kept so restore and verify name it.
    fn forget_gone(&mut self) -> Result<()> {
        // The refresh found them (only when every tier was listed).
        let gone: Vec<PackId> = self
            .report
            .learned
            .gone
            .iter()
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
}
