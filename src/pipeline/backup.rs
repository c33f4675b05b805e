//! The backup (ingest) pipeline. See the module docs of [`crate::pipeline`]
//! for the stages; this file is their code.
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

use std::collections::HashSet;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use serde::Serialize;
use vault_format::blob::{BlobEncoder, Codec};
use vault_format::chunker::Chunker;
use vault_format::chunklist::{self, LIST_HEADER};
use vault_format::config::VaultConfig;
use vault_format::keys::{ChunkIdKey, DedupKey, Recipients};
use vault_format::manifest::{Manifest, MANIFEST_VERSION};
use vault_format::pack::{ChunkKind, PackWriter};
use vault_format::{ChunkId, SnapshotId};

use super::dedup::{Dedup, Pending};
use crate::catalog::{Catalog, CopyState};
use crate::error::{Error, Result};
use crate::progress::{Event, Progress};
use crate::source::Source;
use crate::tier::{keys, Tier};

/// Read buffer: large reads amortise syscalls; must exceed the max chunk.
const READ_BUF: usize = 4 * 1024 * 1024;

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

/// The result of a committed backup (the `--json` output of `coffer backup`).
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

/// One offsite tier during a run: uploads stop at the first failure (the
/// rest stay pending for `coffer sync`) rather than retrying every pack
/// against an endpoint that is down.
struct Offsite {
    tier: Arc<dyn Tier>,
    failed: Mutex<Option<String>>,
}

struct BlobJob {
    kind: ChunkKind,
    raw: Vec<u8>,
    chunks: Vec<(ChunkId, u32)>,
}

struct SealedBlob {
    kind: ChunkKind,
    codec: Codec,
    stored: Vec<u8>,
    chunks: Vec<(ChunkId, u32)>,
}

