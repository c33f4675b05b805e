//! `coffer snapshots`.

use anyhow::Result;
use clap::Args;
use coffer::catalog::SnapshotRecord;
use coffer::commands::snapshots;

use super::output::{bytes, note, out, render, Render, Verbosity};
use super::Ctx;

/// `coffer snapshots`
#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// Only this job's snapshots.
    #[arg(long)]
    pub job: Option<String>,
}

pub fn run(ctx: &Ctx, a: SnapshotsArgs) -> Result<i32> {
    let list = snapshots::snapshots(&ctx.vault()?, a.job.as_deref())?;
    Ok(render(ctx.v, &List(list)))
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct List(Vec<SnapshotRecord>);

impl Render for List {
    fn text(&self, v: Verbosity) {
        if self.0.is_empty() {
            note(v, "no snapshots yet; make one with `coffer backup PATH`");
            return;
        }
        out(&format!(
            "{:<32}  {:<16} {:<10} {:<27} {:>10} {:>10}",
            "ID", "JOB", "KIND", "CREATED", "RAW", "STORED"
        ));
        for s in &self.0 {
            out(&format!(
                "{:<32}  {:<16} {:<10} {:<27} {:>10} {:>10}",
                s.id.to_hex(),
                s.job,
                s.kind,
                s.created,
                bytes(s.raw_size),
                bytes(s.stored_size)
            ));
        }
    }
}
