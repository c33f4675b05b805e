//! CLI handlers for PostgreSQL: `backup pg`, `restore --dbname`,
//! `verify --restore-test` (docs/postgres.md).

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use coffer::commands;
use coffer::pg::drill::{DrillOptions, DrillReport};
use coffer::pg::dump::{DumpOptions, DumpSummary, PgDumpSource, Selection};
use coffer::pg::restore::{PgRestoreReport, RestoreOptions};
use coffer::pg::{self, globals, ConnInfo, MemorySource};
use coffer::pipeline::backup::{BackupReport, BackupRequest};
use coffer::Vault;
use serde::Serialize;
use vault_format::manifest::Manifest;

use super::output::{self, bytes, note, TermProgress, Verbosity};

/// `coffer backup pg`
#[derive(Debug, Args)]
pub struct PgBackupArgs {
    /// libpq conninfo or URL of the database to dump (PG* variables and
    /// ~/.pgpass apply). A password in it is handed to pg_dump in
    /// PGPASSWORD, never on its command line.
    #[arg(long, value_name = "CONNINFO")]
    pub dbname: Option<String>,
    /// Dump only the schema (pg_dump --schema-only).
    #[arg(long, conflicts_with = "data_only")]
    pub schema_only: bool,
    /// Dump only the data (pg_dump --data-only).
    #[arg(long)]
    pub data_only: bool,
    /// Dump only matching tables (pg_dump --table; repeatable).
    #[arg(long = "table", short = 't', value_name = "PATTERN")]
    pub tables: Vec<String>,
    /// Do not dump matching tables (pg_dump --exclude-table; repeatable).
    #[arg(long = "exclude-table", short = 'T', value_name = "PATTERN")]
    pub exclude_tables: Vec<String>,
    /// Dump only matching schemas (pg_dump --schema; repeatable).
    #[arg(long = "schema", short = 'n', value_name = "PATTERN")]
    pub schemas: Vec<String>,
    /// Do not back up the cluster globals (roles, tablespaces) beside the dump.
    #[arg(long)]
    pub no_globals: bool,
}

/// `coffer restore --dbname ...`
#[derive(Debug, Args)]
pub struct PgRestoreArgs {
    /// Restore a pg_dump snapshot into this database (conninfo or URL) with
    /// pg_restore and compare it with the facts recorded at backup; a
    /// globals snapshot is replayed with psql. With --create: the database
    /// to connect to first (e.g. postgres).
    #[arg(long, value_name = "CONNINFO", conflicts_with = "to")]
    pub dbname: Option<String>,
    /// Create the dumped database (its recorded name) and restore into it.
    #[arg(long, requires = "dbname")]
    pub create: bool,
    /// Drop the dump's objects before recreating them (--clean --if-exists).
    #[arg(long, requires = "dbname")]
    pub clean: bool,
    /// Restore only this table (pg_restore --table; repeatable).
    #[arg(long = "table", value_name = "NAME", requires = "dbname")]
    pub tables: Vec<String>,
    /// Restore only this schema (pg_restore --schema; repeatable).
    #[arg(long = "schema", value_name = "NAME", requires = "dbname")]
    pub schemas: Vec<String>,
    /// Parallel pg_restore jobs; above 1 the archive is first written to a
    /// private temporary file (in $TMPDIR), since pg_restore needs to seek.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "dbname")]
    pub jobs: u32,
    /// Do not restore ownership (pg_restore --no-owner).
    #[arg(long, requires = "dbname")]
    pub no_owner: bool,
    /// Do not restore grants (pg_restore --no-privileges).
    #[arg(long, requires = "dbname")]
    pub no_privileges: bool,
}

