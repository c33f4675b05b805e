//! `coffer daemon [--log-format text|json]`.

use anyhow::Result;
use clap::Args;
use coffer::commands::daemon::{self, Log, LogEvent};

use super::Ctx;

/// `coffer daemon`
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// One line per event on stderr: `text`, or `json` for log shippers.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

struct Stderr {
    json: bool,
}

impl Log for Stderr {
    fn event(&self, e: &LogEvent) {
        let time = coffer::util::now_rfc3339();
        let line = if self.json {
            let mut v = serde_json::to_value(e).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("time".into(), time.into());
            }
            v.to_string()
        } else {
            format!("{time} coffer: {}", text(e))
        };
        eprintln!("{line}");
    }
}

fn text(e: &LogEvent) -> String {
    match e {
        LogEvent::Started { jobs, metrics } => format!(
            "daemon started: jobs {}{}",
            jobs.join(", "),
            metrics
                .as_deref()
                .map(|m| format!("; metrics on http://{m}/metrics"))
                .unwrap_or_default()
        ),
        LogEvent::JobStarted { job, pid } => format!("job {job} started (pid {pid})"),
        LogEvent::JobFinished {
            job,
            outcome,
            snapshot,
            error,
            seconds,
            retry_in_seconds,
        } => format!(
            "job {job} {outcome} in {seconds:.1}s{}{}",
            snapshot
                .as_deref()
                .map(|s| format!(", snapshot {s}"))
                .unwrap_or_default(),
            why_and_when(error.as_deref(), *retry_in_seconds)
        ),
        LogEvent::Stopping {
            signal,
            interrupted,
        } => {
            if interrupted.is_empty() {
                format!("signal {signal}: stopping")
            } else {
                format!(
                    "signal {signal}: stopping; interrupted {} (nothing of it is committed)",
                    interrupted.join(", ")
                )
            }
        }
        LogEvent::SyncStarted { pid } => {
            format!("sync started (pid {pid}): uploading what is pending offsite")
        }
        LogEvent::SyncFinished {
            outcome,
            error,
            retry_in_seconds,
        } => format!(
            "sync {outcome}{}",
            why_and_when(error.as_deref(), *retry_in_seconds)
        ),
        LogEvent::Stopped => "daemon stopped".into(),
        LogEvent::Error { message } => format!("error: {message}"),
    }
}

/// `: ERROR; retrying in Ns`, each part when there is one.
fn why_and_when(error: Option<&str>, retry_in_seconds: Option<u64>) -> String {
    format!(
        "{}{}",
        error.map(|e| format!(": {e}")).unwrap_or_default(),
        retry_in_seconds
            .map(|s| format!("; retrying in {s}s"))
            .unwrap_or_default()
    )
}

pub fn run(ctx: &Ctx, a: DaemonArgs) -> Result<i32> {
    super::init::quick_start(ctx)?;
    let vault = ctx.vault()?;
    let exe = std::env::current_exe()?;
    daemon::daemon(
        &vault,
        &exe,
        &Stderr {
            json: a.log_format == "json",
        },
    )?;
    Ok(0)
}
