//! Restore drills (`coffer verify --restore-test SNAPSHOT`): restore a
//! pg_dump snapshot into a scratch database that coffer creates and drops,
//! list the archive with `pg_restore --list` from the same stream, compare
//! the restored tables with the recorded facts, and record the drill in
//! the catalog's runs table (kind `restore-test`): that row is the audit.
//!
//! The scratch server is `--scratch CONNINFO`, else wherever the PG*
//! environment and libpq's defaults point; coffer connects to its `dbname`
//! (default `postgres`) to create `coffer_drill_<snapshot>_<random>`. It
//! never defaults to the server the backup came from: a drill loads a whole
//! database and should not land on production by surprise.

use std::time::Instant;

use serde::Serialize;
use serde_json::json;
use vault_format::manifest::Manifest;
use vault_format::SnapshotId;

use super::conninfo::ConnInfo;
use super::dump::RecordedFacts;
use super::facts::quote_ident;
use super::restore::{compare, stream_into_pg_restore, target_err, Comparison, StreamError};
use super::{db_error, Db, PgError, KIND_DUMP};
use crate::catalog::Outcome;
use crate::error::{Error, Result};
use crate::pipeline::restore::ReadContext;
use crate::progress::Progress;
use crate::vault::Vault;

/// How to drill.
#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// The scratch server (its `dbname` is where coffer connects to create
    /// and drop the scratch database; default `postgres`).
    pub scratch: ConnInfo,
    /// Keep the scratch database afterwards (for a look at a failure).
    pub keep: bool,
}

/// The outcome of a drill (`--json` of `coffer verify --restore-test`).
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// Snapshot drilled.
    pub snapshot: String,
    /// Its job.
    pub job: String,
    /// When the backup was made.
    pub backup_created: String,
    /// The dumped database.
    pub database: String,
    /// The scratch database.
    pub scratch_database: String,
    /// Version of the scratch server.
    pub scratch_server_version: String,
    /// Whether the scratch database was kept.
    pub kept: bool,
    /// Bytes restored.
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
    /// TOC entries `pg_restore --list` read from the stream.
    pub toc_entries: usize,
    /// Of which table data.
    pub table_data_entries: usize,
    /// The comparison (absent when pg_restore failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
    /// pg_restore's failure, when the archive did not restore.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_error: Option<String>,
    /// True when it restored and nothing differs.
    pub passed: bool,
    /// The catalog run recording this drill.
    pub run_id: i64,
}

/// Runs a drill and records it.
///
/// # Errors
/// [`Error::Config`] when the snapshot has no facts to drill against or the
/// scratch server cannot be used; [`Error::Integrity`] when the vault's
/// data is damaged. A pg_restore failure or differences are not errors:
/// they are the drill's findings, in the report (and the run's outcome).
pub fn drill(
    vault: &Vault,
    ctx: &ReadContext,
    manifest: &Manifest,
    opts: &DrillOptions,
    progress: &dyn Progress,
) -> Result<DrillReport> {
    let recorded = RecordedFacts::of(&manifest.source);
    if manifest.kind != KIND_DUMP || recorded.tables.is_none() {
        return Err(Error::Config(format!(
            "snapshot {} is a {} snapshot without recorded table facts; restore drills need a snapshot made by `coffer backup pg`",
            manifest.id, manifest.kind
        )));
    }
    if recorded.selection.as_ref().is_some_and(|s| s.data_only) {
        return Err(Error::Config(format!(
            "snapshot {} is a --data-only dump: it cannot be restored into an empty scratch database",
            manifest.id
        )));
    }
    let catalog = vault.catalog()?;
    let run = catalog.start_run("restore-test", Some(&manifest.job))?;
    let r = run_drill(ctx, manifest, &recorded, opts, progress, run);
    match &r {
        Ok(rep) => {
            let outcome = if rep.passed {
                Outcome::Ok
            } else {
                Outcome::Partial
            };
            let details = serde_json::to_value(rep).unwrap_or_default();
            catalog.finish_run(
                run,
                outcome,
                rep.bytes,
                rep.restore_error.as_deref(),
                Some(&manifest.id),
                Some(&details),
            )?;
        }
        Err(e) => catalog.finish_run(
            run,
            Outcome::Failed,
            0,
            Some(&e.to_string()),
            Some(&manifest.id),
            Some(&json!({ "snapshot": manifest.id.to_hex() })),
        )?,
    }
    r
}

