//! Repack: the live chunks of mostly-dead packs, rewritten into new packs
//! with fresh blobs, so the old packs can be deleted and a restore no
//! longer decodes dead bytes around the live ones.
//!
//! Each old pack is read whole from the first tier that yields it intact;
//! every chunk moved is checked against its keyed hash first. New packs are
//! stored like a backup's ([`PackSink`]: spool, fsync, link, record) with
//! the moved chunks' first location pointing at them, then copied to the
//! other tiers. A pack that cannot be read is left as it is (reported).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use serde::Serialize;
use vault_format::blob::BlobDecoder;
use vault_format::config::VaultConfig;
use vault_format::keys::Recipients;
use vault_format::pack::{ChunkKind, PackReader};
use vault_format::{ChunkId, PackId};

use super::live::LiveSet;
use crate::catalog::{Catalog, CopyState, Placement};
use crate::error::Result;
use crate::pipeline::backup::compress::{compressor, BlobJob, CompressedBlob};
use crate::pipeline::fetch::ReadContext;
use crate::pipeline::pack_sink::PackSink;
use crate::pipeline::spawn;
use crate::progress::{Event, Progress};
use crate::tier::{keys, Tier};

/// What a repack did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Repacked {
    /// Old packs whose live chunks now live elsewhere.
    pub packs: Vec<PackId>,
    /// New packs written.
    pub new_packs: Vec<PackId>,
    /// Live chunks moved.
    pub chunks: u64,
    /// Stored bytes written.
    pub bytes: u64,
    /// Packs that could not be read (left as they are).
    pub problems: Vec<String>,
}

/// Where repack writes.
pub struct Target<'a> {
    /// The primary tier (new packs are stored there first).
    pub primary: Arc<dyn Tier>,
    /// The other reachable tiers (new packs are copied there).
    pub others: &'a [Arc<dyn Tier>],
    /// The catalog file.
    pub catalog: &'a std::path::Path,
    /// Pack and blob sizes, zstd level.
    pub config: &'a VaultConfig,
    /// Who new packs are sealed to.
    pub recipients: &'a Recipients,
}

/// Which chunks of an old pack move.
#[derive(Clone, Copy)]
pub enum Select<'a> {
    /// Every live chunk whose first location is the pack (which is then
    /// left with nothing needed: prune condemns it).
    Live(&'a LiveSet),
    /// Locality: only in the given blobs (by offset in the pack), only the
    /// chunks of the newest snapshots. The pack keeps what older snapshots
    /// need; the moved chunks stay in it as further copies.
    Newest {
        /// The newest snapshots' chunks.
        set: &'a LiveSet,
        /// Per pack, the offsets of the blobs to take them from.
        blobs: &'a HashMap<PackId, HashSet<u64>>,
    },
}

impl Select<'_> {
    fn wants(&self, id: &ChunkId) -> bool {
        match self {
            Select::Live(set) | Select::Newest { set, .. } => set.may_contain(id),
        }
    }

    fn reads(&self, p: &PackId, blob_offset: u64) -> bool {
        match self {
            Select::Live(_) => true,
            Select::Newest { blobs, .. } => blobs.get(p).is_some_and(|b| b.contains(&blob_offset)),
        }
    }
}

/// Consecutive live chunks of one kind, to become one blob.
#[derive(Default)]
struct Run {
    raw: Vec<u8>,
    chunks: Vec<(ChunkId, u32)>,
}

