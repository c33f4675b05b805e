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

mod status;
pub use status::{check_listing, status, TierStatus};

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
    /// Other hosts' snapshots learned from this tier (needs the identity).
    pub snapshots_learned: u64,
    /// Packs learned from this tier (their indexes read: chunks known).
    pub packs_learned: u64,
    /// What could not be done (pack or snapshot, why).
    pub problems: Vec<String>,
}

fn keyset(t: &dyn Tier, prefix: &str) -> Result<HashSet<String>, TierError> {
    Ok(t.list(prefix)?.into_iter().map(|o| o.key).collect())
}

/// What a sync copies into a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every pack and manifest the catalog knows: the offsite tier, which
    /// every host of a vault shares, and `coffer sync --all`.
    All,
    /// What this host's local tier holds or needs: packs it has a copy
    /// record for (its own, and those it was told to keep), and manifests
    /// of its own snapshots. Other hosts' packs and snapshots, learned from
    /// the shared tier, stay there.
    Own,
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
    sync_scoped(catalog, tiers, target, Scope::All, progress)
}

/// [`sync_to`] copying only what `scope` says.
///
/// # Errors
/// As [`sync_to`].
pub fn sync_scoped(
    catalog: &Catalog,
    tiers: &[Arc<dyn Tier>],
    target: usize,
    scope: Scope,
    progress: &dyn Progress,
) -> Result<SyncReport> {
    let t = &tiers[target];
    let mut rep = SyncReport {
        tier: t.name().to_string(),
        ..Default::default()
    };
    sync_packs(catalog, tiers, target, scope, progress, &mut rep)?;
    if !rep.problems.is_empty() {
        rep.problems.push(format!(
            "manifests were not copied to {}: a snapshot is only offered on a tier that holds all its packs",
            t.name()
        ));
        return Ok(rep);
    }
    sync_manifests(catalog, tiers, target, scope, progress, &mut rep)?;
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
    scope: Scope,
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
        if scope == Scope::Own && state.is_none() && !have.contains(&key) {
            continue;
        }
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
            // A source recorded corrupt is tried too: copy_pack checks every
            // source's bytes, and a copy put right by hand is good again.
            if !listing.contains(&key) {
                continue;
            }
            match copy_pack(&**s, &**t, &id, &key, state == Some(CopyState::Corrupt)) {
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
            // A copy known damaged stays so (a listing would otherwise take
            // it for a good one); an absent one is pending.
            if state != Some(CopyState::Corrupt) {
                catalog.set_pack_copy(&id, t.name(), CopyState::Pending, false)?;
            }
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
    scope: Scope,
    progress: &dyn Progress,
    rep: &mut SyncReport,
) -> Result<()> {
    let host = crate::util::hostname();
    let t = &tiers[target];
    let have = keyset(&**t, keys::SNAPSHOTS)?;
    let snap_states = catalog.snapshot_states(t.name())?;
    let hashes = catalog.sealed_hashes()?;
    for s in catalog.snapshots(None)? {
        let key = keys::snapshot(&s.id);
        if scope == Scope::Own
            && s.host != host
            && !snap_states.contains_key(&s.id)
            && !have.contains(&key)
        {
            continue;
        }
        // A replaced or damaged manifest is replaced by a copy that
        // matches, found first: with none, the target's copy stays.
        let replace = snap_states.get(&s.id) == Some(&CopyState::Corrupt) && have.contains(&key);
        if have.contains(&key) && !replace {
            if snap_states.get(&s.id) != Some(&CopyState::Present) {
                catalog.set_snapshot_copy(&s.id, t.name(), CopyState::Present)?;
            }
            continue;
        }
        match copy_manifest(tiers, target, hashes.get(&s.id), &key, replace) {
            Ok(()) => {
                catalog.set_snapshot_copy(&s.id, t.name(), CopyState::Present)?;
                rep.manifests_copied += 1;
                progress.event(&Event::ManifestStored { id: s.id });
            }
            Err(CopyFailure::Nowhere) if replace => {
                rep.problems.push(format!(
                    "the damaged manifest of snapshot {} in tier {} is the only copy: kept; restore a good one from a backup of the bucket",
                    s.id,
                    t.name()
                ));
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
            Err(CopyFailure::Failed(e)) if replace => {
                rep.problems.push(format!(
                    "the damaged manifest of snapshot {} in tier {} could not be replaced: {e}",
                    s.id,
                    t.name()
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
    replace: bool,
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
                // Only now, with a good copy in hand, the damaged one goes.
                if replace {
                    tiers[target]
                        .delete(key)
                        .map_err(|e| CopyFailure::Failed(e.to_string()))?;
                }
                return tiers[target]
                    .put_bytes(key, &b)
                    .map(|_| ())
                    .map_err(|e| CopyFailure::Failed(e.to_string()));
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

/// Copies one pack, its bytes checked against its id first, whether
/// downloaded or read from a local file: a damaged source is never
/// propagated. With `replace`, the target's (damaged) copy is deleted, but
/// only once a good copy is in hand: objects are immutable, so it must go
/// before the good one can take its name.
pub(crate) fn copy_pack(
    src: &dyn Tier,
    dst: &dyn Tier,
    id: &PackId,
    key: &str,
    replace: bool,
) -> Result<(), String> {
    let corrupt = || {
        format!(
            "the copy in {} is corrupt (its bytes do not hash to its id)",
            src.name()
        )
    };
    let mut spool = None;
    let path = match src.local_path(key).filter(|p| p.is_file()) {
        Some(path) => {
            let mut h = blake3::Hasher::new();
            std::fs::File::open(&path)
                .and_then(|mut f| std::io::copy(&mut f, &mut h))
                .map_err(|e| format!("read {}: {e}", path.display()))?;
            if h.finalize().as_bytes() != id.as_bytes() {
                return Err(corrupt());
            }
            path
        }
        None => {
            let dir = dst
                .spool_dir()
                .map(|p| p.to_path_buf())
                .unwrap_or_else(std::env::temp_dir);
            let mut file = tempfile::Builder::new()
                .prefix("sync-")
                .tempfile_in(&dir)
                .map_err(|e| format!("spool in {}: {e}", dir.display()))?;
            let mut r = src.open(key).map_err(|e| e.to_string())?;
            let mut h = blake3::Hasher::new();
            let mut buf = vec![0u8; 1 << 20];
            {
                let f = file.as_file_mut();
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
                return Err(corrupt());
            }
            spool.insert(file).path().to_path_buf()
        }
    };
    if replace {
        dst.delete(key).map_err(|e| e.to_string())?;
    }
    dst.put_file(key, &path)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
