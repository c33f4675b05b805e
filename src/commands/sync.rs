//! `coffer sync` and `coffer status`: replicate and report per tier.

use crate::catalog::{Outcome, RunKind, RunSummary};
use crate::deletion::pending;
use crate::error::Result;
use crate::progress::Progress;
use crate::replicate::{self, SyncReport, TierStatus};
use crate::vault::Vault;

/// Brings every tier up to date from the others (uploads what is pending
/// offsite, repairs a damaged or missing local copy from S3). Safe to
/// interrupt and run again; records the run.
///
/// # Errors
/// Catalog errors; a tier that cannot be listed is reported in its report.
pub fn sync(vault: &mut Vault, progress: &dyn Progress) -> Result<Vec<SyncReport>> {
    // A lost local tier is recreated (with the vault's config from S3);
    // listing it empty below copies every pack and manifest back.
    if vault.recreate_local()? {
        progress.event(&crate::progress::Event::Warning(format!(
            "the local tier was lost: recreated it at {} from the s3 tier; copying its packs back",
            vault.settings.local.path.display()
        )));
    }
    let vault = &*vault;
    let catalog = vault.catalog()?;
    let tiers = vault.tiers();
    let reports =
        catalog.record_run(RunKind::Sync, None, None, |_| -> Result<SyncRun> {
            // Deletions decided earlier (forget, prune) that a tier missed.
            let deleted = pending::run(&catalog, &tiers, |_| true, progress)?;
            let mut out = Vec::new();
            for i in 0..tiers.len() {
                let mut r = match replicate::sync_to(&catalog, &tiers, i, progress) {
                    Ok(r) => r,
                    Err(e) => SyncReport {
                        tier: tiers[i].name().to_string(),
                        problems: vec![e.to_string()],
                        ..Default::default()
                    },
                };
                if let Some(d) = deleted.iter().find(|d| d.tier == r.tier) {
                    r.objects_deleted = d.deleted;
                    r.deletions_retained = d.retained.len() as u64;
                    r.problems.extend(d.failed.iter().map(|(k, why)| {
                        format!("{k} could not be deleted from {}: {why}", r.tier)
                    }));
                }
                if i > 0 {
                    // Everything `wal push` stored and no batch holds yet.
                    match crate::wal::upload::upload(vault, None, true) {
                        Ok(w) => {
                            r.wal_files_copied = w.files as u64;
                            r.bytes_copied += w.bytes;
                            r.problems.extend(w.problems);
                        }
                        Err(e) => r.problems.push(format!("WAL upload: {e}")),
                    }
                }
                out.push(r);
            }
            Ok(SyncRun(out))
        })?;
    Ok(reports.0)
}

/// A sync's reports, as its run records them.
struct SyncRun(Vec<SyncReport>);

impl RunSummary for SyncRun {
    fn outcome(&self) -> Outcome {
        if self.problem().is_some() {
            Outcome::Partial
        } else {
            Outcome::Ok
        }
    }
    fn bytes(&self) -> u64 {
        self.0.iter().map(|r| r.bytes_copied).sum()
    }
    fn problem(&self) -> Option<String> {
        self.0
            .iter()
            .flat_map(|r| r.problems.first())
            .next()
            .cloned()
    }
    fn details(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.0).ok()
    }
}

/// Replication state per tier.
///
/// # Errors
/// Catalog errors.
pub fn status(vault: &Vault) -> Result<Vec<TierStatus>> {
    let mut st = replicate::status(&vault.catalog()?, &vault.tiers())?;
    for t in st.iter_mut() {
        t.lost = vault.local_lost && t.tier == "local";
    }
    Ok(st)
}

/// `coffer status --check`: lists every tier first, so that the status
/// shows what the tiers hold rather than what the catalog last knew.
/// Returns the tiers that could not be listed, with why.
///
/// # Errors
/// Catalog errors.
pub fn check(vault: &Vault) -> Result<Vec<(String, String)>> {
    let catalog = vault.catalog()?;
    let mut failed = Vec::new();
    for t in vault.tiers() {
        if vault.local_lost && t.name() == "local" {
            continue;
        }
        if let Err(e) = replicate::check_listing(&catalog, &*t) {
            failed.push((t.name().to_string(), e.to_string()));
        }
    }
    Ok(failed)
}