/// Repacks `old` (see the module docs). The old packs are read and
/// decoded on the caller's thread; runs of live chunks are compressed on
/// `ctx.threads` compressor threads (the backup's) and sealed into packs
/// on a sink thread, so a repack uses every core as a backup does.
///
/// # Errors
/// Catalog or primary-tier failures (nothing is then condemned).
pub fn repack(
    target: &Target<'_>,
    ctx: &ReadContext,
    old: &[PackId],
    select: Select<'_>,
    progress: &dyn Progress,
) -> Result<Repacked> {
    let catalog = Catalog::open(target.catalog)?;
    let sink = PackSink::new(
        &*target.primary,
        target.recipients,
        Catalog::open(target.catalog)?,
        target.config.pack.target_size,
        Placement::MakeFirst,
        progress,
    );
    let threads = ctx.threads.max(1);
    // Short queues: a blob in flight is up to a MiB, and prune's memory
    // is measured against its peers'.
    let (job_tx, job_rx) = bounded::<BlobJob>(threads);
    let (blob_tx, blob_rx) = bounded::<Result<CompressedBlob>>(threads);
    let (raw_pool_tx, raw_pool_rx) = unbounded::<Vec<u8>>();
    let (stored_pool_tx, stored_pool_rx) = unbounded::<Vec<u8>>();
    let mut out = Repacked::default();
    let stored = std::thread::scope(|s| -> Result<Stored> {
        for i in 0..threads {
            let (job_rx, blob_tx) = (job_rx.clone(), blob_tx.clone());
            let (raw_pool_tx, stored_pool_rx) = (raw_pool_tx.clone(), stored_pool_rx.clone());
            let level = target.config.pack.zstd_level;
            spawn(s, format!("repack-compress-{i}"), move || {
                compressor(level, job_rx, blob_tx, raw_pool_tx, stored_pool_rx)
            })?;
        }
        drop((job_rx, stored_pool_rx, raw_pool_tx));
        let writer = spawn(s, "repack-sink".into(), move || {
            store(sink, blob_rx, stored_pool_tx)
        })?;
        let mut feed = Feed {
            jobs: job_tx,
            blobs: blob_tx,
            raw_pool: raw_pool_rx,
            blob_target: target.config.pack.blob_target_size as usize,
        };
        let mut runs = [Run::default(), Run::default()];
        let mut reader = Reader {
            decoder: BlobDecoder::new()?,
            stored: Vec::new(),
            raw: Vec::new(),
        };
        for p in old {
            match reader.move_live(ctx, &catalog, select, p, &mut runs, &mut feed) {
                Ok(n) => {
                    out.chunks += n;
                    out.packs.push(*p);
                    progress.event(&Event::Step(format!(
                        "prune: repacked pack {p} ({n} live chunks)"
                    )));
                }
                Err(e) => out.problems.push(format!("pack {p} was not repacked: {e}")),
            }
        }
        for (kind, run) in [ChunkKind::Data, ChunkKind::List]
            .into_iter()
            .zip(runs.iter_mut())
        {
            // A failure here is the sink's, reported by its join below.
            let _ = feed.flush(kind, run);
        }
        // Closing the queues lets the compressors, then the sink, finish.
        drop(feed);
        writer.join().unwrap_or_else(|_| {
            Err(crate::error::Error::Internal {
                what: "repack".into(),
                detail: "the pack sink thread panicked".into(),
            })
        })
    })?;
    out.new_packs = stored.new_packs;
    out.bytes = stored.bytes;
    copy_out(target, &catalog, &out.new_packs, progress)?;
    Ok(out)
}

/// What the sink stored.
#[derive(Default)]
struct Stored {
    new_packs: Vec<PackId>,
    bytes: u64,
}

/// The sink thread: blobs (compressed, or moved verbatim) into new packs.
fn store(
    mut sink: PackSink<'_>,
    blobs: Receiver<Result<CompressedBlob>>,
    pool: Sender<Vec<u8>>,
) -> Result<Stored> {
    let mut out = Stored::default();
    for b in blobs {
        let b = b?;
        out.bytes += b.stored.len() as u64;
        if let Some(done) = sink.add(b.codec, b.kind, &b.stored, b.chunks)? {
            out.new_packs.push(done.id);
        }
        let _ = pool.send(b.stored);
    }
    if let Some(done) = sink.finish()? {
        out.new_packs.push(done.id);
    }
    Ok(out)
}

/// Reads old packs: buffers for one blob at a time.
struct Reader {
    decoder: BlobDecoder,
    stored: Vec<u8>,
    raw: Vec<u8>,
}

