//! The first stage: read, chunk, hash, dedup, and build the chunk list.
//!
//! The input is read into blocks on its own thread (so read syscalls and a
//! slow producer overlap with the CPU work). Per block, all cut points are
//! found first (FastCDC, ~2 GB/s), then the chunks are hashed on two threads
//! (keyed BLAKE3), then deduplicated in stream order. Runs of consecutive
//! new chunks go to the compressors as blob jobs. Later nights, where most
//! chunks are reused and little is compressed, are bound by this stage.

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use vault_format::chunker::Chunker;
use vault_format::chunklist::{self, LIST_HEADER};
use vault_format::keys::ChunkIdKey;
use vault_format::pack::ChunkKind;
use vault_format::ChunkId;

use super::compress::BlobJob;
use super::BackupContext;
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::pipeline::dedup::{Dedup, Pending};
use crate::progress::{Event, Progress};
use crate::source::Source;

/// Read buffer: large reads amortise syscalls; must exceed the max chunk.
const READ_BUF: usize = 4 * 1024 * 1024;

/// What the chunk stage counted.
#[derive(Default)]
pub(super) struct ChunkStats {
    pub raw_size: u64,
    pub chunk_count: u64,
    pub new_chunks: u64,
    pub reused_chunks: u64,
    /// The chunk list's own chunks, in order (the manifest lists them).
    pub list_ids: Vec<ChunkId>,
}

/// Consecutive new chunks of one kind, on their way to becoming one blob.
struct BlobRun {
    raw: Vec<u8>,
    chunks: Vec<(ChunkId, u32)>,
}

impl BlobRun {
    fn with_capacity(n: usize) -> Self {
        BlobRun {
            raw: Vec::with_capacity(n),
            chunks: Vec::new(),
        }
    }
}

/// Dedups chunks and gathers the new ones into blob runs (one for data,
/// one for the chunk list, so the two kinds never share a blob).
struct Emitter {
    dedup: Dedup,
    idkey: ChunkIdKey,
    blob_target: usize,
    jobs: Sender<BlobJob>,
    raw_pool: Receiver<Vec<u8>>,
    data: BlobRun,
    list: BlobRun,
}

