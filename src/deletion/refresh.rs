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
use crate::pipeline::restore::ReadContext;
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

/// What the catalog held before the tiers were listed. Only these can be
/// found gone: a snapshot or pack recorded after the listing began (a
/// backup committing meanwhile) is not among them. Packs are recorded
/// after they are stored, so one read here and in no tier listed after was
/// deleted (by another host's prune) or lost.
pub struct Before {
    /// The catalog's snapshots.
    pub snapshots: Vec<SnapshotRecord>,
    /// The catalog's packs.
    pub packs: Vec<PackId>,
}

impl Before {
    /// Reads them; call before listing the tiers.
    ///
    /// # Errors
    /// Catalog errors.
    pub fn read(catalog: &Catalog) -> Result<Before> {
        Ok(Before {
            snapshots: catalog.snapshots(None)?,
            packs: catalog.packs()?.into_iter().map(|(p, _)| p).collect(),
        })
    }
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
    /// Packs the catalog listed that no tier holds any more (another
    /// host's prune deleted them, or they were lost): their chunks with a
    /// further copy now point there; prune forgets such a pack once no
    /// kept snapshot needs it.
    pub gone_packs: u64,
    /// Those packs.
    #[serde(skip)]
    pub gone: Vec<PackId>,
    /// Of them, those no snapshot needed: they left the catalog.
    pub forgotten_packs: u64,
    /// Objects that could not be read (the refresh goes on; they are
    /// neither learned nor deleted).
    pub problems: Vec<String>,
}

