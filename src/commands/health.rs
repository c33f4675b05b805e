//! `coffer health`: what an on-call engineer needs to know, as a
//! monitoring plugin answers (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN), one
//! problem a line. Read from the catalog and the local tier's file system
//! only, so it is cheap enough to run every minute; `coffer sync` and
//! `coffer verify` are what look at the tiers themselves.
//!
//! | check | WARNING | CRITICAL |
//! |---|---|---|
//! | a scheduled job's newest snapshot | | older than its period plus `grace` |
//! | the newest backup run of a job (configured or ad hoc) | | failed |
//! | the newest restore drill of a job | | failed or found differences |
//! | the newest sync, forget, prune, verify | failed | |
//! | the local tier | | lost: its directory holds no vault |
//! | a tier's pack copies | | corrupt or missing (verify found it) |
//! | an offsite tier | a snapshot older than `offsite-lag` is not complete there | |
//! | verification coverage | a pack copy neither verified nor written within `verify-max-age` | |
//! | the local tier's free space | below `free-space-warning` % | below `free-space-critical` % |
//! | WAL | a file waits for the offsite tier longer than `wal-lag` | |
//!
//! Ages are judged at [`crate::util::clock`] (tests move it).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::catalog::{CopyState, RunRecord};
use crate::error::Result;
use crate::util::{clock, parse_time};
use crate::vault::settings::duration_setting;
use crate::vault::Vault;

/// How bad a problem is (the exit status is the worst one's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Nothing wrong.
    Ok,
    /// Needs attention soon.
    Warning,
    /// Backups are not happening, or data is damaged.
    Critical,
    /// Health itself could not be judged.
    Unknown,
}

impl Severity {
    /// The monitoring-plugin exit status.
    pub fn exit_status(self) -> i32 {
        match self {
            Severity::Ok => 0,
            Severity::Warning => 1,
            Severity::Critical => 2,
            Severity::Unknown => 3,
        }
    }

    /// `OK`, `WARNING`, …
    pub fn word(self) -> &'static str {
        match self {
            Severity::Ok => "OK",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
            Severity::Unknown => "UNKNOWN",
        }
    }
}

/// One problem.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// How bad.
    pub severity: Severity,
    /// Which check (`job-age`, `backup-failed`, `drill-failed`,
    /// `run-failed`, `damaged`, `offsite-lag`, `verify-coverage`,
    /// `free-space`, `wal-lag`).
    pub check: &'static str,
    /// What it is about (a job, a tier), if anything.
    pub subject: Option<String>,
    /// One line, with what to do.
    pub message: String,
}

/// `coffer health` (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// The worst severity.
    pub status: Severity,
    /// When it was judged (RFC 3339).
    pub checked_at: String,
    /// Jobs with a schedule that were checked.
    pub jobs: usize,
    /// Every problem, worst first.
    pub problems: Vec<Problem>,
}

