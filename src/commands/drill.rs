//! Restore drills (`coffer verify --restore-test SNAPSHOT`): restore a
//! pg_dump snapshot into a scratch database that coffer creates and drops
//! ([`crate::pg::scratch`]), list the archive with `pg_restore --list` from
//! the same stream, compare the restored tables with the recorded facts,
//! and record the drill in the catalog's runs table (kind `restore-test`):
//! that row is the audit.

use std::time::Instant;

use serde::Serialize;
use vault_format::manifest::Manifest;
use vault_format::SnapshotId;

use super::pg_restore::{into_pg_restore, target_err};
use crate::catalog::{Outcome, RunKind, RunSummary};
use crate::error::{Error, Result};
use crate::pg::compare::{compare, Comparison};
use crate::pg::conninfo::ConnInfo;
use crate::pg::pg_restore::StreamError;
use crate::pg::recorded::RecordedFacts;
use crate::pg::scratch::ScratchServer;
use crate::pg::{Db, KIND_DUMP};
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
    catalog.record_run(
        RunKind::RestoreTest,
        Some(&manifest.job),
        Some(&manifest.id),
        |run| run_drill(ctx, manifest, &recorded, opts, progress, run),
    )
}

impl RunSummary for DrillReport {
    fn outcome(&self) -> Outcome {
        if self.passed {
            Outcome::Ok
        } else {
            Outcome::Partial
        }
    }
    fn bytes(&self) -> u64 {
        self.bytes
    }
    fn problem(&self) -> Option<String> {
        self.restore_error.clone()
    }
    fn details(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self).ok()
    }
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
    let server = ScratchServer::connect(&opts.scratch)?;
    let name = format!(
        "coffer_drill_{}_{}",
        &manifest.id.to_hex()[..8],
        &SnapshotId::random().to_hex()[..8]
    );
    let mut notes = Vec::new();
    server.create(&name, recorded, &mut notes)?;
    let target = server.conninfo(&name);
    // Drill the data, not the roles: a scratch server need not have them.
    let args: Vec<String> = ["--no-owner", "--no-privileges", "--single-transaction"]
        .map(String::from)
        .to_vec();
    let outcome = (|| -> Result<Restored> {
        match into_pg_restore(ctx, manifest, &target, &args, &[], 1, progress) {
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
        server.drop_database(&name).map_err(target_err)?;
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
        scratch_server_version: server.version.clone(),
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
