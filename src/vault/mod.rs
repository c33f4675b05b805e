//! An opened vault: this host's settings, the vault config read from the
//! primary tier, the tiers, the catalog, and the keys.
//!
//! [`settings`] is the host's TOML file (where the tiers, the catalog and
//! the keys are); [`keyfiles`] reads and writes the push key and finds the
//! identity. The vault's own `config` object lives in each tier and is
//! specified in vault-format/SPEC.md.

pub mod jobs;
pub mod keyfiles;
pub mod settings;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vault_format::config::VaultConfig;
use vault_format::keys::{DedupKey, Identity};

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::tier::local::LocalTier;
use crate::tier::s3::S3Tier;
use crate::tier::{keys, Tier};
use keyfiles::PushKey;
use settings::Settings;

/// An opened vault.
pub struct Vault {
    /// The settings file's contents.
    pub settings: Settings,
    /// Where the settings came from.
    pub settings_path: PathBuf,
    /// The vault config read from the primary tier.
    pub config: VaultConfig,
    /// The local tier (primary: backups complete here first).
    pub local: Arc<LocalTier>,
    /// The offsite S3 tier, when configured.
    pub s3: Option<Arc<S3Tier>>,
    /// The local tier's directory is gone or holds no vault, and the vault
    /// was opened from the S3 tier's config: reads skip the local tier,
    /// writes to it are refused, `coffer sync --recreate-local` recreates
    /// it (never on its own: an empty directory may be a disk that is not
    /// mounted, and filling it would put the vault on the wrong disk).
    pub local_lost: bool,
}

/// The vault's config when the local tier is lost: from the S3 tier.
fn lost_local_config(
    settings: &Settings,
    settings_path: &Path,
    s3: Option<&S3Tier>,
) -> Result<VaultConfig> {
    let dir = settings.local.path.display();
    let Some(s3) = s3 else {
        return Err(Error::Config(format!(
            "no vault at {dir} (named in {}), and no other tier is configured to recover it \
             from; restore the directory from a copy, or run `coffer init` for a new vault",
            settings_path.display()
        )));
    };
    let bytes = s3.get(keys::CONFIG).map_err(|e| {
        Error::Config(format!(
            "the local tier is lost (no vault at {dir}) and the s3 tier cannot be read \
             instead ({e}); restore the directory, or make {} reachable and run `coffer sync`",
            s3.settings().url()
        ))
    })?;
    Ok(VaultConfig::decode(&bytes)?)
}

impl Vault {
    /// Opens the vault a settings file describes.
    ///
    /// # Errors
    /// [`Error::Config`] when the settings or the tier's config are missing or
    /// belong to different vaults.
    pub fn open(settings_path: &Path) -> Result<Self> {
        let settings = Settings::load(settings_path)?;
        let s3 = match &settings.s3 {
            Some(s) => Some(Arc::new(S3Tier::new("s3", s)?)),
            None => None,
        };
        let (local, config, local_lost) = match LocalTier::open("local", &settings.local.path) {
            Ok(local) => {
                let config = VaultConfig::decode(&local.get(keys::CONFIG)?)?;
                (local, config, false)
            }
            Err(_) => {
                // The local directory is gone or emptied: a damaged tier,
                // not a missing vault, while another tier holds the vault.
                let config = lost_local_config(&settings, settings_path, s3.as_deref())?;
                let local = LocalTier::lost("local", &settings.local.path);
                (local, config, true)
            }
        };
        if config.vault_id.to_hex() != settings.vault_id {
            return Err(Error::Config(format!(
                "{} holds vault {}, but {} names vault {}",
                settings.local.path.display(),
                config.vault_id,
                settings_path.display(),
                settings.vault_id
            )));
        }
        let vault = Vault {
            settings,
            settings_path: settings_path.to_path_buf(),
            config,
            local: Arc::new(local),
            s3,
            local_lost,
        };
        Ok(vault)
    }

    /// Refuses work that writes to the local tier while it is lost.
    ///
    /// # Errors
    /// [`Error::Config`] saying to run `coffer sync` first.
    pub fn require_local(&self, operation: &str) -> Result<()> {
        if self.local_lost {
            return Err(Error::Config(format!(
                "{operation} needs the local tier, and it is lost (no vault at {}); \
                 `coffer sync --recreate-local` recreates it from the s3 tier (if it is a \
                 disk that is not mounted, mount it instead), then run this again",
                self.settings.local.path.display()
            )));
        }
        Ok(())
    }

