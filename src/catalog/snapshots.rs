//! Snapshots: what was committed, how to name one on the command line, and
//! where each manifest's copies are.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};
use vault_format::manifest::Manifest;
use vault_format::SnapshotId;

use super::sql::Sql;
use super::{Catalog, CatalogError, CopyState};
use crate::util::now_rfc3339;

/// A committed snapshot, as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotRecord {
    /// Snapshot id.
    pub id: SnapshotId,
    /// Job name.
    pub job: String,
    /// Kind (file, stdin, tar, ...).
    pub kind: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Host that made it.
    pub host: String,
    /// Bytes in the stream.
    pub raw_size: u64,
    /// Bytes it added to the vault.
    pub stored_size: u64,
    /// Data chunks.
    pub chunk_count: u64,
    /// Tags.
    pub tags: Vec<String>,
    /// Why it is pinned, when it is (`coffer pin`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
}

impl Catalog {
    /// Copy state of every snapshot's manifest in `tier`.
    ///
    /// # Errors
    /// SQLite errors; [`CatalogError::Damaged`] for a malformed row.
    pub fn snapshot_states(
        &self,
        tier: &str,
    ) -> Result<HashMap<SnapshotId, CopyState>, CatalogError> {
        let mut st = self
            .conn
            .prepare("SELECT snapshot_id, state FROM snapshot_copies WHERE tier = ?1")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([tier], |r| {
                Ok((r.get::<_, Sql<SnapshotId>>(0)?.0, r.get(1)?))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Sets the state of a snapshot manifest's copy in a tier.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_snapshot_copy(
        &self,
        id: &SnapshotId,
        tier: &str,
        state: CopyState,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO snapshot_copies(snapshot_id, tier, state, updated) VALUES (?1, ?2, ?3, ?4)",
                params![Sql(*id), tier, state, now_rfc3339()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Records a committed snapshot and its manifest's copy in `tier`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn insert_snapshot(
        &mut self,
        m: &Manifest,
        sealed: Option<&[u8]>,
        tier: &str,
    ) -> Result<(), CatalogError> {
        let hash = sealed.map(|b| blake3::hash(b).to_hex().to_string());
        let path = self.path.clone();
        let e = |e| super::sql_err(&path, e);
        let tx = self.conn.transaction().map_err(e)?;
        tx.execute(
            "INSERT OR IGNORE INTO snapshots(id, job, kind, created, host, raw_size, stored_size, chunk_count, tags, manifest)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                Sql(m.id),
                m.job,
                m.kind,
                m.created,
                m.host,
                m.raw_size as i64,
                m.stored_size as i64,
                m.chunk_count as i64,
                serde_json::to_string(&m.tags).expect("tags serialize"),
                String::from_utf8(m.encode()).expect("manifest JSON is UTF-8"),
            ],
        )
        .map_err(e)?;
        // The first sealed bytes seen are the committed ones (later copies
        // are byte copies of them): recorded once, compared ever after.
        tx.execute(
            "UPDATE snapshots SET sealed_hash = ?2 WHERE id = ?1 AND sealed_hash IS NULL",
            params![Sql(m.id), hash],
        )
        .map_err(e)?;
        tx.execute(
            "INSERT OR REPLACE INTO snapshot_copies(snapshot_id, tier, state, updated) VALUES (?1, ?2, ?3, ?4)",
            params![Sql(m.id), tier, CopyState::Present, now_rfc3339()],
        )
        .map_err(e)?;
        tx.commit().map_err(e)
    }

    /// The BLAKE3 (hex) of each snapshot's sealed manifest, where known.
    ///
    /// # Errors
    /// SQLite errors; [`CatalogError::Damaged`] for a malformed row.
    pub fn sealed_hashes(&self) -> Result<HashMap<SnapshotId, String>, CatalogError> {
        let mut st = self
            .conn
            .prepare("SELECT id, sealed_hash FROM snapshots WHERE sealed_hash IS NOT NULL")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, Sql<SnapshotId>>(0)?.0, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Records the sealed manifest's hash of a snapshot whose hash was not
    /// known (checked against the catalog's manifest with the identity).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_sealed_hash(&self, id: &SnapshotId, sealed: &[u8]) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE snapshots SET sealed_hash = ?2 WHERE id = ?1 AND sealed_hash IS NULL",
                params![Sql(*id), blake3::hash(sealed).to_hex().to_string()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Snapshots, oldest first, optionally of one job.
    ///
    /// # Errors
    /// SQLite errors; [`CatalogError::Damaged`] for a malformed row.
    pub fn snapshots(&self, job: Option<&str>) -> Result<Vec<SnapshotRecord>, CatalogError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, job, kind, created, host, raw_size, stored_size, chunk_count, tags,
                        CASE WHEN pinned THEN coalesce(pin_reason, '') END
                 FROM snapshots WHERE ?1 IS NULL OR job = ?1 ORDER BY created, rowid",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([job], |r| {
                let tags: String = r.get(8)?;
                Ok(SnapshotRecord {
                    id: r.get::<_, Sql<SnapshotId>>(0)?.0,
                    job: r.get(1)?,
                    kind: r.get(2)?,
                    created: r.get(3)?,
                    host: r.get(4)?,
                    raw_size: r.get::<_, i64>(5)? as u64,
                    stored_size: r.get::<_, i64>(6)? as u64,
                    chunk_count: r.get::<_, i64>(7)? as u64,
                    tags: serde_json::from_str(&tags).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            8,
                            rusqlite::types::Type::Text,
                            format!("snapshot tags are not a JSON list: {e}").into(),
                        )
                    })?,
                    pin: r.get(9)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Resolves `latest` (optionally within a job), a full id or a unique
    /// prefix to a snapshot id.
    ///
    /// # Errors
    /// [`CatalogError::SnapshotNotFound`] / [`CatalogError::AmbiguousSnapshot`].
    pub fn resolve_snapshot(
        &self,
        query: &str,
        job: Option<&str>,
    ) -> Result<SnapshotId, CatalogError> {
        let all = self.snapshots(job)?;
        if query == "latest" {
            return all.last().map(|s| s.id).ok_or_else(|| {
                CatalogError::SnapshotNotFound(match job {
                    Some(j) => format!("latest (job {j})"),
                    None => "latest".into(),
                })
            });
        }
        let q = query.to_ascii_lowercase();
        if q.len() < 4 || !q.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CatalogError::SnapshotNotFound(format!(
                "{query} (give `latest` or at least 4 hex digits of an id)"
            )));
        }
        let hits: Vec<_> = all
            .iter()
            .filter(|s| s.id.to_hex().starts_with(&q))
            .collect();
        match hits.len() {
            0 => Err(CatalogError::SnapshotNotFound(query.to_string())),
            1 => Ok(hits[0].id),
            n => Err(CatalogError::AmbiguousSnapshot {
                prefix: query.to_string(),
                count: n,
            }),
        }
    }

    /// The stored manifest of a snapshot.
    ///
    /// # Errors
    /// [`CatalogError::SnapshotNotFound`] / [`CatalogError::BadManifest`].
    pub fn manifest(&self, id: &SnapshotId) -> Result<Manifest, CatalogError> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT manifest FROM snapshots WHERE id = ?1",
                [Sql(*id)],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let json = json.ok_or_else(|| CatalogError::SnapshotNotFound(id.to_hex()))?;
        Manifest::decode(json.as_bytes()).map_err(|e| CatalogError::BadManifest {
            id: id.to_hex(),
            detail: e.to_string(),
        })
    }
}

