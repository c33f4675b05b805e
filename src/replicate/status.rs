//! What the catalog says each tier holds (`coffer status`), and matching
//! it to what a tier's listing says (`status --check`).

use std::sync::Arc;

use serde::Serialize;

use super::keyset;
use crate::catalog::{Catalog, CopyState};
use crate::error::Result;
use crate::tier::{keys, Tier};

/// Per-tier replication state (`coffer status`).
#[derive(Debug, Clone, Serialize)]
pub struct TierStatus {
    /// Tier name.
    pub tier: String,
    /// Snapshots in the catalog.
    pub snapshots: u64,
    /// Snapshots whose manifest (and therefore every pack) is in this tier.
    pub snapshots_complete: u64,
    /// Packs not (yet) known to be in this tier: pending, missing or corrupt.
    pub packs_pending: u64,
    /// Their ciphertext bytes.
    pub bytes_pending: u64,
    /// Deletions (forgotten manifests, pruned packs) decided and not yet
    /// done in this tier: `coffer sync` finishes them.
    pub deletions_pending: u64,
    /// Newest snapshot complete in this tier (RFC 3339), if any.
    pub newest_complete: Option<String>,
    /// Its age in seconds.
    pub newest_complete_age_seconds: Option<u64>,
    /// WAL files archived (`coffer wal push`) and not yet in this tier.
    pub wal_files_pending: u64,
    /// When the oldest of them was pushed (RFC 3339): the archive's lag.
    pub wal_oldest_pending: Option<String>,
    /// Verification coverage: the oldest check (verification, else write)
    /// of a pack copy present in this tier (RFC 3339).
    pub oldest_check: Option<String>,
    /// When this tier was last listed and the catalog matched to it (sync,
    /// verify, `status --check`); the rest of the status is the catalog's
    /// belief since then.
    pub last_listed: Option<String>,
    /// The tier is lost: its directory holds no vault (`coffer sync
    /// --recreate-local` recreates it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
}

/// Lists `tier` and brings the catalog's copy states in line with what it
/// holds: a copy recorded present that is not there becomes missing, one
/// that is there becomes present (`coffer status --check`). A copy recorded
/// corrupt stays so until sync replaces it.
///
/// # Errors
/// When the tier cannot be listed; catalog errors.
pub fn check_listing(catalog: &Catalog, tier: &dyn Tier) -> Result<()> {
    let packs = keyset(tier, keys::PACKS)?;
    let states = catalog.pack_states(tier.name())?;
    for (id, _) in catalog.packs()? {
        let there = packs.contains(&keys::pack(&id));
        let state = states.get(&id).copied();
        match (there, state) {
            (true, Some(CopyState::Present | CopyState::Corrupt)) => {}
            (true, _) => catalog.set_pack_copy(&id, tier.name(), CopyState::Present, false)?,
            (false, Some(CopyState::Present)) => {
                catalog.set_pack_copy(&id, tier.name(), CopyState::Missing, false)?
            }
            (false, _) => {}
        }
    }
    let manifests = keyset(tier, keys::SNAPSHOTS)?;
    let snap_states = catalog.snapshot_states(tier.name())?;
    for s in catalog.snapshots(None)? {
        let there = manifests.contains(&keys::snapshot(&s.id));
        match (there, snap_states.get(&s.id)) {
            (true, Some(CopyState::Present)) | (false, None) => {}
            (true, _) => catalog.set_snapshot_copy(&s.id, tier.name(), CopyState::Present)?,
            (false, Some(CopyState::Present)) => {
                catalog.set_snapshot_copy(&s.id, tier.name(), CopyState::Missing)?
            }
            (false, Some(_)) => {}
        }
    }
    catalog.set_tier_listed(tier.name())?;
    Ok(())
}

/// Replication state of every tier, from the catalog.
///
/// # Errors
/// Catalog errors.
pub fn status(catalog: &Catalog, tiers: &[Arc<dyn Tier>]) -> Result<Vec<TierStatus>> {
    let packs = catalog.packs()?;
    let snaps = catalog.snapshots(None)?;
    // The primary tier holds every pushed WAL file; the others get batches.
    let wal_pending = catalog.wal_pending(None)?;
    let mut out = Vec::new();
    for (i, t) in tiers.iter().enumerate() {
        let wal: &[crate::catalog::WalRecord] = if i == 0 { &[] } else { &wal_pending };
        let ps = catalog.pack_states(t.name())?;
        let ss = catalog.snapshot_states(t.name())?;
        let (mut n, mut bytes) = (0, 0);
        for (id, size) in &packs {
            // The local tier of a shared vault holds only what this host
            // keeps (see [`Scope::Own`]): other hosts' packs are not pending.
            if i == 0 && !ps.contains_key(id) {
                continue;
            }
            if ps.get(id) != Some(&CopyState::Present) {
                n += 1;
                bytes += size;
            }
        }
        let complete: Vec<_> = snaps
            .iter()
            .filter(|s| ss.get(&s.id) == Some(&CopyState::Present))
            .collect();
        let newest = complete.iter().map(|s| s.created.clone()).max();
        let age = newest.as_ref().and_then(|c| {
            humantime::parse_rfc3339(c)
                .ok()
                .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
                .map(|d| d.as_secs())
        });
        out.push(TierStatus {
            tier: t.name().to_string(),
            snapshots: snaps.len() as u64,
            snapshots_complete: complete.len() as u64,
            packs_pending: n,
            bytes_pending: bytes,
            deletions_pending: catalog.pending_deletions(Some(t.name()))?.len() as u64,
            newest_complete: newest,
            newest_complete_age_seconds: age,
            wal_files_pending: wal.len() as u64,
            wal_oldest_pending: wal.iter().map(|w| w.pushed.clone()).min(),
            oldest_check: catalog.unverified_since(t.name(), "9999")?.1,
            last_listed: catalog.tier_listed(t.name())?,
            lost: false,
        });
    }
    Ok(out)
}
