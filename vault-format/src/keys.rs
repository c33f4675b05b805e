//! Keys: the dedup key and the age recipients/identities.
//!
//! The *dedup key* is 32 random bytes made at `init`. Sub-keys are derived
//! from it with BLAKE3's `derive_key` so that one secret never serves two
//! purposes: the chunk-id key names chunks, the chunker seed perturbs FastCDC's
//! gear table (so chunk boundaries, and thus sizes, do not fingerprint known
//! plaintext). The dedup key is part of the *push key*: a host that backs up
//! needs it, and a thief of it learns nothing about the vault's contents (it
//! decrypts nothing); see SPEC.md, "Threat model".

use std::fmt;
use std::str::FromStr;

use crate::error::{FormatError, Result};
use crate::ids::ChunkId;

const CHUNK_ID_CONTEXT: &str = "coffer vault 2026-11 chunk id v1";
const CHUNKER_SEED_CONTEXT: &str = "coffer vault 2026-11 chunker seed v1";
const WAL_CONTEXT: &str = "coffer vault 2026-11 wal v1";

/// The vault's dedup key. Never printed: `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct DedupKey([u8; 32]);

impl DedupKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        DedupKey(crate::ids::random_bytes())
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        DedupKey(b)
    }

    /// The key as lowercase hex (for the push key file and the sealed copy in
    /// the vault config). Handle with care.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The key that names chunks.
    pub fn chunk_id_key(&self) -> ChunkIdKey {
        ChunkIdKey(blake3::derive_key(CHUNK_ID_CONTEXT, &self.0))
    }

    /// The key that names WAL archives and fingerprints archived WAL files
    /// (see [`crate::wal`]).
    pub fn wal_key(&self) -> WalKey {
        WalKey(blake3::derive_key(WAL_CONTEXT, &self.0))
    }

    /// The 64-bit seed XORed into FastCDC's gear tables.
    pub fn chunker_seed(&self) -> u64 {
        let k = blake3::derive_key(CHUNKER_SEED_CONTEXT, &self.0);
        let seed = u64::from_le_bytes(k[..8].try_into().expect("8 bytes"));
        // fastcdc treats seed 0 as "unseeded"; avoid it (probability 2^-64).
        seed.max(1)
    }
}

impl fmt::Debug for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DedupKey(<redacted>)")
    }
}

impl FromStr for DedupKey {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|_| FormatError::InvalidKey {
            what: "dedup key",
            detail: "expected 64 hex characters".into(),
        })?;
        Ok(DedupKey(out))
    }
}

/// The derived key that turns plaintext chunks into [`ChunkId`]s.
#[derive(Clone)]
pub struct ChunkIdKey([u8; 32]);

impl ChunkIdKey {
    /// Keyed BLAKE3 of `data`.
    pub fn id(&self, data: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.0, data).as_bytes())
    }
}

impl fmt::Debug for ChunkIdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkIdKey(<redacted>)")
    }
}

/// The derived key for the WAL archive: a host with the push key can tell
/// whether a WAL file is already archived with the same content, and the
/// storage side sees neither job names nor system identifiers in the clear.
#[derive(Clone)]
pub struct WalKey([u8; 32]);

impl WalKey {
    /// Keyed BLAKE3 of a WAL file's content.
    pub fn content_hash(&self, data: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.0, data).as_bytes()
    }

    /// [`WalKey::content_hash`] for a file fed in pieces.
    pub fn content_hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.0)
    }

    /// The archive directory name of a job: 16 hex characters of a keyed
    /// hash, so job names stay inside the encryption.
    pub fn job_tag(&self, job: &str) -> String {
        self.tag(&format!("job\0{job}"))
    }

    /// The marker name of a cluster's system identifier.
    pub fn system_tag(&self, system_identifier: u64) -> String {
        self.tag(&format!("system\0{system_identifier}"))
    }

    fn tag(&self, what: &str) -> String {
        hex::encode(&blake3::keyed_hash(&self.0, what.as_bytes()).as_bytes()[..8])
    }
}

impl fmt::Debug for WalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WalKey(<redacted>)")
    }
}