impl Emitter {
    fn run_mut(&mut self, kind: ChunkKind) -> &mut BlobRun {
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

    /// Sends the current run of `kind` to the compressors as one blob job.
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

/// The chunk stage found its downstream gone: the stage that stopped
/// reports the cause (see [`super::run`]), this only says it happened.
pub(super) fn pipeline_closed() -> Error {
    Error::Internal {
        what: "backup pipeline".into(),
        detail: "a later stage stopped".into(),
    }
}

/// A block of input as the reader thread filled it: data at
/// `[headroom..end)`. The headroom in front lets the chunk stage prepend the
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

/// The input as the chunk stage consumes it: the current block from the
/// reader thread and how far into it the stage has cut.
struct Input {
    blocks: Receiver<std::io::Result<Block>>,
    pool: Sender<Vec<u8>>,
    headroom: usize,
    cur: Option<Block>,
    pos: usize,
    eof: bool,
}

impl Input {
    /// Bytes not yet cut.
    fn available(&self) -> usize {
        self.cur.as_ref().map_or(0, |b| b.end - self.pos)
    }

    /// Takes the next block, carrying the unconsumed tail into its
    /// headroom; returns its new bytes (empty at the end of the input).
    fn refill(&mut self) -> Result<&[u8]> {
        match self.blocks.recv() {
            Ok(Ok(mut nb)) => {
                let avail = self.available();
                let new_pos = self.headroom - avail;
                if let Some(old) = self.cur.take() {
                    nb.buf[new_pos..self.headroom].copy_from_slice(&old.buf[self.pos..old.end]);
                    let _ = self.pool.send(old.buf);
                }
                self.pos = new_pos;
                let b = self.cur.insert(nb);
                Ok(&b.buf[self.headroom..b.end])
            }
            Ok(Err(e)) => Err(Error::Source {
                what: "the input".into(),
                detail: e.to_string(),
            }),
            Err(_) => {
                self.eof = true;
                Ok(&[])
            }
        }
    }

    /// The bytes not yet cut.
    fn window(&self) -> &[u8] {
        self.cur.as_ref().map_or(&[], |b| &b.buf[self.pos..b.end])
    }
}

/// Reads, chunks, hashes and dedups `source`; sends runs of new chunks to
/// the compressors; builds the chunk list (itself stored as chunks).
pub(super) fn chunk_stage(
    ctx: &BackupContext,
    source: &mut dyn Source,
    jobs: Sender<BlobJob>,
    raw_pool: Receiver<Vec<u8>>,
    pending: &Pending,
    excluded: std::collections::HashSet<vault_format::PackId>,
    progress: &dyn Progress,
) -> Result<ChunkStats> {
    let chunker = Chunker::new(&ctx.config.chunker, &ctx.dedup_key)?;
    let max = chunker.max_size();
    let blob_target = ctx.config.pack.blob_target_size as usize;
    let mut em = Emitter {
        dedup: Dedup::load(Catalog::open(&ctx.catalog_path)?, pending.clone(), excluded)?,
        idkey: ctx.dedup_key.chunk_id_key(),
        blob_target,
        jobs,
        raw_pool,
        data: BlobRun::with_capacity(blob_target + max),
        list: BlobRun::with_capacity(blob_target + max),
    };
    let mut stats = ChunkStats::default();
    let mut list_buf: Vec<u8> = LIST_HEADER.to_vec();
    let reader = source.reader();
    let (blk_tx, blk_rx) = bounded::<std::io::Result<Block>>(2);
    let (pool_tx, pool_rx) = unbounded::<Vec<u8>>();

    std::thread::scope(|s| -> Result<()> {
        crate::pipeline::spawn(s, "reader".into(), move || {
            read_blocks(reader, max, blk_tx, pool_rx)
        })?;
        // Dropped on return, which unblocks the reader.
        let mut input = Input {
            blocks: blk_rx,
            pool: pool_tx,
            headroom: max,
            cur: None,
            pos: 0,
            eof: false,
        };
        let mut cuts: Vec<(usize, usize)> = Vec::new();
        let mut ids: Vec<ChunkId> = Vec::new();
        loop {
            if !input.eof && input.available() < max {
                let first = stats.raw_size == 0;
                let fresh = input.refill()?;
                if first && !fresh.is_empty() {
                    if let Some(w) =
                        crate::source::compression_warning(&fresh[..fresh.len().min(64)])
                    {
                        progress.event(&Event::Warning(w));
                    }
                }
                stats.raw_size += fresh.len() as u64;
                progress.advance(fresh.len() as u64);
                continue;
            }
            if input.cur.is_none() {
                break;
            }
            let window = input.window();
            find_cuts(&chunker, window, input.eof, &mut cuts);
            if cuts.is_empty() {
                if input.eof {
                    break;
                }
                continue;
            }
            hash_all(&em.idkey, window, &cuts, &mut ids);
            emit_window(&mut em, window, &cuts, &ids, &mut stats, &mut list_buf)?;
            input.pos += cuts.last().map_or(0, |&(o, n)| o + n);
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

/// Dedups the window's chunks in stream order and appends them to the
/// chunk list.
fn emit_window(
    em: &mut Emitter,
    window: &[u8],
    cuts: &[(usize, usize)],
    ids: &[ChunkId],
    stats: &mut ChunkStats,
    list_buf: &mut Vec<u8>,
) -> Result<()> {
    for (&(o, n), id) in cuts.iter().zip(ids) {
        if em.chunk_with_id(&window[o..o + n], *id, ChunkKind::Data)? {
            stats.new_chunks += 1;
        } else {
            stats.reused_chunks += 1;
        }
        stats.chunk_count += 1;
        chunklist::encode_entry(id, n as u32, list_buf);
    }
    Ok(())
}

/// Cut points in `window`, stopping while a whole max-size chunk still
/// fits before the end (the rest waits for more input) unless at `eof`.
fn find_cuts(chunker: &Chunker, window: &[u8], eof: bool, cuts: &mut Vec<(usize, usize)>) {
    cuts.clear();
    let max = chunker.max_size();
    let mut off = 0;
    while let Some(n) = chunker.next_cut(&window[off..], eof) {
        cuts.push((off, n));
        off += n;
        if !eof && window.len() - off < max {
            break;
        }
    }
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
    std::thread::scope(
        |s| match crate::pipeline::spawn(s, "hash".into(), || hash(b)) {
            Ok(hb) => {
                ids.extend(hash(a));
                // A panic while hashing is a bug: let it surface as one.
                ids.extend(hb.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            }
            // No second thread to be had: hash it all here.
            Err(_) => ids.extend(hash(cuts)),
        },
    );
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
