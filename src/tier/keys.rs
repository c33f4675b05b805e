//! Object key layout in a tier (see SPEC.md, "Objects in a tier").

use vault_format::{PackId, SnapshotId};

/// The plaintext vault config.
pub const CONFIG: &str = "config";
/// Prefix of all packs.
pub const PACKS: &str = "packs/";
/// Prefix of all snapshot manifests.
pub const SNAPSHOTS: &str = "snapshots/";

/// `packs/ab/<id>`: a two-hex-digit fan-out keeps directories small on
/// local tiers and spreads S3 key prefixes.
pub fn pack(id: &PackId) -> String {
    let h = id.to_hex();
    format!("{PACKS}{}/{h}", &h[..2])
}

/// `snapshots/<id>`.
pub fn snapshot(id: &SnapshotId) -> String {
    format!("{SNAPSHOTS}{id}")
}

/// Parses a pack key back to its id (listing a tier).
pub fn parse_pack(key: &str) -> Option<PackId> {
    let rest = key.strip_prefix(PACKS)?;
    let (fan, hex) = rest.split_once('/')?;
    let id: PackId = hex.parse().ok()?;
    (fan == &hex[..2]).then_some(id)
}

/// Parses a snapshot key back to its id.
pub fn parse_snapshot(key: &str) -> Option<SnapshotId> {
    key.strip_prefix(SNAPSHOTS)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let p = PackId([0xab; 32]);
        assert!(pack(&p).starts_with("packs/ab/abab"));
        assert_eq!(parse_pack(&pack(&p)), Some(p));
        assert_eq!(parse_pack("packs/cd/abab"), None);
        let s = SnapshotId([1; 16]);
        assert_eq!(parse_snapshot(&snapshot(&s)), Some(s));
    }
}
