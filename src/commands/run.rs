//! `coffer run [JOB…]`: the jobs of the settings (`[[jobs]]`, or the one
//! the seed's variables describe), once, for cron and systemd timers.
//!
//! Named jobs run now; with no names, every job whose schedule says it is
//! due ([`Schedule::due`], judged against its newest backup that committed
//! a snapshot, so a failed night is retried by the next run). A job runs
//! at most once at a time, across processes: it holds an advisory lock
//! beside the catalog, and a run that finds it held skips the job and says
//! so. After a backup that committed, the job's retention policy (its own,
//! `[retention]`, or `BACKUP_RETENTION`) is applied with `forget`;
//! `prune` stays a separate, vault-wide step (docs/operations.md).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::forget::{forget, ForgetOptions};
use super::pg_backup::{backup_pg, backup_physical, PgBackupOptions};
use crate::catalog::RunKind;
use crate::error::{Error, Result};
use crate::pg::recorded::Selection;
use crate::pg::ConnInfo;
use crate::pipeline::backup::{BackupReport, BackupRequest};
use crate::progress::Progress;
use crate::source::basebackup::BaseOptions;
use crate::source::pg_dump::DumpOptions;
use crate::source::tar::{Excludes, TarSource};
use crate::source::{CommandSource, FileSource, Source};
use crate::vault::jobs::{JobSettings, JobSource};
use crate::vault::Vault;

/// What happened to one job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRun {
    /// The job.
    pub job: String,
    /// Whether a backup was attempted.
    pub ran: bool,
    /// Why it ran or not: `named`, `due`, `not due`, `running elsewhere`.
    pub reason: String,
    /// `ok`, `partial` (an offsite copy is pending) or `failed`; `None`
    /// when it did not run.
    pub outcome: Option<String>,
    /// The snapshot it committed.
    pub snapshot: Option<String>,
    /// Why it failed, or what is pending.
    pub error: Option<String>,
    /// Snapshots its retention policy forgot afterwards.
    pub forgotten: usize,
    /// Wall time of the backup.
    pub seconds: f64,
    /// Alerts that could not be delivered (they never fail the job).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alert_problems: Vec<String>,
}

/// What `coffer run` did (`--json`: `jobs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// One entry per job considered, in settings order.
    pub jobs: Vec<JobRun>,
}

impl RunReport {
    /// Any job failed.
    pub fn failed(&self) -> bool {
        self.jobs
            .iter()
            .any(|j| j.outcome.as_deref() == Some("failed"))
    }

    /// Any committed job's offsite copy is pending.
    pub fn partial(&self) -> bool {
        self.jobs
            .iter()
            .any(|j| j.outcome.as_deref() == Some("partial"))
    }
}