/// Judges the vault's health now.
///
/// # Errors
/// [`Error::Config`] for settings that do not parse; catalog errors (the
/// CLI reports both as UNKNOWN).
pub fn health(vault: &Vault) -> Result<HealthReport> {
    let h = &vault.settings.health;
    let grace = duration_setting(&h.grace, "[health] grace", Duration::from_secs(3600))?;
    let offsite_lag = duration_setting(
        &h.offsite_lag,
        "[health] offsite-lag",
        Duration::from_secs(2 * 3600),
    )?;
    let verify_max_age = duration_setting(
        &h.verify_max_age,
        "[health] verify-max-age",
        Duration::from_secs(30 * 86_400),
    )?;
    let wal_lag = duration_setting(&h.wal_lag, "[health] wal-lag", Duration::from_secs(15 * 60))?;
    let now = clock();
    let age = |t: &str| {
        parse_time(t)
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default()
    };
    let catalog = vault.catalog()?;
    let mut problems = Vec::new();
    let mut push = |severity, check, subject: Option<String>, message: String| {
        problems.push(Problem {
            severity,
            check,
            subject,
            message,
        })
    };

    // Scheduled jobs: is the newest snapshot recent enough?
    let jobs = vault.settings.effective_jobs()?;
    let tz = vault.settings.time_zone()?;
    let zoned_now = jiff::Timestamp::try_from(now)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_zoned(tz);
    let snaps = catalog.snapshots(None)?;
    let mut scheduled = 0;
    for job in &jobs {
        let (Some(schedule), Some(source)) = (&job.schedule, &job.source) else {
            continue;
        };
        scheduled += 1;
        let limit = schedule.period(&zoned_now) + grace;
        if let crate::vault::jobs::JobSource::Drill { of, .. } = source {
            // A drill job makes no snapshot: its last drill must be recent
            // (a failed one is `drill-failed`).
            let last = super::run::last_run(&catalog, &job.name, source)?;
            if last.as_deref().is_none_or(|t| age(t) > limit) {
                push(
                    Severity::Warning,
                    "drill-overdue",
                    Some(job.name.clone()),
                    format!(
                        "job {}: no restore drill of job {of} within its schedule ({}); run `coffer run {}` where the identity is",
                        job.name,
                        human(limit),
                        job.name
                    ),
                );
            }
            continue;
        }
        let newest = snaps
            .iter()
            .filter(|s| s.job == job.name)
            .map(|s| s.created.as_str())
            .max();
        match newest {
            None => push(
                Severity::Critical,
                "job-age",
                Some(job.name.clone()),
                format!(
                    "job {} has no snapshot yet; run `coffer run {}` and check `coffer runs --job {}`",
                    job.name, job.name, job.name
                ),
            ),
            Some(c) if age(c) > limit => push(
                Severity::Critical,
                "job-age",
                Some(job.name.clone()),
                format!(
                    "job {}: newest snapshot is {} old, more than its schedule allows ({}); see `coffer runs --job {}`",
                    job.name,
                    human(age(c)),
                    human(limit),
                    job.name
                ),
            ),
            Some(_) => {}
        }
    }

    // The newest run of each kind (per job for backups and drills).
    let mut newest: BTreeMap<(String, Option<String>), RunRecord> = BTreeMap::new();
    for r in catalog.runs(None, 10_000)? {
        if r.outcome == "running" {
            continue;
        }
        newest.entry((r.kind.clone(), r.job.clone())).or_insert(r);
    }
    for ((kind, job), r) in &newest {
        let failed = r.outcome == "failed";
        let about = job
            .as_deref()
            .map(|j| format!("job {j}: "))
            .unwrap_or_default();
        let why = r.error.as_deref().unwrap_or("no error recorded");
        match kind.as_str() {
            "backup" if failed => push(
                Severity::Critical,
                "backup-failed",
                job.clone(),
                format!("{about}the last backup ({}) failed: {why}", r.started),
            ),
            "restore-test" if failed || r.outcome == "partial" => push(
                Severity::Critical,
                "drill-failed",
                job.clone(),
                format!(
                    "{about}the last restore drill ({}) failed: {why}",
                    r.started
                ),
            ),
            "sync" | "forget" | "prune" | "verify" | "verify-data" if failed => push(
                Severity::Warning,
                "run-failed",
                job.clone(),
                format!("{about}the last {kind} ({}) failed: {why}", r.started),
            ),
            _ => {}
        }
    }

    // Tiers: damage, offsite lag, verification coverage.
    let cutoff = humantime::format_rfc3339_seconds(now - verify_max_age).to_string();
    if vault.local_lost {
        push(
            Severity::Critical,
            "tier-lost",
            Some("local".into()),
            format!(
                "tier local is lost (no vault at {}); `coffer sync --recreate-local` recreates it from the s3 tier (if it is a disk that is not mounted, mount it instead)",
                vault.settings.local.path.display()
            ),
        );
    }
    for (i, tier) in vault.tiers().iter().enumerate() {
        let name = tier.name().to_string();
        let states = catalog.pack_states(&name)?;
        let bad = states
            .values()
            .filter(|s| matches!(s, CopyState::Corrupt | CopyState::Missing))
            .count();
        if bad > 0 {
            push(
                Severity::Critical,
                "damaged",
                Some(name.clone()),
                format!(
                    "tier {name}: {bad} pack copies are corrupt or missing; `coffer sync` repairs them from another tier, `coffer verify` says which"
                ),
            );
        }
        if i > 0 {
            let complete = catalog.snapshot_states(&name)?;
            let lagging: Vec<&str> = snaps
                .iter()
                .filter(|s| complete.get(&s.id) != Some(&CopyState::Present))
                .map(|s| s.created.as_str())
                .filter(|c| age(c) > offsite_lag)
                .collect();
            if let Some(oldest) = lagging.iter().min() {
                push(
                    Severity::Warning,
                    "offsite-lag",
                    Some(name.clone()),
                    format!(
                        "tier {name}: {} snapshot(s) not there after {} (oldest from {oldest}); run `coffer sync`",
                        lagging.len(),
                        human(offsite_lag)
                    ),
                );
            }
        }
        let (stale, oldest) = catalog.unverified_since(&name, &cutoff)?;
        if stale > 0 {
            push(
                Severity::Warning,
                "verify-coverage",
                Some(name.clone()),
                format!(
                    "tier {name}: {stale} pack copies not verified in {} (oldest check {}); run `coffer verify --tier {name}`",
                    human(verify_max_age),
                    oldest.unwrap_or_default()
                ),
            );
        }
    }

    // The local tier's free space.
    if let Ok(fs) = rustix::fs::statvfs(vault.local.root()) {
        let total = fs.f_blocks as f64;
        if total > 0.0 {
            let free = 100.0 * fs.f_bavail as f64 / total;
            let warn = h.free_space_warning.unwrap_or(10.0);
            let crit = h.free_space_critical.unwrap_or(5.0);
            let severity = if free < crit {
                Some(Severity::Critical)
            } else if free < warn {
                Some(Severity::Warning)
            } else {
                None
            };
            if let Some(s) = severity {
                push(
                    s,
                    "free-space",
                    Some("local".into()),
                    format!(
                        "the local tier's file system ({}) has {free:.1}% free; free space or prune (`coffer forget` then `coffer prune`)",
                        vault.local.root().display()
                    ),
                );
            }
        }
    }

    // WAL waiting for the offsite tier.
    if vault.s3.is_some() {
        for job in catalog.wal_jobs()? {
            let pending = catalog.wal_pending(Some(&job))?;
            if let Some(oldest) = pending.iter().map(|w| w.pushed.as_str()).min() {
                if age(oldest) > wal_lag {
                    push(
                        Severity::Warning,
                        "wal-lag",
                        Some(job.clone()),
                        format!(
                            "job {job}: {} WAL file(s) not offsite, the oldest for {}; run `coffer sync` (or check the uploader: `coffer wal upload`)",
                            pending.len(),
                            human(age(oldest))
                        ),
                    );
                }
            }
        }
    }

    problems.sort_by_key(|p| std::cmp::Reverse(p.severity));
    Ok(HealthReport {
        status: problems.first().map_or(Severity::Ok, |p| p.severity),
        checked_at: humantime::format_rfc3339_seconds(now).to_string(),
        jobs: scheduled,
        problems,
    })
}

/// A duration as an operator reads it (`1day 2h 5m`), to the nearest
/// minute.
fn human(d: Duration) -> String {
    let mins = (d.as_secs() + 30) / 60;
    humantime::format_duration(Duration::from_secs(mins * 60)).to_string()
}
