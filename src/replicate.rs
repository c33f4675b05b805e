//! Replication between tiers: make a tier hold every pack and manifest the
//! catalog knows, copying byte for byte from another tier (no re-encryption,
//! no re-chunking). Used by `coffer sync` and at the end of every backup.
//!
//! Order keeps "commit last" true on every tier: all packs first, and a
//! manifest only once the target holds every pack (if any pack could not be
//! copied, no manifest is). Every put is put-if-absent and every catalog
//! update follows the put, so an interrupted sync is simply run again.
//!
//! A pack fetched from a tier that is not a local directory is spooled to a
//! file while its BLAKE3 is computed; a copy whose hash does not match its id
//! is not propagated, and the next source is tried.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::sync::Arc;

use serde::Serialize;
use vault_format::PackId;

use crate::catalog::{Catalog, CopyState};
use crate::error::Result;
use crate::progress::{Event, Progress};
use crate::tier::{keys, Tier, TierError};

/// What a sync did for one target tier (`--json` of `coffer sync`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    /// Target tier.
    pub tier: String,
    /// Packs copied into it.
    pub packs_copied: u64,
    /// Ciphertext bytes copied.
    pub bytes_copied: u64,
    /// Manifests copied into it.
    pub manifests_copied: u64,
    /// Objects deleted from it that forget or prune had decided to delete.
    pub objects_deleted: u64,
    /// Deletions S3 Object Lock still refuses (retried by later runs).
    pub deletions_retained: u64,
    /// Snapshots of other hosts that no tier holds any more (their host
    /// forgot them): dropped from this catalog.
    pub forgotten_elsewhere: u64,
    /// WAL files uploaded to it in batches (the offsite tier).
    pub wal_files_copied: u64,
    /// Objects deleted behind coffer's back that S3 Object Lock kept, made
    /// current again (their delete markers removed).
    pub delete_markers_removed: u64,
    /// What could not be done (pack or snapshot, why).
    pub problems: Vec<String>,
}

fn keyset(t: &dyn Tier, prefix: &str) -> Result<HashSet<String>, TierError> {
    Ok(t.list(prefix)?.into_iter().map(|o| o.key).collect())
}

/// Brings `target` (an index into `tiers`) up to date with the catalog.
///
/// # Errors
/// When the target cannot be listed at all (e.g. unreachable); individual
/// objects that cannot be copied are reported in `problems`.
pub fn sync_to(
    catalog: &Catalog,
    tiers: &[Arc<dyn Tier>],
    target: usize,
    progress: &dyn Progress,
) -> Result<SyncReport> {
    let t = &tiers[target];
    let mut rep = SyncReport {
        tier: t.name().to_string(),
        ..Default::default()
    };
    sync_packs(catalog, tiers, target, progress, &mut rep)?;
    if !rep.problems.is_empty() {
        rep.problems.push(format!(
            "manifests were not copied to {}: a snapshot is only offered on a tier that holds all its packs",
            t.name()
        ));
        return Ok(rep);
    }
    sync_manifests(catalog, tiers, target, progress, &mut rep)?;
    // Objects deleted behind coffer's back that Object Lock kept: current
    // again, so that every other reader sees them too.
    for key in t.hidden_by_delete_markers() {
        match t.remove_delete_markers(&key) {
            Ok(()) => {
                rep.delete_markers_removed += 1;
                progress.event(&Event::Warning(format!(
                    "{key} in tier {} had been deleted behind coffer's back (Object Lock kept it): delete marker removed",
                    t.name()
                )));
            }
            Err(e) => rep.problems.push(format!(
                "{key} in tier {} is hidden by a delete marker that cannot be removed: {e}",
                t.name()
            )),
        }
    }
    catalog.set_tier_listed(t.name())?;
    Ok(rep)
}