/// Brings the catalog up to date with `views`. `before` (given only when
/// every configured tier is among the views) is what the catalog held
/// before the tiers were listed:
/// - a snapshot of it in no tier was forgotten. Only other hosts'
///   snapshots are dropped so: one of this host's in no tier has lost its
///   manifest, and its data is kept (reported as a problem);
/// - a pack of it in no tier is gone (another host's prune deleted it, or
///   it was lost). Once the unknown packs are indexed, each of its chunks
///   with a further copy (where a repack on another host moved it) is
///   read from there. The rest stay where they were: lost data is still
///   named by its pack, and prune forgets the pack once no kept snapshot
///   needs it (see `prune`'s analysis).
///
/// Without an identity, unknown manifests and packs cannot be opened:
/// only the copies and what is gone are brought up to date.
///
/// # Errors
/// Catalog errors.
pub fn refresh(
    catalog: &mut Catalog,
    views: &[TierView],
    before: Option<&Before>,
    config: &VaultConfig,
    identity: Option<&Identity>,
) -> Result<Learned> {
    let mut learned = Learned::default();
    let droppable = before.map(|b| &b.snapshots[..]);
    let mut known: HashSet<SnapshotId> = catalog.snapshots(None)?.iter().map(|s| s.id).collect();
    for v in views {
        let t = &*v.tier;
        let states = catalog.snapshot_states(t.name())?;
        for id in &v.snapshots {
            let key = keys::snapshot(id);
            if known.contains(id) {
                // A copy found damaged stays so until sync replaces it:
                // being listed says nothing about its bytes.
                if !matches!(
                    states.get(id),
                    Some(CopyState::Present | CopyState::Corrupt)
                ) {
                    catalog.set_snapshot_copy(id, t.name(), CopyState::Present)?;
                }
                continue;
            }
            let Some(identity) = identity else {
                continue;
            };
            if catalog.deletion_pending(&key)? {
                continue;
            }
            match t.get(&key).map_err(|e| e.to_string()).and_then(|b| {
                Manifest::open(identity, &b)
                    .map(|m| (m, b))
                    .map_err(|e| e.to_string())
            }) {
                Ok((m, b)) if m.id == *id && m.vault_id == config.vault_id => {
                    catalog.insert_snapshot(&m, Some(&b), t.name())?;
                    // The next tier that holds it records its copy only.
                    known.insert(*id);
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
    let recorded: Option<HashSet<PackId>> = before.map(|b| b.packs.iter().copied().collect());
    refresh_packs(catalog, views, identity, recorded.as_ref(), &mut learned)?;
    if let Some(before) = before {
        let gone: Vec<PackId> = before
            .packs
            .iter()
            .filter(|p| !views.iter().any(|v| v.packs.contains_key(p)))
            .copied()
            .collect();
        learned.gone_packs = gone.len() as u64;
        catalog.move_chunks_out_of(&gone)?;
        learned.gone = gone;
    }
    Ok(learned)
}

/// Before a restore or verify: when a pack the catalog places in the
/// primary tier is not there, another host may have pruned the vault (or
/// the tier lost it). Then the catalog is refreshed from every tier (see
/// [`refresh`]) so that chunks another host repacked are followed to
/// their new packs. Cheap otherwise: one listing of the primary tier.
///
/// # Errors
/// Catalog errors.
pub fn catch_up(
    vault: &crate::vault::Vault,
    ctx: Option<&ReadContext>,
    progress: &dyn Progress,
) -> Result<Option<Learned>> {
    let identity = ctx.map(|c| &*c.identity);
    let mut catalog = vault.catalog()?;
    let before = Before::read(&catalog)?;
    let primary = vault.primary();
    // A primary tier that cannot be listed is the restore's or verify's to
    // report (restore falls back to the other tiers): no catch-up then.
    let Ok(listing) = primary.list(keys::PACKS) else {
        return Ok(None);
    };
    let listed: HashSet<PackId> = listing
        .iter()
        .filter_map(|o| keys::parse_pack(&o.key))
        .collect();
    // Any catalog pack, whatever state its copy is recorded in: a refresh
    // that could not finish (no identity, a tier unreachable) marks copies
    // missing, and catching up must not stop there.
    // Only packs the primary tier keeps count: in a shared vault, other
    // hosts' packs are not in it by design (replicate::Scope::Own).
    let kept = catalog.pack_states(primary.name())?;
    let stale = before
        .packs
        .iter()
        .any(|p| kept.contains_key(p) && !listed.contains(p));
    if !stale {
        return Ok(None);
    }
    let (views, unreachable) = list(&vault.tiers());
    let before = unreachable.is_empty().then_some(&before);
    let mut learned = refresh(&mut catalog, &views, before, &vault.config, identity)?;
    // With the identity, the gone packs no snapshot needs leave the
    // catalog (without it, they stay and verify reports them missing).
    if let Some(ctx) = ctx {
        let gone = super::gone::forget_unneeded(&catalog, ctx, &learned.gone, progress)?;
        learned.forgotten_packs = gone.forgotten.len() as u64;
    }
    progress.event(&Event::Step(format!(
        "catalog refreshed: {}",
        learned.summary()
    )));
    Ok(Some(learned))
}

impl Learned {
    /// One line: what was learned and dropped.
    pub fn summary(&self) -> String {
        format!(
            "{} snapshots and {} packs learned, {} snapshots and {} packs gone ({} forgotten)",
            self.snapshots,
            self.packs,
            self.dropped_snapshots,
            self.gone_packs,
            self.forgotten_packs
        )
    }
}

/// Packs: index the unknown ones, record which tiers hold the known ones.
fn refresh_packs(
    catalog: &mut Catalog,
    views: &[TierView],
    identity: Option<&Identity>,
    recorded: Option<&HashSet<PackId>>,
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
                // A copy found damaged stays so until sync replaces it:
                // being listed says nothing about its bytes.
                if !matches!(
                    states.get(id),
                    Some(CopyState::Present | CopyState::Corrupt)
                ) {
                    catalog.set_pack_copy(id, t.name(), CopyState::Present, false)?;
                }
                continue;
            }
            let Some(identity) = identity else {
                continue;
            };
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
        // Copies the catalog believes in that the listing does not show:
        // only packs recorded before the listing (one a backup records
        // meanwhile was stored after it was taken, and is there).
        let Some(recorded) = recorded else {
            continue;
        };
        for (id, state) in states {
            if state == CopyState::Present && !v.packs.contains_key(&id) && recorded.contains(&id) {
                catalog.set_pack_copy(&id, t.name(), CopyState::Missing, false)?;
            }
        }
    }
    Ok(())
}
