//! `coffer run [JOB…]` and `coffer runs`.

use anyhow::Result;
use clap::Args;
use coffer::catalog::RunRecord;
use coffer::commands::run::{self, RunReport};
use serde::Serialize;

use super::output::{bytes, note, out, render, with_progress, Render, Verbosity};
use super::Ctx;

/// `coffer run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Jobs to run now (as named in [[jobs]]); none: every job that is due.
    #[arg(value_name = "JOB")]
    pub jobs: Vec<String>,
}

pub fn run(ctx: &Ctx, a: RunArgs) -> Result<i32> {
    super::init::quick_start(ctx)?;
    let vault = ctx.vault()?;
    let rep = with_progress(ctx.v, "running jobs", |p| run::run(&vault, &a.jobs, p))?;
    Ok(render(ctx.v, &rep))
}

impl Render for RunReport {
    fn text(&self, v: Verbosity) {
        for j in &self.jobs {
            let line = match (&j.outcome, &j.snapshot) {
                (Some(o), Some(s)) => format!(
                    "coffer: job {}: {o}, snapshot {s} in {:.1}s{}{}",
                    j.job,
                    j.seconds,
                    if j.forgotten > 0 {
                        format!(", retention forgot {}", j.forgotten)
                    } else {
                        String::new()
                    },
                    j.error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ),
                (Some(o), None) => format!(
                    "coffer: job {}: {o}: {}",
                    j.job,
                    j.error.as_deref().unwrap_or("unknown error")
                ),
                _ => format!("coffer: job {}: skipped ({})", j.job, j.reason),
            };
            if j.outcome.as_deref() == Some("failed") {
                eprintln!("{line}");
            } else {
                note(v, &line);
            }
            if let Some(s) = &j.snapshot {
                out(s);
            }
        }
    }

    fn status(&self) -> i32 {
        if self.failed() {
            1
        } else if self.partial() {
            coffer::error::exit::OFFSITE_PENDING
        } else {
            0
        }
    }
}

/// `coffer runs`
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Only this job's runs.
    #[arg(long)]
    pub job: Option<String>,
    /// How many, newest first.
    #[arg(long, default_value = "50")]
    pub limit: usize,
}

#[derive(Serialize)]
#[serde(transparent)]
struct Runs(Vec<RunRecord>);

pub fn runs(ctx: &Ctx, a: RunsArgs) -> Result<i32> {
    let vault = ctx.vault()?;
    let rows = vault.catalog()?.runs(a.job.as_deref(), a.limit)?;
    Ok(render(ctx.v, &Runs(rows)))
}

impl Render for Runs {
    fn text(&self, _v: Verbosity) {
        out(&format!(
            "{:>6}  {:<20}  {:<12}  {:<14}  {:<8}  {:>9}  {:>8}  ERROR",
            "ID", "STARTED", "KIND", "JOB", "OUTCOME", "BYTES", "SECONDS"
        ));
        for r in &self.0 {
            let secs = match (
                coffer::util::parse_time(&r.started),
                r.finished.as_deref().and_then(coffer::util::parse_time),
            ) {
                (Some(a), Some(b)) => b
                    .duration_since(a)
                    .map(|d| d.as_secs().to_string())
                    .unwrap_or_default(),
                _ => "-".into(),
            };
            out(&format!(
                "{:>6}  {:<20}  {:<12}  {:<14}  {:<8}  {:>9}  {:>8}  {}",
                r.id,
                r.started,
                r.kind,
                r.job.as_deref().unwrap_or("-"),
                r.outcome,
                bytes(r.bytes),
                secs,
                r.error.as_deref().unwrap_or("")
            ));
        }
    }
}
