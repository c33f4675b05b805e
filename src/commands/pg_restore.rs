//! `coffer restore SNAPSHOT --dbname`: a pg_dump snapshot into a database,
//! checked against the facts recorded at backup time.
//!
//! The snapshot streams from the vault into `pg_restore` (into a private
//! temporary file first only when `--jobs` > 1 needs a seekable archive),
//! and its head into `pg_restore --list` with the same selection, whose
//! `TABLE DATA` entries say which recorded tables the restore should have
//! filled. Those are then counted (and checksummed where a checksum was
//! recorded and the servers are comparable) in the restored database. A
//! globals snapshot is replayed with psql instead.

use std::time::Instant;

use serde::Serialize;
use serde_json::json;
use vault_format::manifest::{kinds, Manifest};

use crate::catalog::{Outcome, RunKind, RunSummary};
use crate::error::{Error, Result};
use crate::pg::compare::{compare, Comparison, Difference};
use crate::pg::conninfo::ConnInfo;
use crate::pg::globals::{self, Replay};
use crate::pg::pg_restore::{PgRestoreSink, StreamError};
use crate::pg::recorded::RecordedFacts;
use crate::pg::toc::Toc;
use crate::pg::{Db, PgError, KIND_DUMP, KIND_GLOBALS};
use crate::pipeline::restore::{self, ReadContext, RestoreReport};
use crate::progress::Progress;
use crate::vault::Vault;

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Target: the database to restore into, or with `create` the one to
    /// connect to first (e.g. `postgres`).
    pub target: ConnInfo,
    /// `pg_restore --create`: create the dumped database (its recorded
    /// name) and restore into it.
    pub create: bool,
    /// `pg_restore --clean --if-exists`: drop objects before recreating.
    pub clean: bool,
    /// `pg_restore --table` (repeatable; names, not patterns).
    pub tables: Vec<String>,
    /// `pg_restore --schema` (repeatable).
    pub schemas: Vec<String>,
    /// `pg_restore --jobs` (> 1 spools the archive to a temporary file).
    pub jobs: u32,
    /// `pg_restore --no-owner`.
    pub no_owner: bool,
    /// `pg_restore --no-privileges`.
    pub no_privileges: bool,
}

impl RestoreOptions {
    fn selection_args(&self) -> Vec<String> {
        let mut a: Vec<String> = self
            .schemas
            .iter()
            .map(|s| format!("--schema={s}"))
            .collect();
        a.extend(self.tables.iter().map(|t| format!("--table={t}")));
        a
    }

    /// pg_restore's arguments for these options.
    fn pg_restore_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.create {
            args.push("--create".to_string());
        }
        if self.clean {
            args.extend(["--clean".to_string(), "--if-exists".to_string()]);
        }
        if self.no_owner {
            args.push("--no-owner".into());
        }
        if self.no_privileges {
            args.push("--no-privileges".into());
        }
        // All or nothing where pg_restore allows it (not with --create, which
        // cannot run CREATE DATABASE in a transaction, nor with --jobs).
        if !self.create && self.jobs <= 1 {
            args.push("--single-transaction".into());
        }
        args.extend(self.selection_args());
        args
    }

    fn selective(&self) -> bool {
        !self.tables.is_empty() || !self.schemas.is_empty()
    }
}

/// Result of `coffer restore SNAPSHOT --dbname ...` (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct PgRestoreReport {
    /// Snapshot id.
    pub id: String,
    /// Job.
    pub job: String,
    /// Snapshot kind.
    pub kind: String,
    /// The database restored into (for globals: connected to).
    pub database: String,
    /// Bytes streamed from the vault.
    pub bytes: u64,
    /// Chunks verified.
    pub chunks: u64,
    /// Wall time, comparison included.
    pub seconds: f64,
    /// The comparison with the recorded facts (dumps with facts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
    /// What replaying globals did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub globals: Option<Replay>,
    /// Remarks (e.g. no facts recorded).
    pub notes: Vec<String>,
}

impl PgRestoreReport {
    /// Differences found (none when nothing was compared).
    pub fn differences(&self) -> &[Difference] {
        self.comparison
            .as_ref()
            .map(|c| c.differences.as_slice())
            .unwrap_or(&[])
    }
}

impl RunSummary for PgRestoreReport {
    fn outcome(&self) -> Outcome {
        if self.differences().is_empty() {
            Outcome::Ok
        } else {
            Outcome::Partial
        }
    }
    fn bytes(&self) -> u64 {
        self.bytes
    }
    fn details(&self) -> Option<serde_json::Value> {
        Some(json!({
            "database": self.database,
            "differences": self.differences(),
            "comparison": self.comparison,
        }))
    }
}

/// Streams a snapshot into `pg_restore ARGS --dbname=TARGET` and its head
/// into `pg_restore --list LIST_ARGS`; returns the pipeline's report and
/// the listing.
pub(crate) fn into_pg_restore(
    ctx: &ReadContext,
    manifest: &Manifest,
    target: &ConnInfo,
    args: &[String],
    list_args: &[String],
    jobs: u32,
    progress: &dyn Progress,
) -> std::result::Result<(RestoreReport, Toc), StreamError> {
    let mut sink = PgRestoreSink::start(target, args, list_args, jobs)?;
    let stream = restore::run(ctx, manifest, &mut sink, progress);
    sink.finish(stream)
}

