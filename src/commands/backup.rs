//! `coffer backup`: one stream into the vault, its offsite copies completed,
//! recorded as a run.
//!
//! The pipeline ([`crate::pipeline::backup`]) commits the snapshot on the
//! primary tier and uploads packs offsite while it runs; what happens after
//! the commit is policy, and lives here: each offsite tier whose uploads did
//! not fail is completed (this run's manifest, and anything pending from
//! earlier runs); one that failed is left pending for `coffer sync`, and
//! the report says so (exit status 3).

use std::sync::Arc;
use std::time::{Duration, Instant};

use vault_format::SnapshotId;

use crate::catalog::{Catalog, CopyState, Outcome, RunKind, RunSummary};
use crate::error::{Error, Result};
use crate::pipeline::backup::{self, BackupContext, BackupRequest, Committed};
pub use crate::pipeline::backup::{BackupReport, OffsiteReport};
use crate::progress::{Event, Progress};
use crate::source::Source;
use crate::tier::Tier;
use crate::vault::Vault;

impl RunSummary for BackupReport {
    fn outcome(&self) -> Outcome {
        if self.offsite_pending() {
            Outcome::Partial
        } else {
            Outcome::Ok
        }
    }
    fn bytes(&self) -> u64 {
        self.raw_size
    }
    fn snapshot(&self) -> Option<SnapshotId> {
        Some(self.id)
    }
    fn details(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self).ok()
    }
}

/// Backs up `source` into `vault`; the run (success or failure, with the
/// reason) is recorded in the catalog either way.
///
/// # Errors
/// As [`backup_with`]; nothing is committed on error.
pub fn backup(
    vault: &Vault,
    source: &mut dyn Source,
    req: &BackupRequest,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let catalog = vault.catalog()?;
    catalog.record_run(RunKind::Backup, Some(&req.job), None, |_| {
        backup_unrecorded(vault, source, req, progress)
    })
}

/// [`backup()`] without recording a run: for commands that record one run
/// around more work than the stream (a pg backup starts pg_dump first).
///
/// # Errors
/// As [`backup()`].
pub fn backup_unrecorded(
    vault: &Vault,
    source: &mut dyn Source,
    req: &BackupRequest,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    vault.require_local("a backup")?;
    let push = vault.push_key()?;
    // Spool files a killed backup left behind; a day is far longer than any
    // pack takes to seal, so a concurrent backup's spool is never touched.
    let _ = vault
        .local
        .remove_stale_tmp(std::time::Duration::from_secs(86_400));
    let ctx = BackupContext {
        tier: vault.primary(),
        offsite: vault.offsite(),
        catalog_path: vault.settings.catalog.clone(),
        config: vault.config.clone(),
        recipients: push.recipients,
        dedup_key: push.dedup_key,
        threads: crate::pipeline::threads(),
        offsite_retry: crate::vault::settings::duration_setting(
            &vault
                .settings
                .s3
                .as_ref()
                .and_then(|s| s.retry_uploads_for.clone()),
            "[s3] retry_uploads_for",
            OFFSITE_RETRY,
        )?,
    };
    backup_with(&ctx, source, req, progress)
}

/// Runs the pipeline with `ctx` and completes the offsite copies.
///
/// # Errors
/// As [`backup::run`]; a full disk is [`Error::DiskFull`], which says what
/// to do.
pub fn backup_with(
    ctx: &BackupContext,
    source: &mut dyn Source,
    req: &BackupRequest,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let committed = backup::run(ctx, source, req, progress).map_err(|e| {
        if e.is_disk_full() {
            Error::DiskFull { cause: Box::new(e) }
        } else {
            e
        }
    })?;
    let catalog = Catalog::open(&ctx.catalog_path)?;
    complete_offsite(&catalog, ctx, committed, progress)
}

/// How long failed offsite uploads are retried after the commit by default:
/// long enough to ride out a store's restart or a network blip, short
/// enough that a nightly job does not hang on an outage.
const OFFSITE_RETRY: Duration = Duration::from_secs(120);
/// The first retry's delay; each further one doubles, up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// After the commit: brings each offsite tier up to date (this run's packs
/// that failed to upload during the run, its manifest, and anything pending
/// from earlier runs), retrying with backoff for `ctx.offsite_retry`, and
/// reports what is still pending.
fn complete_offsite(
    catalog: &Catalog,
    ctx: &BackupContext,
    c: Committed,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let mut tiers: Vec<Arc<dyn Tier>> = vec![ctx.tier.clone()];
    tiers.extend(ctx.offsite.iter().cloned());
    let mut offsite = Vec::new();
    for (i, (tier, failed)) in ctx.offsite.iter().zip(&c.upload_failures).enumerate() {
        catalog.set_snapshot_copy(&c.report.id, tier.name(), CopyState::Pending)?;
        // The window starts when the first attempt after the commit fails.
        let mut deadline = None;
        let mut delay = RETRY_FIRST;
        if let Some(why) = failed {
            progress.event(&Event::Warning(format!(
                "uploads to tier {} failed during the backup ({why}); retrying",
                tier.name()
            )));
        }
        let reason = loop {
            let why = match crate::replicate::sync_to(catalog, &tiers, i + 1, progress) {
                Ok(r) if r.problems.is_empty() => break None,
                Ok(r) => r.problems.join("; "),
                Err(e) => e.to_string(),
            };
            // Only what may pass is worth waiting for: a store that refuses
            // (no such bucket, credentials) will refuse again.
            if let Err(e) = tier.head(crate::tier::keys::CONFIG) {
                if !e.is_transient() {
                    break Some(why);
                }
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + ctx.offsite_retry);
            if Instant::now() + delay > deadline {
                break Some(why);
            }
            progress.event(&Event::Warning(format!(
                "offsite copy in tier {} incomplete ({why}); retrying in {}",
                tier.name(),
                humantime::format_duration(delay)
            )));
            std::thread::sleep(delay);
            delay = (delay * 2).min(RETRY_MAX);
        };
        if let Some(why) = &reason {
            progress.event(&Event::Warning(format!(
                "offsite copy in tier {} is pending: {why}; run `coffer sync` when it is reachable",
                tier.name()
            )));
        }
        offsite.push(OffsiteReport {
            tier: tier.name().to_string(),
            complete: reason.is_none(),
            pending_reason: reason,
        });
    }
    let mut report = c.report;
    report.offsite = offsite;
    report.seconds = c.started.elapsed().as_secs_f64();
    report.offsite_lag_seconds = c.ingest_done.elapsed().as_secs_f64();
    Ok(report)
}
