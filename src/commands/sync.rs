//! `coffer sync` and `coffer status`: replicate and report per tier.

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
pub fn sync(vault: &Vault, progress: &dyn Progress) -> Result<Vec<SyncReport>> {
    let catalog = vault.catalog()?;
    let run = catalog.start_run("sync", None)?;
    let tiers = vault.tiers();
    let mut out = Vec::new();
    for i in 0..tiers.len() {
        match replicate::sync_to(&catalog, &tiers, i, progress) {
            Ok(r) => out.push(r),
            Err(e) => out.push(SyncReport {
                tier: tiers[i].name().to_string(),
                problems: vec![e.to_string()],
                ..Default::default()
            }),
        }
    }
    let problems: Vec<_> = out
        .iter()
        .flat_map(|r| r.problems.iter().cloned())
        .collect();
    let bytes = out.iter().map(|r| r.bytes_copied).sum();
    catalog.finish_run(
        run,
        if problems.is_empty() {
            crate::catalog::Outcome::Ok
        } else {
            crate::catalog::Outcome::Partial
        },
        bytes,
        problems.first().map(String::as_str),
        None,
        Some(&serde_json::to_value(&out).unwrap_or_default()),
    )?;
    Ok(out)
}

/// Replication state per tier.
///
/// # Errors
/// Catalog errors.
pub fn status(vault: &Vault) -> Result<Vec<TierStatus>> {
    replicate::status(&vault.catalog()?, &vault.tiers())
}
