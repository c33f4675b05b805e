//! The dedup index seen by a running backup.
//!
//! A chunk id is looked up in three places, cheapest first:
//! 1. `pending`: chunks this run has sent to the packer that are not yet
//!    committed to the catalog (shared with the packer, which removes ids
//!    *after* committing them, so an id is always in one place or the other);
//! 2. a Bloom filter over every chunk id in the catalog plus this run's: a
//!    "no" is certain, and most new chunks stop here without touching SQLite;
//! 3. the catalog itself, for the filter's "maybe" — where a chunk counts
//!    as stored only when its pack may be reused: not condemned by a prune
//!    and present in the tier the backup commits to (vault-format/SPEC.md,
//!    "Deletion").
//!
//! The filter costs ~10 bits per chunk (a vault of 10M chunks: 12.5 MB), not
//! the 32+ bytes per id a hash set would: the whole index is never held in
//! memory. Chunk ids are already keyed BLAKE3 hashes, uniformly distributed,
//! so the filter's probe positions are taken straight from the id's bytes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use vault_format::{ChunkId, PackId};

use crate::catalog::{Catalog, CatalogError};

/// A fixed-size Bloom filter over chunk ids.
pub struct ChunkFilter {
    bits: Vec<u64>,
    mask: u64,
}

impl ChunkFilter {
    /// Sized for `expected` ids at ~1% false positives (10 bits/id, 4 probes).
    pub fn with_capacity(expected: u64) -> Self {
        let want_bits = (expected.max(1 << 16) * 10).next_power_of_two();
        ChunkFilter {
            bits: vec![0; (want_bits / 64) as usize],
            mask: want_bits - 1,
        }
    }

    fn probes(id: &[u8]) -> [u64; 4] {
        let w = |i: usize| u64::from_le_bytes(id[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        [w(0), w(1), w(2), w(3)]
    }

    /// Adds an id (32 bytes).
    pub fn insert(&mut self, id: &[u8]) {
        for p in Self::probes(id) {
            let b = p & self.mask;
            self.bits[(b / 64) as usize] |= 1 << (b % 64);
        }
    }

    /// Bytes of memory the filter holds.
    pub fn bytes(&self) -> usize {
        self.bits.len() * 8
    }

    /// False means certainly absent.
    pub fn may_contain(&self, id: &[u8]) -> bool {
        Self::probes(id).iter().all(|p| {
            let b = p & self.mask;
            self.bits[(b / 64) as usize] & (1 << (b % 64)) != 0
        })
    }
}

/// Ids sent to the packer but not yet in the catalog.
pub type Pending = Arc<Mutex<HashSet<ChunkId>>>;

/// The dedup stage's view.
pub struct Dedup {
    filter: ChunkFilter,
    pending: Pending,
    catalog: Catalog,
    excluded: HashSet<PackId>,
}

impl Dedup {
    /// Loads the filter from the catalog.
    ///
    /// # Errors
    /// Catalog errors.
    pub fn load(
        catalog: Catalog,
        pending: Pending,
        excluded: HashSet<PackId>,
    ) -> Result<Self, CatalogError> {
        let n = catalog.chunk_count()?;
        // Room for this run's new chunks too (a first backup of a large
        // stream starts with an empty catalog).
        let mut filter = ChunkFilter::with_capacity(n + n / 2 + (1 << 20));
        catalog.for_each_chunk_id(|id| {
            if id.len() == 32 {
                filter.insert(id)
            }
        })?;
        Ok(Dedup {
            filter,
            pending,
            catalog,
            excluded,
        })
    }

    /// Is the chunk stored where this backup may reuse it? Not when its
    /// pack is excluded (condemned by a prune, or gone from the tier the
    /// backup commits to): then it is stored again.
    fn stored(&self, id: &ChunkId) -> Result<bool, CatalogError> {
        if self.excluded.is_empty() {
            return self.catalog.has_chunk(id);
        }
        Ok(self
            .catalog
            .chunk_pack(id)?
            .is_some_and(|p| !self.excluded.contains(&p)))
    }

    /// True when the chunk is already stored (or on its way); otherwise
    /// claims it for this run and returns false.
    ///
    /// # Errors
    /// Catalog errors.
    pub fn check_and_claim(&mut self, id: &ChunkId) -> Result<bool, CatalogError> {
        let mut pending = self.pending.lock().expect("pending set lock");
        if pending.contains(id) {
            return Ok(true);
        }
        if self.filter.may_contain(id.as_bytes()) && self.stored(id)? {
            return Ok(true);
        }
        pending.insert(*id);
        self.filter.insert(id.as_bytes());
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_has_no_false_negatives_and_few_false_positives() {
        let mut f = ChunkFilter::with_capacity(10_000);
        let key = vault_format::keys::DedupKey::from_bytes([5; 32]).chunk_id_key();
        let ids: Vec<_> = (0..10_000u32).map(|i| key.id(&i.to_le_bytes())).collect();
        for id in &ids {
            f.insert(id.as_bytes());
        }
        assert!(ids.iter().all(|id| f.may_contain(id.as_bytes())));
        let fp = (10_000..110_000u32)
            .filter(|i| f.may_contain(key.id(&i.to_le_bytes()).as_bytes()))
            .count();
        assert!(fp < 2_000, "false positives: {fp} of 100000");
    }
}
