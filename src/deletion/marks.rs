//! Condemned marks (vault-format/SPEC.md, "Deletion"): `condemned/<id>`,
//! plaintext JSON naming packs a prune found unneeded, in the tier that
//! holds them. Backups read them and never reuse those packs' chunks; a
//! later prune deletes what is still unneeded once the mark is older than
//! the grace period.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use vault_format::PackId;

use crate::tier::{Tier, TierError};

const PREFIX: &str = "condemned/";
/// Marks are small; a larger object is not one of ours.
const MAX_MARK: usize = 64 << 20;

/// A mark's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// Always 1.
    pub format: u32,
    /// When the packs were found unneeded (RFC 3339, the pruning host's clock).
    pub created: String,
    /// The host that pruned.
    pub host: String,
    /// The packs.
    pub packs: BTreeSet<PackId>,
}

/// A mark as found in a tier.
#[derive(Debug, Clone)]
pub struct StoredMark {
    /// Its key.
    pub key: String,
    /// Its contents.
    pub mark: Mark,
}

impl Mark {
    /// A new mark of `packs`, made now.
    pub fn new(packs: BTreeSet<PackId>) -> Mark {
        Mark {
            format: 1,
            // The real clock: marks are compared with lock heartbeats.
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            host: crate::util::hostname(),
            packs,
        }
    }

    /// When it was made, in unix seconds (0 when unreadable: as old as can
    /// be, which only makes the lock check stricter).
    pub fn created_unix(&self) -> u64 {
        humantime::parse_rfc3339(&self.created)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// Every mark in `tier`. A mark that does not parse is reported, not
/// skipped silently: its packs would otherwise be reused by backups.
///
/// # Errors
/// When the tier cannot be listed or read, or a mark is damaged.
pub fn read(tier: &dyn Tier) -> Result<Vec<StoredMark>, TierError> {
    let mut out = Vec::new();
    for o in tier.list(PREFIX)? {
        if o.size as usize > MAX_MARK {
            return Err(damaged(tier, &o.key, "too large"));
        }
        let bytes = match tier.get(&o.key) {
            Ok(b) => b,
            // Deleted between the listing and the read: a prune rewrote it.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        let mark: Mark =
            serde_json::from_slice(&bytes).map_err(|e| damaged(tier, &o.key, &e.to_string()))?;
        if mark.format != 1 {
            return Err(damaged(
                tier,
                &o.key,
                &format!(
                    "format {} is newer than this coffer; upgrade coffer",
                    mark.format
                ),
            ));
        }
        out.push(StoredMark { key: o.key, mark });
    }
    Ok(out)
}

fn damaged(tier: &dyn Tier, key: &str, why: &str) -> TierError {
    TierError::Remote {
        tier: tier.name().to_string(),
        op: "read",
        key: key.to_string(),
        detail: format!("damaged condemned mark ({why}); delete it by hand only if no prune is running, then run `coffer prune` again"),
    }
}

/// Stores a mark in `tier`; returns its key.
///
/// # Errors
/// When the tier refuses.
pub fn write(tier: &dyn Tier, mark: &Mark) -> Result<String, TierError> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).expect("the OS random number generator works");
    let key = format!("{PREFIX}{}", hex::encode(id));
    tier.put_bytes(
        &key,
        &serde_json::to_vec_pretty(mark).expect("marks serialize"),
    )?;
    Ok(key)
}

/// The packs condemned in `tier`.
///
/// # Errors
/// As [`read`].
pub fn condemned(tier: &dyn Tier) -> Result<BTreeSet<PackId>, TierError> {
    Ok(read(tier)?.into_iter().flat_map(|m| m.mark.packs).collect())
}
