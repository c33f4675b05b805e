//! Pins (vault-format/SPEC.md, "Deletion"): `pins/<snapshot id>`, an age
//! file holding why the snapshot is pinned. The object's existence is the
//! pin, so a host holding only the push key sees it; the reason is sealed
//! like a manifest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vault_format::keys::{Identity, Recipients};
use vault_format::SnapshotId;

use crate::error::{Error, Result};
use crate::tier::{Tier, TierError};

const PREFIX: &str = "pins/";
/// Pins are a few hundred bytes; a larger object is not one of ours.
const MAX_PIN: u64 = 1 << 20;

/// A pin's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// Always 1.
    pub format: u32,
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// Why (e.g. `legal hold`).
    pub reason: String,
    /// When (RFC 3339).
    pub created: String,
    /// Which host pinned it.
    pub host: String,
}

/// The key of a snapshot's pin.
pub fn key(id: &SnapshotId) -> String {
    format!("{PREFIX}{id}")
}

/// Pins `id` in `tier` with `reason`. Pinning again keeps the first pin.
///
/// # Errors
/// When the tier refuses.
pub fn pin(tier: &dyn Tier, recipients: &Recipients, id: &SnapshotId, reason: &str) -> Result<()> {
    let p = Pin {
        format: 1,
        snapshot: *id,
        reason: reason.to_string(),
        created: crate::util::now_rfc3339(),
        host: crate::util::hostname(),
    };
    let sealed =
        vault_format::seal::seal(recipients, &serde_json::to_vec(&p).expect("pins serialize"))?;
    tier.put_bytes(&key(id), &sealed)?;
    Ok(())
}

/// Removes the pin of `id` from `tier` (absent is fine).
///
/// # Errors
/// When the tier refuses.
pub fn unpin(tier: &dyn Tier, id: &SnapshotId) -> Result<(), TierError> {
    tier.delete(&key(id))
}

/// The snapshots pinned in `tier`, with their reasons when `identity` can
/// open them (else the reason reads "sealed").
///
/// # Errors
/// When the tier cannot be listed or a pin read.
pub fn pins(tier: &dyn Tier, identity: Option<&Identity>) -> Result<BTreeMap<SnapshotId, String>> {
    let mut out = BTreeMap::new();
    for o in tier.list(PREFIX)? {
        let Some(id) = o
            .key
            .strip_prefix(PREFIX)
            .and_then(|h| h.parse::<SnapshotId>().ok())
        else {
            continue;
        };
        let reason = match identity {
            None => "reason sealed".to_string(),
            Some(identity) if o.size <= MAX_PIN => {
                let bytes = match tier.get(&o.key) {
                    Ok(b) => b,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                };
                let plain = vault_format::seal::open(identity, &bytes, "pin", MAX_PIN as usize)?;
                let p: Pin = serde_json::from_slice(&plain).map_err(|e| {
                    Error::Format(vault_format::FormatError::Corrupt {
                        what: "pin",
                        detail: e.to_string(),
                    })
                })?;
                p.reason
            }
            Some(_) => "reason unreadable (pin object too large)".to_string(),
        };
        out.insert(id, reason);
    }
    Ok(out)
}