/// `coffer verify --restore-test ...`
#[derive(Debug, Args)]
pub struct PgDrillArgs {
    /// Restore this pg_dump snapshot (id, prefix or `latest`) into a scratch
    /// database and compare it with the facts recorded at backup time.
    #[arg(long, value_name = "SNAPSHOT", conflicts_with = "read_data")]
    pub restore_test: Option<String>,
    /// The scratch server, as conninfo or URL; its dbname (default
    /// postgres) is where the scratch database is created from [default:
    /// the PG* environment].
    #[arg(long, value_name = "CONNINFO", requires = "restore_test")]
    pub scratch: Option<String>,
    /// With `latest`: the newest snapshot of this job.
    #[arg(long, requires = "restore_test")]
    pub job: Option<String>,
    /// Keep the scratch database afterwards (to inspect a failed drill).
    #[arg(long, requires = "restore_test")]
    pub keep_scratch: bool,
}

fn conninfo(s: Option<&str>) -> Result<ConnInfo> {
    ConnInfo::parse(s.unwrap_or("")).map_err(|e| coffer::Error::from(e).into())
}

/// `--json` of `coffer backup pg`: the dump's backup report plus what the
/// dump recorded and the globals snapshot.
#[derive(Serialize)]
struct PgBackupJson<'a> {
    #[serde(flatten)]
    dump: &'a BackupReport,
    #[serde(flatten)]
    summary: Option<&'a DumpSummary>,
    globals: Option<&'a BackupReport>,
    role_passwords: Option<bool>,
}

/// Error::Output's message already holds its source: printed through
/// anyhow's chain (main.rs) it would say everything twice, so it is
/// printed here, once, with its status.
fn fail(e: coffer::Error) -> Result<i32> {
    Err(e.into())
}

fn record_failure(vault: &Vault, job: &str, e: &coffer::Error) -> Result<()> {
    let c = vault.catalog()?;
    let run = c.start_run("backup", Some(job))?;
    c.finish_run(
        run,
        coffer::catalog::Outcome::Failed,
        0,
        Some(&e.to_string()),
        None,
        None,
    )?;
    Ok(())
}