    /// Recreates a lost local tier (its directories and the vault's
    /// `config`, copied from the S3 tier); `coffer sync` then refills it.
    /// Returns whether it was lost.
    ///
    /// # Errors
    /// When the directory cannot be created or the config written.
    pub fn recreate_local(&mut self) -> Result<bool> {
        if !self.local_lost {
            return Ok(false);
        }
        // A vault opens with its local tier lost only from an S3 tier's
        // config; say so rather than assume it.
        let Some(s3) = &self.s3 else {
            return Err(Error::Config(format!(
                "no vault at {} and no s3 tier to recreate it from; restore the directory from a copy",
                self.settings.local.path.display()
            )));
        };
        let bytes = s3.get(keys::CONFIG)?;
        let local = LocalTier::create("local", &self.settings.local.path)?;
        local.put_bytes(keys::CONFIG, &bytes)?;
        // Everything it held is gone: sync lists it empty and copies back
        // what the catalog says it kept.
        self.catalog()?.mark_tier_lost("local")?;
        self.local = Arc::new(local);
        self.local_lost = false;
        Ok(true)
    }

    /// Tiers in the order reads try them: local first, then offsite.
    pub fn tiers(&self) -> Vec<Arc<dyn Tier>> {
        let mut t = vec![self.local.clone() as Arc<dyn Tier>];
        if let Some(s3) = &self.s3 {
            t.push(s3.clone());
        }
        t
    }

    /// Tiers other than the primary: where backups replicate to.
    pub fn offsite(&self) -> Vec<Arc<dyn Tier>> {
        self.tiers().into_iter().skip(1).collect()
    }

    /// The tiers to read from: all, or only the one named (`--tier`).
    ///
    /// # Errors
    /// [`Error::Config`] for a name that is not configured.
    pub fn select_tiers(&self, name: Option<&str>) -> Result<Vec<Arc<dyn Tier>>> {
        match name {
            None => Ok(self
                .tiers()
                .into_iter()
                .filter(|t| !(self.local_lost && t.name() == "local"))
                .collect()),
            Some("local") if self.local_lost => Err(Error::Config(format!(
                "tier local is lost (no vault at {}); `coffer sync --recreate-local` recreates it from the \
                 s3 tier, or read from it with --tier s3",
                self.settings.local.path.display()
            ))),
            Some(n) => {
                let t: Vec<_> = self.tiers().into_iter().filter(|t| t.name() == n).collect();
                if t.is_empty() {
                    return Err(Error::Config(format!(
                        "no tier named {n:?} is configured (tiers: {})",
                        self.tiers()
                            .iter()
                            .map(|t| t.name().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                Ok(t)
            }
        }
    }

    /// The tier backups complete on.
    pub fn primary(&self) -> Arc<dyn Tier> {
        self.local.clone()
    }

    /// Opens the catalog (creating it if absent) and checks it is this vault's.
    ///
    /// # Errors
    /// Catalog errors.
    pub fn catalog(&self) -> Result<Catalog> {
        let c = Catalog::open(&self.settings.catalog)?;
        c.bind_vault(&self.settings.vault_id)?;
        Ok(c)
    }

    /// The push key, checked against this vault.
    ///
    /// # Errors
    /// [`Error::Key`].
    pub fn push_key(&self) -> Result<PushKey> {
        let k = PushKey::load(&self.settings.push_key)?;
        if k.vault_id != self.settings.vault_id {
            return Err(Error::Key(format!(
                "push key {} is for vault {}, not {}",
                self.settings.push_key.display(),
                k.vault_id,
                self.settings.vault_id
            )));
        }
        Ok(k)
    }

    /// Loads the identity for `operation` and checks it opens this vault;
    /// returns it with the dedup key it unsealed.
    ///
    /// # Errors
    /// [`Error::Key`] when absent or not one of the vault's recipients.
    pub fn identity(
        &self,
        explicit: Option<&Path>,
        operation: &str,
    ) -> Result<(Identity, DedupKey)> {
        let path = keyfiles::identity_path(explicit, self.settings.identity.as_deref());
        let from_settings = path.is_some() && path.as_deref() == self.settings.identity.as_deref();
        let identity = match keyfiles::load_identity(path.as_deref(), operation) {
            // The settings remember where init put the identity; once the
            // file is moved (offline, as it should be), say how to name it.
            Err(Error::Key(msg))
                if from_settings && path.as_deref().is_some_and(|p| !p.exists()) =>
            {
                return Err(Error::Key(format!(
                    "{msg}; that is where {} says the identity is: if you moved it, pass \
                     --identity FILE or set COFFER_IDENTITY (or update `identity` there)",
                    self.settings_path.display()
                )))
            }
            r => r?,
        };
        let key = self.config.open_dedup_key(&identity).map_err(|_| {
            Error::Key(format!(
                "the identity {} does not open vault {} (it is not one of its recipients)",
                path.as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                self.config.vault_id
            ))
        })?;
        Ok((identity, key))
    }
}
