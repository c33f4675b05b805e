//! Snapshot manifests: one age file per snapshot holding JSON.
//!
//! JSON because a person with the identity, `age` and `jq` must be able to
//! read it without coffer; sealed because job names, hosts and source facts
//! (database names, table names, row counts) are private. Unknown fields are
//! kept (`extra`) and written back, so an older coffer that rewrites nothing
//! still shows them; a newer *format* number is refused with a clear error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{FormatError, Result};
use crate::ids::{ChunkId, SnapshotId, VaultId};
use crate::keys::{Identity, Recipients};

/// Manifest format version this crate writes and reads.
pub const MANIFEST_VERSION: u64 = 1;
/// Largest manifest plaintext a reader accepts.
pub const MAX_MANIFEST_LEN: usize = 16 * 1024 * 1024;

/// Well-known snapshot kinds. The field is a free string so newer kinds do
/// not break older readers.
pub mod kinds {
    /// A single file.
    pub const FILE: &str = "file";
    /// Standard input.
    pub const STDIN: &str = "stdin";
    /// A directory, stored as a tar stream.
    pub const TAR: &str = "tar";
    /// A command's standard output (`coffer backup --exec`).
    pub const COMMAND: &str = "command";
}

/// A snapshot manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_VERSION`] when written by this crate.
    pub format: u64,
    /// The snapshot id (also the object name).
    pub id: SnapshotId,
    /// The vault this snapshot belongs to.
    pub vault_id: VaultId,
    /// Job name (e.g. `nightly-db`).
    pub job: String,
    /// What the stream is: see [`kinds`].
    pub kind: String,
    /// RFC 3339 UTC time the backup started.
    pub created: String,
    /// Host that made it.
    pub host: String,
    /// Free tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Facts about the source (file name, database facts, ...).
    #[serde(default)]
    pub source: serde_json::Map<String, serde_json::Value>,
    /// Bytes in the stream.
    pub raw_size: u64,
    /// Bytes this snapshot added to the vault (new blobs, after compression).
    pub stored_size: u64,
    /// Data chunks in the stream.
    pub chunk_count: u64,
    /// Ids of the list chunks whose concatenation is the serialized chunk
    /// list (see `chunklist`).
    pub chunk_list: Vec<ChunkId>,
    /// Fields this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct VersionProbe {
    format: u64,
}

impl Manifest {
    /// Encodes to JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest always serializes")
    }

    /// Decodes JSON.
    ///
    /// # Errors
    /// [`FormatError::UnsupportedVersion`] for a newer format,
    /// [`FormatError::Corrupt`] for anything that is not a manifest.
    pub fn decode(json: &[u8]) -> Result<Self> {
        let probe: VersionProbe = serde_json::from_slice(json)
            .map_err(|e| FormatError::corrupt("manifest", e.to_string()))?;
        if probe.format != MANIFEST_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: "manifest",
                found: probe.format,
                supported: MANIFEST_VERSION,
            });
        }
        serde_json::from_slice(json).map_err(|e| FormatError::corrupt("manifest", e.to_string()))
    }

    /// Seals the manifest to `recipients`.
    ///
    /// # Errors
    /// See [`crate::seal::seal`].
    pub fn seal(&self, recipients: &Recipients) -> Result<Vec<u8>> {
        // Padded with spaces (JSON whitespace: every reader, and `jq`,
        // ignores it) to a Padmé length, so that the sealed size no longer
        // tells the stream's size to the chunk (SPEC "Threat model").
        let mut json = self.encode();
        let padded = crate::pad::padme(json.len()).min(MAX_MANIFEST_LEN.max(json.len()));
        json.resize(padded, b' ');
        crate::seal::seal(recipients, &json)
    }

    /// Opens a sealed manifest.
    ///
    /// # Errors
    /// See [`crate::seal::open`] and [`Manifest::decode`].
    pub fn open(identity: &Identity, sealed: &[u8]) -> Result<Self> {
        Self::decode(&crate::seal::open(
            identity,
            sealed,
            "manifest",
            MAX_MANIFEST_LEN,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format: MANIFEST_VERSION,
            id: SnapshotId([1; 16]),
            vault_id: VaultId([2; 16]),
            job: "nightly".into(),
            kind: kinds::FILE.into(),
            created: "2026-11-24T01:00:00Z".into(),
            host: "db1".into(),
            tags: vec!["t".into()],
            source: serde_json::Map::new(),
            raw_size: 10,
            stored_size: 5,
            chunk_count: 1,
            chunk_list: vec![ChunkId([3; 32])],
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn round_trip_keeps_unknown_fields() {
        let m = sample();
        let mut v: serde_json::Value = serde_json::from_slice(&m.encode()).unwrap();
        v["future_field"] = serde_json::json!({"x": 1});
        let back = Manifest::decode(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(back.extra["future_field"]["x"], 1);
        let again: serde_json::Value = serde_json::from_slice(&back.encode()).unwrap();
        assert_eq!(again["future_field"]["x"], 1);
    }

    #[test]
    fn newer_format_is_refused() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().encode()).unwrap();
        v["format"] = 2.into();
        let e = Manifest::decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            matches!(e, FormatError::UnsupportedVersion { found: 2, .. }),
            "{e}"
        );
    }

    #[test]
    fn sealed_size_does_not_tell_the_chunk_count() {
        let id = Identity::generate();
        let r = id.to_recipients();
        let with = |n: usize| {
            let mut m = sample();
            m.chunk_list = vec![ChunkId([3; 32]); n];
            m
        };
        // ~70 bytes of JSON per chunk id: 100 chunk counts, 100 JSON
        // lengths, but only a few sealed payload lengths (the age header
        // adds its own random-length grease on top)...
        let sizes: std::collections::BTreeSet<usize> = (1000..1100)
            .map(|n| {
                let sealed = with(n).seal(&r).unwrap();
                crate::seal::open(&id, &sealed, "manifest", MAX_MANIFEST_LEN)
                    .unwrap()
                    .len()
            })
            .collect();
        assert!(sizes.len() <= 5, "{sizes:?}");
        // ...and the padding is whitespace every reader skips.
        let b = with(1010).seal(&r).unwrap();
        assert_eq!(Manifest::open(&id, &b).unwrap().chunk_list.len(), 1010);
    }

    #[test]
    fn sealed_round_trip() {
        let id = Identity::generate();
        let m = sample();
        let ct = m.seal(&id.to_recipients()).unwrap();
        assert!(!ct.windows(7).any(|w| w == b"nightly"));
        assert_eq!(Manifest::open(&id, &ct).unwrap(), m);
    }
}
