//! Packs leaving the catalog: deleted from a tier (by this host's prune,
//! or a recorded deletion carried out later), or gone from every tier
//! (another host's prune). A chunk whose first location goes falls back to
//! a further copy, so the catalog never points a snapshot at nothing it
//! could read elsewhere.

use rusqlite::params;
use vault_format::PackId;

use super::packs::CopyState;
use super::sql::Sql;
use super::{Catalog, CatalogError};

/// SQL ordering key for a chunk copy `cc`: copies in packs whose deletion
/// is recorded (condemned and on their way out, or held by Object Lock)
/// last, so a chunk's new first location is one that stays.
const DOOMED_LAST: &str = "EXISTS (SELECT 1 FROM blobs b JOIN deletions d
     ON d.key = 'packs/' || substr(lower(hex(b.pack_id)), 1, 2) || '/' || lower(hex(b.pack_id))
     WHERE b.id = cc.blob), cc.blob";

impl Catalog {
    /// Removes packs from the catalog entirely (once deleted from every
    /// tier): their blobs, and every chunk location in them. A chunk whose
    /// first location goes is given one of its further copies, if any; a
    /// chunk with none left is no longer stored. One scan of the chunk
    /// table for all of them.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn remove_packs(&self, ids: &[PackId]) -> Result<(), CatalogError> {
        if ids.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let e = |e| super::sql_err(&path, e);
        // Foreign-key enforcement off for this transaction: deleting a blob
        // row would scan the whole chunk table (no index on chunks.blob) for
        // each blob, once per ~100 blobs of a pack: ~1 s per pack in a vault
        // of 140k chunks, a third of a nightly prune. The statements below
        // delete every child row first (checked by the test
        // `removing_packs_leaves_no_dangling_reference`). The pragma is a
        // no-op inside a transaction, so it is set around it.
        self.conn
            .pragma_update(None, "foreign_keys", false)
            .map_err(e)?;
        let r = self.remove_packs_unchecked(ids);
        self.conn
            .pragma_update(None, "foreign_keys", true)
            .map_err(e)?;
        r
    }

    fn remove_packs_unchecked(&self, ids: &[PackId]) -> Result<(), CatalogError> {
        let path = self.path.clone();
        let e = |e| super::sql_err(&path, e);
        // Unchecked: `&self` callers (carrying out recorded deletions inside
        // a recorded run) hold no other transaction on this connection.
        let tx = self.conn.unchecked_transaction().map_err(e)?;
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS orphaned(id BLOB PRIMARY KEY) WITHOUT ROWID;
             DELETE FROM orphaned;",
        )
        .map_err(e)?;
        blobs_of(&tx, "doomed_blobs", ids).map_err(e)?;
        tx.execute_batch(&format!(
            "INSERT OR IGNORE INTO orphaned SELECT id FROM chunks WHERE blob IN (SELECT id FROM doomed_blobs);
             DELETE FROM chunks WHERE id IN (SELECT id FROM orphaned);
             DELETE FROM chunk_copies WHERE blob IN (SELECT id FROM doomed_blobs);
             INSERT OR IGNORE INTO chunks(id, blob, offset, length)
                 SELECT cc.id, cc.blob, cc.offset, cc.length FROM chunk_copies cc
                 WHERE cc.id IN (SELECT id FROM orphaned) ORDER BY {DOOMED_LAST};
             DELETE FROM chunk_copies WHERE EXISTS
                 (SELECT 1 FROM chunks c WHERE c.id = chunk_copies.id AND c.blob = chunk_copies.blob);
             DELETE FROM blobs WHERE id IN (SELECT id FROM doomed_blobs);
             DELETE FROM doomed_blobs; DELETE FROM orphaned;"
        ))
        .map_err(e)?;
        for id in ids {
            tx.execute("DELETE FROM pack_copies WHERE pack_id = ?1", [Sql(*id)])
                .map_err(e)?;
            tx.execute("DELETE FROM packs WHERE id = ?1", [Sql(*id)])
                .map_err(e)?;
        }
        tx.commit().map_err(e)
    }

    /// Packs gone from every tier: each chunk whose first location is in
    /// one of them and that has a further copy elsewhere moves its first
    /// location there (the gone one is kept as a copy, so the move loses
    /// nothing if the pack comes back). Chunks with no other copy stay:
    /// they are lost, or dead, and prune (which knows which) decides.
    /// Returns how many chunks moved.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn move_chunks_out_of(&self, ids: &[PackId]) -> Result<u64, CatalogError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let path = self.path.clone();
        let e = |e| super::sql_err(&path, e);
        let tx = self.conn.unchecked_transaction().map_err(e)?;
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS moving(id BLOB PRIMARY KEY, blob INTEGER, offset INTEGER, length INTEGER) WITHOUT ROWID;
             DELETE FROM moving;",
        )
        .map_err(e)?;
        blobs_of(&tx, "gone_blobs", ids).map_err(e)?;
        let moved = tx
            .execute(
                &format!(
                    "INSERT OR IGNORE INTO moving
                     SELECT cc.id, cc.blob, cc.offset, cc.length FROM chunks c
                     JOIN chunk_copies cc ON cc.id = c.id
                     WHERE c.blob IN (SELECT id FROM gone_blobs)
                       AND cc.blob NOT IN (SELECT id FROM gone_blobs)
                     ORDER BY {DOOMED_LAST}"
                ),
                [],
            )
            .map_err(e)?;
        tx.execute_batch(
            "INSERT OR IGNORE INTO chunk_copies(id, blob, offset, length)
                 SELECT c.id, c.blob, c.offset, c.length FROM chunks c
                 WHERE c.id IN (SELECT id FROM moving);
             UPDATE chunks SET
                 blob = (SELECT m.blob FROM moving m WHERE m.id = chunks.id),
                 offset = (SELECT m.offset FROM moving m WHERE m.id = chunks.id),
                 length = (SELECT m.length FROM moving m WHERE m.id = chunks.id)
                 WHERE id IN (SELECT id FROM moving);
             DELETE FROM chunk_copies WHERE EXISTS
                 (SELECT 1 FROM moving m WHERE m.id = chunk_copies.id AND m.blob = chunk_copies.blob);
             DELETE FROM gone_blobs; DELETE FROM moving;",
        )
        .map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(moved as u64)
    }

    /// Forgets the copy of a pack in one tier (deleted there).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn remove_pack_copy(&self, id: &PackId, tier: &str) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "DELETE FROM pack_copies WHERE pack_id = ?1 AND tier = ?2",
                params![Sql(*id), tier],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The pack's copy in `tier` was deleted (a recorded deletion carried
    /// out): forgets it, and the pack itself once no tier stores a copy.
    /// Returns whether the pack left the catalog.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn pack_copy_deleted(&self, id: &PackId, tier: &str) -> Result<bool, CatalogError> {
        self.remove_pack_copy(id, tier)?;
        let stored: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM pack_copies WHERE pack_id = ?1 AND state IN (?2, ?3)",
                params![
                    Sql(*id),
                    CopyState::Present.as_str(),
                    CopyState::Corrupt.as_str()
                ],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        let known: bool = self
            .conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM packs WHERE id = ?1)",
                [Sql(*id)],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if stored > 0 || !known {
            return Ok(false);
        }
        self.remove_packs(&[*id])?;
        Ok(true)
    }
}

/// Fills the temporary table `table` (created if need be, emptied first)
/// with the blob ids of `packs`.
fn blobs_of(tx: &rusqlite::Transaction<'_>, table: &str, packs: &[PackId]) -> rusqlite::Result<()> {
    tx.execute_batch(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS {table}(id INTEGER PRIMARY KEY); DELETE FROM {table};"
    ))?;
    let mut st = tx.prepare(&format!(
        "INSERT OR IGNORE INTO {table} SELECT id FROM blobs WHERE pack_id = ?1"
    ))?;
    for id in packs {
        st.execute([Sql(*id)])?;
    }
    Ok(())
}
