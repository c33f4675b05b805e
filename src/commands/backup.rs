//! `coffer backup`: one stream into the vault, recorded as a run.

use crate::error::Result;
use crate::pipeline::backup::{self, BackupContext, BackupReport, BackupRequest};
use crate::progress::Progress;
use crate::source::Source;
use crate::vault::Vault;

/// Backs up `source`; the run (success or failure, with the reason) is
/// recorded in the catalog either way.
///
/// # Errors
/// As [`backup::run`]; nothing is committed on error.
pub fn backup(
    vault: &Vault,
    source: &mut dyn Source,
    req: &BackupRequest,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let push = vault.push_key()?;
    // Spool files a killed backup left behind; a day is far longer than any
    // pack takes to seal, so a concurrent backup's spool is never touched.
    let _ = vault
        .local
        .remove_stale_tmp(std::time::Duration::from_secs(86_400));
    let catalog = vault.catalog()?;
    let run_id = catalog.start_run("backup", Some(&req.job))?;
    let ctx = BackupContext {
        tier: vault.primary(),
        offsite: vault.offsite(),
        catalog_path: vault.settings.catalog.clone(),
        config: vault.config.clone(),
        recipients: push.recipients,
        dedup_key: push.dedup_key,
        threads: crate::pipeline::threads(),
    };
    let r = backup::run(&ctx, source, req, progress);
    match &r {
        Ok(rep) => catalog.finish_run(
            run_id,
            if rep.offsite_pending() {
                crate::catalog::Outcome::Partial
            } else {
                crate::catalog::Outcome::Ok
            },
            rep.raw_size,
            None,
            Some(&rep.id),
            Some(&serde_json::to_value(rep).unwrap_or_default()),
        )?,
        Err(e) => catalog.finish_run(
            run_id,
            crate::catalog::Outcome::Failed,
            0,
            Some(&e.to_string()),
            None,
            None,
        )?,
    }
    r
}
