//! `coffer backup PATH|-` and `coffer backup pg`.

use std::path::Path;

use anyhow::Result;
use clap::{Args, Subcommand};
use coffer::commands::backup::{self, BackupReport};
use coffer::commands::pg_backup::{self, PgBackupOptions, PgBackupReport};
use coffer::pg::recorded::Selection;
use coffer::pg::ConnInfo;
use coffer::pipeline::backup::BackupRequest;
use coffer::source::basebackup::BaseOptions;
use coffer::source::pg_dump::DumpOptions;
use serde::Serialize;

use super::output::{bytes, note, offsite_pending, out, render, with_progress, Render, Verbosity};
use super::Ctx;

/// `coffer backup`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BackupArgs {
    /// Job name, used to group snapshots and select `latest`.
    #[arg(long, default_value = "default", global = true)]
    pub job: String,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "T", global = true)]
    pub tags: Vec<String>,
    /// A file, `-` for stdin, or a directory (archived as tar).
    #[arg(
        value_name = "PATH|-",
        required_unless_present = "exec",
        conflicts_with = "exec"
    )]
    pub path: Option<String>,
    /// Back up the standard output of the command given after `--`
    /// (`coffer backup --exec -- CMD ARGS…`), committed only if it exits 0.
    /// Prefer it to a pipe: a producer that dies half way through a pipe
    /// looks like a finished one.
    #[arg(long, requires = "command")]
    pub exec: bool,
    /// With a directory: leave out entries matching PATTERN (repeatable;
    /// `node_modules` matches that name at any depth, `app/cache/*` a path
    /// from the directory; glob syntax).
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// The command for --exec.
    #[arg(last = true, value_name = "CMD", requires = "exec")]
    pub command: Vec<String>,
    #[command(subcommand)]
    pub source: Option<BackupSource>,
}

/// Sources with their own options.
#[derive(Debug, Subcommand)]
pub enum BackupSource {
    /// Dump a PostgreSQL database (pg_dump -Fc -Z0 over an exported
    /// snapshot) and its cluster globals into the vault.
    Pg(PgBackupArgs),
}

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
    /// A physical base backup of the whole cluster (pg_basebackup, tar
    /// format, streamed) for point-in-time recovery, instead of a dump.
    /// Needs archive_command = 'coffer wal push --job <this job> %p' and a
    /// role with the REPLICATION privilege.
    #[arg(long, conflicts_with_all = ["schema_only", "data_only", "tables", "exclude_tables", "schemas", "no_globals"])]
    pub physical: bool,
    /// With --physical: `fast` (checkpoint now) or `spread` (the server's
    /// paced checkpoint; gentler, slower to start).
    #[arg(long, default_value = "fast", value_parser = ["fast", "spread"], requires = "physical")]
    pub checkpoint: String,
}

pub fn run(ctx: &Ctx, a: BackupArgs) -> Result<i32> {
    super::init::quick_start(ctx)?;
    let vault = ctx.vault()?;
    if let Some(BackupSource::Pg(pg)) = &a.source {
        return backup_pg(ctx, &vault, &a.job, &a.tags, pg);
    }
    let mut source: Box<dyn coffer::source::Source> = match a.path.as_deref() {
        _ if a.exec => Box::new(coffer::source::CommandSource::start(&a.command)?),
        Some(path) if !a.exclude.is_empty() => {
            if !Path::new(path).is_dir() {
                return Err(coffer::Error::Config(format!(
                    "--exclude applies to a directory, and {path} is not one"
                ))
                .into());
            }
            Box::new(coffer::source::TarSource::start_excluding(
                Path::new(path),
                coffer::source::tar::Excludes::new(&a.exclude)?,
            )?)
        }
        Some(path) => coffer::source::open(path)?,
        None => {
            return Err(coffer::Error::Config(
                "nothing to back up: give a PATH, `-` for stdin, or --exec -- CMD".into(),
            )
            .into())
        }
    };
    let req = BackupRequest {
        job: a.job,
        tags: a.tags,
        facts: Default::default(),
    };
    let rep = with_progress(ctx.v, "backing up", |p| {
        backup::backup(&vault, source.as_mut(), &req, p)
    })?;
    Ok(render(
        ctx.v,
        &Stream {
            rep: &rep,
            vault: vault.local.root(),
        },
    ))
}

/// A stream's backup report, and where the vault is (for the text).
#[derive(Serialize)]
struct Stream<'a> {
    #[serde(flatten)]
    rep: &'a BackupReport,
    #[serde(skip)]
    vault: &'a Path,
}

impl Render for Stream<'_> {
    fn text(&self, v: Verbosity) {
        let rep = self.rep;
        out(&rep.id.to_hex());
        note(
            v,
            &format!(
                "coffer: snapshot {} of job {} ({}): read {}, stored {} new ({} new chunks, {} reused) in {} pack(s), {:.1}s, vault {}",
                rep.id,
                rep.job,
                rep.kind,
                bytes(rep.raw_size),
                bytes(rep.stored_size),
                rep.new_chunks,
                rep.reused_chunks,
                rep.packs,
                rep.seconds,
                self.vault.display()
            ),
        );
    }

    fn status(&self) -> i32 {
        offsite_pending([self.rep])
    }
}

fn backup_pg(
    ctx: &Ctx,
    vault: &coffer::Vault,
    job: &str,
    tags: &[String],
    a: &PgBackupArgs,
) -> Result<i32> {
    let conn = ConnInfo::parse(a.dbname.as_deref().unwrap_or("")).map_err(coffer::Error::from)?;
    if a.physical {
        let opts = BaseOptions {
            conn,
            checkpoint: a.checkpoint.clone(),
            label: format!("coffer {job}"),
        };
        let rep = with_progress(ctx.v, "backing up", |p| {
            pg_backup::backup_physical(vault, job, tags, &opts, p)
        })?;
        return Ok(render(
            ctx.v,
            &Stream {
                rep: &rep,
                vault: vault.local.root(),
            },
        ));
    }
    let opts = PgBackupOptions {
        dump: DumpOptions {
            conn,
            selection: Selection {
                schema_only: a.schema_only,
                data_only: a.data_only,
                tables: a.tables.clone(),
                exclude_tables: a.exclude_tables.clone(),
                schemas: a.schemas.clone(),
            },
        },
        globals: !a.no_globals,
        job: job.to_string(),
        tags: tags.to_vec(),
    };
    let rep = with_progress(ctx.v, "backing up", |p| {
        pg_backup::backup_pg(vault, &opts, p)
    })?;
    Ok(render(ctx.v, &rep))
}

impl Render for PgBackupReport {
    fn text(&self, v: Verbosity) {
        let rep = &self.dump;
        out(&rep.id.to_hex());
        if let Some(s) = &self.summary {
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
        if let Some(g) = &self.globals {
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
        if self.role_passwords == Some(false) {
            note(
                v,
                &format!(
                    "coffer: note: role {:?} is not a superuser, so the globals were dumped with --no-role-passwords: restored roles will have no passwords",
                    self.current_user
                ),
            );
        }
    }

    fn status(&self) -> i32 {
        offsite_pending(self.snapshots())
    }
}
