//! The vault config: the one plaintext object in a tier.
//!
//! Plaintext so any tool can tell what a bucket holds and with which
//! parameters, and so a new host can attach to the vault knowing only its
//! recipients. The dedup key is the only secret in it, sealed with age to the
//! recipients as ASCII armor (`jq -r .dedup_key config | age -d -i KEY`).
//!
//! The storage side could swap this object; coffer therefore never takes the
//! recipients for new backups from a tier's config once a push key exists
//! (SPEC.md, "Threat model").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::error::{FormatError, Result};
use crate::ids::VaultId;
use crate::keys::{DedupKey, Identity, Recipients};
use crate::pack::PackParams;

/// Value of the `format` field.
pub const CONFIG_FORMAT: &str = "coffer-vault";
/// Config version this crate writes and reads.
pub const CONFIG_VERSION: u64 = 1;
/// Largest config a reader accepts.
pub const MAX_CONFIG_LEN: usize = 1024 * 1024;
/// Largest plaintext of the sealed `dedup_key` a reader accepts (the key is
/// 65 bytes: 64 hex digits and a newline).
pub const MAX_DEDUP_KEY_LEN: usize = 256;

/// The vault config object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaultConfig {
    /// Always [`CONFIG_FORMAT`].
    pub format: String,
    /// Always [`CONFIG_VERSION`] when written by this crate.
    pub version: u64,
    /// The vault's id.
    pub vault_id: VaultId,
    /// RFC 3339 creation time.
    pub created: String,
    /// Chunker parameters, fixed for the vault's life.
    pub chunker: ChunkerParams,
    /// Pack parameters.
    pub pack: PackParams,
    /// The age recipients (`age1...`) everything is sealed to.
    pub recipients: Vec<String>,
    /// The dedup key (64 hex characters and a newline) sealed to the recipients, ASCII-armored.
    pub dedup_key: String,
    /// Fields this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl VaultConfig {
    /// Builds a config, sealing `key` to `recipients`.
    ///
    /// # Errors
    /// When sealing fails.
    pub fn new(
        vault_id: VaultId,
        created: String,
        chunker: ChunkerParams,
        pack: PackParams,
        recipients: &Recipients,
        key: &DedupKey,
    ) -> Result<Self> {
        chunker.validate()?;
        let sealed =
            crate::seal::seal_armored(recipients, format!("{}\n", key.to_hex()).as_bytes())?;
        Ok(VaultConfig {
            format: CONFIG_FORMAT.into(),
            version: CONFIG_VERSION,
            vault_id,
            created,
            chunker,
            pack,
            recipients: recipients.to_strings(),
            dedup_key: sealed,
            extra: BTreeMap::new(),
        })
    }

    /// Encodes as pretty JSON, or compact JSON when pretty would exceed
    /// [`MAX_CONFIG_LEN`]: compact output is never longer than any input
    /// [`VaultConfig::decode`] accepted, so whatever decodes re-encodes
    /// into something that decodes again.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a config always serializes");
        v.push(b'\n');
        if v.len() > MAX_CONFIG_LEN {
            v = serde_json::to_vec(self).expect("a config always serializes");
        }
        v
    }

    /// Decodes and validates.
    ///
    /// # Errors
    /// [`FormatError::BadMagic`] when it is not a coffer config,
    /// [`FormatError::UnsupportedVersion`] for a newer one,
    /// [`FormatError::Corrupt`] for bad fields.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_CONFIG_LEN {
            return Err(FormatError::corrupt("vault config", "too large"));
        }
        let v: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| FormatError::corrupt("vault config", e.to_string()))?;
        if v.get("format").and_then(|f| f.as_str()) != Some(CONFIG_FORMAT) {
            return Err(FormatError::BadMagic {
                what: "vault config",
            });
        }
        let version = v.get("version").and_then(|f| f.as_u64()).unwrap_or(0);
        if version != CONFIG_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: "vault config",
                found: version,
                supported: CONFIG_VERSION,
            });
        }
        let c: VaultConfig = serde_json::from_value(v)
            .map_err(|e| FormatError::corrupt("vault config", e.to_string()))?;
        c.chunker.validate()?;
        if c.pack.blob_target_size == 0
            || c.pack.blob_target_size as usize > crate::blob::MAX_BLOB_RAW / 2
            || c.pack.target_size == 0
        {
            return Err(FormatError::corrupt(
                "vault config",
                "pack parameters out of range",
            ));
        }
        Recipients::parse(&c.recipients)?;
        Ok(c)
    }

    /// The recipients, parsed.
    ///
    /// # Errors
    /// When one does not parse.
    pub fn recipients(&self) -> Result<Recipients> {
        Recipients::parse(&self.recipients)
    }

    /// Unseals the dedup key with the identity.
    ///
    /// # Errors
    /// [`FormatError::Decrypt`] when the identity is not one of the recipients.
    pub fn open_dedup_key(&self, identity: &Identity) -> Result<DedupKey> {
        let pt = crate::seal::open_armored(
            identity,
            &self.dedup_key,
            "vault config dedup key",
            MAX_DEDUP_KEY_LEN,
        )?;
        let s =
            std::str::from_utf8(&pt).map_err(|_| FormatError::corrupt("dedup key", "not text"))?;
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trip_and_key() {
        let id = Identity::generate();
        let key = DedupKey::generate();
        let c = VaultConfig::new(
            VaultId::random(),
            "2026-11-24T00:00:00Z".into(),
            ChunkerParams::default(),
            PackParams::default(),
            &id.to_recipients(),
            &key,
        )
        .unwrap();
        let bytes = c.encode();
        assert!(!String::from_utf8_lossy(&bytes).contains(&key.to_hex()));
        let back = VaultConfig::decode(&bytes).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.open_dedup_key(&id).unwrap(), key);
        assert!(back.open_dedup_key(&Identity::generate()).is_err());
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["version"] = 9.into();
        assert!(matches!(
            VaultConfig::decode(&serde_json::to_vec(&v).unwrap()),
            Err(FormatError::UnsupportedVersion { found: 9, .. })
        ));
        assert!(matches!(
            VaultConfig::decode(b"{}"),
            Err(FormatError::BadMagic { .. })
        ));
    }
}