/// Copies every pack the target lacks (or holds damaged) from another tier.
fn sync_packs(
    catalog: &Catalog,
    tiers: &[Arc<dyn Tier>],
    target: usize,
    progress: &dyn Progress,
    rep: &mut SyncReport,
) -> Result<()> {
    let t = &tiers[target];
    let have = keyset(&**t, keys::PACKS)?;
    let states = catalog.pack_states(t.name())?;
    // Listings of the other tiers, fetched lazily (only if something is missing).
    let mut others: Option<Vec<(usize, HashSet<String>)>> = None;
    for (id, size) in catalog.packs()? {
        let key = keys::pack(&id);
        let state = states.get(&id).copied();
        let present = have.contains(&key) && state != Some(CopyState::Corrupt);
        if present {
            if state != Some(CopyState::Present) {
                catalog.set_pack_copy(&id, t.name(), CopyState::Present, false)?;
            }
            continue;
        }
        let sources = others.get_or_insert_with(|| {
            tiers
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != target)
                .filter_map(|(i, s)| keyset(&**s, keys::PACKS).ok().map(|k| (i, k)))
                .collect()
        });
        let mut done = false;
        let mut why = Vec::new();
        for (i, listing) in sources.iter() {
            let s = &tiers[*i];
            if !listing.contains(&key)
                || catalog.pack_states(s.name())?.get(&id) == Some(&CopyState::Corrupt)
            {
                continue;
            }
            if state == Some(CopyState::Corrupt) {
                // Objects are immutable, but a damaged copy must go before the
                // good one can take its name.
                let _ = t.delete(&key);
            }
            match copy_pack(&**s, &**t, &id, &key) {
                Ok(()) => {
                    catalog.set_pack_copy(&id, t.name(), CopyState::Present, true)?;
                    rep.packs_copied += 1;
                    rep.bytes_copied += size;
                    progress.advance(size);
                    progress.event(&Event::PackStored {
                        id,
                        tier: t.name().to_string(),
                    });
                    done = true;
                    break;
                }
                Err(e) => why.push(format!("from {}: {e}", s.name())),
            }
        }
        if !done {
            catalog.set_pack_copy(&id, t.name(), CopyState::Pending, false)?;
            rep.problems.push(if why.is_empty() {
                format!("pack {id} is in no other tier to copy it from")
            } else {
                format!(
                    "pack {id} could not be copied to {}: {}",
                    t.name(),
                    why.join("; ")
                )
            });
        }
    }
    Ok(())
}

/// Copies every manifest the target lacks (once it holds every pack).
fn sync_manifests(
    catalog: &Catalog,
    tiers: &[Arc<dyn Tier>],
    target: usize,
    progress: &dyn Progress,
    rep: &mut SyncReport,
) -> Result<()> {
    let t = &tiers[target];
    let have = keyset(&**t, keys::SNAPSHOTS)?;
    let snap_states = catalog.snapshot_states(t.name())?;
    let hashes = catalog.sealed_hashes()?;
    for s in catalog.snapshots(None)? {
        let key = keys::snapshot(&s.id);
        let corrupt = snap_states.get(&s.id) == Some(&CopyState::Corrupt);
        if corrupt && have.contains(&key) {
            // Objects are immutable, but a replaced or damaged manifest
            // must go before the committed one can take its name back.
            if let Err(e) = t.delete(&key) {
                rep.problems.push(format!(
                    "the damaged manifest of snapshot {} in tier {} cannot be replaced: {e}",
                    s.id,
                    t.name()
                ));
                continue;
            }
        } else if have.contains(&key) {
            if snap_states.get(&s.id) != Some(&CopyState::Present) {
                catalog.set_snapshot_copy(&s.id, t.name(), CopyState::Present)?;
            }
            continue;
        }
        match copy_manifest(tiers, target, hashes.get(&s.id), &key) {
            Ok(()) => {
                catalog.set_snapshot_copy(&s.id, t.name(), CopyState::Present)?;
                rep.manifests_copied += 1;
                progress.event(&Event::ManifestStored { id: s.id });
            }
            // In no tier at all: another host forgot its snapshot (this
            // catalog learned it before). It leaves the catalog, as prune's
            // refresh would drop it; this host's own stays, and is a
            // problem (its manifest is lost, or another host forgot it).
            Err(CopyFailure::Nowhere) if s.host != crate::util::hostname() => {
                catalog.forget_snapshots(&[s.id], &[])?;
                rep.forgotten_elsewhere += 1;
            }
            Err(CopyFailure::Nowhere) => {
                catalog.set_snapshot_copy(&s.id, t.name(), CopyState::Pending)?;
                rep.problems.push(format!(
                    "snapshot {} of this host is in no tier (its manifest is lost, or another host forgot it): `coffer forget {}` if it should go",
                    s.id, s.id
                ));
            }
            Err(CopyFailure::Failed(e)) => {
                catalog.set_snapshot_copy(&s.id, t.name(), CopyState::Pending)?;
                rep.problems.push(format!(
                    "manifest of snapshot {} could not be copied to {}: {e}",
                    s.id,
                    t.name()
                ));
            }
        }
    }
    Ok(())
}