#[derive(Default)]
struct PackerStats {
    stored: u64,
    packs: u64,
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
) -> Result<BackupReport> {
    let started = Instant::now();
    // Microseconds: `latest` must be the newest even within one second.
    let created = crate::util::now_rfc3339_micros();
    let id = SnapshotId::random();
    let pending: Pending = Arc::new(Mutex::new(HashSet::new()));
    let abort = AtomicBool::new(false);
    let threads = ctx.threads.max(1);

    let (job_tx, job_rx) = bounded::<BlobJob>(threads * 2);
    let (blob_tx, blob_rx) = bounded::<Result<SealedBlob>>(threads * 2);
    let (raw_pool_tx, raw_pool_rx) = unbounded::<Vec<u8>>();
    let (stored_pool_tx, stored_pool_rx) = unbounded::<Vec<u8>>();
    let offsite: Vec<Offsite> = ctx
        .offsite
        .iter()
        .map(|t| Offsite {
            tier: t.clone(),
            failed: Mutex::new(None),
        })
        .collect();

    let (chunked, packed) = std::thread::scope(|s| -> Result<_> {
        for i in 0..threads {
            let (job_rx, blob_tx) = (job_rx.clone(), blob_tx.clone());
            let (raw_pool_tx, stored_pool_rx) = (raw_pool_tx.clone(), stored_pool_rx.clone());
            let level = ctx.config.pack.zstd_level;
            super::spawn(s, format!("compress-{i}"), move || {
                compressor(level, job_rx, blob_tx, raw_pool_tx, stored_pool_rx)
            })?;
        }
        drop((job_rx, blob_tx, stored_pool_rx));
        // Uploads run beside ingest; the bounded queue bounds packs in flight
        // (they stream from the stored local file, not from memory).
        let mut upload_txs = Vec::new();
        for o in &offsite {
            let (tx, rx) = bounded::<vault_format::PackId>(4);
            upload_txs.push(tx);
            for i in 0..2 {
                let rx = rx.clone();
                super::spawn(s, format!("upload-{}-{i}", o.tier.name()), move || {
                    uploader(ctx, o, rx, progress)
                })?;
            }
        }
        let (pending_ref, abort_ref) = (&pending, &abort);
        let packer = super::spawn(s, "packer".into(), move || {
            packer(
                ctx,
                blob_rx,
                stored_pool_tx,
                upload_txs,
                pending_ref,
                abort_ref,
                progress,
            )
        })?;
        let chunked = chunk_stage(ctx, source, job_tx, raw_pool_rx, &pending, progress);
        if chunked.is_err() {
            abort.store(true, Ordering::SeqCst);
        }
        let packed = packer.join().unwrap_or_else(|_| {
            Err(Error::Source {
                what: "packer".into(),
                detail: "the packer thread panicked".into(),
            })
        });
        Ok((chunked, packed))
    })?;
    // The packer's error is the cause when the chunk stage merely saw the
    // pipeline close under it.
    let chunked = match (chunked, packed) {
        (Ok(c), Ok(p)) => (c, p),
        (Err(e), Ok(_)) => return Err(e),
        (_, Err(e)) => return Err(e),
    };
    let (mut stats, packer_stats) = chunked;

    let ingest_done = Instant::now();
    // The stream ended: did its producer succeed? Only then commit.
    let mut facts = source.finish()?;
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
        stored_size: packer_stats.stored,
        chunk_count: stats.chunk_count,
        chunk_list: std::mem::take(&mut stats.list_ids),
        extra: Default::default(),
    };
    let sealed = manifest.seal(&ctx.recipients)?;
    ctx.tier.put_bytes(&keys::snapshot(&id), &sealed)?;
    progress.event(&Event::ManifestStored { id });
    let mut catalog = Catalog::open(&ctx.catalog_path)?;
    catalog.insert_snapshot(&manifest, ctx.tier.name())?;
    progress.event(&Event::SnapshotCommitted { id });

    // Offsite: complete the tier (this run's manifest, and anything pending
    // from earlier runs) unless it already failed during this run.
    let mut tiers = vec![ctx.tier.clone()];
    tiers.extend(ctx.offsite.iter().cloned());
    let mut offsite_reports = Vec::new();
    for (i, o) in offsite.iter().enumerate() {
        catalog.set_snapshot_copy(&id, o.tier.name(), CopyState::Pending)?;
        let failed = o.failed.lock().expect("offsite state").clone();
        let reason = match failed {
            Some(why) => Some(why),
            None => match crate::replicate::sync_to(&catalog, &tiers, i + 1, progress) {
                Ok(r) if r.problems.is_empty() => None,
                Ok(r) => Some(r.problems.join("; ")),
                Err(e) => Some(e.to_string()),
            },
        };
        if let Some(why) = &reason {
            progress.event(&Event::Warning(format!(
                "offsite copy in tier {} is pending: {why}; run `coffer sync` when it is reachable",
                o.tier.name()
            )));
        }
        offsite_reports.push(OffsiteReport {
            tier: o.tier.name().to_string(),
            complete: reason.is_none(),
            pending_reason: reason,
        });
    }

    Ok(BackupReport {
        id,
        job: req.job.clone(),
        kind: manifest.kind,
        raw_size: stats.raw_size,
        stored_size: packer_stats.stored,
        new_chunks: stats.new_chunks,
        reused_chunks: stats.reused_chunks,
        packs: packer_stats.packs,
        seconds: started.elapsed().as_secs_f64(),
        offsite: offsite_reports,
        offsite_lag_seconds: ingest_done.elapsed().as_secs_f64(),
    })
}

#[derive(Default)]
struct ChunkStats {
    raw_size: u64,
    chunk_count: u64,
    new_chunks: u64,
    reused_chunks: u64,
    list_ids: Vec<ChunkId>,
}

/// A run of consecutive new chunks of one kind, becoming one blob.
struct Run {
    raw: Vec<u8>,
    chunks: Vec<(ChunkId, u32)>,
}