pub fn backup(
    vault: &Vault,
    v: Verbosity,
    job: &str,
    tags: &[String],
    a: &PgBackupArgs,
) -> Result<i32> {
    let conn = conninfo(a.dbname.as_deref())?;
    let opts = DumpOptions {
        conn: conn.clone(),
        selection: Selection {
            schema_only: a.schema_only,
            data_only: a.data_only,
            tables: a.tables.clone(),
            exclude_tables: a.exclude_tables.clone(),
            schemas: a.schemas.clone(),
        },
    };
    // Failures before the pipeline runs are recorded here; the pipeline
    // records its own.
    let mut source = match PgDumpSource::start(&opts) {
        Ok(s) => s,
        Err(e) => {
            record_failure(vault, job, &e)?;
            return Err(e.into());
        }
    };
    let server = source.server().clone();
    let captured = if a.no_globals {
        None
    } else {
        match globals::dump(&conn, &server.database, server.superuser) {
            Ok(g) => Some(g),
            Err(e) => {
                drop(source);
                record_failure(vault, job, &e)?;
                return Err(e.into());
            }
        }
    };
    let globals_job = format!("{job}-globals");
    let mut facts = serde_json::Map::new();
    if captured.is_some() {
        facts.insert("globals_job".into(), globals_job.clone().into());
    }
    let progress = TermProgress::new(v, "backing up");
    let req = BackupRequest {
        job: job.to_string(),
        tags: tags.to_vec(),
        facts,
    };
    let r = commands::backup::backup(vault, &mut source, &req, &progress);
    let summary = source.summary().cloned();
    drop(source);
    let rep = match r {
        Ok(rep) => rep,
        Err(e) => {
            progress.finish();
            return Err(e.into());
        }
    };
    let role_passwords = captured.as_ref().map(|g| g.role_passwords);
    let globals_rep = match captured {
        None => None,
        Some(g) => {
            let mut gf = globals::facts(&g, &server, &conn.tool_conninfo());
            gf.insert("dump_snapshot".into(), rep.id.to_hex().into());
            gf.insert("dump_job".into(), job.into());
            let mut src = MemorySource::new(pg::KIND_GLOBALS, g.sql, gf);
            let greq = BackupRequest {
                job: globals_job.clone(),
                tags: tags.to_vec(),
                facts: Default::default(),
            };
            let r = commands::backup::backup(vault, &mut src, &greq, &progress);
            if r.is_err() {
                progress.finish();
            }
            Some(r.with_context(|| {
                format!(
                    "snapshot {} of database {:?} was committed, but backing up the cluster globals (job {globals_job}) failed",
                    rep.id, server.database
                )
            })?)
        }
    };
    progress.finish();

    if v.json {
        output::json(&PgBackupJson {
            dump: &rep,
            summary: summary.as_ref(),
            globals: globals_rep.as_ref(),
            role_passwords,
        });
    } else {
        output::out(&rep.id.to_hex());
        if let Some(s) = &summary {
            for m in &s.pg_dump_messages {
                eprintln!("coffer: pg_dump said: {m}");
            }
            note(
                v,
                &format!(
                    "coffer: snapshot {} of job {} (pg_dump): database {:?}, {} tables ({} rows, {} with checksums), {} large objects; read {}, stored {} new ({} new chunks, {} reused) in {:.1}s",
                    rep.id,
                    rep.job,
                    s.database,
                    s.tables,
                    s.rows,
                    s.checksummed_tables,
                    s.large_objects,
                    bytes(rep.raw_size),
                    bytes(rep.stored_size),
                    rep.new_chunks,
                    rep.reused_chunks,
                    rep.seconds
                ),
            );
        }
        if let Some(g) = &globals_rep {
            note(
                v,
                &format!(
                    "coffer: snapshot {} of job {} (pg_globals): roles and tablespaces, {}",
                    g.id,
                    g.job,
                    bytes(g.raw_size)
                ),
            );
        }
        if role_passwords == Some(false) {
            note(
                v,
                &format!(
                    "coffer: note: role {:?} is not a superuser, so the globals were dumped with --no-role-passwords: restored roles will have no passwords",
                    server.current_user
                ),
            );
        }
    }
    let mut pending = false;
    for r in std::iter::once(&rep).chain(globals_rep.as_ref()) {
        for o in r.offsite.iter().filter(|o| !o.complete) {
            pending = true;
            eprintln!(
                "coffer: snapshot {} is committed locally, but its offsite copy in tier {} is PENDING: {}",
                r.id,
                o.tier,
                o.pending_reason.as_deref().unwrap_or("unknown")
            );
        }
    }
    Ok(if pending {
        coffer::error::exit::OFFSITE_PENDING
    } else {
        0
    })
}

pub fn restore(
    vault: &Vault,
    v: Verbosity,
    m: &Manifest,
    identity: Option<&Path>,
    tier: Option<&str>,
    a: &PgRestoreArgs,
) -> Result<i32> {
    let opts = RestoreOptions {
        target: conninfo(a.dbname.as_deref())?,
        create: a.create,
        clean: a.clean,
        tables: a.tables.clone(),
        schemas: a.schemas.clone(),
        jobs: a.jobs.max(1),
        no_owner: a.no_owner,
        no_privileges: a.no_privileges,
    };
    let ctx = commands::read_context_from(vault, identity, "restore", tier)?;
    let progress = TermProgress::new(v, "restoring");
    let r = pg::restore::restore(vault, &ctx, m, &opts, &progress);
    progress.finish();
    let rep = match r {
        Ok(rep) => rep,
        Err(e) => return fail(e),
    };
    if v.json {
        output::json(&rep);
    } else {
        print_restore(v, &rep);
    }
    Ok(if rep.differences().is_empty() {
        0
    } else {
        coffer::error::exit::INTEGRITY
    })
}