/// Restores a snapshot into a database (`coffer restore SNAPSHOT --dbname`):
/// a dump with pg_restore and a comparison with its facts, or globals with
/// psql. The run is recorded in the catalog (outcome `partial` when the
/// comparison found differences).
///
/// # Errors
/// [`Error::Config`] for a snapshot that is not a dump or globals, or
/// options that do not apply; [`Error::Integrity`] when the vault's data is
/// damaged; [`Error::Output`] with pg_restore's (or psql's) message when it
/// failed.
pub fn restore(
    vault: &Vault,
    ctx: &ReadContext,
    manifest: &Manifest,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<PgRestoreReport> {
    let kind = manifest.kind.as_str();
    if ![KIND_DUMP, KIND_GLOBALS, kinds::FILE, kinds::STDIN].contains(&kind) {
        return Err(Error::Config(format!(
            "snapshot {} is a {kind} snapshot, not a PostgreSQL dump; restore it with --to PATH",
            manifest.id
        )));
    }
    if kind == KIND_GLOBALS
        && (opts.create
            || opts.clean
            || opts.selective()
            || opts.jobs > 1
            || opts.no_owner
            || opts.no_privileges)
    {
        return Err(Error::Config(
            "--create, --clean, --table, --schema, --jobs, --no-owner and --no-privileges apply to dumps, not to a globals snapshot (it is replayed with psql)".into(),
        ));
    }
    let catalog = vault.catalog()?;
    catalog.record_run(
        RunKind::Restore,
        Some(&manifest.job),
        Some(&manifest.id),
        |_| {
            if kind == KIND_GLOBALS {
                restore_globals(ctx, manifest, opts, progress)
            } else {
                restore_dump(ctx, manifest, opts, progress)
            }
        },
    )
}

fn restore_globals(
    ctx: &ReadContext,
    manifest: &Manifest,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<PgRestoreReport> {
    let started = Instant::now();
    let (rep, replay) =
        globals::replay(&opts.target, |w| restore::run(ctx, manifest, w, progress))?;
    Ok(PgRestoreReport {
        id: manifest.id.to_hex(),
        job: manifest.job.clone(),
        kind: manifest.kind.clone(),
        database: opts.target.database(),
        bytes: rep.bytes,
        chunks: rep.chunks,
        seconds: started.elapsed().as_secs_f64(),
        comparison: None,
        globals: Some(replay),
        notes: Vec::new(),
    })
}

fn restore_dump(
    ctx: &ReadContext,
    manifest: &Manifest,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<PgRestoreReport> {
    let started = Instant::now();
    let recorded = RecordedFacts::of(&manifest.source);
    let mut notes = Vec::new();
    let args = opts.pg_restore_args();
    let database = if opts.create {
        match &recorded.database {
            Some(d) => d.clone(),
            None => {
                notes.push(
                    "the dumped database's name was not recorded: the restore is not compared"
                        .into(),
                );
                String::new()
            }
        }
    } else {
        opts.target.database()
    };
    let (rep, toc) = match into_pg_restore(
        ctx,
        manifest,
        &opts.target,
        &args,
        &opts.selection_args(),
        opts.jobs,
        progress,
    ) {
        Ok(x) => x,
        Err(StreamError::Vault(e)) => return Err(e),
        Err(StreamError::PgRestore(msg)) => {
            let partial = if opts.create || opts.jobs > 1 {
                "; the database may hold a partial restore"
            } else {
                "; nothing was restored (single transaction)"
            };
            return Err(Error::Output {
                what: format!("snapshot {} into database {:?}", manifest.id, database),
                io: std::io::Error::other(format!("{msg}{partial}")),
            });
        }
    };
    let comparison = if recorded.tables.is_none() {
        notes.push(format!(
            "snapshot {} has no recorded table facts (it was not made by `coffer backup pg`): the restore is not compared",
            manifest.id
        ));
        None
    } else if database.is_empty() {
        None
    } else {
        let mut conn = opts.target.clone();
        conn.set("dbname", &database);
        let db = Db::connect(&conn).map_err(target_err)?;
        Some(compare(&db, &recorded, &toc, opts.create, !opts.selective()).map_err(target_err)?)
    };
    Ok(PgRestoreReport {
        id: manifest.id.to_hex(),
        job: manifest.job.clone(),
        kind: manifest.kind.clone(),
        database,
        bytes: rep.bytes,
        chunks: rep.chunks,
        seconds: started.elapsed().as_secs_f64(),
        comparison,
        globals: None,
        notes,
    })
}

/// A failure on the restore target's side.
pub(crate) fn target_err(e: PgError) -> Error {
    match e {
        PgError::Connect { .. } => Error::Config(e.to_string()),
        PgError::Conninfo(_) | PgError::Missing { .. } => e.into(),
        other => Error::Output {
            what: "the restored database".into(),
            io: std::io::Error::other(other.to_string()),
        },
    }
}
