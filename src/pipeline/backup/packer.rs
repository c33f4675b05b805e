//! The packer: seals compressed blobs into packs through a
//! [`PackSink`] (spool, fsync, link into the primary tier, record), then
//! takes the pack's chunks out of the `pending` set (only once recorded, so
//! a concurrent dedup lookup finds them in one place or the other) and
//! hands it to the offsite uploaders.

use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};
use vault_format::PackId;

use super::compress::CompressedBlob;
use super::BackupContext;
use crate::catalog::{Catalog, CopyState, Placement};
use crate::error::Result;
use crate::pipeline::dedup::Pending;
use crate::pipeline::pack_sink::{PackSink, StoredPack};
use crate::progress::Progress;

/// What the packer wrote.
#[derive(Default)]
pub(super) struct PackerStats {
    /// Stored (compressed) blob bytes.
    pub stored: u64,
    /// Packs stored.
    pub packs: u64,
}

struct Packer<'a> {
    ctx: &'a BackupContext,
    uploads: Vec<Sender<PackId>>,
    sink: PackSink<'a>,
    pending: &'a Pending,
    stats: PackerStats,
}

impl Packer<'_> {
    /// After a pack is stored and recorded: its chunks leave `pending`, and
    /// it goes to the uploaders.
    fn stored(&mut self, p: StoredPack) -> Result<()> {
        {
            let mut pending = self.pending.lock().expect("pending set lock");
            for b in &p.index.blobs {
                for (id, _) in &b.chunks {
                    pending.remove(id);
                }
            }
        }
        self.stats.packs += 1;
        for (t, tx) in self.ctx.offsite.iter().zip(&self.uploads) {
            self.sink
                .catalog()
                .set_pack_copy(&p.id, t.name(), CopyState::Pending, false)?;
            // A closed uploader (it never closes early) just leaves it pending.
            let _ = tx.send(p.id);
        }
        Ok(())
    }
}

/// The packer thread: blobs in until the compressors close the channel.
/// When `abort` is set (the input failed), the open pack is dropped, not
/// stored: its spool file is deleted with it.
pub(super) fn packer(
    ctx: &BackupContext,
    blobs: Receiver<Result<CompressedBlob>>,
    stored_pool: Sender<Vec<u8>>,
    uploads: Vec<Sender<PackId>>,
    pending: &Pending,
    abort: &AtomicBool,
    progress: &dyn Progress,
) -> Result<PackerStats> {
    let mut p = Packer {
        ctx,
        uploads,
        // A chunk stored again (its first location is condemned or gone
        // from this tier) takes over as the first location.
        sink: PackSink::new(
            &*ctx.tier,
            &ctx.recipients,
            Catalog::open(&ctx.catalog_path)?,
            ctx.config.pack.target_size,
            Placement::MakeFirst,
            progress,
        ),
        pending,
        stats: PackerStats::default(),
    };
    for blob in blobs {
        let blob = blob?;
        p.stats.stored += blob.stored.len() as u64;
        let done = p
            .sink
            .add(blob.codec, blob.kind, &blob.stored, blob.chunks)?;
        let _ = stored_pool.send(blob.stored);
        if let Some(done) = done {
            p.stored(done)?;
        }
    }
    if abort.load(Ordering::SeqCst) {
        return Ok(p.stats);
    }
    let last = p.sink.finish()?;
    if let Some(done) = last {
        p.stored(done)?;
    }
    Ok(p.stats)
}