/// The public half: who packs and manifests are sealed to.
#[derive(Clone)]
pub struct Recipients(Vec<age::x25519::Recipient>);

impl Recipients {
    /// Parses `age1...` recipients. At least one is required.
    ///
    /// # Errors
    /// [`FormatError::InvalidKey`] naming the first recipient that does not parse.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Self> {
        if list.is_empty() {
            return Err(FormatError::InvalidKey {
                what: "recipients",
                detail: "at least one age recipient (age1...) is required".into(),
            });
        }
        list.iter()
            .map(|s| {
                s.as_ref()
                    .trim()
                    .parse::<age::x25519::Recipient>()
                    .map_err(|e| FormatError::InvalidKey {
                        what: "age recipient",
                        detail: format!("{:?}: {e}", s.as_ref()),
                    })
            })
            .collect::<Result<Vec<_>>>()
            .map(Recipients)
    }

    /// The recipients as `age1...` strings.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|r| r.to_string()).collect()
    }

    pub(crate) fn as_dyn(&self) -> impl Iterator<Item = &dyn age::Recipient> {
        self.0.iter().map(|r| r as &dyn age::Recipient)
    }
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.to_strings()).finish()
    }
}

/// The secret half: one or more age X25519 identities, as in an age identity
/// file. Needed to restore, audit data and rebuild the catalog.
pub struct Identity(Vec<age::x25519::Identity>);

impl Identity {
    /// A fresh identity.
    pub fn generate() -> Self {
        Identity(vec![age::x25519::Identity::generate()])
    }

    /// Parses an age identity file: `AGE-SECRET-KEY-1...` lines, `#`
    /// comments and blank lines (the format `age-keygen` writes).
    ///
    /// # Errors
    /// [`FormatError::InvalidKey`] without echoing the offending line (it may
    /// be a secret).
    pub fn parse(text: &str) -> Result<Self> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key =
                line.parse::<age::x25519::Identity>()
                    .map_err(|_| FormatError::InvalidKey {
                        what: "age identity file",
                        detail: format!("line {} is not an AGE-SECRET-KEY-1... key", n + 1),
                    })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(FormatError::InvalidKey {
                what: "age identity file",
                detail: "it holds no AGE-SECRET-KEY-1... line".into(),
            });
        }
        Ok(Identity(keys))
    }

    /// The identity file text (`age-keygen` format). Secret.
    pub fn to_file_text(&self, created: &str) -> String {
        use age::secrecy::ExposeSecret;
        let mut s = String::new();
        for k in &self.0 {
            s.push_str(&format!("# created: {created}\n"));
            s.push_str(&format!("# public key: {}\n", k.to_public()));
            s.push_str(k.to_string().expose_secret());
            s.push('\n');
        }
        s
    }

    /// The recipients matching this identity.
    pub fn to_recipients(&self) -> Recipients {
        Recipients(self.0.iter().map(|k| k.to_public()).collect())
    }

    pub(crate) fn as_dyn(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.0.iter().map(|k| k as &dyn age::Identity)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Identity(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_and_are_stable() {
        let k = DedupKey::from_bytes([7; 32]);
        let a = k.chunk_id_key().id(b"x");
        assert_eq!(a, k.chunk_id_key().id(b"x"));
        assert_ne!(a, DedupKey::from_bytes([8; 32]).chunk_id_key().id(b"x"));
        assert_ne!(a.0, *blake3::hash(b"x").as_bytes());
        assert_ne!(
            k.chunker_seed(),
            DedupKey::from_bytes([8; 32]).chunker_seed()
        );
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let k = DedupKey::from_bytes([0xab; 32]);
        assert!(!format!("{k:?}").contains("abab"));
        let id = Identity::generate();
        assert!(!format!("{id:?}").contains("AGE-SECRET"));
    }

    #[test]
    fn identity_file_round_trip() {
        let id = Identity::generate();
        let text = id.to_file_text("now");
        let back = Identity::parse(&text).unwrap();
        assert_eq!(
            back.to_recipients().to_strings(),
            id.to_recipients().to_strings()
        );
        let err = Identity::parse("AGE-SECRET-KEY-1NOTAKEY\n")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("NOTAKEY"), "{err}");
    }
}
