//! `coffer snapshots`: what the catalog lists.

use crate::catalog::SnapshotRecord;
use crate::error::Result;
use crate::vault::Vault;

/// Snapshots, oldest first, optionally of one job.
///
/// # Errors
/// Catalog errors.
pub fn snapshots(vault: &Vault, job: Option<&str>) -> Result<Vec<SnapshotRecord>> {
    Ok(vault.catalog()?.snapshots(job)?)
}
