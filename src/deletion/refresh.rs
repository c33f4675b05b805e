//! What the tiers hold, and the catalog brought up to date with it before
//! prune decides anything: other hosts' snapshots and packs, orphans of
//! killed backups, snapshots another host forgot, copies gone missing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use vault_format::config::VaultConfig;
use vault_format::keys::Identity;
use vault_format::manifest::Manifest;
use vault_format::pack::PackReader;
use vault_format::{PackId, SnapshotId};

use crate::catalog::{Catalog, CopyState, Placement, SnapshotRecord};
use crate::error::Result;
use crate::progress::{Event, Progress};
use crate::tier::{keys, Tier};

/// One reachable tier's listing.
pub struct TierView {
    /// The tier.
    pub tier: Arc<dyn Tier>,
    /// Its packs and their sizes.
    pub packs: HashMap<PackId, u64>,
    /// Its manifests.
    pub snapshots: HashSet<SnapshotId>,
}

/// Lists every tier; an unreachable one is returned with why.
pub fn list(tiers: &[Arc<dyn Tier>]) -> (Vec<TierView>, Vec<(String, String)>) {
    let mut views = Vec::new();
    let mut unreachable = Vec::new();
    for t in tiers {
        let listed = t
            .list(keys::PACKS)
            .and_then(|p| Ok((p, t.list(keys::SNAPSHOTS)?)));
        match listed {
            Ok((packs, snaps)) => views.push(TierView {
                tier: t.clone(),
                packs: packs
                    .iter()
                    .filter_map(|o| keys::parse_pack(&o.key).map(|id| (id, o.size)))
                    .collect(),
                snapshots: snaps
                    .iter()
                    .filter_map(|o| keys::parse_snapshot(&o.key))
                    .collect(),
            }),
            Err(e) => unreachable.push((t.name().to_string(), e.to_string())),
        }
    }
    (views, unreachable)
}

/// What a refresh learned.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Learned {
    /// Snapshots found in a tier that the catalog did not list.
    pub snapshots: u64,
    /// Packs found in a tier that the catalog did not know.
    pub packs: u64,
    /// Snapshots the catalog listed that no tier holds any more (another
    /// host forgot them).
    pub dropped_snapshots: u64,
    /// Objects that could not be read (the refresh goes on; they are
    /// neither learned nor deleted).
    pub problems: Vec<String>,
}

/// Brings the catalog up to date with `views`. `droppable` (when every
/// configured tier is among the views) are the catalog's snapshots read
/// *before* the tiers were listed: one of them in no tier was forgotten
/// (a snapshot committed after the listing is not among them). Only other
/// hosts' snapshots are dropped so: one of this host's in no tier has lost
/// its manifest, and its data is kept (reported as a problem).
///
/// # Errors
/// Catalog errors.
pub fn refresh(
    catalog: &mut Catalog,
    views: &[TierView],
    droppable: Option<&[SnapshotRecord]>,
    config: &VaultConfig,
    identity: &Identity,
    progress: &dyn Progress,
) -> Result<Learned> {
    let mut learned = Learned::default();
    let known: HashSet<SnapshotId> = catalog.snapshots(None)?.iter().map(|s| s.id).collect();
    for v in views {
        let t = &*v.tier;
        let states = catalog.snapshot_states(t.name())?;
        for id in &v.snapshots {
            let key = keys::snapshot(id);
            if known.contains(id) {
                if states.get(id) != Some(&CopyState::Present) {
                    catalog.set_snapshot_copy(id, t.name(), CopyState::Present)?;
                }
                continue;
            }
            if catalog.deletion_pending(&key)? {
                continue;
            }
            match t
                .get(&key)
                .map_err(|e| e.to_string())
                .and_then(|b| Manifest::open(identity, &b).map_err(|e| e.to_string()))
            {
                Ok(m) if m.id == *id && m.vault_id == config.vault_id => {
                    catalog.insert_snapshot(&m, t.name())?;
                    learned.snapshots += 1;
                }
                Ok(_) => learned.problems.push(format!(
                    "snapshot {id} in tier {}: names another snapshot or vault",
                    t.name()
                )),
                Err(e) => learned
                    .problems
                    .push(format!("snapshot {id} in tier {}: {e}", t.name())),
            }
        }
    }
    if let Some(before) = droppable {
        let host = crate::util::hostname();
        let mut gone = Vec::new();
        for s in before {
            if views.iter().any(|v| v.snapshots.contains(&s.id)) {
                continue;
            }
            if s.host == host {
                learned.problems.push(format!(
                    "snapshot {} of this host is in no tier (its manifest is lost, or another host forgot it): its data is kept; forget it by id if it should go",
                    s.id
                ));
            } else {
                gone.push(s.id);
            }
        }
        learned.dropped_snapshots = gone.len() as u64;
        catalog.forget_snapshots(&gone, &[])?;
    }
    refresh_packs(catalog, views, identity, &mut learned)?;
    progress.event(&Event::Step(format!(
        "prune: refreshed ({} snapshots and {} packs learned, {} snapshots gone)",
        learned.snapshots, learned.packs, learned.dropped_snapshots
    )));
    Ok(learned)
}

/// Packs: index the unknown ones, record which tiers hold the known ones.
fn refresh_packs(
    catalog: &mut Catalog,
    views: &[TierView],
    identity: &Identity,
    learned: &mut Learned,
) -> Result<()> {
    let known: HashSet<PackId> = catalog.packs()?.iter().map(|(p, _)| *p).collect();
    let mut indexed: HashSet<PackId> = HashSet::new();
    for v in views {
        let t = &*v.tier;
        let states = catalog.pack_states(t.name())?;
        for (id, size) in &v.packs {
            let key = keys::pack(id);
            if known.contains(id) || indexed.contains(id) {
                if states.get(id) != Some(&CopyState::Present) {
                    catalog.set_pack_copy(id, t.name(), CopyState::Present, false)?;
                }
                continue;
            }
            if catalog.deletion_pending(&key)? {
                continue;
            }
            let opened = t
                .open(&key)
                .map_err(|e| e.to_string())
                .and_then(|src| PackReader::open(identity, src).map_err(|e| e.to_string()));
            match opened {
                Ok(r) => {
                    catalog.insert_pack(
                        id,
                        *size,
                        r.index(),
                        t.name(),
                        CopyState::Present,
                        Placement::KeepFirst,
                    )?;
                    indexed.insert(*id);
                    learned.packs += 1;
                }
                Err(e) => learned
                    .problems
                    .push(format!("pack {id} in tier {}: {e}", t.name())),
            }
        }
        // Copies the catalog believes in that the listing does not show.
        for (id, state) in states {
            if state == CopyState::Present && !v.packs.contains_key(&id) {
                catalog.set_pack_copy(&id, t.name(), CopyState::Missing, false)?;
            }
        }
    }
    Ok(())
}
