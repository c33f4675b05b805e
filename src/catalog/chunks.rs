//! Chunks: where each chunk's bytes are (its blob, its offset in the
//! decoded blob). Backups ask "is this chunk stored?"; restores ask "where?".

use rusqlite::OptionalExtension;
use vault_format::blob::Codec;
use vault_format::{ChunkId, PackId};

use super::sql::Sql;
use super::{Catalog, CatalogError};

/// Where a chunk's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkLocation {
    /// Its blob.
    pub blob: BlobLocation,
    /// Offset of the chunk in the decoded blob.
    pub offset: u32,
    /// Chunk length.
    pub length: u32,
}

/// A chunk's place in its blob ([`Catalog::chunk_ref`]).
#[derive(Debug, Clone, Copy)]
pub struct ChunkRef {
    /// Catalog row id of the blob.
    pub blob: i64,
    /// Offset of the chunk in the decoded blob.
    pub offset: u32,
    /// Chunk length.
    pub length: u32,
}

/// A blob's place in its pack ([`Catalog::blob_location`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack holding it.
    pub pack: PackId,
    /// Catalog row id of the blob.
    pub blob: i64,
    /// Offset of the blob in the pack's plaintext.
    pub offset: u64,
    /// Stored length.
    pub stored_len: u32,
    /// Decoded length.
    pub raw_len: u32,
    /// Codec.
    pub codec: Codec,
}

fn codec(tag: u8) -> rusqlite::Result<Codec> {
    Codec::from_tag(tag).map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Integer,
            format!("unknown blob codec {tag}").into(),
        )
    })
}

/// Reads `pack_id, id, offset, stored_len, raw_len, codec` from column `at`.
fn blob_location_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<BlobLocation> {
    Ok(BlobLocation {
        pack: r.get::<_, Sql<PackId>>(at)?.0,
        blob: r.get(at + 1)?,
        offset: r.get::<_, i64>(at + 2)? as u64,
        stored_len: r.get(at + 3)?,
        raw_len: r.get(at + 4)?,
        codec: codec(r.get(at + 5)?)?,
    })
}

fn chunk_ref_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(ChunkId, ChunkRef)> {
    Ok((
        r.get::<_, Sql<ChunkId>>(0)?.0,
        ChunkRef {
            blob: r.get(1)?,
            offset: r.get(2)?,
            length: r.get(3)?,
        },
    ))
}