struct Emitter {
    dedup: Dedup,
    idkey: ChunkIdKey,
    blob_target: usize,
    jobs: Sender<BlobJob>,
    raw_pool: Receiver<Vec<u8>>,
    data: Run,
    list: Run,
}

impl Emitter {
    fn run_mut(&mut self, kind: ChunkKind) -> &mut Run {
        match kind {
            ChunkKind::Data => &mut self.data,
            ChunkKind::List => &mut self.list,
        }
    }

    /// Dedups one chunk; a new one joins the current run. Returns (id, new).
    fn chunk(&mut self, bytes: &[u8], kind: ChunkKind) -> Result<(ChunkId, bool)> {
        let id = self.idkey.id(bytes);
        let new = self.chunk_with_id(bytes, id, kind)?;
        Ok((id, new))
    }

    /// Like [`Emitter::chunk`] for a chunk already hashed; returns whether it is new.
    fn chunk_with_id(&mut self, bytes: &[u8], id: ChunkId, kind: ChunkKind) -> Result<bool> {
        if self.dedup.check_and_claim(&id)? {
            return Ok(false);
        }
        let target = self.blob_target;
        let run = self.run_mut(kind);
        run.raw.extend_from_slice(bytes);
        run.chunks.push((id, bytes.len() as u32));
        if run.raw.len() >= target {
            self.flush(kind)?;
        }
        Ok(true)
    }

    fn flush(&mut self, kind: ChunkKind) -> Result<()> {
        let fresh_raw = self
            .raw_pool
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.blob_target + 64 * 1024));
        let run = self.run_mut(kind);
        if run.chunks.is_empty() {
            return Ok(());
        }
        let raw = std::mem::replace(&mut run.raw, fresh_raw);
        let job = BlobJob {
            kind,
            raw,
            chunks: std::mem::take(&mut run.chunks),
        };
        self.jobs.send(job).map_err(|_| pipeline_closed())
    }
}

fn pipeline_closed() -> Error {
    Error::Source {
        what: "backup pipeline".into(),
        detail: "a later stage stopped".into(),
    }
}

/// A block of input as the reader thread filled it: data at
/// `[HEADROOM..end)`. The headroom in front lets the chunk stage prepend the
/// unconsumed tail of the previous block (at most one max-size chunk)
/// without copying the whole block.
struct Block {
    buf: Vec<u8>,
    end: usize,
}

/// Reads the input into blocks on its own thread, so that read syscalls
/// (and a slow producer) overlap with chunking and hashing.
fn read_blocks(
    input: &mut (dyn std::io::Read + Send),
    headroom: usize,
    blocks: Sender<std::io::Result<Block>>,
    pool: Receiver<Vec<u8>>,
) {
    loop {
        let mut buf = pool
            .try_recv()
            .unwrap_or_else(|_| vec![0u8; headroom + READ_BUF]);
        let mut end = headroom;
        let mut eof = false;
        while end < buf.len() {
            match input.read(&mut buf[end..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = blocks.send(Err(e));
                    return;
                }
            }
        }
        if end > headroom && blocks.send(Ok(Block { buf, end })).is_err() {
            return;
        }
        if eof {
            return;
        }
    }
}

