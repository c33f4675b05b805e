//! Packs, their blobs, and where each pack's copies are (per tier, for the
//! 3-2-1 rule).

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};
use vault_format::pack::PackIndex;
use vault_format::{ChunkId, PackId, SnapshotId};

use super::sql::Sql;
use super::{Catalog, CatalogError};
use crate::util::clock_rfc3339;

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

/// Which location a chunk already known elsewhere keeps as its first (the
/// one restores read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The one it had: learning a pack that was already in a tier (rebuild,
    /// refresh), where either copy will do.
    KeepFirst,
    /// The new one: a backup or a repack stored the chunk again because its
    /// first location is going away (condemned, or gone from the primary
    /// tier).
    MakeFirst,
}

impl Catalog {
    /// Records a sealed pack, its blobs and chunks, and its copy in `tier`,
    /// in one transaction. A chunk already known from another pack gets a
    /// further location; which one is first is `placement`'s choice.
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
        placement: Placement,
    ) -> Result<(), CatalogError> {
        // The clock tests can move: health judges these times against it.
        let now = clock_rfc3339();
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
            // A chunk already stored elsewhere keeps its first location;
            // this one is recorded as a further copy (prune must know
            // everything a pack holds).
            let mut copy_st = tx
                .prepare_cached("INSERT OR IGNORE INTO chunk_copies(id, blob, offset, length) VALUES (?1, ?2, ?3, ?4)")
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
                    let first = chunk_st
                        .execute(params![Sql(*cid), blob_row, off, len])
                        .map_err(e)?
                        == 1;
                    if !first && placement == Placement::KeepFirst {
                        copy_st
                            .execute(params![Sql(*cid), blob_row, off, len])
                            .map_err(e)?;
                    } else if !first {
                        // The old first location becomes a further copy.
                        tx.execute(
                            "INSERT OR IGNORE INTO chunk_copies(id, blob, offset, length)
                             SELECT id, blob, offset, length FROM chunks WHERE id = ?1",
                            [Sql(*cid)],
                        )
                        .map_err(e)?;
                        tx.execute(
                            "UPDATE chunks SET blob = ?2, offset = ?3, length = ?4 WHERE id = ?1",
                            params![Sql(*cid), blob_row, off, len],
                        )
                        .map_err(e)?;
                    }
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
        // The clock tests can move: health judges these times against it.
        let now = clock_rfc3339();
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

    /// The pack copies present in `tier` that were neither verified nor
    /// written since `cutoff` (RFC 3339), and the oldest such time.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn unverified_since(
        &self,
        tier: &str,
        cutoff: &str,
    ) -> Result<(u64, Option<String>), CatalogError> {
        self.conn
            .query_row(
                "SELECT count(*), min(coalesce(verified_at, updated)) FROM pack_copies
                  WHERE tier = ?1 AND state = 'present' AND coalesce(verified_at, updated) < ?2",
                params![tier, cutoff],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .map_err(|e| self.err(e))
    }

    /// When each pack's copy in `tier` was last checked: verified, else
    /// written (RFC 3339).
    ///
    /// # Errors
    /// SQLite errors; [`CatalogError::Damaged`] for a malformed row.
    pub fn pack_check_times(&self, tier: &str) -> Result<HashMap<PackId, String>, CatalogError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT pack_id, coalesce(verified_at, updated) FROM pack_copies WHERE tier = ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![tier], |r| {
                Ok((r.get::<_, Sql<PackId>>(0)?.0, r.get(1)?))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
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

    /// Records that `tier` lost everything it held (its directory is
    /// gone): every copy there recorded present becomes missing, so status
    /// and health count it, and sync, which lists the tier, puts it back.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn mark_tier_lost(&self, tier: &str) -> Result<(), CatalogError> {
        let now = clock_rfc3339();
        self.conn
            .execute(
                "UPDATE pack_copies SET state = ?2, updated = ?3 WHERE tier = ?1 AND state = ?4",
                params![tier, CopyState::Missing, now, CopyState::Present],
            )
            .and_then(|_| {
                self.conn.execute(
                    "UPDATE snapshot_copies SET state = ?2, updated = ?3 WHERE tier = ?1 AND state = ?4",
                    params![tier, CopyState::Missing, now, CopyState::Present],
                )
            })
            .map(|_| ())
            .map_err(|e| self.err(e))
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

/// One stored copy of a chunk, as prune scans them.
#[derive(Debug, Clone, Copy)]
pub struct Holding {
    /// The chunk.
    pub id: ChunkId,
    /// Its length.
    pub length: u32,
    /// The blob holding it (its pack: [`Catalog::blob_packs`]).
    pub blob: i64,
    /// True for the chunk's first location (the one restores use).
    pub first: bool,
}

/// Every pack with its size, and which of them (by index) each blob row is
/// in ([`Catalog::blob_packs`]).
pub type BlobPacks = (Vec<(PackId, u64)>, HashMap<i64, u32>);

impl Catalog {
    /// Every pack, and which pack each blob (by row id) is in, as an index
    /// into that list: what a scan of every chunk needs, in memory (a few
    /// bytes per blob) rather than joined row by row.
    ///
    /// # Errors
    /// SQLite errors; [`CatalogError::Damaged`] for a malformed row.
    pub fn blob_packs(&self) -> Result<BlobPacks, CatalogError> {
        let packs = self.packs()?;
        let index: HashMap<PackId, u32> = packs
            .iter()
            .enumerate()
            .map(|(i, (p, _))| (*p, i as u32))
            .collect();
        let mut st = self
            .conn
            .prepare("SELECT id, pack_id FROM blobs")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Sql<PackId>>(1)?.0))
            })
            .map_err(|e| self.err(e))?;
        let mut blobs = HashMap::new();
        for row in rows {
            let (blob, pack) = row.map_err(|e| self.err(e))?;
            if let Some(&i) = index.get(&pack) {
                blobs.insert(blob, i);
            }
        }
        Ok((packs, blobs))
    }

    /// Each blob's pack and offset in it (`None` for an unknown blob).
    ///
    /// # Errors
    /// SQLite errors; [`CatalogError::Damaged`] for a malformed row.
    pub fn blob_places(&self, ids: &[i64]) -> Result<Vec<Option<(PackId, u64)>>, CatalogError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT pack_id, offset FROM blobs WHERE id = ?1")
            .map_err(|e| self.err(e))?;
        ids.iter()
            .map(|id| {
                st.query_row([id], |r| {
                    Ok((r.get::<_, Sql<PackId>>(0)?.0, r.get::<_, i64>(1)? as u64))
                })
                .optional()
                .map_err(|e| self.err(e))
            })
            .collect()
    }

    /// Calls `f` with every stored copy of every chunk: first locations,
    /// then further copies. One sequential scan of each table.
    ///
    /// # Errors
    /// SQLite errors, a malformed row, or what `f` returns.
    pub fn for_each_holding<E: From<CatalogError>>(
        &self,
        mut f: impl FnMut(Holding) -> Result<(), E>,
    ) -> Result<(), E> {
        for (sql, first) in [
            ("SELECT id, length, blob FROM chunks", true),
            ("SELECT id, length, blob FROM chunk_copies", false),
        ] {
            let mut st = self.conn.prepare(sql).map_err(|e| self.err(e))?;
            let mut rows = st.query([]).map_err(|e| self.err(e))?;
            while let Some(r) = rows.next().map_err(|e| self.err(e))? {
                let h = (|| {
                    Ok(Holding {
                        id: r.get::<_, Sql<ChunkId>>(0)?.0,
                        length: r.get(1)?,
                        blob: r.get(2)?,
                        first,
                    })
                })()
                .map_err(|e| self.err(e))?;
                f(h)?;
            }
        }
        Ok(())
    }

    /// Makes the copy of `id` in `blob` its first location (after a repack
    /// wrote it anew), keeping the old first location as a further copy.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn make_first(&mut self, moves: &[(ChunkId, i64)]) -> Result<(), CatalogError> {
        let path = self.path.clone();
        let e = |e| super::sql_err(&path, e);
        let tx = self.conn.transaction().map_err(e)?;
        for (id, blob) in moves {
            // old first -> copies; the copy in `blob` -> first.
            tx.execute(
                "INSERT OR IGNORE INTO chunk_copies(id, blob, offset, length)
                 SELECT id, blob, offset, length FROM chunks WHERE id = ?1 AND blob <> ?2",
                params![Sql(*id), blob],
            )
            .map_err(e)?;
            let n = tx
                .execute(
                    "UPDATE chunks SET blob = cc.blob, offset = cc.offset, length = cc.length
                     FROM (SELECT blob, offset, length FROM chunk_copies WHERE id = ?1 AND blob = ?2) AS cc
                     WHERE chunks.id = ?1",
                    params![Sql(*id), blob],
                )
                .map_err(e)?;
            if n == 1 {
                tx.execute(
                    "DELETE FROM chunk_copies WHERE id = ?1 AND blob = ?2",
                    params![Sql(*id), blob],
                )
                .map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// Until when S3 Object Lock retains each pack's copy in `tier`, where
    /// known.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn pack_retentions(&self, tier: &str) -> Result<HashMap<String, String>, CatalogError> {
        let by_id: HashMap<PackId, String> = self.retentions("pack_copies", "pack_id", tier)?;
        Ok(by_id
            .into_iter()
            .map(|(p, until)| (crate::tier::keys::pack(&p), until))
            .collect())
    }

    /// Until when each manifest's copy in `tier` is retained, where known.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn snapshot_retentions(
        &self,
        tier: &str,
    ) -> Result<HashMap<SnapshotId, String>, CatalogError> {
        self.retentions("snapshot_copies", "snapshot_id", tier)
    }

    /// `id -> retained_until` of the copies in `tier` of a copies table
    /// (`pack_copies`, `snapshot_copies`) whose retention is known.
    fn retentions<K>(
        &self,
        table: &str,
        id_column: &str,
        tier: &str,
    ) -> Result<HashMap<K, String>, CatalogError>
    where
        K: std::hash::Hash + Eq,
        Sql<K>: rusqlite::types::FromSql,
    {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {id_column}, retained_until FROM {table}
                 WHERE tier = ?1 AND retained_until IS NOT NULL"
            ))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([tier], |r| Ok((r.get::<_, Sql<K>>(0)?.0, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Records until when S3 Object Lock retains the object `key` (a pack
    /// or a manifest) in `tier`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_retention(&self, key: &str, tier: &str, until: &str) -> Result<(), CatalogError> {
        let r = if let Some(p) = crate::tier::keys::parse_pack(key) {
            self.conn.execute(
                "UPDATE pack_copies SET retained_until = ?3 WHERE pack_id = ?1 AND tier = ?2",
                params![Sql(p), tier, until],
            )
        } else if let Some(s) = crate::tier::keys::parse_snapshot(key) {
            self.conn.execute(
                "UPDATE snapshot_copies SET retained_until = ?3 WHERE snapshot_id = ?1 AND tier = ?2",
                params![Sql(s), tier, until],
            )
        } else {
            return Ok(());
        };
        r.map(|_| ()).map_err(|e| self.err(e))
    }
}