impl Catalog {
    /// Is a chunk stored?
    ///
    /// # Errors
    /// SQLite errors.
    pub fn has_chunk(&self, id: &ChunkId) -> Result<bool, CatalogError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT 1 FROM chunks WHERE id = ?1")
            .map_err(|e| self.err(e))?;
        st.exists([Sql(*id)]).map_err(|e| self.err(e))
    }

    /// The pack holding a chunk's first location.
    ///
    /// # Errors
    /// SQLite errors; [`CatalogError::Damaged`] for a malformed row.
    pub fn chunk_pack(&self, id: &ChunkId) -> Result<Option<PackId>, CatalogError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT b.pack_id FROM chunks c JOIN blobs b ON b.id = c.blob WHERE c.id = ?1",
            )
            .map_err(|e| self.err(e))?;
        st.query_row([Sql(*id)], |r| r.get::<_, Sql<PackId>>(0).map(|p| p.0))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The chunks whose first location is in one of `packs`, with it.
    ///
    /// # Errors
    /// SQLite errors; [`CatalogError::Damaged`] for a malformed row.
    pub fn chunks_first_in(
        &self,
        packs: &[PackId],
    ) -> Result<Vec<(ChunkId, PackId)>, CatalogError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT c.id FROM chunks c JOIN blobs b ON b.id = c.blob WHERE b.pack_id = ?1",
            )
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for p in packs {
            let rows = st
                .query_map([Sql(*p)], |r| {
                    r.get::<_, Sql<ChunkId>>(0).map(|c| (c.0, *p))
                })
                .map_err(|e| self.err(e))?;
            for r in rows {
                out.push(r.map_err(|e| self.err(e))?);
            }
        }
        Ok(out)
    }

    /// Number of chunks known (sizes the dedup filter).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn chunk_count(&self) -> Result<u64, CatalogError> {
        self.conn
            .query_row("SELECT count(*) FROM chunks", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// Calls `f` with every chunk id (to fill the dedup filter). Rows that
    /// are not 32-byte ids are skipped: the filter only speeds lookups up.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn for_each_chunk_id(&self, mut f: impl FnMut(&[u8])) -> Result<(), CatalogError> {
        let mut st = self
            .conn
            .prepare("SELECT id FROM chunks")
            .map_err(|e| self.err(e))?;
        let mut rows = st.query([]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            if let rusqlite::types::ValueRef::Blob(b) = r.get_ref(0).map_err(|e| self.err(e))? {
                f(b);
            }
        }
        Ok(())
    }

    /// Chunks recorded in packs: a cheap estimate of the chunk table's size
    /// (one row per pack rather than a count over every chunk).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn chunk_count_estimate(&self) -> Result<u64, CatalogError> {
        self.conn
            .query_row("SELECT coalesce(sum(chunks), 0) FROM packs", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n.max(0) as u64)
            .map_err(|e| self.err(e))
    }

    /// Calls `f` with every chunk and its place in its blob, in id order.
    /// About 13x cheaper per row than [`Catalog::chunk_ref`] (0.34 against
    /// 4.6 µs here), so worth it when a caller needs a good share of them.
    ///
    /// # Errors
    /// SQLite errors, or what `f` returns.
    pub fn for_each_chunk_ref<E: From<CatalogError>>(
        &self,
        mut f: impl FnMut(ChunkId, ChunkRef) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut st = self
            .conn
            .prepare("SELECT id, blob, offset, length FROM chunks ORDER BY id")
            .map_err(|e| self.err(e))?;
        let mut rows = st.query([]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            // A malformed row is skipped, not fatal: a caller that needs
            // that chunk finds it missing and says so, one that does not
            // is not stopped by it (as with one lookup per chunk).
            if let Ok((id, chunk)) = chunk_ref_row(r) {
                f(id, chunk)?;
            }
        }
        Ok(())
    }

    /// Where a chunk is in its blob.
    ///
    /// # Errors
    /// SQLite errors; [`CatalogError::Damaged`] for a malformed row.
    pub fn chunk_ref(&self, id: &ChunkId) -> Result<Option<ChunkRef>, CatalogError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id, blob, offset, length FROM chunks WHERE id = ?1")
            .map_err(|e| self.err(e))?;
        st.query_row([Sql(*id)], |r| chunk_ref_row(r).map(|(_, c)| c))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Where a blob is.
    ///
    /// # Errors
    /// SQLite errors; [`CatalogError::Damaged`] for a malformed row.
    pub fn blob_location(&self, blob: i64) -> Result<Option<BlobLocation>, CatalogError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT pack_id, id, offset, stored_len, raw_len, codec FROM blobs WHERE id = ?1",
            )
            .map_err(|e| self.err(e))?;
        st.query_row([blob], |r| blob_location_at(r, 0))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Where a chunk is.
    ///
    /// # Errors
    /// SQLite errors; [`CatalogError::Damaged`] for a malformed row.
    pub fn chunk_location(&self, id: &ChunkId) -> Result<Option<ChunkLocation>, CatalogError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT b.pack_id, b.id, b.offset, b.stored_len, b.raw_len, b.codec, c.offset, c.length
                 FROM chunks c JOIN blobs b ON b.id = c.blob WHERE c.id = ?1",
            )
            .map_err(|e| self.err(e))?;
        st.query_row([Sql(*id)], |r| {
            Ok(ChunkLocation {
                blob: blob_location_at(r, 0)?,
                offset: r.get(6)?,
                length: r.get(7)?,
            })
        })
        .optional()
        .map_err(|e| self.err(e))
    }
}