/// Reads, chunks, hashes and dedups; sends runs of new chunks to the
/// compressors; builds the chunk list (itself stored as chunks).
///
/// Per block: all cut points are found first (FastCDC, ~2 GB/s), then the
/// chunks are hashed on two threads (keyed BLAKE3), then deduplicated in
/// stream order. Later nights, where most chunks are reused and little is
/// compressed, are bound by this stage.
fn chunk_stage(
    ctx: &BackupContext,
    source: &mut dyn Source,
    jobs: Sender<BlobJob>,
    raw_pool: Receiver<Vec<u8>>,
    pending: &Pending,
    progress: &dyn Progress,
) -> Result<ChunkStats> {
    let chunker = Chunker::new(&ctx.config.chunker, &ctx.dedup_key)?;
    let max = chunker.max_size();
    let blob_target = ctx.config.pack.blob_target_size as usize;
    let catalog = Catalog::open(&ctx.catalog_path)?;
    let mut em = Emitter {
        dedup: Dedup::load(catalog, pending.clone())?,
        idkey: ctx.dedup_key.chunk_id_key(),
        blob_target,
        jobs,
        raw_pool,
        data: Run {
            raw: Vec::with_capacity(blob_target + max),
            chunks: Vec::new(),
        },
        list: Run {
            raw: Vec::with_capacity(blob_target + max),
            chunks: Vec::new(),
        },
    };
    let mut stats = ChunkStats::default();
    let mut list_buf: Vec<u8> = LIST_HEADER.to_vec();
    let headroom = max;
    let input = source.reader();
    let (blk_tx, blk_rx) = bounded::<std::io::Result<Block>>(2);
    let (pool_tx, pool_rx) = unbounded::<Vec<u8>>();

    std::thread::scope(|s| -> Result<()> {
        super::spawn(s, "reader".into(), move || {
            read_blocks(input, headroom, blk_tx, pool_rx)
        })?;
        let blk_rx = blk_rx; // dropped on return, which unblocks the reader
        let mut cur: Option<Block> = None;
        let mut pos = 0usize;
        let mut eof = false;
        let mut cuts: Vec<(usize, usize)> = Vec::new();
        let mut ids: Vec<ChunkId> = Vec::new();
        loop {
            let avail = cur.as_ref().map_or(0, |b| b.end - pos);
            if !eof && avail < max {
                match blk_rx.recv() {
                    Ok(Ok(mut nb)) => {
                        let n = nb.end - headroom;
                        if stats.raw_size == 0 {
                            if let Some(w) = crate::source::compression_warning(
                                &nb.buf[headroom..nb.end.min(headroom + 64)],
                            ) {
                                progress.event(&Event::Warning(w));
                            }
                        }
                        stats.raw_size += n as u64;
                        progress.advance(n as u64);
                        // Carry the unconsumed tail into the new block's headroom.
                        let new_pos = headroom - avail;
                        if let Some(old) = cur.take() {
                            nb.buf[new_pos..headroom].copy_from_slice(&old.buf[pos..old.end]);
                            let _ = pool_tx.send(old.buf);
                        }
                        pos = new_pos;
                        cur = Some(nb);
                    }
                    Ok(Err(e)) => {
                        return Err(Error::Source {
                            what: "the input".into(),
                            detail: e.to_string(),
                        })
                    }
                    Err(_) => eof = true,
                }
                continue;
            }
            let Some(block) = cur.as_ref() else { break };
            let window = &block.buf[pos..block.end];
            cuts.clear();
            let mut off = 0;
            while let Some(n) = chunker.next_cut(&window[off..], eof) {
                cuts.push((off, n));
                off += n;
                if !eof && window.len() - off < max {
                    break;
                }
            }
            if cuts.is_empty() {
                if eof {
                    break;
                }
                continue;
            }
            hash_all(&em.idkey, window, &cuts, &mut ids);
            for (&(o, n), id) in cuts.iter().zip(&ids) {
                let new = em.chunk_with_id(&window[o..o + n], *id, ChunkKind::Data)?;
                if new {
                    stats.new_chunks += 1;
                } else {
                    stats.reused_chunks += 1;
                }
                stats.chunk_count += 1;
                chunklist::encode_entry(id, n as u32, &mut list_buf);
            }
            pos += off;
            if list_buf.len() >= 4 * max {
                cut_list(&chunker, &mut em, &mut list_buf, false, &mut stats.list_ids)?;
            }
        }
        Ok(())
    })?;
    em.flush(ChunkKind::Data)?;
    cut_list(&chunker, &mut em, &mut list_buf, true, &mut stats.list_ids)?;
    em.flush(ChunkKind::List)?;
    Ok(stats)
}

