//! The backup (ingest) pipeline: one stream in, one committed snapshot out.
//! See [`crate::pipeline`] for the stages; each has its file here:
//! `chunk` (read, chunk, hash, dedup), `compress`, `packer` (seal,
//! store, record) and `upload` (offsite copies while ingest runs).
//!
//! Commit protocol (crash safety, SPEC.md "Crash safety"):
//! 1. each pack is sealed into a spool file, fsynced, linked into the tier
//!    (durable), and only then recorded in the catalog;
//! 2. after the input ended *and its producer reported success*
//!    ([`Source::finish`]), the manifest is sealed and stored (durable);
//! 3. then the catalog commits the snapshot row.
//!
//! A crash before 2 leaves packs no snapshot references (reused by the next
//! backup's dedup, reclaimed by prune); a crash between 2 and 3 leaves a
//! complete snapshot the catalog learns of at the next rebuild. There is no
//! point at which a snapshot exists whose data is not durable.
//!
//! Completing the offsite copies after the commit is the caller's policy
//! ([`crate::commands::backup`]); [`Committed`] says which uploads failed.

mod chunk;
pub(crate) mod compress;
mod packer;
mod upload;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{bounded, unbounded};
use serde::Serialize;
use vault_format::config::VaultConfig;
use vault_format::keys::{DedupKey, Recipients};
use vault_format::manifest::{Manifest, MANIFEST_VERSION};
use vault_format::{PackId, SnapshotId};

use super::dedup::Pending;
use crate::catalog::Catalog;
use crate::deletion::locks::Lock;
use crate::deletion::marks;
use crate::error::{Error, Result};
use crate::progress::{Event, Progress};
use crate::source::Source;
use crate::tier::{keys, Tier};
use chunk::ChunkStats;
use compress::{BlobJob, CompressedBlob};
use packer::PackerStats;
use upload::Offsite;

/// What a backup needs: only public keys and the dedup key.
pub struct BackupContext {
    /// The tier backups complete on.
    pub tier: Arc<dyn Tier>,
    /// Tiers each pack is uploaded to as soon as it is sealed (offsite).
    pub offsite: Vec<Arc<dyn Tier>>,
    /// Catalog file (each stage opens its own connection).
    pub catalog_path: PathBuf,
    /// Vault config (chunker and pack parameters).
    pub config: VaultConfig,
    /// Who packs and manifests are sealed to.
    pub recipients: Recipients,
    /// The dedup key.
    pub dedup_key: DedupKey,
    /// Compressor threads.
    pub threads: usize,
    /// How long, after the commit, failed offsite uploads are retried
    /// before they are left pending.
    pub offsite_retry: std::time::Duration,
}

/// What to call the snapshot.
#[derive(Debug, Clone, Default)]
pub struct BackupRequest {
    /// Job name.
    pub job: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Extra source facts (merged with the source's own).
    pub facts: serde_json::Map<String, serde_json::Value>,
}

/// The result of a committed backup (the `--json` output of `coffer
/// backup`). The pipeline fills in what it did; the offsite fields are
/// filled by whoever completes the offsite copies ([`crate::commands::backup`]).
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// Snapshot id.
    pub id: SnapshotId,
    /// Job name.
    pub job: String,
    /// Snapshot kind.
    pub kind: String,
    /// Bytes read.
    pub raw_size: u64,
    /// Bytes added to the vault (new blobs, compressed).
    pub stored_size: u64,
    /// Data chunks not stored before.
    pub new_chunks: u64,
    /// Data chunks already in the vault.
    pub reused_chunks: u64,
    /// Packs written.
    pub packs: u64,
    /// Wall time.
    pub seconds: f64,
    /// State of the offsite copy, per offsite tier.
    pub offsite: Vec<OffsiteReport>,
    /// Seconds from the end of ingest (input read, local packs stored) to
    /// every offsite tier complete (or given up on).
    pub offsite_lag_seconds: f64,
}

/// Offsite state of a backup in one tier.
#[derive(Debug, Clone, Serialize)]
pub struct OffsiteReport {
    /// Tier name.
    pub tier: String,
    /// True when the snapshot and every pack it needs are in the tier.
    pub complete: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
}