fn print_restore(v: Verbosity, rep: &PgRestoreReport) {
    for n in &rep.notes {
        note(v, &format!("coffer: note: {n}"));
    }
    if let Some(g) = &rep.globals {
        note(
            v,
            &format!(
                "coffer: replayed globals snapshot {} into the server of database {:?} ({}; {} statement(s) skipped because the object already existed)",
                rep.id,
                rep.database,
                bytes(rep.bytes),
                g.already_existed.len()
            ),
        );
        return;
    }
    let Some(c) = &rep.comparison else {
        note(
            v,
            &format!(
                "coffer: restored snapshot {} into database {:?} ({}) in {:.1}s",
                rep.id,
                rep.database,
                bytes(rep.bytes),
                rep.seconds
            ),
        );
        return;
    };
    for n in &c.notes {
        note(v, &format!("coffer: note: {n}"));
    }
    for d in &c.differences {
        eprintln!("coffer: DIFFERENCE: {d}");
    }
    let verdict = if c.differences.is_empty() {
        "all match the backup".to_string()
    } else {
        format!("{} DIFFERENCE(S) from the backup", c.differences.len())
    };
    let line = format!(
        "coffer: restored snapshot {} into database {:?} ({}) in {:.1}s: {} tables compared ({} rows, {} checksums): {verdict}",
        rep.id,
        rep.database,
        bytes(rep.bytes),
        rep.seconds,
        c.tables_compared,
        c.rows_compared,
        c.checksums_compared
    );
    if c.differences.is_empty() {
        note(v, &line);
    } else {
        eprintln!("{line}");
    }
}

pub fn drill(vault: &Vault, v: Verbosity, identity: Option<&Path>, a: &PgDrillArgs) -> Result<i32> {
    let query = a
        .restore_test
        .as_deref()
        .expect("run.rs routes here only with --restore-test");
    let manifest = commands::restore::find(vault, query, a.job.as_deref())?;
    let opts = DrillOptions {
        scratch: conninfo(a.scratch.as_deref())?,
        keep: a.keep_scratch,
    };
    let ctx = commands::read_context(vault, identity, "verify --restore-test")?;
    let progress = TermProgress::new(v, "restore drill");
    let r = pg::drill::drill(vault, &ctx, &manifest, &opts, &progress);
    progress.finish();
    let rep = match r {
        Ok(rep) => rep,
        Err(e) => return fail(e),
    };
    if v.json {
        output::json(&rep);
    } else {
        print_drill(v, &rep);
    }
    Ok(if rep.passed {
        0
    } else {
        coffer::error::exit::INTEGRITY
    })
}

fn print_drill(v: Verbosity, rep: &DrillReport) {
    let kept = if rep.kept {
        format!(" (kept: database {:?})", rep.scratch_database)
    } else {
        String::new()
    };
    if let Some(e) = &rep.restore_error {
        eprintln!(
            "coffer: restore-test FAILED: snapshot {} of database {:?} did not restore into scratch database {:?}{kept}: {e}",
            rep.snapshot, rep.database, rep.scratch_database
        );
        return;
    }
    let Some(c) = &rep.comparison else { return };
    for n in &c.notes {
        note(v, &format!("coffer: note: {n}"));
    }
    for d in &c.differences {
        eprintln!("coffer: DIFFERENCE: {d}");
    }
    let line = format!(
        "coffer: restore-test of snapshot {} (database {:?}, backed up {}): restored {} into scratch database {:?} on PostgreSQL {}{kept}, {} TOC entries, {} tables compared ({} rows, {} checksums{}) in {:.1}s: {}",
        rep.snapshot,
        rep.database,
        rep.backup_created,
        bytes(rep.bytes),
        rep.scratch_database,
        rep.scratch_server_version,
        rep.toc_entries,
        c.tables_compared,
        c.rows_compared,
        c.checksums_compared,
        c.large_objects
            .map(|(e, _)| format!(", {e} large objects"))
            .unwrap_or_default(),
        rep.seconds,
        if rep.passed {
            "PASSED".to_string()
        } else {
            format!("FAILED with {} difference(s)", c.differences.len())
        }
    );
    if rep.passed {
        note(v, &line);
    } else {
        eprintln!("{line}");
    }
}
