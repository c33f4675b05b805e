//! `coffer verify`, and restore drills (`coffer verify --restore-test`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use coffer::commands::drill::{self, DrillOptions, DrillReport};
use coffer::commands::verify::{self, VerifyReport};
use coffer::commands::{self, restore};
use coffer::pg::ConnInfo;
use coffer::Vault;

use super::output::{
    bytes, note, print_problems, problems_status, render, with_progress, Render, Verbosity,
};
use super::Ctx;

/// `coffer verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also decrypt every pack and check every chunk's keyed hash (needs the identity).
    #[arg(long)]
    pub read_data: bool,
    /// Only this tier (`local` or `s3`).
    #[arg(long, value_name = "TIER")]
    pub tier: Option<String>,
    /// Check at most this much per run: a share of each tier (10%), a size
    /// per tier (2GiB) or a time (20m); the copies checked longest ago go
    /// first, so daily runs cover every byte every 100/share days.
    #[arg(long, value_name = "BUDGET", conflicts_with = "restore_test")]
    pub budget: Option<verify::Budget>,
    /// The age identity file (with --read-data or --restore-test).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Restore drill of a pg_dump snapshot (see docs/postgres.md).
    #[command(flatten)]
    pub drill: PgDrillArgs,
}

/// `coffer verify --restore-test ...`
#[derive(Debug, Args)]
pub struct PgDrillArgs {
    /// Restore this pg_dump snapshot (id, prefix or `latest`) into a scratch
    /// database and compare it with the facts recorded at backup time.
    #[arg(long, value_name = "SNAPSHOT", conflicts_with = "read_data")]
    pub restore_test: Option<String>,
    /// The scratch server, as conninfo or URL; its dbname (default
    /// postgres) is where the scratch database is created from [default:
    /// the PG* environment].
    #[arg(long, value_name = "CONNINFO", requires = "restore_test")]
    pub scratch: Option<String>,
    /// With `latest`: the newest snapshot of this job.
    #[arg(long, requires = "restore_test")]
    pub job: Option<String>,
    /// Keep the scratch database afterwards (to inspect a failed drill).
    #[arg(long, requires = "restore_test")]
    pub keep_scratch: bool,
}

pub fn run(ctx: &Ctx, a: VerifyArgs) -> Result<i32> {
    let vault = ctx.vault()?;
    if a.drill.restore_test.is_some() {
        return restore_test(ctx, &vault, &a);
    }
    let rctx = if a.read_data {
        Some(commands::read_context(
            &vault,
            a.identity.as_deref(),
            "verify --read-data",
        )?)
    } else {
        None
    };
    let opts = verify::VerifyOptions {
        tier: a.tier.clone(),
        budget: a.budget,
    };
    let rep = with_progress(ctx.v, "verifying", |p| {
        verify::verify_with(&vault, rctx.as_ref(), &opts, p)
    })?;
    Ok(render(ctx.v, &rep))
}

impl Render for VerifyReport {
    fn text(&self, v: Verbosity) {
        let summary = format!(
            "coffer: verified {} pack copies ({} read), {} chunks, {} snapshots in {:.1}s: {}",
            self.packs_checked,
            bytes(self.bytes_read),
            self.chunks_checked,
            self.snapshots_checked,
            self.seconds,
            if self.problems.is_empty() {
                "no problems".to_string()
            } else {
                format!("{} PROBLEM(S)", self.problems.len())
            }
        );
        if self.packs_left > 0 {
            note(
                v,
                &format!(
                    "coffer: budget spent: {} pack copies left for the next runs (oldest check {})",
                    self.packs_left,
                    self.oldest_left.as_deref().unwrap_or("never")
                ),
            );
        }
        print_problems(v, &self.problems, &summary);
    }

    fn status(&self) -> i32 {
        problems_status(&self.problems)
    }
}

fn restore_test(ctx: &Ctx, vault: &Vault, a: &VerifyArgs) -> Result<i32> {
    let d = &a.drill;
    let query = d
        .restore_test
        .as_deref()
        .expect("run routes here only with --restore-test");
    let manifest = restore::find(vault, query, d.job.as_deref())?;
    let opts = DrillOptions {
        scratch: ConnInfo::parse(d.scratch.as_deref().unwrap_or(""))
            .map_err(coffer::Error::from)?,
        keep: d.keep_scratch,
    };
    let rctx = commands::read_context(vault, a.identity.as_deref(), "verify --restore-test")?;
    let rep = with_progress(ctx.v, "restore drill", |p| {
        drill::drill(vault, &rctx, &manifest, &opts, p)
    })?;
    Ok(render(ctx.v, &rep))
}

impl Render for DrillReport {
    fn text(&self, v: Verbosity) {
        let kept = if self.kept {
            format!(" (kept: database {:?})", self.scratch_database)
        } else {
            String::new()
        };
        if let Some(e) = &self.restore_error {
            eprintln!(
                "coffer: restore-test FAILED: snapshot {} of database {:?} did not restore into scratch database {:?}{kept}: {e}",
                self.snapshot, self.database, self.scratch_database
            );
            return;
        }
        let Some(c) = &self.comparison else { return };
        for n in &c.notes {
            note(v, &format!("coffer: note: {n}"));
        }
        for d in &c.differences {
            eprintln!("coffer: DIFFERENCE: {d}");
        }
        let line = format!(
            "coffer: restore-test of snapshot {} (database {:?}, backed up {}): restored {} into scratch database {:?} on PostgreSQL {}{kept}, {} TOC entries, {} tables compared ({} rows, {} checksums{}) in {:.1}s: {}",
            self.snapshot,
            self.database,
            self.backup_created,
            bytes(self.bytes),
            self.scratch_database,
            self.scratch_server_version,
            self.toc_entries,
            c.tables_compared,
            c.rows_compared,
            c.checksums_compared,
            c.large_objects
                .map(|(e, _)| format!(", {e} large objects"))
                .unwrap_or_default(),
            self.seconds,
            if self.passed {
                "PASSED".to_string()
            } else {
                format!("FAILED with {} difference(s)", c.differences.len())
            }
        );
        if self.passed {
            note(v, &line);
        } else {
            eprintln!("{line}");
        }
    }

    fn status(&self) -> i32 {
        if self.passed {
            0
        } else {
            coffer::error::exit::INTEGRITY
        }
    }
}