impl BackupReport {
    /// True when some offsite copy is pending (exit status 3).
    pub fn offsite_pending(&self) -> bool {
        self.offsite.iter().any(|o| !o.complete)
    }
}

/// A snapshot the pipeline committed: durable on the primary tier, its
/// manifest stored, its row in the catalog.
#[derive(Debug, Clone)]
pub struct Committed {
    /// What it did (no offsite state yet).
    pub report: BackupReport,
    /// Per offsite tier (in [`BackupContext::offsite`] order): why uploads
    /// to it stopped during the run, if they did.
    pub upload_failures: Vec<Option<String>>,
    /// When the backup started.
    pub started: Instant,
    /// When the input was read and every local pack stored.
    pub ingest_done: Instant,
}

/// Runs a backup of `source` and commits a snapshot.
///
/// # Errors
/// Any failure of the source, a tier or the catalog; nothing is committed then.
pub fn run(
    ctx: &BackupContext,
    source: &mut dyn Source,
    req: &BackupRequest,
    progress: &dyn Progress,
) -> Result<Committed> {
    let started = Instant::now();
    // Microseconds: `latest` must be the newest even within one second.
    let created = crate::util::snapshot_time();
    let id = SnapshotId::random();
    // Deletion protocol (SPEC.md "Deletion", backup steps 1-2): hold a lock
    // in every tier written to, then read which packs must not be reused.
    let lock = Lock::backup(
        std::iter::once(ctx.tier.clone())
            .chain(ctx.offsite.iter().cloned())
            .collect(),
    )?;
    let excluded = excluded_packs(ctx)?;
    let offsite: Vec<Offsite> = ctx.offsite.iter().cloned().map(Offsite::new).collect();
    let (mut stats, packed) = ingest(ctx, source, &offsite, excluded, progress)?;
    let ingest_done = Instant::now();

    // The stream ended: did its producer succeed? Only then commit.
    let mut facts = source.finish()?;
    warn_skipped(&facts, progress);
    for (k, v) in &req.facts {
        facts.insert(k.clone(), v.clone());
    }
    let manifest = Manifest {
        format: MANIFEST_VERSION,
        id,
        vault_id: ctx.config.vault_id,
        job: req.job.clone(),
        kind: source.kind().to_string(),
        created,
        host: crate::util::hostname(),
        tags: req.tags.clone(),
        source: facts,
        raw_size: stats.raw_size,
        stored_size: packed.stored,
        chunk_count: stats.chunk_count,
        chunk_list: std::mem::take(&mut stats.list_ids),
        extra: Default::default(),
    };
    let sealed = manifest.seal(&ctx.recipients)?;
    // Step 4: a backup that lost its lock (suspended past its expiry) may
    // reference packs a prune deleted meanwhile: it must not commit.
    lock.check_live()?;
    ctx.tier.put_bytes(&keys::snapshot(&id), &sealed)?;
    progress.event(&Event::ManifestStored { id });
    Catalog::open(&ctx.catalog_path)?.insert_snapshot(&manifest, Some(&sealed), ctx.tier.name())?;
    progress.event(&Event::SnapshotCommitted { id });
    lock.release();

    Ok(Committed {
        report: BackupReport {
            id,
            job: req.job.clone(),
            kind: manifest.kind,
            raw_size: stats.raw_size,
            stored_size: packed.stored,
            new_chunks: stats.new_chunks,
            reused_chunks: stats.reused_chunks,
            packs: packed.packs,
            seconds: started.elapsed().as_secs_f64(),
            offsite: Vec::new(),
            offsite_lag_seconds: 0.0,
        },
        upload_failures: offsite.iter().map(Offsite::failure).collect(),
        started,
        ingest_done,
    })
}

