//! Sealing blobs into packs and storing each one durably: what a backup's
//! packer and a prune's repack both do.
//!
//! Order is the crash-safety argument (SPEC.md "Crash safety"): a pack is
//! sealed into a spool file in the tier's own `tmp/`, fsynced, linked into
//! the tier (durable), and only then recorded in the catalog.

use std::io::BufWriter;

use vault_format::blob::Codec;
use vault_format::pack::{ChunkKind, PackIndex, PackWriter};
use vault_format::{ChunkId, PackId};

use crate::catalog::{Catalog, CopyState, Placement};
use crate::error::{Error, Result};
use crate::progress::{Event, Progress};
use crate::tier::{keys, Tier};

type SpoolWriter = BufWriter<tempfile::NamedTempFile>;

/// A pack stored and recorded.
pub(crate) struct StoredPack {
    pub id: PackId,
    pub index: PackIndex,
}

/// Packs blobs for one tier; see the module docs.
pub(crate) struct PackSink<'a> {
    tier: &'a dyn Tier,
    recipients: &'a vault_format::keys::Recipients,
    catalog: Catalog,
    target_size: u64,
    placement: Placement,
    progress: &'a dyn Progress,
    current: Option<PackWriter<SpoolWriter>>,
}

fn spool_err(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |io| Error::Output { what, io }
}

impl<'a> PackSink<'a> {
    pub fn new(
        tier: &'a dyn Tier,
        recipients: &'a vault_format::keys::Recipients,
        catalog: Catalog,
        target_size: u64,
        placement: Placement,
        progress: &'a dyn Progress,
    ) -> Self {
        PackSink {
            tier,
            recipients,
            catalog,
            target_size,
            placement,
            progress,
            current: None,
        }
    }

    /// The sink's catalog connection (for what its caller records with each
    /// pack).
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Adds a blob; returns the pack it completed, sealed and stored, if
    /// the blob filled one.
    pub fn add(
        &mut self,
        codec: Codec,
        kind: ChunkKind,
        stored: &[u8],
        chunks: Vec<(ChunkId, u32)>,
    ) -> Result<Option<StoredPack>> {
        let w = match &mut self.current {
            Some(w) => w,
            None => self.current.insert(self.open_pack()?),
        };
        w.add_blob(codec, kind, stored, chunks)?;
        if w.len() >= self.target_size {
            let w = self.current.take().expect("open pack");
            return self.store(w).map(Some);
        }
        Ok(None)
    }

    /// Seals and stores the last, partly filled pack, if any.
    pub fn finish(&mut self) -> Result<Option<StoredPack>> {
        match self.current.take() {
            Some(w) => self.store(w).map(Some),
            None => Ok(None),
        }
    }

    fn open_pack(&self) -> Result<PackWriter<SpoolWriter>> {
        let dir = self
            .tier
            .spool_dir()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(std::env::temp_dir);
        let f = tempfile::Builder::new()
            .prefix("pack-")
            .tempfile_in(&dir)
            .map_err(spool_err(format!("pack spool in {}", dir.display())))?;
        Ok(PackWriter::new(
            self.recipients,
            BufWriter::with_capacity(1 << 20, f),
        )?)
    }

    fn store(&mut self, w: PackWriter<SpoolWriter>) -> Result<StoredPack> {
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
        self.tier.put_file(&keys::pack(&done.id), spool.path())?;
        self.catalog.insert_pack(
            &done.id,
            done.size,
            &done.index,
            self.tier.name(),
            CopyState::Present,
            self.placement,
        )?;
        self.progress.event(&Event::PackStored {
            id: done.id,
            tier: self.tier.name().to_string(),
        });
        Ok(StoredPack {
            id: done.id,
            index: done.index,
        })
    }
}
