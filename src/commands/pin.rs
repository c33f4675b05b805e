//! `coffer pin` and `coffer unpin`: a pinned snapshot is never forgotten,
//! by any host (vault-format/SPEC.md, "Deletion").

use std::collections::BTreeMap;

use serde::Serialize;
use vault_format::SnapshotId;

use crate::catalog::{Catalog, RunKind, RunSummary};
use crate::deletion::pins;
use crate::error::{Error, Result};
use crate::vault::Vault;

/// What `pin` or `unpin` did (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct PinReport {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// Pinned now?
    pub pinned: bool,
    /// The reason, when pinned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Tiers the pin was written to (or removed from).
    pub tiers: Vec<String>,
}

impl RunSummary for PinReport {
    fn details(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self).ok()
    }
}

/// Pins a snapshot (`query`: an id, a prefix or `latest`) with a reason,
/// in every tier.
///
/// # Errors
/// [`Error::Config`] for an empty reason or an unknown snapshot;
/// [`Error::Tier`] when a tier cannot be written (the pin is idempotent:
/// run it again).
pub fn pin(vault: &Vault, query: &str, job: Option<&str>, reason: &str) -> Result<PinReport> {
    if reason.trim().is_empty() {
        return Err(Error::Config(
            "a pin needs a reason (--reason \"legal hold\"): it is what an auditor reads".into(),
        ));
    }
    let catalog = vault.catalog()?;
    let id = catalog.resolve_snapshot(query, job)?;
    let push = vault.push_key()?;
    catalog.record_run(RunKind::Pin, None, Some(&id), |_| {
        let mut tiers = Vec::new();
        for t in vault.tiers() {
            pins::pin(&*t, &push.recipients, &id, reason)?;
            tiers.push(t.name().to_string());
        }
        catalog.set_pin(&id, Some(reason))?;
        Ok(PinReport {
            snapshot: id,
            pinned: true,
            reason: Some(reason.to_string()),
            tiers,
        })
    })
}

/// Removes a snapshot's pin from every tier.
///
/// # Errors
/// As [`pin`].
pub fn unpin(vault: &Vault, query: &str, job: Option<&str>) -> Result<PinReport> {
    let catalog = vault.catalog()?;
    let id = catalog.resolve_snapshot(query, job)?;
    catalog.record_run(RunKind::Pin, None, Some(&id), |_| {
        let mut tiers = Vec::new();
        for t in vault.tiers() {
            pins::unpin(&*t, &id)?;
            tiers.push(t.name().to_string());
        }
        catalog.set_pin(&id, None)?;
        Ok(PinReport {
            snapshot: id,
            pinned: false,
            reason: None,
            tiers,
        })
    })
}

/// Brings the catalog's pins up to date with the tiers (the truth): a pin
/// in any reachable tier pins; a pin the catalog has is dropped only when
/// every tier could be listed and none has it. Returns the pins, with the
/// catalog's reason where it has one.
///
/// # Errors
/// Catalog errors.
pub fn refresh_pins(vault: &Vault, catalog: &Catalog) -> Result<BTreeMap<SnapshotId, String>> {
    let known: BTreeMap<SnapshotId, String> = catalog
        .snapshots(None)?
        .into_iter()
        .filter_map(|s| s.pin.map(|p| (s.id, p)))
        .collect();
    let mut found = BTreeMap::new();
    let mut complete = true;
    for t in vault.tiers() {
        match pins::pins(&*t, None) {
            Ok(p) => found.extend(p),
            Err(_) => complete = false,
        }
    }
    let mut out = BTreeMap::new();
    for (id, reason) in &found {
        let reason = known.get(id).cloned().unwrap_or_else(|| reason.clone());
        if !known.contains_key(id) {
            // Pinned by another host (or a rebuilt catalog): learn it.
            let _ = catalog.set_pin(id, Some(&reason));
        }
        out.insert(*id, reason);
    }
    for (id, reason) in known {
        if found.contains_key(&id) {
            continue;
        }
        if complete {
            catalog.set_pin(&id, None)?;
        } else {
            out.insert(id, reason);
        }
    }
    Ok(out)
}
