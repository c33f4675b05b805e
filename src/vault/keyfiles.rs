//! Key files on the host: the push key and the age identity.
//!
//! The *push key* (TOML, mode 0600) holds the vault's public age recipients
//! and its dedup key: everything a backup needs, nothing that decrypts. The
//! *identity* is an ordinary age identity file (`age-keygen` format) and is
//! needed only to restore, audit data or rebuild the catalog; it should live
//! offline.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vault_format::keys::{DedupKey, Identity, Recipients};

use crate::error::{Error, Result};

/// The push key.
pub struct PushKey {
    /// Vault id (hex).
    pub vault_id: String,
    /// Who everything is sealed to.
    pub recipients: Recipients,
    /// The dedup key.
    pub dedup_key: DedupKey,
}

#[derive(Serialize, Deserialize)]
struct PushKeyFile {
    vault_id: String,
    recipients: Vec<String>,
    dedup_key: String,
}

impl PushKey {
    /// Reads a push key file.
    ///
    /// # Errors
    /// [`Error::Key`] naming the file (never its contents).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Key(format!(
                "cannot read the push key {}: {e}; it was written by `coffer init`",
                path.display()
            ))
        })?;
        let f: PushKeyFile = toml::from_str(&text).map_err(|_| {
            Error::Key(format!(
                "push key {} is damaged (not valid TOML)",
                path.display()
            ))
        })?;
        Ok(PushKey {
            vault_id: f.vault_id,
            recipients: Recipients::parse(&f.recipients)
                .map_err(|e| Error::Key(format!("push key {}: {e}", path.display())))?,
            dedup_key: f.dedup_key.parse().map_err(|_| {
                Error::Key(format!(
                    "push key {} has a damaged dedup key",
                    path.display()
                ))
            })?,
        })
    }

    /// Writes a new push key file with mode 0600.
    ///
    /// # Errors
    /// [`Error::Key`] when it exists or cannot be written.
    pub fn save_new(&self, path: &Path) -> Result<()> {
        let f = PushKeyFile {
            vault_id: self.vault_id.clone(),
            recipients: self.recipients.to_strings(),
            dedup_key: self.dedup_key.to_hex(),
        };
        let body = format!(
            "# coffer push key: lets this host WRITE backups to vault {}; it cannot read them.\n# Secret (the dedup key): keep it 0600.\n{}",
            self.vault_id,
            toml::to_string_pretty(&f).expect("push key serializes")
        );
        crate::util::write_secret_file(path, body.as_bytes())
            .map_err(|e| Error::Key(format!("cannot write the push key {}: {e}", path.display())))
    }
}

/// Where the identity comes from, in order: `--identity`, `COFFER_IDENTITY`,
/// the settings' `identity`.
pub fn identity_path(explicit: Option<&Path>, from_settings: Option<&Path>) -> Option<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os("COFFER_IDENTITY")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| from_settings.map(Path::to_path_buf))
}

/// Loads the identity for an operation that decrypts.
///
/// # Errors
/// [`Error::Key`] with what to do when none is configured or it is unreadable.
pub fn load_identity(path: Option<&Path>, operation: &str) -> Result<Identity> {
    let path = path.ok_or_else(|| {
        Error::Key(format!(
            "{operation} needs the vault's age identity: pass --identity FILE or set COFFER_IDENTITY (the file `coffer init` wrote, ideally kept offline)"
        ))
    })?;
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Key(format!(
            "{operation} needs the age identity, but {} cannot be read: {e}",
            path.display()
        ))
    })?;
    Identity::parse(&text).map_err(|e| Error::Key(format!("identity {}: {e}", path.display())))
}