/// Runs the stages on their threads until the input is consumed and every
/// pack is stored: the chunk stage on the caller's thread, compressors, the
/// packer and two uploaders per offsite tier beside it.
fn ingest(
    ctx: &BackupContext,
    source: &mut dyn Source,
    offsite: &[Offsite],
    excluded: HashSet<PackId>,
    progress: &dyn Progress,
) -> Result<(ChunkStats, PackerStats)> {
    let pending: Pending = Arc::new(Mutex::new(HashSet::new()));
    let abort = AtomicBool::new(false);
    let threads = ctx.threads.max(1);
    let (job_tx, job_rx) = bounded::<BlobJob>(threads * 2);
    let (blob_tx, blob_rx) = bounded::<Result<CompressedBlob>>(threads * 2);
    let (raw_pool_tx, raw_pool_rx) = unbounded::<Vec<u8>>();
    let (stored_pool_tx, stored_pool_rx) = unbounded::<Vec<u8>>();

    let (chunked, packed) = std::thread::scope(|s| -> Result<_> {
        for i in 0..threads {
            let (job_rx, blob_tx) = (job_rx.clone(), blob_tx.clone());
            let (raw_pool_tx, stored_pool_rx) = (raw_pool_tx.clone(), stored_pool_rx.clone());
            let level = ctx.config.pack.zstd_level;
            super::spawn(s, format!("compress-{i}"), move || {
                compress::compressor(level, job_rx, blob_tx, raw_pool_tx, stored_pool_rx)
            })?;
        }
        drop((job_rx, blob_tx, stored_pool_rx));
        // Uploads run beside ingest; the bounded queue bounds packs in flight
        // (they stream from the stored local file, not from memory).
        let mut upload_txs = Vec::new();
        for o in offsite {
            let (tx, rx) = bounded::<PackId>(4);
            upload_txs.push(tx);
            for i in 0..2 {
                let rx = rx.clone();
                super::spawn(s, format!("upload-{}-{i}", o.tier.name()), move || {
                    upload::uploader(ctx, o, rx, progress)
                })?;
            }
        }
        let (pending_ref, abort_ref) = (&pending, &abort);
        let packer = super::spawn(s, "packer".into(), move || {
            packer::packer(
                ctx,
                blob_rx,
                stored_pool_tx,
                upload_txs,
                pending_ref,
                abort_ref,
                progress,
            )
        })?;
        let chunked = chunk::chunk_stage(
            ctx,
            source,
            job_tx,
            raw_pool_rx,
            &pending,
            excluded,
            progress,
        );
        if chunked.is_err() {
            abort.store(true, Ordering::SeqCst);
        }
        let packed = packer.join().unwrap_or_else(|_| {
            Err(Error::Internal {
                what: "packer".into(),
                detail: "the packer thread panicked".into(),
            })
        });
        Ok((chunked, packed))
    })?;
    // The packer's error is the cause when the chunk stage merely saw the
    // pipeline close under it.
    match (chunked, packed) {
        (Ok(c), Ok(p)) => Ok((c, p)),
        (Err(e), Ok(_)) => Err(e),
        (_, Err(e)) => Err(e),
    }
}

/// Packs this backup must not reuse (SPEC.md "Deletion", backup step 2):
/// those condemned in any tier it writes to, and those the catalog knows
/// that the primary tier does not hold (deleted by another host's prune,
/// or never downloaded): a snapshot is complete in its primary tier.
fn excluded_packs(ctx: &BackupContext) -> Result<HashSet<PackId>> {
    // The catalog first, then the listing: a pack recorded before the
    // listing was durable in the tier before, so its absence means it is gone.
    let known = Catalog::open(&ctx.catalog_path)?.packs()?;
    let listed: HashSet<PackId> = ctx
        .tier
        .list(keys::PACKS)?
        .iter()
        .filter_map(|o| keys::parse_pack(&o.key))
        .collect();
    let mut out: HashSet<PackId> = known
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| !listed.contains(p))
        .collect();
    out.extend(marks::condemned(&*ctx.tier)?);
    for t in &ctx.offsite {
        // An unreachable offsite tier's marks cannot matter here: the
        // backup only reuses packs of its primary tier.
        if let Ok(c) = marks::condemned(&**t) {
            out.extend(c);
        }
    }
    Ok(out)
}

/// Tells the operator about sockets a tar source could not archive.
fn warn_skipped(facts: &serde_json::Map<String, serde_json::Value>, progress: &dyn Progress) {
    if let Some(serde_json::Value::Array(skipped)) = facts.get("skipped_sockets") {
        progress.event(&Event::Warning(format!(
            "skipped {} socket(s), which cannot be archived: {}",
            skipped.len(),
            skipped
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
}
