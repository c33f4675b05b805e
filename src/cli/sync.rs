//! `coffer sync` and `coffer status`.

use anyhow::Result;
use coffer::commands::sync;
use coffer::replicate::{SyncReport, TierStatus};

use super::output::{bytes, note, out, render, with_progress, Render, Verbosity};
use super::Ctx;

/// `coffer sync`.
#[derive(clap::Args, Debug)]
pub struct SyncArgs {
    /// Copy every pack and manifest into the local tier too, other hosts'
    /// included (a full local mirror: disaster recovery onto a new
    /// machine, or deduplicating against other hosts' data). Without it
    /// the local tier keeps what this host's own snapshots need.
    #[arg(long)]
    pub all: bool,
    /// Recreate a lost local tier (its directory holds no vault) from the
    /// s3 tier, then refill it. Never done without this: an empty directory
    /// may be a disk that is not mounted.
    #[arg(long)]
    pub recreate_local: bool,
}

pub fn sync(ctx: &Ctx, a: &SyncArgs) -> Result<i32> {
    let mut vault = ctx.vault()?;
    let opts = sync::SyncOptions {
        all: a.all,
        recreate_local: a.recreate_local,
    };
    let reps = with_progress(ctx.v, "syncing", |p| sync::sync(&mut vault, &opts, p))?;
    Ok(render(ctx.v, &Synced(reps)))
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct Synced(Vec<SyncReport>);

impl Render for Synced {
    fn text(&self, v: Verbosity) {
        for r in &self.0 {
            for p in &r.problems {
                eprintln!("coffer: {p}");
            }
            if r.forgotten_elsewhere > 0 {
                note(
                    v,
                    &format!(
                        "coffer: {} snapshot(s) of other hosts are in no tier any more (forgotten there): dropped from this catalog",
                        r.forgotten_elsewhere
                    ),
                );
            }
            note(
                v,
                &format!(
                    "coffer: tier {}: copied {} packs and {} WAL files ({}) and {} manifests{}",
                    r.tier,
                    r.packs_copied,
                    r.wal_files_copied,
                    bytes(r.bytes_copied),
                    r.manifests_copied,
                    if r.problems.is_empty() {
                        ""
                    } else {
                        "; some copies are still pending"
                    }
                ),
            );
        }
    }

    fn status(&self) -> i32 {
        if self.0.iter().any(|r| !r.problems.is_empty()) {
            coffer::error::exit::OFFSITE_PENDING
        } else {
            0
        }
    }
}

/// `coffer status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// List every tier first and bring the catalog in line with what it
    /// holds (a copy deleted behind coffer's back shows as pending);
    /// without it, status is the catalog's record since the last listing.
    /// Exit status 4 when a tier cannot be listed.
    #[arg(long)]
    pub check: bool,
}

pub fn status(ctx: &Ctx, a: &StatusArgs) -> Result<i32> {
    let vault = ctx.vault()?;
    let failed = if a.check {
        sync::check(&vault)?
    } else {
        Vec::new()
    };
    for (tier, why) in &failed {
        eprintln!("coffer: tier {tier} could not be listed: {why}");
    }
    let st = sync::status(&vault)?;
    let code = render(ctx.v, &Status(st));
    Ok(if failed.is_empty() {
        code
    } else {
        coffer::error::exit::INTEGRITY
    })
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct Status(Vec<TierStatus>);

impl Render for Status {
    fn text(&self, _: Verbosity) {
        out(&format!(
            "{:<8} {:>10} {:>14} {:>14} {:>12}  {}",
            "TIER", "SNAPSHOTS", "COMPLETE", "PACKS PENDING", "BYTES", "NEWEST COMPLETE"
        ));
        for t in &self.0 {
            out(&format!(
                "{:<8} {:>10} {:>14} {:>14} {:>12}  {}",
                t.tier,
                t.snapshots,
                t.snapshots_complete,
                t.packs_pending,
                bytes(t.bytes_pending),
                match (&t.newest_complete, t.newest_complete_age_seconds) {
                    (Some(c), Some(a)) => format!(
                        "{c} ({} ago)",
                        humantime::format_duration(std::time::Duration::from_secs(a))
                    ),
                    (Some(c), None) => c.clone(),
                    _ => "none".into(),
                }
            ));
        }
        for t in self.0.iter().filter(|t| t.lost) {
            out(&format!(
                "{:<8} LOST: its directory holds no vault; mount it if it is a disk that is not mounted, else `coffer sync --recreate-local` recreates it from another tier (restores read from the others meanwhile)",
                t.tier
            ));
        }
        for t in &self.0 {
            out(&format!(
                "{:<8} listed: {} (`coffer status --check` lists every tier now)",
                t.tier,
                t.last_listed.as_deref().unwrap_or("never")
            ));
        }
        for t in &self.0 {
            if let Some(c) = &t.oldest_check {
                out(&format!(
                    "{:<8} verified: every pack copy checked since {c} (coffer verify --budget re-reads the oldest first)",
                    t.tier
                ));
            }
        }
        for t in self.0.iter().filter(|t| t.wal_files_pending > 0) {
            out(&format!(
                "{:<8} WAL: {} file(s) waiting since {} (coffer sync uploads them now)",
                t.tier,
                t.wal_files_pending,
                t.wal_oldest_pending.as_deref().unwrap_or("-")
            ));
        }
    }
}
