//! `coffer restore`: to a file, stdout, a tree, or (`--dbname`) a database.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use coffer::commands::pg_restore::{PgRestoreReport, RestoreOptions};
use coffer::commands::restore::{self, Target};
use coffer::commands::{self, pg_restore};
use coffer::pg::ConnInfo;
use coffer::pipeline::restore::RestoreReport;
use coffer::Vault;
use serde::Serialize;
use vault_format::manifest::Manifest;

use super::output::{bytes, note, render, with_progress, Render, Verbosity};
use super::Ctx;

/// `coffer restore`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RestoreArgs {
    /// Snapshot id, a unique prefix of it, or `latest`.
    #[arg(required = true)]
    pub snapshot: Option<String>,
    #[command(subcommand)]
    pub command: Option<RestoreCommand>,
    /// With `latest`: the newest snapshot of this job.
    #[arg(long)]
    pub job: Option<String>,
    /// Read only from this tier (`local` or `s3`) [default: local first,
    /// falling back per pack to the next tier].
    #[arg(long, value_name = "TIER")]
    pub tier: Option<String>,
    /// Where to: a new file, a new or empty directory (directory
    /// snapshots), or `-` for stdout [default: stdout when it is not a terminal].
    #[arg(long, value_name = "PATH|-")]
    pub to: Option<String>,
    /// The age identity file [default: $COFFER_IDENTITY, else the one init wrote].
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Restore a pg_dump snapshot into a database instead (see docs/postgres.md).
    #[command(flatten)]
    pub pg: PgRestoreArgs,
}

/// `coffer restore pitr`.
#[derive(Debug, clap::Subcommand)]
pub enum RestoreCommand {
    /// Point-in-time recovery: restore the newest complete physical base
    /// backup before the target into a new data directory and configure
    /// PostgreSQL to replay the archived WAL up to the target
    /// (docs/postgres.md, "Point-in-time recovery").
    Pitr(Box<super::pitr::PitrArgs>),
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

pub fn run(ctx: &Ctx, a: RestoreArgs) -> Result<i32> {
    if let Some(RestoreCommand::Pitr(p)) = a.command {
        return super::pitr::run(ctx, *p);
    }
    let vault = ctx.vault()?;
    let Some(snapshot) = a.snapshot.as_deref() else {
        bail!("give a SNAPSHOT (an id, a prefix or `latest`), or `restore pitr`");
    };
    let manifest = restore::find(&vault, snapshot, a.job.as_deref())?;
    if a.pg.dbname.is_some() {
        return to_database(ctx, &vault, &manifest, &a);
    }
    let target = match a.to.as_deref() {
        Some("-") => Target::Stdout,
        Some(p) => Target::Path(PathBuf::from(p)),
        None if std::io::stdout().is_terminal() => bail!(
            "refusing to write snapshot data to a terminal; pass --to PATH (or --to - to force stdout)"
        ),
        None => Target::Stdout,
    };
    if ctx.v.json && matches!(target, Target::Stdout) {
        bail!("--json cannot be combined with restoring to stdout; pass --to PATH");
    }
    let rctx =
        commands::read_context_from(&vault, a.identity.as_deref(), "restore", a.tier.as_deref())?;
    let rep = with_progress(ctx.v, "restoring", |p| {
        restore::restore(&vault, &rctx, &manifest, &target, p)
    })?;
    Ok(render(
        ctx.v,
        &Restored {
            rep: &rep,
            to: match &target {
                Target::Path(p) | Target::DataDir(p, _) => Some(p),
                Target::Stdout => None,
            },
        },
    ))
}

/// A restore's report, and where it went (for the text).
#[derive(Serialize)]
struct Restored<'a> {
    #[serde(flatten)]
    rep: &'a RestoreReport,
    #[serde(skip)]
    to: Option<&'a PathBuf>,
}

impl Render for Restored<'_> {
    fn text(&self, v: Verbosity) {
        if let Some(p) = self.to {
            note(
                v,
                &format!(
                    "coffer: restored snapshot {} ({}, {} chunks verified) to {} in {:.1}s",
                    self.rep.id,
                    bytes(self.rep.bytes),
                    self.rep.chunks,
                    p.display(),
                    self.rep.seconds
                ),
            );
        }
    }
}

fn to_database(ctx: &Ctx, vault: &Vault, m: &Manifest, a: &RestoreArgs) -> Result<i32> {
    let pa = &a.pg;
    let opts = RestoreOptions {
        target: ConnInfo::parse(pa.dbname.as_deref().unwrap_or("")).map_err(coffer::Error::from)?,
        create: pa.create,
        clean: pa.clean,
        tables: pa.tables.clone(),
        schemas: pa.schemas.clone(),
        jobs: pa.jobs.max(1),
        no_owner: pa.no_owner,
        no_privileges: pa.no_privileges,
    };
    let rctx =
        commands::read_context_from(vault, a.identity.as_deref(), "restore", a.tier.as_deref())?;
    let rep = with_progress(ctx.v, "restoring", |p| {
        pg_restore::restore(vault, &rctx, m, &opts, p)
    })?;
    Ok(render(ctx.v, &rep))
}

impl Render for PgRestoreReport {
    fn text(&self, v: Verbosity) {
        for n in &self.notes {
            note(v, &format!("coffer: note: {n}"));
        }
        if let Some(g) = &self.globals {
            note(
                v,
                &format!(
                    "coffer: replayed globals snapshot {} into the server of database {:?} ({}; {} statement(s) skipped because the object already existed)",
                    self.id,
                    self.database,
                    bytes(self.bytes),
                    g.already_existed.len()
                ),
            );
            return;
        }
        let Some(c) = &self.comparison else {
            note(
                v,
                &format!(
                    "coffer: restored snapshot {} into database {:?} ({}) in {:.1}s",
                    self.id,
                    self.database,
                    bytes(self.bytes),
                    self.seconds
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
            self.id,
            self.database,
            bytes(self.bytes),
            self.seconds,
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

    fn status(&self) -> i32 {
        if self.differences().is_empty() {
            0
        } else {
            coffer::error::exit::INTEGRITY
        }
    }
}
