//! `coffer daemon`: the schedule, run by coffer itself.
//!
//! ```text
//!  loop: due jobs (the same rule as `coffer run`) ──spawn──▶ `coffer run JOB` (own process group)
//!        ◀── a job's report (JSON on its stdout) ── waiter thread
//!        ◀── SIGTERM / SIGINT ── signal thread
//!  /metrics (optional) ── HTTP thread ── `coffer metrics` of the moment
//! ```
//!
//! Each backup runs as a child process, `coffer run JOB`: the daemon
//! itself holds no vault state between runs (an idle week costs a timer
//! wake-up now and then), a job's lock is the same as for `coffer run`
//! from a timer (never two runs of one job at once, across processes), and
//! a stop is a kill. On SIGTERM the daemon stops starting jobs and sends
//! SIGTERM to every running job's process group (the job and its pg_dump
//! or producer): a backup in flight commits nothing, because nothing is
//! committed before its last step (vault-format/SPEC.md, "Commit last").
//! It then exits 0.
//!
//! A job whose run failed stays due; it is retried after a backoff of
//! `retry-base` (30 s) doubling up to its period, so a broken job does not
//! spin. A job that committed but left an offsite copy pending is done; the
//! upload is retried by `coffer sync` children, with the same backoff up to
//! an hour, until one succeeds. A job's retention runs inside `coffer run`.

mod serve;
mod tasks;

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::run::RunReport;
use crate::error::{Error, Result};
use crate::vault::jobs::JobSettings;
use crate::vault::Vault;
use serve::serve_metrics;
use tasks::{last_line, spawn_task};

/// What the daemon logs, one line each.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum LogEvent {
    /// The daemon started.
    Started {
        /// Scheduled jobs.
        jobs: Vec<String>,
        /// Where metrics are served.
        metrics: Option<String>,
    },
    /// A job started.
    JobStarted {
        /// The job.
        job: String,
        /// Its process.
        pid: u32,
    },
    /// A job ended.
    JobFinished {
        /// The job.
        job: String,
        /// `ok`, `partial`, `failed`, or `skipped` (another process ran it).
        outcome: String,
        /// The snapshot it committed.
        snapshot: Option<String>,
        /// Why it failed.
        error: Option<String>,
        /// Wall time.
        seconds: f64,
        /// When it is tried again after a failure.
        retry_in_seconds: Option<u64>,
    },
    /// `coffer sync` started, to upload what a job left pending offsite.
    SyncStarted {
        /// Its process.
        pid: u32,
    },
    /// That sync ended.
    SyncFinished {
        /// `ok` or `failed`.
        outcome: String,
        /// Why it failed (e.g. the tier is unreachable).
        error: Option<String>,
        /// When it is tried again.
        retry_in_seconds: Option<u64>,
    },
    /// A signal asked the daemon to stop.
    Stopping {
        /// The signal's number.
        signal: i32,
        /// Jobs that were running (their backups commit nothing).
        interrupted: Vec<String>,
    },
    /// The daemon stopped.
    Stopped,
    /// Something the daemon could not do (it goes on).
    Error {
        /// What.
        message: String,
    },
}

/// Where log lines go (the CLI prints them as text or JSON).
pub trait Log: Sync {
    /// One event.
    fn event(&self, e: &LogEvent);
}

enum Msg {
    Signal(i32),
    Done {
        task: String,
        output: std::result::Result<std::process::Output, String>,
        seconds: f64,
    },
}

/// The name `coffer sync` runs under in the task table (no job name has a
/// `/`).
const SYNC: &str = "/sync";

