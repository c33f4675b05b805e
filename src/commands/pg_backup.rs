//! `coffer backup pg`: a database dumped over an exported snapshot, and its
//! cluster globals beside it as a companion snapshot; or (`--physical`) a
//! base backup of the whole cluster for point-in-time recovery.
//!
//! Two runs are recorded, one per snapshot: the dump's (which also covers
//! what fails before the pipeline starts: connecting, pg_dumpall) and the
//! globals'. The dump's manifest names the globals job (`globals_job`) and
//! the globals' names the dump's snapshot (`dump_snapshot`), so retention
//! can keep or forget the two together.

use serde::Serialize;

use super::backup::{backup_unrecorded, BackupReport};
use crate::catalog::{Outcome, RunKind, RunSummary};
use crate::error::{Error, Result};
use crate::pg::facts::ServerFacts;
use crate::pg::globals::{self, Globals};
use crate::pg::KIND_GLOBALS;
use crate::pipeline::backup::BackupRequest;
use crate::progress::Progress;
use crate::source::basebackup::{BaseBackupSource, BaseOptions};
use crate::source::pg_dump::{DumpOptions, DumpSummary, PgDumpSource};
use crate::source::MemorySource;
use crate::vault::Vault;

/// What to back up.
#[derive(Debug, Clone, Default)]
pub struct PgBackupOptions {
    /// The database and pg_dump's selection.
    pub dump: DumpOptions,
    /// Also back up the cluster globals (`pg_dumpall --globals-only`).
    pub globals: bool,
    /// Job name (the globals go to `<job>-globals`).
    pub job: String,
    /// Tags for both snapshots.
    pub tags: Vec<String>,
}

/// The `--json` output of `coffer backup pg`: the dump's backup report plus
/// what the dump recorded, and the globals snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct PgBackupReport {
    /// The dump's snapshot.
    #[serde(flatten)]
    pub dump: BackupReport,
    /// What the dump recorded.
    #[serde(flatten)]
    pub summary: Option<DumpSummary>,
    /// The globals' snapshot, unless `--no-globals`.
    pub globals: Option<BackupReport>,
    /// Whether the globals hold role passwords (only a superuser can read
    /// them); absent without globals.
    pub role_passwords: Option<bool>,
    /// The role coffer connected as.
    #[serde(skip)]
    pub current_user: String,
}

impl PgBackupReport {
    /// Both snapshots' reports.
    pub fn snapshots(&self) -> impl Iterator<Item = &BackupReport> {
        std::iter::once(&self.dump).chain(self.globals.as_ref())
    }
}

/// The dump's run: its report, and what the globals backup needs next.
struct DumpRun {
    report: BackupReport,
    summary: Option<DumpSummary>,
    server: ServerFacts,
    globals: Option<Globals>,
}

impl RunSummary for DumpRun {
    fn outcome(&self) -> Outcome {
        self.report.outcome()
    }
    fn bytes(&self) -> u64 {
        self.report.bytes()
    }
    fn snapshot(&self) -> Option<vault_format::SnapshotId> {
        self.report.snapshot()
    }
    fn details(&self) -> Option<serde_json::Value> {
        self.report.details()
    }
}

/// Backs up a database and (unless `opts.globals` is false) its globals.
///
/// # Errors
/// Connecting, pg_dump, pg_dumpall or the vault failed: nothing was
/// committed, except for [`Error::GlobalsAfterDump`], which says the dump's
/// snapshot was committed and the globals' was not.
pub fn backup_pg(
    vault: &Vault,
    opts: &PgBackupOptions,
    progress: &dyn Progress,
) -> Result<PgBackupReport> {
    let catalog = vault.catalog()?;
    let globals_job = format!("{}-globals", opts.job);
    let dump = catalog.record_run(RunKind::Backup, Some(&opts.job), None, |_| {
        let mut source = PgDumpSource::start(&opts.dump)?;
        let server = source.server().clone();
        let captured = if opts.globals {
            Some(globals::dump(
                &opts.dump.conn,
                &server.database,
                server.superuser,
            )?)
        } else {
            None
        };
        let mut facts = serde_json::Map::new();
        if captured.is_some() {
            facts.insert("globals_job".into(), globals_job.clone().into());
        }
        let req = BackupRequest {
            job: opts.job.clone(),
            tags: opts.tags.clone(),
            facts,
        };
        let report = backup_unrecorded(vault, &mut source, &req, progress)?;
        Ok::<_, Error>(DumpRun {
            report,
            summary: source.summary().cloned(),
            server,
            globals: captured,
        })
    })?;
    let role_passwords = dump.globals.as_ref().map(|g| g.role_passwords);
    let globals = match &dump.globals {
        None => None,
        Some(g) => Some(
            catalog
                .record_run(RunKind::Backup, Some(&globals_job), None, |_| {
                    let mut gf = globals::facts(g, &dump.server, &opts.dump.conn.tool_conninfo());
                    gf.insert("dump_snapshot".into(), dump.report.id.to_hex().into());
                    gf.insert("dump_job".into(), opts.job.clone().into());
                    let mut src = MemorySource::new(KIND_GLOBALS, g.sql.clone(), gf);
                    let req = BackupRequest {
                        job: globals_job.clone(),
                        tags: opts.tags.clone(),
                        facts: Default::default(),
                    };
                    backup_unrecorded(vault, &mut src, &req, progress)
                })
                .map_err(|e| Error::GlobalsAfterDump {
                    snapshot: dump.report.id.to_hex(),
                    database: dump.server.database.clone(),
                    job: globals_job.clone(),
                    cause: Box::new(e),
                })?,
        ),
    };
    Ok(PgBackupReport {
        current_user: dump.server.current_user.clone(),
        dump: dump.report,
        summary: dump.summary,
        globals,
        role_passwords,
    })
}

/// Takes a physical base backup (`pg_basebackup` streamed as tar) into
/// `job`; its WAL comes from `coffer wal push --job <job>`.
///
/// # Errors
/// As [`crate::source::basebackup::BaseBackupSource::start`] and the
/// pipeline; nothing is committed.
pub fn backup_physical(
    vault: &Vault,
    job: &str,
    tags: &[String],
    opts: &BaseOptions,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let catalog = vault.catalog()?;
    catalog.record_run(RunKind::Backup, Some(job), None, |_| {
        let mut source = BaseBackupSource::start(opts)?;
        let req = BackupRequest {
            job: job.to_string(),
            tags: tags.to_vec(),
            facts: Default::default(),
        };
        backup_unrecorded(vault, &mut source, &req, progress)
    })
}
