//! `coffer index rebuild`: recreate the catalog from a tier with the identity.
//!
//! The WAL archive's rows are recreated from every tier that answers
//! ([`crate::wal::rebuild`]).
//!
//! The new catalog is built beside the old one under a temporary name and
//! renamed over it only when complete, so an interrupted rebuild leaves the
//! old catalog in place.

use std::collections::HashSet;

use serde::Serialize;
use vault_format::config::VaultConfig;
use vault_format::manifest::Manifest;
use vault_format::pack::PackReader;
use vault_format::{PackId, SnapshotId};

use crate::catalog::{Catalog, CopyState, Placement};
use crate::error::{Error, Result};
use crate::tier::{keys, Tier};
use crate::vault::Vault;

/// What a rebuild found (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct RebuildReport {
    /// Tier read first (`--tier`).
    pub tier: String,
    /// Every tier read, in order: the one named, then the others (what only
    /// they hold is added, so a snapshot any tier holds is kept).
    pub tiers_read: Vec<String>,
    /// Packs indexed.
    pub packs: u64,
    /// Chunks indexed.
    pub chunks: u64,
    /// Snapshots found.
    pub snapshots: u64,
    /// WAL files recorded (from every tier that answered).
    pub wal_files: u64,
    /// Objects that could not be read, with why.
    pub problems: Vec<String>,
}

/// Rebuilds the catalog of `vault` from `tier`.
///
/// # Errors
/// [`Error::Key`] when the identity does not open the vault; tier and
/// catalog errors.
pub fn rebuild(
    vault: &Vault,
    tier: &dyn Tier,
    identity: &vault_format::keys::Identity,
) -> Result<RebuildReport> {
    let config = VaultConfig::decode(&tier.get(keys::CONFIG)?)?;
    if config.vault_id != vault.config.vault_id {
        return Err(Error::Config(format!(
            "tier {} holds vault {}, not {}",
            tier.name(),
            config.vault_id,
            vault.config.vault_id
        )));
    }
    let dedup_key = config.open_dedup_key(identity).map_err(|_| {
        Error::Key(format!(
            "the identity does not open vault {}",
            config.vault_id
        ))
    })?;

    let final_path = vault.settings.catalog.clone();
    let tmp_path = final_path.with_extension("rebuild.sqlite");
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", tmp_path.display()));
    }
    let mut cat = Catalog::open(&tmp_path)?;
    cat.bind_vault(&vault.settings.vault_id)?;
    let mut rep = RebuildReport {
        tier: tier.name().to_string(),
        tiers_read: vec![tier.name().to_string()],
        packs: 0,
        chunks: 0,
        snapshots: 0,
        wal_files: 0,
        problems: Vec::new(),
    };
    read_tier(&mut cat, tier, identity, &config, &mut rep)?;
    // A snapshot another tier holds must not be dropped (one whose upload
    // is still pending is only in the local tier): the other tiers add
    // their copies of what is known, and whatever only they hold.
    for other in vault.tiers() {
        if other.name() == tier.name() {
            continue;
        }
        rep.tiers_read.push(other.name().to_string());
        if let Err(e) = read_tier(&mut cat, &*other, identity, &config, &mut rep) {
            rep.problems.push(format!(
                "tier {} could not be read ({e}): snapshots only it holds are not in the catalog; run `coffer index rebuild` again when it answers",
                other.name()
            ));
        }
    }
    let mut jobs: std::collections::BTreeSet<String> =
        cat.snapshots(None)?.into_iter().map(|s| s.job).collect();
    jobs.extend(vault.settings.jobs.iter().map(|j| j.name.clone()));
    let wal = crate::wal::rebuild::rebuild(&mut cat, vault, &dedup_key.wal_key(), &jobs)?;
    rep.wal_files = wal.files;
    rep.problems.extend(wal.problems);
    drop(cat);
    for ext in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", final_path.display()));
    }
    std::fs::rename(&tmp_path, &final_path).map_err(|e| Error::Output {
        what: final_path.display().to_string(),
        io: e,
    })?;
    Ok(rep)
}

/// Adds what `tier` holds to the catalog being rebuilt: a copy for each
/// pack and manifest already known (from a tier read before: a listing,
/// no download), and the packs and snapshots not yet known (opened with
/// the identity). Damaged objects are problems; a tier that cannot be
/// listed is an error for the caller to judge.
fn read_tier(
    cat: &mut Catalog,
    tier: &dyn Tier,
    identity: &vault_format::keys::Identity,
    config: &VaultConfig,
    rep: &mut RebuildReport,
) -> Result<()> {
    let known: HashSet<PackId> = cat.packs()?.into_iter().map(|(id, _)| id).collect();
    for obj in tier.list(keys::PACKS)? {
        let Some(id) = keys::parse_pack(&obj.key) else {
            continue;
        };
        if known.contains(&id) {
            cat.set_pack_copy(&id, tier.name(), CopyState::Present, false)?;
            continue;
        }
        let opened = tier
            .open(&obj.key)
            .map_err(|e| e.to_string())
            .and_then(|src| PackReader::open(identity, src).map_err(|e| e.to_string()));
        match opened {
            Ok(r) => {
                cat.insert_pack(
                    &id,
                    obj.size,
                    r.index(),
                    tier.name(),
                    CopyState::Present,
                    Placement::KeepFirst,
                )?;
                rep.packs += 1;
                rep.chunks += r.index().chunk_count() as u64;
            }
            Err(e) => rep
                .problems
                .push(format!("pack {id} in tier {}: {e}", tier.name())),
        }
    }
    let known: HashSet<SnapshotId> = cat.snapshots(None)?.into_iter().map(|s| s.id).collect();
    for obj in tier.list(keys::SNAPSHOTS)? {
        let Some(id) = keys::parse_snapshot(&obj.key) else {
            continue;
        };
        let manifest = if known.contains(&id) {
            Ok((cat.manifest(&id)?, None))
        } else {
            tier.get(&obj.key).map_err(|e| e.to_string()).and_then(|b| {
                Manifest::open(identity, &b)
                    .map(|m| (m, Some(b)))
                    .map_err(|e| e.to_string())
            })
        };
        match manifest {
            Ok((m, sealed)) if m.id == id && m.vault_id == config.vault_id => {
                if !known.contains(&id) {
                    rep.snapshots += 1;
                }
                cat.insert_snapshot(&m, sealed.as_deref(), tier.name())?;
            }
            Ok(_) => rep.problems.push(format!(
                "snapshot {id} in tier {}: manifest names another snapshot or vault",
                tier.name()
            )),
            Err(e) => rep
                .problems
                .push(format!("snapshot {id} in tier {}: {e}", tier.name())),
        }
    }
    Ok(())
}
