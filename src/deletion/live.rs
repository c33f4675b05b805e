//! The live set: every chunk some kept snapshot needs (its list chunks, and
//! the data chunks its list names).
//!
//! Not a hash set of ids (32+ bytes each: 3.2 GB for a vault of 100M
//! chunks) but a Bloom filter of ~10 bits per chunk (125 MB for 100M), with
//! ~1% false positives. A false positive makes a dead chunk look live: it
//! keeps garbage, never deletes live data. Sized from the catalog's chunk
//! count, so memory grows with the vault only by those bits.

use std::collections::HashSet;

use vault_format::manifest::Manifest;
use vault_format::{ChunkId, SnapshotId};

use crate::catalog::Catalog;
use crate::error::Result;
use crate::pipeline::dedup::ChunkFilter;
use crate::pipeline::restore::{for_each_entry, ReadContext};
use crate::progress::Progress;

/// The live set; see the module docs.
pub struct LiveSet {
    filter: ChunkFilter,
    walked: HashSet<SnapshotId>,
    /// Chunk references walked (with repeats).
    pub references: u64,
}

impl LiveSet {
    /// An empty set with room for `chunks` chunks.
    pub fn with_capacity(chunks: u64) -> Self {
        LiveSet {
            filter: ChunkFilter::with_capacity(chunks),
            walked: HashSet::new(),
            references: 0,
        }
    }

    /// Adds every chunk of a snapshot (once per snapshot).
    ///
    /// # Errors
    /// A list chunk that cannot be read from any tier: the live set would
    /// be incomplete, so prune must stop.
    pub fn add_snapshot(
        &mut self,
        ctx: &ReadContext,
        catalog: &Catalog,
        manifest: &Manifest,
        progress: &dyn Progress,
    ) -> Result<()> {
        if !self.walked.insert(manifest.id) {
            return Ok(());
        }
        for id in &manifest.chunk_list {
            self.filter.insert(id.as_bytes());
        }
        let filter = &mut self.filter;
        let (n, _) = for_each_entry(ctx, manifest, catalog, progress, |id, _| {
            filter.insert(id.as_bytes());
            Ok(())
        })?;
        self.references += n + manifest.chunk_list.len() as u64;
        Ok(())
    }

    /// Has `snapshot` been walked?
    pub fn has_snapshot(&self, id: &SnapshotId) -> bool {
        self.walked.contains(id)
    }

    /// Snapshots walked.
    pub fn snapshots(&self) -> usize {
        self.walked.len()
    }

    /// False means certainly not live.
    pub fn may_contain(&self, id: &ChunkId) -> bool {
        self.filter.may_contain(id.as_bytes())
    }

    /// Bytes of memory the filter holds.
    pub fn filter_bytes(&self) -> usize {
        self.filter.bytes()
    }
}