impl Catalog {
    /// Records whether a snapshot is pinned, and why (`None`: not pinned).
    ///
    /// # Errors
    /// [`CatalogError::SnapshotNotFound`] for an unknown snapshot.
    pub fn set_pin(&self, id: &SnapshotId, reason: Option<&str>) -> Result<(), CatalogError> {
        let n = self
            .conn
            .execute(
                "UPDATE snapshots SET pinned = ?2, pin_reason = ?3 WHERE id = ?1",
                params![Sql(*id), reason.is_some(), reason],
            )
            .map_err(|e| self.err(e))?;
        if n == 0 {
            return Err(CatalogError::SnapshotNotFound(id.to_hex()));
        }
        Ok(())
    }

    /// Forgets snapshots: their rows go, and the deletion of their manifest
    /// in each of `tiers` is recorded, in one transaction (the catalog
    /// never lists a snapshot whose manifest may already be gone).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn forget_snapshots(&self, ids: &[SnapshotId], tiers: &[&str]) -> Result<(), CatalogError> {
        let path = self.path.clone();
        let e = |e| super::sql_err(&path, e);
        // Unchecked: callers inside a recorded run (sync) hold `&self` and
        // no other transaction on this connection.
        let tx = self.conn.unchecked_transaction().map_err(e)?;
        let now = now_rfc3339();
        for id in ids {
            tx.execute(
                "DELETE FROM snapshot_copies WHERE snapshot_id = ?1",
                [Sql(*id)],
            )
            .map_err(e)?;
            tx.execute("DELETE FROM snapshots WHERE id = ?1", [Sql(*id)])
                .map_err(e)?;
            for t in tiers {
                tx.execute(
                    "INSERT OR IGNORE INTO deletions(key, tier, reason, decided) VALUES (?1, ?2, 'forgotten', ?3)",
                    params![crate::tier::keys::snapshot(id), t, now],
                )
                .map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }
}