fn run_drill(
    ctx: &ReadContext,
    manifest: &Manifest,
    recorded: &RecordedFacts,
    opts: &DrillOptions,
    progress: &dyn Progress,
    run_id: i64,
) -> Result<DrillReport> {
    let started = Instant::now();
    let mut maint = opts.scratch.clone();
    if !maint.is_given("dbname") {
        maint.set("dbname", "postgres");
    }
    let admin = Db::connect(&maint).map_err(|e| {
        Error::Config(format!(
            "{e}; name a scratch server with --scratch CONNINFO (see docs/postgres.md)"
        ))
    })?;
    let (version, version_num): (String, i32) = admin
        .run(async {
            let r = admin
                .client()
                .query_one(
                    "SELECT current_setting('server_version'), current_setting('server_version_num')::int4",
                    &[],
                )
                .await?;
            Ok::<_, tokio_postgres::Error>((r.get(0), r.get(1)))
        })
        .map_err(|e| Error::Config(format!("scratch server: {}", db_error(&e))))?;
    let name = format!(
        "coffer_drill_{}_{}",
        &manifest.id.to_hex()[..8],
        &SnapshotId::random().to_hex()[..8]
    );
    let mut notes = Vec::new();
    create_scratch(&admin, &name, recorded, &mut notes)?;

    let mut target = maint.clone();
    target.set("dbname", &name);
    // Drill the data, not the roles: a scratch server need not have them.
    let args: Vec<String> = ["--no-owner", "--no-privileges", "--single-transaction"]
        .map(String::from)
        .to_vec();
    let outcome = (|| -> Result<Restored> {
        match stream_into_pg_restore(ctx, manifest, &target, &args, &[], 1, progress) {
            Ok((rep, toc)) => {
                let db = Db::connect(&target).map_err(target_err)?;
                let mut c = compare(&db, recorded, &toc, true, true).map_err(target_err)?;
                c.notes.append(&mut notes);
                Ok(Restored {
                    bytes: rep.bytes,
                    toc_entries: toc.entries.len(),
                    table_data_entries: toc.table_data_oids().len(),
                    comparison: Some(c),
                    restore_error: None,
                })
            }
            Err(StreamError::PgRestore(msg)) => Ok(Restored {
                restore_error: Some(msg),
                ..Restored::default()
            }),
            Err(StreamError::Vault(e)) => Err(e),
        }
    })();
    if !opts.keep {
        drop_scratch(&admin, &name, version_num).map_err(target_err)?;
    }
    let Restored {
        bytes,
        toc_entries,
        table_data_entries,
        comparison,
        restore_error,
    } = outcome?;
    let passed = restore_error.is_none()
        && comparison
            .as_ref()
            .is_some_and(|c| c.differences.is_empty());
    Ok(DrillReport {
        snapshot: manifest.id.to_hex(),
        job: manifest.job.clone(),
        backup_created: manifest.created.clone(),
        database: recorded.database.clone().unwrap_or_default(),
        scratch_database: name,
        scratch_server_version: version,
        kept: opts.keep,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        toc_entries,
        table_data_entries,
        comparison,
        restore_error,
        passed,
        run_id,
    })
}

/// What the restore into the scratch database gave.
#[derive(Default)]
struct Restored {
    bytes: u64,
    toc_entries: usize,
    table_data_entries: usize,
    comparison: Option<Comparison>,
    restore_error: Option<String>,
}

/// Creates the scratch database like the source: same encoding, and its
/// locale when the scratch server has it (else the C locale, noted).
fn create_scratch(
    admin: &Db,
    name: &str,
    recorded: &RecordedFacts,
    notes: &mut Vec<String>,
) -> Result<()> {
    let enc = recorded.encoding.clone().unwrap_or_else(|| "UTF8".into());
    let base = format!(
        "CREATE DATABASE {} TEMPLATE template0 ENCODING {}",
        quote_ident(name),
        super::conninfo::quote(&enc)
    );
    let with_locale = match (&recorded.collate, &recorded.ctype) {
        (Some(c), Some(t)) => Some(format!(
            "{base} LC_COLLATE {} LC_CTYPE {}",
            super::conninfo::quote(c),
            super::conninfo::quote(t)
        )),
        _ => None,
    };
    let exec = |sql: &str| admin.run(admin.client().batch_execute(sql));
    if let Some(sql) = with_locale {
        match exec(&sql) {
            Ok(()) => return Ok(()),
            Err(e) => notes.push(format!(
                "the scratch database uses the C locale: the source's ({}) is not usable there ({})",
                recorded.collate.as_deref().unwrap_or_default(),
                db_error(&e)
            )),
        }
    }
    exec(&format!("{base} LC_COLLATE 'C' LC_CTYPE 'C'")).map_err(|e| {
        Error::Config(format!(
            "cannot create the scratch database {name}: {}",
            db_error(&e)
        ))
    })
}

fn drop_scratch(admin: &Db, name: &str, version_num: i32) -> std::result::Result<(), PgError> {
    let force = if version_num >= 130000 {
        " WITH (FORCE)"
    } else {
        ""
    };
    admin
        .run(admin.client().batch_execute(&format!(
            "DROP DATABASE IF EXISTS {}{force}",
            quote_ident(name)
        )))
        .map_err(|e| PgError::Query {
            what: format!("dropping the scratch database {name}"),
            detail: db_error(&e),
        })
}