/// Hashes the chunks of one window, the second half on another thread when
/// there are enough of them to pay for it.
fn hash_all(key: &ChunkIdKey, window: &[u8], cuts: &[(usize, usize)], ids: &mut Vec<ChunkId>) {
    ids.clear();
    let hash = |part: &[(usize, usize)]| -> Vec<ChunkId> {
        part.iter()
            .map(|&(o, n)| key.id(&window[o..o + n]))
            .collect()
    };
    if cuts.len() < 16 {
        ids.extend(hash(cuts));
        return;
    }
    let (a, b) = cuts.split_at(cuts.len() / 2);
    std::thread::scope(|s| match super::spawn(s, "hash".into(), || hash(b)) {
        Ok(hb) => {
            ids.extend(hash(a));
            // A panic while hashing is a bug: let it surface as one.
            ids.extend(hb.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        // No second thread to be had: hash it all here.
        Err(_) => ids.extend(hash(cuts)),
    });
}

/// Cuts the serialized chunk list with the same chunker, so that unchanged
/// stretches of a stream give unchanged (deduplicated) list chunks.
fn cut_list(
    chunker: &Chunker,
    em: &mut Emitter,
    list_buf: &mut Vec<u8>,
    eof: bool,
    ids: &mut Vec<ChunkId>,
) -> Result<()> {
    let mut pos = 0;
    while let Some(n) = chunker.next_cut(&list_buf[pos..], eof) {
        let (id, _) = em.chunk(&list_buf[pos..pos + n], ChunkKind::List)?;
        ids.push(id);
        pos += n;
    }
    list_buf.drain(..pos);
    Ok(())
}

fn compressor(
    level: i32,
    jobs: Receiver<BlobJob>,
    out: Sender<Result<SealedBlob>>,
    raw_pool: Sender<Vec<u8>>,
    stored_pool: Receiver<Vec<u8>>,
) {
    let mut enc = match BlobEncoder::new(level) {
        Ok(e) => e,
        Err(e) => {
            let _ = out.send(Err(e.into()));
            return;
        }
    };
    for mut job in jobs {
        let mut stored = stored_pool.try_recv().unwrap_or_default();
        let r = enc.encode(&job.raw, &mut stored).map(|codec| SealedBlob {
            kind: job.kind,
            codec,
            stored,
            chunks: std::mem::take(&mut job.chunks),
        });
        job.raw.clear();
        let _ = raw_pool.send(job.raw);
        if out.send(r.map_err(Error::from)).is_err() {
            return;
        }
    }
}

type SpoolWriter = BufWriter<tempfile::NamedTempFile>;

struct Packer<'a> {
    ctx: &'a BackupContext,
    uploads: Vec<Sender<vault_format::PackId>>,
    catalog: Catalog,
    pending: &'a Pending,
    progress: &'a dyn Progress,
    stats: PackerStats,
}

impl Packer<'_> {
    fn open_pack(&self) -> Result<PackWriter<SpoolWriter>> {
        let dir = self
            .ctx
            .tier
            .spool_dir()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(std::env::temp_dir);
        let f = tempfile::Builder::new()
            .prefix("pack-")
            .tempfile_in(&dir)
            .map_err(|e| Error::Output {
                what: format!("pack spool in {}", dir.display()),
                io: e,
            })?;
        Ok(PackWriter::new(
            &self.ctx.recipients,
            BufWriter::with_capacity(1 << 20, f),
        )?)
    }

    /// Seals, stores and records a pack; then its chunks leave `pending`.
    fn finish_pack(&mut self, w: PackWriter<SpoolWriter>) -> Result<()> {
        let done = w.finish()?;
        let spool = done.writer.into_inner().map_err(|e| Error::Output {
            what: "pack spool".into(),
            io: e.into_error(),
        })?;
        spool.as_file().sync_data().map_err(|e| Error::Output {
            what: "pack spool".into(),
            io: e,
        })?;
        self.progress.event(&Event::PackSealed {
            id: done.id,
            size: done.size,
        });
        self.ctx
            .tier
            .put_file(&keys::pack(&done.id), spool.path())?;
        self.catalog.insert_pack(
            &done.id,
            done.size,
            &done.index,
            self.ctx.tier.name(),
            CopyState::Present,
        )?;
        {
            let mut p = self.pending.lock().expect("pending set lock");
            for b in &done.index.blobs {
                for (id, _) in &b.chunks {
                    p.remove(id);
                }
            }
        }
        self.stats.packs += 1;
        self.progress.event(&Event::PackStored {
            id: done.id,
            tier: self.ctx.tier.name().to_string(),
        });
        for (t, tx) in self.ctx.offsite.iter().zip(&self.uploads) {
            self.catalog
                .set_pack_copy(&done.id, t.name(), CopyState::Pending, false)?;
            // A closed uploader (it never closes early) just leaves it pending.
            let _ = tx.send(done.id);
        }
        Ok(())
    }
}