/// Runs the named jobs, or every due one when `names` is empty.
///
/// # Errors
/// [`Error::Config`] for a name the settings do not define, or settings
/// that define no job; a job's own failure is in its [`JobRun`], so the
/// others still run.
pub fn run(vault: &Vault, names: &[String], progress: &dyn Progress) -> Result<RunReport> {
    let jobs = vault.settings.effective_jobs()?;
    if jobs.is_empty() {
        return Err(Error::Config(
            "no jobs are configured: add [[jobs]] entries to the settings (docs/operations.md), \
             or set PGHOST/PGDATABASE for the seed's nightly dump"
                .into(),
        ));
    }
    for n in names {
        if !jobs.iter().any(|j| &j.name == n) {
            let known: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
            return Err(Error::Config(format!(
                "no job {n:?} in the settings (they define: {}); see `coffer run --help`",
                known.join(", ")
            )));
        }
    }
    let tz = vault.settings.time_zone()?;
    let now = jiff::Timestamp::try_from(crate::util::clock())
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_zoned(tz.clone());
    let catalog = vault.catalog()?;
    let (notifier, warning) = crate::alerts::Notifier::new(&vault.settings.alerts);
    if let Some(w) = warning {
        progress.event(&crate::progress::Event::Warning(w));
    }
    let mut out = Vec::new();
    for job in &jobs {
        let named = names.contains(&job.name);
        if !names.is_empty() && !named {
            continue;
        }
        let mut entry = JobRun {
            job: job.name.clone(),
            ran: false,
            reason: String::new(),
            outcome: None,
            snapshot: None,
            error: None,
            forgotten: 0,
            seconds: 0.0,
            alert_problems: Vec::new(),
        };
        let Some(source) = &job.source else {
            if named {
                return Err(Error::Config(format!(
                    "job {:?} has nothing to back up: give it one of pg-dump, pg-basebackup, \
                     directory, file or command in [[jobs]]",
                    job.name
                )));
            }
            continue;
        };
        if !named {
            let last = last_run(&catalog, &job.name, source)?
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.to_zoned(tz.clone()));
            match &job.schedule {
                Some(s) if s.due(last.as_ref(), &now) => {}
                // No schedule: only when named.
                _ => {
                    entry.reason = "not due".into();
                    out.push(entry);
                    continue;
                }
            }
        }
        entry.reason = if named { "named" } else { "due" }.into();
        let _lock = match job_lock(vault, &job.name) {
            Ok(Some(l)) => l,
            Ok(None) => {
                entry.reason = "running elsewhere".into();
                out.push(entry);
                continue;
            }
            Err(e) => {
                entry.outcome = Some("failed".into());
                entry.error = Some(e.to_string());
                out.push(entry);
                continue;
            }
        };
        // Judged again under the lock: a run that held it may have just
        // made the backup this one was about to make.
        if !named {
            let last = last_run(&catalog, &job.name, source)?
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.to_zoned(tz.clone()));
            if !job
                .schedule
                .as_ref()
                .is_some_and(|s| s.due(last.as_ref(), &now))
            {
                entry.reason = "not due".into();
                out.push(entry);
                continue;
            }
        }
        entry.ran = true;
        entry.alert_problems = notifier.started(job.ping.as_deref());
        let started = std::time::Instant::now();
        let result = match source {
            JobSource::Drill { of, scratch } => {
                drill_job(vault, of, scratch, progress, &mut entry);
                entry.seconds = started.elapsed().as_secs_f64();
                None
            }
            _ => Some(backup_job(vault, job, source, progress)),
        };
        match result {
            None => {}
            Some(Ok(rep)) => {
                entry.snapshot = Some(rep.id.to_hex());
                let pending = rep.offsite.iter().find(|o| !o.complete);
                entry.outcome = Some(if pending.is_some() { "partial" } else { "ok" }.into());
                entry.error = pending.and_then(|o| {
                    o.pending_reason
                        .as_ref()
                        .map(|r| format!("offsite copy in tier {} pending: {r}", o.tier))
                });
                entry.seconds = started.elapsed().as_secs_f64();
                if vault.settings.policy_for(&job.name)?.is_some() {
                    match forget(
                        vault,
                        &ForgetOptions {
                            job: Some(job.name.clone()),
                            policy: Default::default(),
                            snapshots: Vec::new(),
                            dry_run: false,
                        },
                        progress,
                    ) {
                        Ok(f) => entry.forgotten = f.forgotten.len(),
                        Err(e) => {
                            entry.outcome = Some("partial".into());
                            entry.error = Some(format!("retention (forget) failed: {e}"));
                        }
                    }
                }
            }
            Some(Err(e)) => {
                entry.outcome = Some("failed".into());
                entry.error = Some(e.to_string());
                entry.seconds = started.elapsed().as_secs_f64();
            }
        }
        let alert = crate::alerts::Alert::of_run(
            &entry.job,
            entry.outcome.as_deref().unwrap_or("failed"),
            entry.snapshot.as_deref(),
            entry.error.as_deref(),
        );
        entry
            .alert_problems
            .extend(notifier.finished(job.ping.as_deref(), &alert));
        for p in &entry.alert_problems {
            progress.event(&crate::progress::Event::Warning(p.clone()));
        }
        out.push(entry);
    }
    Ok(RunReport { jobs: out })
}

