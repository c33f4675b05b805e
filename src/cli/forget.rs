//! `coffer forget`, `coffer pin`, `coffer unpin`.

use anyhow::Result;
use clap::Args;
use coffer::commands::forget::{self, ForgetOptions, ForgetReport};
use coffer::commands::pin::{self, PinReport};
use coffer::deletion::pending::TierDeletions;
use coffer::retention::policy::parse_duration;
use coffer::retention::Policy;

use super::output::{note, out, render, with_progress, Render, Verbosity};
use super::Ctx;

/// A retention policy's rules on the command line.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot at most this much older than the job's newest
    /// (30d, 12h, 2w, "1y 6months").
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_within: Option<std::time::Duration>,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    /// A point-in-time recovery window: keep the base backups within it of
    /// the job's newest and the newest one before it; `coffer prune` keeps
    /// the job's WAL from that one on (docs/retention.md).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_wal_within: Option<std::time::Duration>,
}

impl PolicyArgs {
    fn policy(&self) -> Policy {
        Policy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self.keep_within,
            keep_tags: self.keep_tags.clone(),
            keep_wal_within: self.keep_wal_within,
        }
    }
}

/// `coffer forget`
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Forget exactly these snapshots (ids, prefixes, `latest`) and their
    /// pg_dump companions, instead of applying a policy.
    #[arg(value_name = "SNAPSHOT", conflicts_with_all = [
        "keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly",
        "keep_yearly", "keep_within", "keep_tags", "keep_wal_within"])]
    pub snapshots: Vec<String>,
    /// Only this job (and the globals of its pg_dump snapshots).
    #[arg(long)]
    pub job: Option<String>,
    /// Show what would be forgotten; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

pub fn forget(ctx: &Ctx, a: ForgetArgs) -> Result<i32> {
    let vault = ctx.vault()?;
    let opts = ForgetOptions {
        job: a.job,
        policy: a.policy.policy(),
        snapshots: a.snapshots,
        dry_run: a.dry_run,
    };
    let rep = with_progress(ctx.v, "forgetting", |p| forget::forget(&vault, &opts, p))?;
    Ok(render(ctx.v, &rep))
}

impl Render for ForgetReport {
    fn text(&self, v: Verbosity) {
        for g in &self.groups {
            let policy = g
                .policy
                .as_ref()
                .map(|p| format!(" (policy: {})", describe(p)))
                .unwrap_or_default();
            out(&format!("job {} on host {}{policy}", g.job, g.host));
            out(&format!(
                "  {:<10} {:<27} {:<7} REASONS",
                "ID", "CREATED", "ACTION"
            ));
            for s in &g.snapshots {
                out(&format!(
                    "  {:<10} {:<27} {:<7} {}",
                    &s.id.to_hex()[..8],
                    s.created,
                    if s.keep { "keep" } else { "forget" },
                    s.reasons
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        for j in &self.without_policy {
            note(
                v,
                &format!("coffer: job {j} has no retention policy: all of its snapshots were kept"),
            );
        }
        let verb = if self.dry_run {
            "would forget"
        } else {
            "forgot"
        };
        note(
            v,
            &format!(
                "coffer: {verb} {} snapshot(s) in {:.1}s{}",
                self.forgotten.len(),
                self.seconds,
                if self.dry_run {
                    " (dry run: nothing deleted)"
                } else {
                    "; run `coffer prune` to reclaim their space"
                }
            ),
        );
        deletions_text(v, &self.deletions, "manifest");
    }

    fn status(&self) -> i32 {
        deletions_status(&self.deletions)
    }
}

/// `keep-daily 7, keep-weekly 4`.
fn describe(p: &Policy) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .map(|m| {
            m.iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k} {s}"),
                    other => format!("{k} {other}"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// Per tier: what was deleted, what is retained or pending and why.
pub fn deletions_text(v: Verbosity, tiers: &[TierDeletions], what: &str) {
    for d in tiers {
        if d.deleted > 0 {
            note(
                v,
                &format!("coffer: tier {}: deleted {} {what}(s)", d.tier, d.deleted),
            );
        }
        for (k, until) in &d.retained {
            eprintln!(
                "coffer: tier {}: {k} is retained by S3 Object Lock{}; a later prune deletes it",
                d.tier,
                until
                    .as_deref()
                    .map(|u| format!(" until {u}"))
                    .unwrap_or_default()
            );
        }
        if let Some((k, why)) = d.failed.first() {
            eprintln!(
                "coffer: tier {}: {} deletion(s) pending ({k}: {why}); `coffer sync` finishes them when the tier is reachable",
                d.tier,
                d.failed.len()
            );
        }
    }
}

/// Status 3 when deletions are still pending in some tier.
pub fn deletions_status(tiers: &[TierDeletions]) -> i32 {
    if tiers.iter().any(|d| !d.failed.is_empty()) {
        coffer::error::exit::OFFSITE_PENDING
    } else {
        0
    }
}

/// `coffer pin`
#[derive(Debug, Args)]
pub struct PinArgs {
    /// Snapshot id, a unique prefix, or `latest`.
    pub snapshot: String,
    /// With `latest`: the newest snapshot of this job.
    #[arg(long)]
    pub job: Option<String>,
    /// Why (shown by `forget` and `snapshots`; sealed in the vault).
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
}

/// `coffer unpin`
#[derive(Debug, Args)]
pub struct UnpinArgs {
    /// Snapshot id, a unique prefix, or `latest`.
    pub snapshot: String,
    /// With `latest`: the newest snapshot of this job.
    #[arg(long)]
    pub job: Option<String>,
}

pub fn pin(ctx: &Ctx, a: PinArgs) -> Result<i32> {
    let rep = pin::pin(&ctx.vault()?, &a.snapshot, a.job.as_deref(), &a.reason)?;
    Ok(render(ctx.v, &rep))
}

pub fn unpin(ctx: &Ctx, a: UnpinArgs) -> Result<i32> {
    let rep = pin::unpin(&ctx.vault()?, &a.snapshot, a.job.as_deref())?;
    Ok(render(ctx.v, &rep))
}

impl Render for PinReport {
    fn text(&self, v: Verbosity) {
        note(
            v,
            &match &self.reason {
                Some(r) => format!(
                    "coffer: snapshot {} is pinned ({r}) in tier(s) {}: no host forgets it",
                    self.snapshot,
                    self.tiers.join(", ")
                ),
                None => format!(
                    "coffer: snapshot {} is no longer pinned (tier(s) {})",
                    self.snapshot,
                    self.tiers.join(", ")
                ),
            },
        );
    }
}