fn packer(
    ctx: &BackupContext,
    blobs: Receiver<Result<SealedBlob>>,
    stored_pool: Sender<Vec<u8>>,
    uploads: Vec<Sender<vault_format::PackId>>,
    pending: &Pending,
    abort: &AtomicBool,
    progress: &dyn Progress,
) -> Result<PackerStats> {
    let mut p = Packer {
        ctx,
        uploads,
        catalog: Catalog::open(&ctx.catalog_path)?,
        pending,
        progress,
        stats: PackerStats::default(),
    };
    let mut current: Option<PackWriter<SpoolWriter>> = None;
    for blob in blobs {
        let blob = blob?;
        if current.is_none() {
            current = Some(p.open_pack()?);
        }
        let w = current.as_mut().expect("just opened");
        w.add_blob(blob.codec, blob.kind, &blob.stored, blob.chunks)?;
        p.stats.stored += blob.stored.len() as u64;
        let _ = stored_pool.send(blob.stored);
        if w.len() >= ctx.config.pack.target_size {
            let w = current.take().expect("open pack");
            p.finish_pack(w)?;
        }
    }
    if abort.load(Ordering::SeqCst) {
        // The input failed: the open pack's spool file is dropped (deleted).
        return Ok(p.stats);
    }
    if let Some(w) = current.take() {
        p.finish_pack(w)?;
    }
    Ok(p.stats)
}

/// Uploads packs to one offsite tier as the packer stores them locally.
fn uploader(
    ctx: &BackupContext,
    o: &Offsite,
    packs: Receiver<vault_format::PackId>,
    progress: &dyn Progress,
) {
    let catalog = Catalog::open(&ctx.catalog_path).ok();
    for id in packs {
        if o.failed.lock().expect("offsite state").is_some() {
            continue;
        }
        let key = keys::pack(&id);
        let r = match ctx.tier.local_path(&key) {
            Some(path) => o.tier.put_file(&key, &path),
            None => ctx.tier.get(&key).and_then(|b| o.tier.put_bytes(&key, &b)),
        };
        match r {
            Ok(_) => {
                if let Some(c) = &catalog {
                    let _ = c.set_pack_copy(&id, o.tier.name(), CopyState::Present, false);
                }
                progress.event(&Event::PackStored {
                    id,
                    tier: o.tier.name().to_string(),
                });
            }
            Err(e) => {
                let mut f = o.failed.lock().expect("offsite state");
                if f.is_none() {
                    progress.event(&Event::Warning(format!(
                        "upload to tier {} failed, its copies stay pending: {e}",
                        o.tier.name()
                    )));
                    *f = Some(e.to_string());
                }
            }
        }
    }
}