/// One backup of `job`, recorded as a run (also when its source cannot
/// even start: an unreachable database is a failed night, not nothing).
fn backup_job(
    vault: &Vault,
    job: &JobSettings,
    source: &JobSource,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let conn = |c: &str| ConnInfo::parse(c).map_err(Error::from);
    let start: fn(&JobSource) -> Result<Box<dyn Source>> = |s| {
        Ok(match s {
            JobSource::Directory { path, exclude } => {
                Box::new(TarSource::start_excluding(path, Excludes::new(exclude)?)?)
            }
            JobSource::File(p) => Box::new(FileSource::open(p)?),
            JobSource::Command(argv) => Box::new(CommandSource::start(argv)?),
            JobSource::PgDump(_) | JobSource::PgBasebackup(_) | JobSource::Drill { .. } => {
                return Err(Error::Internal {
                    what: "coffer run".into(),
                    detail: "a PostgreSQL job reached the stream sources".into(),
                })
            }
        })
    };
    match source {
        JobSource::PgDump(c) => {
            let opts = PgBackupOptions {
                dump: DumpOptions {
                    conn: conn(c)?,
                    selection: Selection::default(),
                },
                globals: true,
                job: job.name.clone(),
                tags: job.tags.clone(),
            };
            Ok(backup_pg(vault, &opts, progress)?.dump)
        }
        JobSource::PgBasebackup(c) => {
            let opts = BaseOptions {
                conn: conn(c)?,
                checkpoint: "fast".into(),
                label: format!("coffer {}", job.name),
            };
            backup_physical(vault, &job.name, &job.tags, &opts, progress)
        }
        other => {
            let req = BackupRequest {
                job: job.name.clone(),
                tags: job.tags.clone(),
                facts: Default::default(),
            };
            let catalog = vault.catalog()?;
            catalog.record_run(RunKind::Backup, Some(&job.name), None, |_| {
                let mut src = start(other)?;
                super::backup::backup_unrecorded(vault, src.as_mut(), &req, progress)
            })
        }
    }
}

/// When the job last ran, for its schedule: its newest backup that
/// committed, or for a drill the newest drill of the job it drills (a
/// failed drill is not retried until its next time: health reports it).
pub(crate) fn last_run(
    catalog: &crate::catalog::Catalog,
    job: &str,
    source: &JobSource,
) -> Result<Option<String>> {
    Ok(match source {
        JobSource::Drill { of, .. } => catalog
            .runs(Some(of), 10_000)?
            .into_iter()
            .find(|r| r.kind == "restore-test" && r.outcome != "running")
            .map(|r| r.started),
        _ => catalog.last_backup(job)?,
    })
}

/// A restore drill of `of`'s newest pg_dump snapshot into `scratch`;
/// its outcome goes into `entry` (`ok` when it passed).
fn drill_job(vault: &Vault, of: &str, scratch: &str, progress: &dyn Progress, entry: &mut JobRun) {
    let result = (|| -> Result<super::drill::DrillReport> {
        let manifest = super::restore::find(vault, "latest", Some(of))?;
        let ctx = super::read_context(vault, None, "a restore drill job")?;
        let opts = super::drill::DrillOptions {
            scratch: ConnInfo::parse(scratch).map_err(Error::from)?,
            keep: false,
        };
        super::drill::drill(vault, &ctx, &manifest, &opts, progress)
    })();
    match result {
        Ok(rep) => {
            entry.snapshot = Some(rep.snapshot.clone());
            entry.outcome = Some(if rep.passed { "ok" } else { "failed" }.into());
            if !rep.passed {
                entry.error = Some(match (&rep.restore_error, &rep.comparison) {
                    (Some(e), _) => format!("the drill's restore failed: {e}"),
                    (None, Some(c)) => format!(
                        "the restored database differs from the backup's facts in {} place(s)",
                        c.differences.len()
                    ),
                    _ => "the drill did not pass".into(),
                });
            }
        }
        Err(e) => {
            entry.outcome = Some("failed".into());
            entry.error = Some(e.to_string());
        }
    }
}

/// The lock a job holds while it runs: `<catalog>.job-<name>.lock`.
/// `Ok(None)` when another process holds it.
fn job_lock(vault: &Vault, job: &str) -> Result<Option<std::fs::File>> {
    let mut p = vault.settings.catalog.clone().into_os_string();
    p.push(format!(".job-{job}.lock"));
    let path = PathBuf::from(p);
    super::wal::lock_or_busy(&path).map_err(|e| {
        Error::Config(format!(
            "cannot take job {job}'s lock {}: {e}; check who owns it (a run as another user leaves it theirs)",
            path.display()
        ))
    })
}
