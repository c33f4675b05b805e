//! Runs: every backup, restore, drill, verify and sync, whatever its
//! outcome — the audit trail an operator proves their backups with.
//!
//! A run is recorded by [`Catalog::record_run`] around the work itself: the
//! row is written as `running` before the work starts (so a killed process
//! leaves a trace) and finished with what the work's report says of itself
//! ([`RunSummary`]) or with the error that stopped it.

use rusqlite::params;
use vault_format::SnapshotId;

use super::sql::Sql;
use super::{Catalog, CatalogError};
use crate::util::now_rfc3339;

/// What kind of work a run was. The words are stored in the catalog and
/// shown to operators; they never change once shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// `coffer backup` (one per snapshot: a pg backup records the dump and
    /// its globals as two runs).
    Backup,
    /// `coffer restore`, to a file, a tree, stdout or a database.
    Restore,
    /// `coffer verify --restore-test`: a restore drill.
    RestoreTest,
    /// `coffer verify`: every pack's hash.
    Verify,
    /// `coffer verify --read-data`: every chunk too.
    VerifyData,
    /// `coffer sync`.
    Sync,
    /// `coffer forget` (a dry run says so in its details).
    Forget,
    /// `coffer prune` (likewise).
    Prune,
    /// `coffer pin` / `coffer unpin`.
    Pin,
}