impl Reader {
    /// Moves the chunks `select` wants whose first location is pack `p`
    /// into the runs (flushing full ones to the writer); returns how many.
    fn move_live(
        &mut self,
        ctx: &ReadContext,
        catalog: &Catalog,
        select: Select<'_>,
        p: &PackId,
        runs: &mut [Run; 2],
        w: &mut Feed,
    ) -> std::result::Result<u64, String> {
        let mut reader = open_pack(ctx, p)?;
        let mut n = 0;
        for b in reader.index().blobs.clone() {
            if !select.reads(p, b.offset) {
                continue;
            }
            reader
                .read_blob(&b, &mut self.stored)
                .map_err(|e| e.to_string())?;
            self.decoder
                .decode(b.codec, &self.stored, b.raw_len as usize, &mut self.raw)
                .map_err(|e| e.to_string())?;
            let mut keep = Vec::with_capacity(b.chunks.len());
            let mut off = 0usize;
            for (id, len) in &b.chunks {
                let bytes = &self.raw[off..off + *len as usize];
                off += *len as usize;
                let first_here = catalog.chunk_pack(id).map_err(|e| e.to_string())? == Some(*p);
                let wanted = select.wants(id) && first_here;
                if wanted && ctx.idkey.id(bytes) != *id {
                    return Err(format!(
                        "chunk {} fails its keyed hash check",
                        &id.to_hex()[..16]
                    ));
                }
                keep.push(wanted);
            }
            n += keep.iter().filter(|k| **k).count() as u64;
            if keep.iter().all(|k| *k) {
                // Wholly live: the stored blob moves as it is, without
                // compressing it again.
                w.verbatim(&b, &self.stored)?;
                continue;
            }
            let run = &mut runs[(b.kind == ChunkKind::List) as usize];
            let mut off = 0usize;
            for ((id, len), wanted) in b.chunks.iter().zip(keep) {
                let bytes = &self.raw[off..off + *len as usize];
                off += *len as usize;
                if !wanted {
                    continue;
                }
                run.raw.extend_from_slice(bytes);
                run.chunks.push((*id, *len));
                if run.raw.len() >= w.blob_target {
                    w.flush(b.kind, run)?;
                }
            }
        }
        Ok(n)
    }
}

/// Where the reader sends runs (to be compressed) and wholly live blobs
/// (as they are).
struct Feed {
    jobs: Sender<BlobJob>,
    blobs: Sender<Result<CompressedBlob>>,
    raw_pool: Receiver<Vec<u8>>,
    blob_target: usize,
}

/// The sink or every compressor stopped (the sink's error says why).
fn stopped<T>(_: T) -> String {
    "the repack's pack sink stopped".into()
}

impl Feed {
    /// Sends a wholly live blob to be stored as it is.
    fn verbatim(
        &self,
        b: &vault_format::pack::BlobEntry,
        stored: &[u8],
    ) -> std::result::Result<(), String> {
        self.blobs
            .send(Ok(CompressedBlob {
                kind: b.kind,
                codec: b.codec,
                stored: stored.to_vec(),
                chunks: b.chunks.clone(),
            }))
            .map_err(stopped)
    }

    /// Sends a run to be compressed into one blob; the run is left empty.
    fn flush(&self, kind: ChunkKind, run: &mut Run) -> std::result::Result<(), String> {
        if run.chunks.is_empty() {
            return Ok(());
        }
        let raw = std::mem::replace(&mut run.raw, self.raw_pool.try_recv().unwrap_or_default());
        self.jobs
            .send(BlobJob {
                kind,
                raw,
                chunks: std::mem::take(&mut run.chunks),
            })
            .map_err(stopped)
    }
}

/// Opens a pack from the first tier that yields its index.
fn open_pack(
    ctx: &ReadContext,
    p: &PackId,
) -> std::result::Result<PackReader<Box<dyn crate::tier::ReadSeek>>, String> {
    let key = keys::pack(p);
    let mut why = Vec::new();
    for t in &ctx.tiers {
        match t
            .open(&key)
            .map_err(|e| e.to_string())
            .and_then(|src| PackReader::open(&ctx.identity, src).map_err(|e| e.to_string()))
        {
            Ok(r) => return Ok(r),
            Err(e) => why.push(format!("{}: {e}", t.name())),
        }
    }
    Err(why.join("; "))
}

/// Copies the new packs to the other tiers; one that fails stays pending
/// there (and the old packs are not deleted from that tier until it is
/// there: see prune's "another home" rule).
fn copy_out(
    target: &Target<'_>,
    catalog: &Catalog,
    new: &[PackId],
    progress: &dyn Progress,
) -> Result<()> {
    for t in target.others {
        for id in new {
            let key = keys::pack(id);
            let state = match crate::replicate::copy_pack(&*target.primary, &**t, id, &key, false) {
                Ok(()) => CopyState::Present,
                Err(e) => {
                    progress.event(&Event::Warning(format!(
                        "repacked pack {id} could not be copied to tier {}: {e}; `coffer sync` copies it later",
                        t.name()
                    )));
                    CopyState::Pending
                }
            };
            catalog.set_pack_copy(id, t.name(), state, false)?;
        }
    }
    Ok(())
}
