//! The operator's settings file (TOML) and where things live by default.
//!
//! ```toml
//! vault_id = "5f0c..."
//! catalog  = "/root/.config/coffer/catalog.sqlite"
//! push_key = "/root/.config/coffer/push-key.toml"
//! identity = "/root/.config/coffer/identity.txt"   # only if init generated it
//!
//! [local]
//! path = "/var/backups/coffer"
//!
//! [s3]                                  # optional: the offsite tier
//! bucket = "acme-backups"
//! prefix = "db1/"
//! endpoint = "https://s3.example.net"   # S3-compatible stores
//! region = "eu-central-1"
//! ```
//!
//! Lookup order for the file: `--config`, then `COFFER_CONFIG`, then
//! `$XDG_CONFIG_HOME/coffer/config.toml`. Keys and catalog default to the
//! settings file's directory, so one directory holds a host's whole setup.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The settings file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// The vault this host writes to.
    pub vault_id: String,
    /// SQLite catalog path.
    pub catalog: PathBuf,
    /// Push key path (recipients + dedup key).
    pub push_key: PathBuf,
    /// Identity path, when `init` generated one on this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<PathBuf>,
    /// The local-directory tier.
    pub local: LocalSettings,
    /// The offsite S3 tier, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<crate::tier::s3::S3Settings>,
}

/// `[local]`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalSettings {
    /// Directory of the local tier.
    pub path: PathBuf,
}

impl Settings {
    /// Reads a settings file.
    ///
    /// # Errors
    /// [`Error::Config`] saying how to create one when it is missing.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Config(format!(
                    "no coffer settings file at {}; create a vault with `coffer init --local DIR` (or pass --config FILE)",
                    path.display()
                ))
            } else {
                Error::Config(format!("cannot read the settings file {}: {e}", path.display()))
            }
        })?;
        toml::from_str(&text).map_err(|e| {
            Error::Config(format!(
                "settings file {} is not valid: {}",
                path.display(),
                e.message()
            ))
        })
    }

    /// Writes the settings file (refusing to replace one).
    ///
    /// # Errors
    /// [`Error::Config`] when the file exists or cannot be written.
    pub fn save_new(&self, path: &Path) -> Result<()> {
        let body = format!(
            "# coffer settings, written by `coffer init`. See docs/configuration.md.\n{}",
            toml::to_string_pretty(self).expect("settings serialize")
        );
        crate::util::write_secret_file(path, body.as_bytes()).map_err(|e| {
            Error::Config(format!(
                "cannot write the settings file {}: {e}",
                path.display()
            ))
        })
    }
}

/// The settings file to use: `explicit` (`--config`), else `COFFER_CONFIG`,
/// else `$XDG_CONFIG_HOME/coffer/config.toml`.
pub fn settings_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("COFFER_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    xdg_config_dir().join("config.toml")
}

fn xdg_config_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "coffer")
        .map(|d| d.config_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".coffer"))
}

/// Default local tier: `BACKUP_DIRECTORY`, else `$XDG_DATA_HOME/coffer/vault`.
pub fn default_local_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("BACKUP_DIRECTORY").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    directories::ProjectDirs::from("", "", "coffer")
        .map(|d| d.data_dir().join("vault"))
        .unwrap_or_else(|| PathBuf::from(".coffer/vault"))
}

/// Makes a path absolute against the current directory (settings must not
/// depend on where coffer is later run from).
pub fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
