//! The WAL archive's rows: one per archived WAL file and job, and the
//! cluster (system identifier) each job archives. The local tier holds the
//! files themselves; these rows add when each was pushed and which S3 batch
//! holds it, so `coffer wal upload` knows what is pending and `coffer wal
//! verify` can find gaps without reading the tier.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{Catalog, CatalogError};

/// One archived WAL file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalRecord {
    /// The job.
    pub job: String,
    /// The WAL file name (`000000010000000000000003`, `….partial`, …).
    pub name: String,
    /// Its timeline.
    pub tli: u32,
    /// `segment`, `partial`, `backup-history` or `timeline-history`.
    pub kind: String,
    /// Keyed hash of its content.
    #[serde(skip)]
    pub hash: [u8; 32],
    /// Plaintext bytes.
    pub size: u64,
    /// Bytes of its sealed object.
    pub stored: u64,
    /// When it was pushed (RFC 3339).
    pub pushed: String,
    /// The S3 batch holding it, once uploaded.
    pub batch: Option<String>,
}

/// The cluster a job archives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalSystem {
    /// PostgreSQL's system identifier (decimal, as `pg_controldata` prints it).
    pub system_identifier: u64,
    /// WAL segment size in bytes.
    pub segment_size: u64,
}

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<WalRecord> {
    let hash: Vec<u8> = r.get(4)?;
    Ok(WalRecord {
        job: r.get(0)?,
        name: r.get(1)?,
        tli: r.get(2)?,
        kind: r.get(3)?,
        hash: hash.try_into().unwrap_or([0; 32]),
        size: r.get::<_, i64>(5)? as u64,
        stored: r.get::<_, i64>(6)? as u64,
        pushed: r.get(7)?,
        batch: r.get(8)?,
    })
}

const COLUMNS: &str = "job, name, tli, kind, hash, size, stored, pushed, batch";

impl Catalog {
    /// Records an archived WAL file (keeps the first row for a name).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn insert_wal(&self, w: &WalRecord) -> Result<(), CatalogError> {
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO wal_files(job, name, tli, kind, hash, size, stored, pushed, batch)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    w.job,
                    w.name,
                    w.tli,
                    w.kind,
                    &w.hash[..],
                    w.size as i64,
                    w.stored as i64,
                    w.pushed,
                    w.batch
                ])
            })
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The row of one WAL file.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn wal_file(&self, job: &str, name: &str) -> Result<Option<WalRecord>, CatalogError> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM wal_files WHERE job = ?1 AND name = ?2"),
                params![job, name],
                record,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every WAL file of a job (of every job when `None`), by name.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn wal_files(&self, job: Option<&str>) -> Result<Vec<WalRecord>, CatalogError> {
        self.wal_where("TRUE", "name", job)
    }

    /// WAL files not yet in an S3 batch, oldest push first.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn wal_pending(&self, job: Option<&str>) -> Result<Vec<WalRecord>, CatalogError> {
        self.wal_where("batch IS NULL", "pushed, name", job)
    }

    /// How many WAL files wait for an S3 batch (the push path asks this
    /// on every push: a count, not the rows).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn wal_pending_count(&self, job: Option<&str>) -> Result<usize, CatalogError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM wal_files WHERE batch IS NULL AND (?1 IS NULL OR job = ?1)",
                [job],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(|e| self.err(e))
    }

    /// The rows matching `filter` (of `job`, or every job), ordered by job
    /// then `order`.
    fn wal_where(
        &self,
        filter: &str,
        order: &str,
        job: Option<&str>,
    ) -> Result<Vec<WalRecord>, CatalogError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM wal_files WHERE {filter} AND (?1 IS NULL OR job = ?1)
                 ORDER BY job, {order}"
            ))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([job], record)
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e));
        rows
    }

    /// Records that `names` of `job` are in the S3 batch `batch`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_wal_batch(
        &mut self,
        job: &str,
        names: &[String],
        batch: &str,
    ) -> Result<(), CatalogError> {
        self.each_wal(
            "UPDATE wal_files SET batch = ?3 WHERE job = ?1 AND name = ?2",
            job,
            names,
            Some(batch),
        )
    }

    /// Forgets WAL files of `job` (retention decided they go; their
    /// objects' deletions are recorded first).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn delete_wal(&mut self, job: &str, names: &[String]) -> Result<(), CatalogError> {
        self.each_wal(
            // `?3 IS NULL`: each_wal binds three parameters to every statement.
            "DELETE FROM wal_files WHERE job = ?1 AND name = ?2 AND ?3 IS NULL",
            job,
            names,
            None,
        )
    }

    /// Runs `sql` (`?1` job, `?2` name, `?3` value) once per name, in one
    /// transaction.
    fn each_wal(
        &mut self,
        sql: &str,
        job: &str,
        names: &[String],
        value: Option<&str>,
    ) -> Result<(), CatalogError> {
        let path = self.path.clone();
        let e = |e| super::sql_err(&path, e);
        let tx = self.conn.transaction().map_err(e)?;
        {
            let mut st = tx.prepare_cached(sql).map_err(e)?;
            for n in names {
                st.execute(params![job, n, value]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// The jobs that archived WAL, by name.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn wal_jobs(&self) -> Result<Vec<String>, CatalogError> {
        let mut st = self
            .conn
            .prepare("SELECT DISTINCT job FROM wal_files ORDER BY job")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| r.get(0))
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| self.err(e));
        rows
    }

    /// The cluster a job archives, once its first segment was pushed.
    ///
    /// # Errors
    /// SQLite errors; [`CatalogError::Damaged`] for an unreadable row.
    pub fn wal_system(&self, job: &str) -> Result<Option<WalSystem>, CatalogError> {
        let row: Option<(String, i64)> = self
            .conn
            .query_row(
                "SELECT system_identifier, segment_size FROM wal_systems WHERE job = ?1",
                [job],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(|(sys, seg)| {
            Ok(WalSystem {
                system_identifier: sys.parse().map_err(|_| CatalogError::Damaged {
                    path: self.path.clone(),
                    detail: format!("system identifier {sys:?} of job {job}"),
                })?,
                segment_size: seg as u64,
            })
        })
        .transpose()
    }

    /// Records the cluster a job archives (the first one recorded stays).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_wal_system(&self, job: &str, s: &WalSystem) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO wal_systems(job, system_identifier, segment_size) VALUES (?1, ?2, ?3)",
                params![job, s.system_identifier.to_string(), s.segment_size as i64],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}