impl RunKind {
    /// The catalog's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Backup => "backup",
            RunKind::Restore => "restore",
            RunKind::RestoreTest => "restore-test",
            RunKind::Verify => "verify",
            RunKind::VerifyData => "verify-data",
            RunKind::Sync => "sync",
            RunKind::Forget => "forget",
            RunKind::Prune => "prune",
            RunKind::Pin => "pin",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Self> {
        [
            RunKind::Backup,
            RunKind::Restore,
            RunKind::RestoreTest,
            RunKind::Verify,
            RunKind::VerifyData,
            RunKind::Sync,
            RunKind::Forget,
            RunKind::Prune,
            RunKind::Pin,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still running (or the process died before it could say).
    Running,
    /// Completed.
    Ok,
    /// Failed; nothing was committed.
    Failed,
    /// Completed with problems (e.g. offsite copy pending, or a verify that
    /// found damage).
    Partial,
}

impl Outcome {
    /// The catalog's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Partial => "partial",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Self> {
        [
            Outcome::Running,
            Outcome::Ok,
            Outcome::Failed,
            Outcome::Partial,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// What a completed run's report says of it in the runs table.
pub trait RunSummary {
    /// How it ended.
    fn outcome(&self) -> Outcome {
        Outcome::Ok
    }
    /// Bytes it read or wrote.
    fn bytes(&self) -> u64 {
        0
    }
    /// The snapshot it made or read.
    fn snapshot(&self) -> Option<SnapshotId> {
        None
    }
    /// For a partial run: its first problem.
    fn problem(&self) -> Option<String> {
        None
    }
    /// What is kept for audits (usually the report as JSON).
    fn details(&self) -> Option<serde_json::Value> {
        None
    }
}

impl Catalog {
    /// Runs `work` as a run of `kind` (of `job`, about `snapshot` when it
    /// reads one) and records it: `running` first, then the outcome its
    /// report gives, or `failed` with the error's message. `work` is given
    /// the run's id (reports may name the row that audits them).
    ///
    /// # Errors
    /// What `work` returns; catalog errors recording the run.
    pub fn record_run<T: RunSummary, E: std::fmt::Display + From<CatalogError>>(
        &self,
        kind: RunKind,
        job: Option<&str>,
        snapshot: Option<&SnapshotId>,
        work: impl FnOnce(i64) -> Result<T, E>,
    ) -> Result<T, E> {
        self.conn
            .execute(
                "INSERT INTO runs(kind, job, started, outcome) VALUES (?1, ?2, ?3, ?4)",
                params![kind, job, now_rfc3339(), Outcome::Running],
            )
            .map_err(|e| self.err(e))?;
        let run = self.conn.last_insert_rowid();
        let r = work(run);
        let (outcome, bytes, error, snap, details) = match &r {
            Ok(rep) => (
                rep.outcome(),
                rep.bytes(),
                rep.problem(),
                rep.snapshot().or(snapshot.copied()),
                rep.details(),
            ),
            Err(e) => (
                Outcome::Failed,
                0,
                Some(e.to_string()),
                snapshot.copied(),
                None,
            ),
        };
        self.conn
            .execute(
                "UPDATE runs SET finished=?2, outcome=?3, bytes=?4, error=?5, snapshot_id=?6, details=?7 WHERE id=?1",
                params![
                    run,
                    now_rfc3339(),
                    outcome,
                    bytes as i64,
                    error,
                    snap.map(Sql),
                    details.map(|d| d.to_string())
                ],
            )
            .map_err(|e| self.err(e))?;
        r
    }
}

/// One row of the runs table (`coffer runs`, health, metrics).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    /// Its id.
    pub id: i64,
    /// `backup`, `restore`, `verify`, … ([`RunKind::as_str`]).
    pub kind: String,
    /// The job, when it had one.
    pub job: Option<String>,
    /// When it started (RFC 3339).
    pub started: String,
    /// When it ended; `None` while running (or when the process died).
    pub finished: Option<String>,
    /// `running`, `ok`, `partial` or `failed`.
    pub outcome: String,
    /// Bytes read or written.
    pub bytes: u64,
    /// Why it failed, or its first problem.
    pub error: Option<String>,
    /// The snapshot it made or read.
    pub snapshot: Option<String>,
}

impl Catalog {
    /// The newest `limit` runs (of `job`, when given), newest first.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn runs(&self, job: Option<&str>, limit: usize) -> Result<Vec<RunRecord>, CatalogError> {
        self.conn
            .prepare_cached(
                "SELECT id, kind, job, started, finished, outcome, coalesce(bytes, 0), error, snapshot_id
                   FROM runs WHERE ?1 IS NULL OR job = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .and_then(|mut st| {
                st.query_map(params![job, limit as i64], |r| {
                    Ok(RunRecord {
                        id: r.get(0)?,
                        kind: r.get(1)?,
                        job: r.get(2)?,
                        started: r.get(3)?,
                        finished: r.get(4)?,
                        outcome: r.get(5)?,
                        bytes: r.get::<_, i64>(6)? as u64,
                        error: r.get(7)?,
                        snapshot: r.get(8)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// When the newest backup of `job` that committed a snapshot (outcome
    /// ok or partial) started.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn last_backup(&self, job: &str) -> Result<Option<String>, CatalogError> {
        self.conn
            .query_row(
                "SELECT max(started) FROM runs WHERE kind = 'backup' AND job = ?1 AND outcome IN ('ok', 'partial')",
                params![job],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Done(u64);
    impl RunSummary for Done {
        fn bytes(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn a_run_is_recorded_whatever_its_outcome() {
        let d = tempfile::tempdir().unwrap();
        let c = Catalog::open(&d.path().join("c.sqlite")).unwrap();
        let ok: Result<Done, crate::Error> =
            c.record_run(RunKind::Backup, Some("j"), None, |_| Ok(Done(7)));
        assert!(ok.is_ok());
        let failed: Result<Done, crate::Error> = c.record_run(RunKind::Sync, None, None, |_| {
            Err(crate::Error::Config("it broke".into()))
        });
        assert!(failed.is_err());
        type Row = (RunKind, Option<String>, Outcome, i64, Option<String>);
        let rows: Vec<Row> = c
            .conn
            .prepare("SELECT kind, job, outcome, bytes, error FROM runs ORDER BY id")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (RunKind::Backup, Some("j".into()), Outcome::Ok, 7, None),
                (
                    RunKind::Sync,
                    None,
                    Outcome::Failed,
                    0,
                    Some("it broke".into())
                ),
            ]
        );
    }
}
