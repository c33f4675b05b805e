//! The packer: seals compressed blobs into packs, stores each pack durably
//! on the primary tier, records it in the catalog, and hands it to the
//! offsite uploaders.
//!
//! Order is the crash-safety argument (SPEC.md "Crash safety"): a pack is
//! sealed into a spool file, fsynced, linked into the tier (durable), and
//! only then recorded in the catalog; only then do its chunks leave the
//! `pending` set that makes a concurrent dedup lookup wait for it.

use std::io::BufWriter;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};
use vault_format::pack::PackWriter;
use vault_format::PackId;

use super::compress::CompressedBlob;
use super::BackupContext;
use crate::catalog::{Catalog, CopyState};
use crate::error::{Error, Result};
use crate::pipeline::dedup::Pending;
use crate::progress::{Event, Progress};
use crate::tier::keys;

/// What the packer wrote.
#[derive(Default)]
pub(super) struct PackerStats {
    /// Stored (compressed) blob bytes.
    pub stored: u64,
    /// Packs stored.
    pub packs: u64,
}

type SpoolWriter = BufWriter<tempfile::NamedTempFile>;

struct Packer<'a> {
    ctx: &'a BackupContext,
    uploads: Vec<Sender<PackId>>,
    catalog: Catalog,
    pending: &'a Pending,
    progress: &'a dyn Progress,
    stats: PackerStats,
}

fn spool_err(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |io| Error::Output { what, io }
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
            .map_err(spool_err(format!("pack spool in {}", dir.display())))?;
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
        spool
            .as_file()
            .sync_data()
            .map_err(spool_err("pack spool".into()))?;
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
        catalog: Catalog::open(&ctx.catalog_path)?,
        pending,
        progress,
        stats: PackerStats::default(),
    };
    let mut current: Option<PackWriter<SpoolWriter>> = None;
    for blob in blobs {
        let blob = blob?;
        let w = match &mut current {
            Some(w) => w,
            None => current.insert(p.open_pack()?),
        };
        w.add_blob(blob.codec, blob.kind, &blob.stored, blob.chunks)?;
        p.stats.stored += blob.stored.len() as u64;
        let _ = stored_pool.send(blob.stored);
        if w.len() >= ctx.config.pack.target_size {
            let w = current.take().expect("open pack");
            p.finish_pack(w)?;
        }
    }
    if abort.load(Ordering::SeqCst) {
        return Ok(p.stats);
    }
    if let Some(w) = current.take() {
        p.finish_pack(w)?;
    }
    Ok(p.stats)
}