/// Runs the schedule until SIGTERM or SIGINT. `exe` is this program,
/// started as `exe --config SETTINGS --json --quiet run JOB` per job.
///
/// # Errors
/// [`Error::Config`] for settings with no scheduled job or a metrics
/// address that cannot be bound.
pub fn daemon(vault: &Vault, exe: &std::path::Path, log: &dyn Log) -> Result<()> {
    let jobs: Vec<JobSettings> = vault
        .settings
        .effective_jobs()?
        .into_iter()
        .filter(|j| j.schedule.is_some() && j.source.is_some())
        .collect();
    if jobs.is_empty() {
        return Err(Error::Config(
            "no scheduled jobs: give [[jobs]] entries an `every` or `cron` (docs/operations.md)"
                .into(),
        ));
    }
    let jitter = crate::vault::settings::duration_setting(
        &vault.settings.daemon.jitter,
        "[daemon] jitter",
        Duration::ZERO,
    )?;
    let retry_base = crate::vault::settings::duration_setting(
        &vault.settings.daemon.retry_base,
        "[daemon] retry-base",
        Duration::from_secs(30),
    )?
    .max(Duration::from_secs(1));
    let backoff = |n: u32, cap: Duration| (retry_base * (1u32 << (n.max(1) - 1).min(10))).min(cap);
    let (tx, rx) = mpsc::channel::<Msg>();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|e| Error::Internal {
        what: "coffer daemon".into(),
        detail: format!("cannot handle signals: {e}"),
    })?;
    let signal_handle = signals.handle();
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for s in signals.forever() {
                if tx.send(Msg::Signal(s)).is_err() {
                    break;
                }
            }
        });
    }
    let metrics = match &vault.settings.daemon.metrics_address {
        Some(addr) => Some(serve_metrics(vault.settings_path.clone(), addr)?),
        None => None,
    };
    log.event(&LogEvent::Started {
        jobs: jobs.iter().map(|j| j.name.clone()).collect(),
        metrics: metrics.as_ref().map(|(a, _)| a.clone()),
    });

    let mut running: HashMap<String, u32> = HashMap::new();
    let mut not_before: HashMap<String, Instant> = HashMap::new();
    let mut failures: HashMap<String, u32> = HashMap::new();
    let mut sync_due: Option<Instant> = None;
    let mut sync_failures = 0u32;
    let mut stopping = false;
    loop {
        if !stopping && !running.contains_key(SYNC) && sync_due.is_some_and(|t| Instant::now() >= t)
        {
            sync_due = None;
            match spawn_task(vault, exe, SYNC, &["sync"], tx.clone()) {
                Ok(pid) => {
                    log.event(&LogEvent::SyncStarted { pid });
                    running.insert(SYNC.into(), pid);
                }
                Err(e) => log.event(&LogEvent::Error {
                    message: format!("cannot start coffer sync: {e}"),
                }),
            }
        }
        // One catalog read per wake-up; a catalog that cannot be read now
        // (busy, a disk hiccup) must not stop the schedule: say so, and
        // look again at the next wake-up.
        let lasts = match last_runs(vault, &jobs) {
            Ok(l) => Some(l),
            Err(e) => {
                log.event(&LogEvent::Error {
                    message: format!("cannot tell which jobs are due: {e}"),
                });
                None
            }
        };
        if let (false, Some(lasts)) = (stopping, &lasts) {
            let now = zoned_now(vault);
            for job in &jobs {
                if running.contains_key(&job.name) {
                    continue;
                }
                if not_before
                    .get(&job.name)
                    .is_some_and(|t| Instant::now() < *t)
                {
                    continue;
                }
                let due = job
                    .schedule
                    .as_ref()
                    .is_some_and(|s| s.due(lasts.get(&job.name), &now));
                if !due {
                    continue;
                }
                if !jitter.is_zero() && !not_before.contains_key(&job.name) {
                    let wait = getrandom::u64().unwrap_or(0) % jitter.as_millis().max(1) as u64;
                    not_before.insert(
                        job.name.clone(),
                        Instant::now() + Duration::from_millis(wait),
                    );
                    continue;
                }
                not_before.remove(&job.name);
                match spawn_task(vault, exe, &job.name, &["run", &job.name], tx.clone()) {
                    Ok(pid) => {
                        log.event(&LogEvent::JobStarted {
                            job: job.name.clone(),
                            pid,
                        });
                        running.insert(job.name.clone(), pid);
                    }
                    Err(e) => {
                        log.event(&LogEvent::Error {
                            message: format!("job {}: cannot start: {e}", job.name),
                        });
                        not_before.insert(job.name.clone(), Instant::now() + retry_base);
                    }
                }
            }
        }
        let wait = if stopping {
            Duration::from_secs(3600)
        } else {
            let w = match &lasts {
                Some(l) => next_wake(vault, &jobs, l, &running, &not_before),
                None => Duration::from_secs(60),
            };
            match sync_due {
                Some(t) => w.min(
                    t.saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(100)),
                ),
                None => w,
            }
        };
        match rx.recv_timeout(wait) {
            Ok(Msg::Signal(signal)) => {
                if !stopping {
                    stopping = true;
                    let mut interrupted: Vec<String> = running.keys().cloned().collect();
                    interrupted.sort();
                    log.event(&LogEvent::Stopping {
                        signal,
                        interrupted,
                    });
                }
                // The job and everything it started (its own group).
                for pid in running.values() {
                    if let Some(pgid) = rustix::process::Pid::from_raw(*pid as i32) {
                        let _ = rustix::process::kill_process_group(
                            pgid,
                            rustix::process::Signal::TERM,
                        );
                    }
                }
            }
            Ok(Msg::Done {
                task,
                output,
                seconds,
            }) => {
                running.remove(&task);
                if task == SYNC {
                    let failed = match &output {
                        Ok(o) if o.status.success() => None,
                        Ok(o) => Some(last_line(&o.stderr, o.status)),
                        Err(e) => Some(e.clone()),
                    };
                    let retry = match &failed {
                        _ if stopping => None,
                        Some(_) => {
                            sync_failures += 1;
                            let b = backoff(sync_failures, Duration::from_secs(3600));
                            sync_due = Some(Instant::now() + b);
                            Some(b.as_secs())
                        }
                        None => {
                            sync_failures = 0;
                            None
                        }
                    };
                    log.event(&LogEvent::SyncFinished {
                        outcome: if failed.is_some() { "failed" } else { "ok" }.into(),
                        error: failed,
                        retry_in_seconds: retry,
                    });
                } else {
                    let job = task;
                    let report = output.and_then(|o| {
                        serde_json::from_slice::<RunReport>(&o.stdout)
                            .map_err(|_| last_line(&o.stderr, o.status))
                    });
                    let period = jobs
                        .iter()
                        .find(|j| j.name == job)
                        .and_then(|j| j.schedule.as_ref())
                        .map(|s| s.period(&zoned_now(vault)))
                        .unwrap_or(Duration::from_secs(3600));
                    let entry = report.as_ref().ok().and_then(|r| r.jobs.first().cloned());
                    let outcome = match (&report, &entry) {
                        _ if stopping => "interrupted".to_string(),
                        (Ok(_), Some(e)) if e.ran => e.outcome.clone().unwrap_or_default(),
                        (Ok(_), _) => "skipped".into(),
                        (Err(_), _) => "failed".into(),
                    };
                    let error = match (&report, &entry) {
                        (Err(e), _) => Some(e.clone()),
                        (Ok(_), Some(e)) => e.error.clone(),
                        _ => None,
                    };
                    // A failed job stays due: it is retried after a backoff.
                    // A job that committed but left an offsite copy pending
                    // is done; `coffer sync` retries the upload.
                    let retry = if outcome == "failed" {
                        let n = failures.entry(job.clone()).or_default();
                        *n += 1;
                        let b = backoff(*n, period);
                        not_before.insert(job.clone(), Instant::now() + b);
                        Some(b.as_secs())
                    } else if outcome == "skipped" {
                        // Another process runs it: look again after a
                        // while, not as soon as this child is gone.
                        let b = backoff(1, period);
                        not_before.insert(job.clone(), Instant::now() + b);
                        Some(b.as_secs())
                    } else {
                        failures.remove(&job);
                        None
                    };
                    if outcome == "partial" && sync_due.is_none() && !running.contains_key(SYNC) {
                        sync_due = Some(
                            Instant::now() + backoff(sync_failures + 1, Duration::from_secs(3600)),
                        );
                    }
                    for p in entry.iter().flat_map(|e| e.alert_problems.iter()) {
                        log.event(&LogEvent::Error {
                            message: format!("job {job}: {p}"),
                        });
                    }
                    log.event(&LogEvent::JobFinished {
                        job,
                        outcome,
                        snapshot: entry.and_then(|e| e.snapshot),
                        error,
                        seconds,
                        retry_in_seconds: retry,
                    });
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if stopping && running.is_empty() {
            break;
        }
    }
    signal_handle.close();
    if let Some((_, server)) = metrics {
        server.unblock();
    }
    log.event(&LogEvent::Stopped);
    Ok(())
}

fn zoned_now(vault: &Vault) -> jiff::Zoned {
    let tz = vault
        .settings
        .time_zone()
        .unwrap_or(jiff::tz::TimeZone::UTC);
    jiff::Timestamp::try_from(crate::util::clock())
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_zoned(tz)
}

/// When each job last ran (the rule of `coffer run`), in the settings'
/// zone: one catalog read per wake-up.
fn last_runs(vault: &Vault, jobs: &[JobSettings]) -> Result<HashMap<String, jiff::Zoned>> {
    let tz = vault.settings.time_zone()?;
    let catalog = vault.catalog()?;
    let mut out = HashMap::new();
    for job in jobs {
        let Some(source) = &job.source else {
            continue;
        };
        if let Some(t) = super::run::last_run(&catalog, &job.name, source)?
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        {
            out.insert(job.name.clone(), t.to_zoned(tz.clone()));
        }
    }
    Ok(out)
}

/// How long to sleep: until the soonest due time or retry, at most a
/// minute (settings and clocks change), at least 100 ms.
fn next_wake(
    vault: &Vault,
    jobs: &[JobSettings],
    lasts: &HashMap<String, jiff::Zoned>,
    running: &HashMap<String, u32>,
    not_before: &HashMap<String, Instant>,
) -> Duration {
    let now = zoned_now(vault).timestamp().as_millisecond();
    let mut wait = Duration::from_secs(60);
    for job in jobs.iter().filter(|j| !running.contains_key(&j.name)) {
        if let Some(t) = not_before.get(&job.name) {
            wait = wait.min(t.saturating_duration_since(Instant::now()));
            continue;
        }
        let next = job
            .schedule
            .as_ref()
            .zip(lasts.get(&job.name))
            .and_then(|(s, last)| s.next_after(last));
        if let Some(next) = next {
            let left = next.timestamp().as_millisecond() - now;
            wait = wait.min(Duration::from_millis(left.max(0) as u64));
        }
    }
    wait.max(Duration::from_millis(100))
}
