//! `coffer prune`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use coffer::commands::prune::{self, PruneReport};
use coffer::deletion::prune::TierPrune;
use coffer::deletion::repack::Repacked;
use coffer::retention::policy::parse_duration;

use super::forget::{deletions_status, deletions_text};
use super::output::{bytes, note, render, with_progress, Render, Verbosity};
use super::Ctx;

/// `coffer prune`
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Show what would be condemned, repacked and deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Repack until at most this percentage of stored bytes is unused
    /// [default: [prune] max-unused in the settings, else 5].
    #[arg(long, value_name = "PERCENT")]
    pub max_unused: Option<f64>,
    /// Rewrite at most this percentage of stored bytes in one run (repack,
    /// then --locality's moves) [default: [prune] max-repack, else 10].
    #[arg(long, value_name = "PERCENT")]
    pub max_repack: Option<f64>,
    /// How long a condemned pack waits before it is deleted [default:
    /// [prune] grace, else 23h]. `0` deletes at once: only for a vault that
    /// no other host writes to (a running backup still stops it).
    #[arg(long, value_name = "DURATION", value_parser = parse_grace)]
    pub grace: Option<std::time::Duration>,
    /// Also move the newest snapshots' chunks out of blobs they read little
    /// of, within the --max-repack budget: restoring the newest night gets
    /// faster, at the cost of stored bytes and prune time [default:
    /// [prune] locality, else off].
    #[arg(long)]
    pub locality: bool,
    /// The age identity file [default: $COFFER_IDENTITY, else the one init wrote].
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

fn parse_grace(s: &str) -> Result<std::time::Duration, String> {
    if s.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    parse_duration(s)
}

pub fn run(ctx: &Ctx, a: PruneArgs) -> Result<i32> {
    let vault = ctx.vault()?;
    let mut opts = prune::options(&vault, a.dry_run, a.grace, a.max_unused, a.max_repack)?;
    opts.locality |= a.locality;
    let rctx = coffer::commands::read_context(&vault, a.identity.as_deref(), "prune")?;
    let rep = with_progress(ctx.v, "pruning", |p| prune::prune(&vault, &rctx, &opts, p))?;
    Ok(render(ctx.v, &rep))
}

impl Render for PruneReport {
    fn text(&self, v: Verbosity) {
        let l = &self.learned;
        if l.snapshots + l.packs + l.dropped_snapshots > 0 {
            note(
                v,
                &format!(
                    "coffer: learned {} snapshot(s) and {} pack(s) from the tiers; {} snapshot(s) forgotten elsewhere",
                    l.snapshots, l.packs, l.dropped_snapshots
                ),
            );
        }
        for p in &l.problems {
            eprintln!("coffer: warning: {p}");
        }
        for (t, why) in &self.unreachable {
            eprintln!(
                "coffer: tier {t} is unreachable ({why}): nothing was decided or deleted there; run prune again when it is reachable"
            );
        }
        note(
            v,
            &format!(
                "coffer: {} snapshot(s) kept; {} pack(s), {} stored, about {} unused; {} pack(s) hold nothing live",
                self.snapshots,
                self.packs,
                bytes(self.bytes),
                bytes(self.unused_bytes),
                self.dead_packs
            ),
        );
        rewrite_text(
            v,
            self.dry_run,
            ["would repack", "repacked"],
            &self.repacked,
        );
        let moved = "the newest snapshots' chunks out of";
        rewrite_text(
            v,
            self.dry_run,
            [&format!("would move {moved}"), &format!("moved {moved}")],
            &self.relocated,
        );
        for t in &self.tiers {
            tier_text(v, t, self.dry_run, self.grace_seconds);
        }
        let deletions: Vec<_> = self.tiers.iter().map(|t| t.deletions.clone()).collect();
        deletions_text(v, &deletions, "object");
    }

    fn status(&self) -> i32 {
        let deletions: Vec<_> = self.tiers.iter().map(|t| t.deletions.clone()).collect();
        if !self.unreachable.is_empty() {
            return coffer::error::exit::OFFSITE_PENDING;
        }
        deletions_status(&deletions)
    }
}

/// One tier's line (and its waiting marks).
fn tier_text(v: Verbosity, t: &TierPrune, dry_run: bool, grace_seconds: u64) {
    note(
        v,
        &format!(
            "coffer: tier {}: {} condemned, {} {} ({}), {} recovered{}{}",
            t.tier,
            t.condemned,
            t.deleted,
            if dry_run { "to delete" } else { "deleted" },
            bytes(t.bytes_freed),
            t.recovered,
            if t.marks_in_grace > 0 {
                format!(
                    ", {} mark(s) within the {} grace period",
                    t.marks_in_grace,
                    humantime::format_duration(std::time::Duration::from_secs(grace_seconds))
                )
            } else {
                String::new()
            },
            if t.retention_extended > 0 {
                format!(
                    ", Object Lock extended on {} object(s)",
                    t.retention_extended
                )
            } else {
                String::new()
            }
        ),
    );
    if !t.waiting_for.is_empty() {
        eprintln!(
                "coffer: tier {}: {} mark(s) wait for running backups (lock {}) before their packs can go",
                t.tier,
                t.waiting_for.len(),
                t.waiting_for[0]
            );
    }
}

/// One line for a rewrite (repack, locality): `verbs` for a dry run and
/// for one done; then its problems.
fn rewrite_text(v: Verbosity, dry_run: bool, verbs: [&str; 2], r: &Repacked) {
    if !r.packs.is_empty() {
        let line = if dry_run {
            format!("coffer: {} {} pack(s)", verbs[0], r.packs.len())
        } else {
            format!(
                "coffer: {} {} pack(s) into {} ({} live chunks, {} written)",
                verbs[1],
                r.packs.len(),
                r.new_packs.len(),
                r.chunks,
                bytes(r.bytes)
            )
        };
        note(v, &line);
    }
    for p in &r.problems {
        eprintln!("coffer: warning: {p}");
    }
}
