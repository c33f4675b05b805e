//! Repack: the live chunks of mostly-dead packs, rewritten into new packs
//! with fresh blobs, so the old packs can be deleted and a restore no
//! longer decodes dead bytes around the live ones.
//!
//! Each old pack is read whole from the first tier that yields it intact;
//! every chunk moved is checked against its keyed hash first. New packs are
//! stored like a backup's ([`PackSink`]: spool, fsync, link, record) with
//! the moved chunks' first location pointing at them, then copied to the
//! other tiers. A pack that cannot be read is left as it is (reported).

use std::sync::Arc;

use serde::Serialize;
use vault_format::blob::{BlobDecoder, BlobEncoder};
use vault_format::config::VaultConfig;
use vault_format::keys::Recipients;
use vault_format::pack::{ChunkKind, PackReader};
use vault_format::{ChunkId, PackId};

use super::live::LiveSet;
use crate::catalog::{Catalog, CopyState, Placement};
use crate::error::Result;
use crate::pipeline::fetch::ReadContext;
use crate::pipeline::pack_sink::PackSink;
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

/// Consecutive live chunks of one kind, to become one blob.
#[derive(Default)]
struct Run {
    raw: Vec<u8>,
    chunks: Vec<(ChunkId, u32)>,
}

/// Repacks `old` (see the module docs).
///
/// # Errors
/// Catalog or primary-tier failures (nothing is then condemned).
pub fn repack(
    target: &Target<'_>,
    ctx: &ReadContext,
    old: &[PackId],
    live: &LiveSet,
    progress: &dyn Progress,
) -> Result<Repacked> {
    let catalog = Catalog::open(target.catalog)?;
    let mut sink = PackSink::new(
        &*target.primary,
        target.recipients,
        Catalog::open(target.catalog)?,
        target.config.pack.target_size,
        Placement::MakeFirst,
        progress,
    );
    let mut w = Writer {
        sink: &mut sink,
        enc: BlobEncoder::new(target.config.pack.zstd_level)?,
        stored: Vec::new(),
        blob_target: target.config.pack.blob_target_size as usize,
        out: Repacked::default(),
    };
    let mut runs = [Run::default(), Run::default()];
    let mut reader = Reader {
        decoder: BlobDecoder::new()?,
        stored: Vec::new(),
        raw: Vec::new(),
    };
    for p in old {
        match reader.move_live(ctx, &catalog, live, p, &mut runs, &mut w) {
            Ok(n) => {
                w.out.chunks += n;
                w.out.packs.push(*p);
                progress.event(&Event::Step(format!(
                    "prune: repacked pack {p} ({n} live chunks)"
                )));
            }
            Err(e) => w
                .out
                .problems
                .push(format!("pack {p} was not repacked: {e}")),
        }
    }
    for (kind, run) in [ChunkKind::Data, ChunkKind::List]
        .into_iter()
        .zip(runs.iter_mut())
    {
        w.flush(kind, run)?;
    }
    if let Some(done) = w.sink.finish()? {
        w.out.new_packs.push(done.id);
    }
    let out = w.out;
    copy_out(target, &catalog, &out.new_packs, progress)?;
    Ok(out)
}

/// Reads old packs: buffers for one blob at a time.
struct Reader {
    decoder: BlobDecoder,
    stored: Vec<u8>,
    raw: Vec<u8>,
}

impl Reader {
    /// Moves the live chunks whose first location is pack `p` into the
    /// runs (flushing full ones to the writer); returns how many.
    fn move_live(
        &mut self,
        ctx: &ReadContext,
        catalog: &Catalog,
        live: &LiveSet,
        p: &PackId,
        runs: &mut [Run; 2],
        w: &mut Writer<'_, '_>,
    ) -> std::result::Result<u64, String> {
        let mut reader = open_pack(ctx, p)?;
        let mut n = 0;
        for b in reader.index().blobs.clone() {
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
                let wanted = live.may_contain(id) && first_here;
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
                w.verbatim(&b, &self.stored).map_err(|e| e.to_string())?;
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
                    w.flush(b.kind, run).map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(n)
    }
}

struct Writer<'s, 'a> {
    sink: &'s mut PackSink<'a>,
    enc: BlobEncoder,
    stored: Vec<u8>,
    blob_target: usize,
    out: Repacked,
}

impl Writer<'_, '_> {
    /// Stores a wholly live blob as it is.
    fn verbatim(&mut self, b: &vault_format::pack::BlobEntry, stored: &[u8]) -> Result<()> {
        self.out.bytes += stored.len() as u64;
        if let Some(done) = self.sink.add(b.codec, b.kind, stored, b.chunks.clone())? {
            self.out.new_packs.push(done.id);
        }
        Ok(())
    }

    fn flush(&mut self, kind: ChunkKind, run: &mut Run) -> Result<()> {
        if run.chunks.is_empty() {
            return Ok(());
        }
        let codec = self.enc.encode(&run.raw, &mut self.stored)?;
        self.out.bytes += self.stored.len() as u64;
        let chunks = std::mem::take(&mut run.chunks);
        run.raw.clear();
        if let Some(done) = self.sink.add(codec, kind, &self.stored, chunks)? {
            self.out.new_packs.push(done.id);
        }
        Ok(())
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
            let state = match crate::replicate::copy_pack(&*target.primary, &**t, id, &key) {
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
