//! Deletions decided and not yet done: a forgotten snapshot's manifest, a
//! pruned pack, per tier. A row is written before the delete and removed
//! after it succeeds, so a delete that was interrupted, that hit an
//! unreachable tier or that S3 Object Lock refused is finished later by
//! `coffer prune`, `coffer forget` or `coffer sync`.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{Catalog, CatalogError};
use crate::util::now_rfc3339;

/// A deletion waiting to be done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingDeletion {
    /// Object key (`snapshots/…`, `packs/…`).
    pub key: String,
    /// Tier.
    pub tier: String,
    /// Why it is deleted (`forgotten`, `pruned`).
    pub reason: String,
    /// When it was decided (RFC 3339).
    pub decided: String,
    /// When S3 Object Lock lets it go, when a delete was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retained_until: Option<String>,
    /// The last failure, when a delete was tried and failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Catalog {
    /// Records deletions to do (`(key, tier)`), in one transaction.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn record_deletions(
        &mut self,
        keys: &[(String, String)],
        reason: &str,
    ) -> Result<(), CatalogError> {
        let path = self.path.clone();
        let e = |e| super::sql_err(&path, e);
        let tx = self.conn.transaction().map_err(e)?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO deletions(key, tier, reason, decided) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(e)?;
            let now = now_rfc3339();
            for (key, tier) in keys {
                st.execute(params![key, tier, reason, now]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// Deletions still to do, optionally in one tier, oldest first.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn pending_deletions(
        &self,
        tier: Option<&str>,
    ) -> Result<Vec<PendingDeletion>, CatalogError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT key, tier, reason, decided, retained_until, last_error FROM deletions
                 WHERE ?1 IS NULL OR tier = ?1 ORDER BY decided, key, tier",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([tier], |r| {
                Ok(PendingDeletion {
                    key: r.get(0)?,
                    tier: r.get(1)?,
                    reason: r.get(2)?,
                    decided: r.get(3)?,
                    retained_until: r.get(4)?,
                    last_error: r.get(5)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Is a deletion of `key` pending in any tier? (A refresh from a tier
    /// must not learn an object back that is being deleted.)
    ///
    /// # Errors
    /// SQLite errors.
    pub fn deletion_pending(&self, key: &str) -> Result<bool, CatalogError> {
        self.conn
            .query_row("SELECT 1 FROM deletions WHERE key = ?1", [key], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
            .map_err(|e| self.err(e))
    }

    /// The delete of `key` in `tier` was done.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn deletion_done(&self, key: &str, tier: &str) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "DELETE FROM deletions WHERE key = ?1 AND tier = ?2",
                params![key, tier],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The delete of `key` in `tier` failed, or was refused until
    /// `retained_until`; it stays pending.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn deletion_failed(
        &self,
        key: &str,
        tier: &str,
        error: &str,
        retained_until: Option<&str>,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE deletions SET last_error = ?3, retained_until = ?4 WHERE key = ?1 AND tier = ?2",
                params![key, tier, error, retained_until],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}