/// Why a manifest could not be copied.
enum CopyFailure {
    /// Every other tier answered that it does not hold it.
    Nowhere,
    /// Why, per tier.
    Failed(String),
}

/// Copies one manifest from the first other tier whose copy is the
/// committed one (its BLAKE3 is `hash`, when the catalog knows it).
fn copy_manifest(
    tiers: &[Arc<dyn Tier>],
    target: usize,
    hash: Option<&String>,
    key: &str,
) -> Result<(), CopyFailure> {
    let mut why = Vec::new();
    let mut nowhere = true;
    for (i, s) in tiers.iter().enumerate() {
        if i == target {
            continue;
        }
        match s.get(key) {
            Ok(b) if hash.is_some_and(|h| blake3::hash(&b).to_hex().as_str() != h) => {
                nowhere = false;
                why.push(format!(
                    "the copy in {} is not the one committed either",
                    s.name()
                ));
            }
            Ok(b) => {
                return tiers[target]
                    .put_bytes(key, &b)
                    .map(|_| ())
                    .map_err(|e| CopyFailure::Failed(e.to_string()))
            }
            Err(e) => {
                nowhere &= e.is_not_found();
                why.push(e.to_string());
            }
        }
    }
    Err(if nowhere && !why.is_empty() {
        CopyFailure::Nowhere
    } else {
        CopyFailure::Failed(why.join("; "))
    })
}

/// Copies one pack, checking its hash on the way when it is downloaded.
pub(crate) fn copy_pack(
    src: &dyn Tier,
    dst: &dyn Tier,
    id: &PackId,
    key: &str,
) -> Result<(), String> {
    if let Some(path) = src.local_path(key).filter(|p| p.is_file()) {
        return dst
            .put_file(key, &path)
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    let dir = dst
        .spool_dir()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(std::env::temp_dir);
    let mut spool = tempfile::Builder::new()
        .prefix("sync-")
        .tempfile_in(&dir)
        .map_err(|e| format!("spool in {}: {e}", dir.display()))?;
    let mut r = src.open(key).map_err(|e| e.to_string())?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    {
        let f = spool.as_file_mut();
        loop {
            let n = r.read(&mut buf).map_err(|e| format!("download: {e}"))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            f.write_all(&buf[..n]).map_err(|e| format!("spool: {e}"))?;
        }
        f.sync_data().map_err(|e| format!("spool: {e}"))?;
    }
    if h.finalize().as_bytes() != id.as_bytes() {
        return Err(format!(
            "the copy in {} is corrupt (its bytes do not hash to its id)",
            src.name()
        ));
    }
    dst.put_file(key, spool.path())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

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
    /// The tier is lost: its directory is gone (`coffer sync` recreates it).
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
