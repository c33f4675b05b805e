//! Packs, their blobs, and where each pack's copies are (per tier, for the
//! 3-2-1 rule).

use std::collections::HashMap;

use rusqlite::params;
use vault_format::pack::PackIndex;
use vault_format::PackId;

use super::sql::Sql;
use super::{Catalog, CatalogError};
use crate::util::now_rfc3339;

/// State of a copy of an object in a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyState {
    /// Stored and believed good.
    Present,
    /// Not yet uploaded.
    Pending,
    /// Looked for and not found.
    Missing,
    /// Found, but failed its check.
    Corrupt,
}

impl CopyState {
    /// The catalog's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            CopyState::Present => "present",
            CopyState::Pending => "pending",
            CopyState::Missing => "missing",
            CopyState::Corrupt => "corrupt",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Self> {
        [
            CopyState::Present,
            CopyState::Pending,
            CopyState::Missing,
            CopyState::Corrupt,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

impl Catalog {
    /// Records a sealed pack, its blobs and chunks, and its copy in `tier`,
    /// in one transaction. A chunk already known (from another pack) keeps
    /// its first location.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn insert_pack(
        &mut self,
        id: &PackId,
        size: u64,
        index: &PackIndex,
        tier: &str,
        state: CopyState,
    ) -> Result<(), CatalogError> {
        let now = now_rfc3339();
        let path = self.path.clone();
        let e = |e| super::sql_err(&path, e);
        let tx = self.conn.transaction().map_err(e)?;
        let fresh = tx
            .execute(
                "INSERT OR IGNORE INTO packs(id, size, blobs, chunks, created) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![Sql(*id), size as i64, index.blobs.len() as i64, index.chunk_count() as i64, now],
            )
            .map_err(e)?
            == 1;
        tx.execute(
            "INSERT INTO pack_copies(pack_id, tier, state, size, updated) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(pack_id, tier) DO UPDATE SET state=excluded.state, size=excluded.size, updated=excluded.updated",
            params![Sql(*id), tier, state, size as i64, now],
        )
        .map_err(e)?;
        if fresh {
            let mut blob_st = tx
                .prepare_cached(
                    "INSERT INTO blobs(pack_id, offset, stored_len, raw_len, codec, kind) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(e)?;
            let mut chunk_st = tx
                .prepare_cached("INSERT OR IGNORE INTO chunks(id, blob, offset, length) VALUES (?1, ?2, ?3, ?4)")
                .map_err(e)?;
            for b in &index.blobs {
                blob_st
                    .execute(params![
                        Sql(*id),
                        b.offset as i64,
                        b.stored_len,
                        b.raw_len,
                        b.codec as u8,
                        b.kind as u8
                    ])
                    .map_err(e)?;
                let blob_row = tx.last_insert_rowid();
                let mut off = 0u32;
                for (cid, len) in &b.chunks {
                    chunk_st
                        .execute(params![Sql(*cid), blob_row, off, len])
                        .map_err(e)?;
                    off += len;
                }
            }
        }
        tx.commit().map_err(e)
    }

    /// Sets the state of a pack's copy in a tier.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_pack_copy(
        &self,
        id: &PackId,
        tier: &str,
        state: CopyState,
        verified: bool,
    ) -> Result<(), CatalogError> {
        let now = now_rfc3339();
        self.conn
            .execute(
                "INSERT INTO pack_copies(pack_id, tier, state, updated, verified_at) VALUES (?1, ?2, ?3, ?4, CASE WHEN ?5 THEN ?4 END)
                 ON CONFLICT(pack_id, tier) DO UPDATE SET state=excluded.state, updated=excluded.updated,
                   verified_at=COALESCE(excluded.verified_at, pack_copies.verified_at)",
                params![Sql(*id), tier, state, now, verified],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// All packs with their ciphertext sizes.
    ///
    /// # Errors
    /// SQLite errors; [`CatalogError::Damaged`] for a malformed row.
    pub fn packs(&self) -> Result<Vec<(PackId, u64)>, CatalogError> {
        let mut st = self
            .conn
            .prepare("SELECT id, size FROM packs ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, Sql<PackId>>(0)?.0, r.get::<_, i64>(1)? as u64))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Copy state of every pack in `tier` (packs with no row are absent).
    ///
    /// # Errors
    /// SQLite errors; [`CatalogError::Damaged`] for a malformed row.
    pub fn pack_states(&self, tier: &str) -> Result<HashMap<PackId, CopyState>, CatalogError> {
        let mut st = self
            .conn
            .prepare("SELECT pack_id, state FROM pack_copies WHERE tier = ?1")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([tier], |r| Ok((r.get::<_, Sql<PackId>>(0)?.0, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}
