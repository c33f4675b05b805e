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

pub use super::jobs::JobSettings;
use crate::error::{Error, Result};

/// The settings file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    /// Time zone of retention's calendar (IANA name, e.g. `Europe/Berlin`)
    /// [default: the host's].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// `[retention]`: the policy of every job without its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::retention::Policy>,
    /// `[[jobs]]`: per-job settings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobSettings>,
    /// `[prune]`.
    #[serde(default, skip_serializing_if = "PruneSettings::is_default")]
    pub prune: PruneSettings,
    /// `[wal]`: WAL archiving.
    #[serde(default, skip_serializing_if = "WalSettings::is_default")]
    pub wal: WalSettings,
    /// `[alerts]`: webhook, command (per-job pings are in `[[jobs]]`).
    #[serde(
        default,
        skip_serializing_if = "crate::alerts::AlertSettings::is_default"
    )]
    pub alerts: crate::alerts::AlertSettings,
    /// `[daemon]`: `coffer daemon`.
    #[serde(default, skip_serializing_if = "DaemonSettings::is_default")]
    pub daemon: DaemonSettings,
    /// `[health]`: what `coffer health` tolerates.
    #[serde(default, skip_serializing_if = "HealthSettings::is_default")]
    pub health: HealthSettings,
}

/// `[wal]`: how WAL files travel to the offsite tier and back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WalSettings {
    /// Files per S3 batch [default: 16].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_files: Option<usize>,
    /// Upload a batch once its oldest file waited this long (humantime)
    /// [default: 60s]: the bound on offsite lag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_wait: Option<String>,
    /// Upload in the background after `wal push` [default: true]; false
    /// leaves uploads to `coffer sync` / `coffer wal upload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background_upload: Option<bool>,
    /// WAL files `wal fetch` decrypts ahead of replay [default: 4].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<usize>,
}

impl WalSettings {
    fn is_default(&self) -> bool {
        *self == WalSettings::default()
    }

    /// Files per batch.
    pub fn batch_files(&self) -> usize {
        self.batch_files.unwrap_or(16).clamp(1, 1024)
    }

    /// The longest a file waits for its batch.
    ///
    /// # Errors
    /// [`Error::Config`] for a duration humantime cannot read.
    pub fn batch_wait(&self) -> Result<std::time::Duration> {
        duration_setting(
            &self.batch_wait,
            "[wal] batch-wait",
            std::time::Duration::from_secs(60),
        )
    }

    /// Whether `wal push` starts the uploader.
    pub fn background_upload(&self) -> bool {
        self.background_upload.unwrap_or(true)
    }

    /// Files to prefetch.
    pub fn prefetch(&self) -> usize {
        self.prefetch.unwrap_or(4).min(64)
    }
}

/// `[health]`: the limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HealthSettings {
    /// How late a scheduled job's snapshot may be [default: 1h].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<String>,
    /// How long a snapshot may wait for an offsite tier [default: 2h].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsite_lag: Option<String>,
    /// How long a pack copy may go unverified [default: 30d].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_max_age: Option<String>,
    /// How long a WAL file may wait for the offsite tier [default: 15m].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_lag: Option<String>,
    /// Free space on the local tier below which it warns, in percent
    /// [default: 10].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_space_warning: Option<f64>,
    /// … and below which it is critical [default: 5].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_space_critical: Option<f64>,
}

impl HealthSettings {
    /// Whether nothing is set (not written back).
    pub fn is_default(&self) -> bool {
        *self == HealthSettings::default()
    }
}

/// A duration setting (humantime), or `default` when unset; `what` names
/// it in the error (`[health] grace`).
///
/// # Errors
/// [`Error::Config`] for a value humantime cannot read.
pub fn duration_setting(
    v: &Option<String>,
    what: &str,
    default: std::time::Duration,
) -> Result<std::time::Duration> {
    match v {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s).map_err(|e| {
            Error::Config(format!(
                "{what} = {s:?} is not a duration ({e}); write e.g. \"1h\" or \"30d\""
            ))
        }),
    }
}

/// `[daemon]`: how `coffer daemon` runs the schedule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DaemonSettings {
    /// Where to serve Prometheus metrics (`127.0.0.1:9464`) [default: not
    /// served].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_address: Option<String>,
    /// A random delay of up to this much before a due job starts
    /// (humantime), so hosts sharing a bucket do not all start at once
    /// [default: 0s].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<String>,
    /// The first retry's delay after a failed job or offsite upload,
    /// doubling with each failure (humantime) [default: 30s].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_base: Option<String>,
}

impl DaemonSettings {
    fn is_default(&self) -> bool {
        *self == DaemonSettings::default()
    }
}

/// `[prune]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PruneSettings {
    /// How long a condemned pack waits before it is deleted (humantime)
    /// [default: 23h]. `0s` only for a vault no other host writes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<String>,
    /// Repack until at most this percentage of stored bytes is unused
    /// [default: 5].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unused: Option<f64>,
    /// Rewrite at most this percentage of stored bytes per prune
    /// [default: 10].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_repack: Option<f64>,
    /// Keep the newest snapshots' chunks together (locality) [default:
    /// false: it costs stored bytes and prune time; docs/retention.md].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<bool>,
}

impl PruneSettings {
    fn is_default(&self) -> bool {
        *self == PruneSettings::default()
    }
}

/// The variable through which the seed's Docker Compose stack gave its
/// retention in days.
pub const BACKUP_RETENTION: &str = "BACKUP_RETENTION";

impl Settings {
    /// The jobs `coffer run` knows: `[[jobs]]`, else the one the seed's
    /// variables describe ([`super::jobs::seed_job`]).
    ///
    /// # Errors
    /// [`Error::Config`] for seed variables that do not parse.
    pub fn effective_jobs(&self) -> Result<Vec<JobSettings>> {
        if !self.jobs.is_empty() {
            return Ok(self.jobs.clone());
        }
        Ok(super::jobs::seed_job()
            .map_err(Error::Config)?
            .into_iter()
            .collect())
    }

    /// The retention policy of `job`: its own (`[[jobs]]`), else the
    /// default (`[retention]`), else `BACKUP_RETENTION=N` as `keep-within
    /// Nd`; `None` when there is none.
    ///
    /// # Errors
    /// [`Error::Config`] for a `BACKUP_RETENTION` that is not a number of
    /// days.
    pub fn policy_for(&self, job: &str) -> Result<Option<crate::retention::Policy>> {
        if let Some(p) = self
            .jobs
            .iter()
            .find(|j| j.name == job)
            .and_then(|j| j.retention.clone())
        {
            return Ok(Some(p));
        }
        if let Some(p) = &self.retention {
            return Ok(Some(p.clone()));
        }
        env_retention()
    }

    /// The time zone retention buckets snapshots in.
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown zone name.
    pub fn time_zone(&self) -> Result<jiff::tz::TimeZone> {
        match &self.timezone {
            None => Ok(jiff::tz::TimeZone::system()),
            Some(name) => jiff::tz::TimeZone::get(name).map_err(|e| {
                Error::Config(format!(
                    "timezone {name:?} in the settings is not a known time zone ({e}); use an IANA name such as Europe/Berlin or UTC"
                ))
            }),
        }
    }
}

/// `BACKUP_RETENTION=N` (days) as a policy: `keep-within Nd`.
///
/// # Errors
/// [`Error::Config`] when it is set but not a whole number of days above 0.
pub fn env_retention() -> Result<Option<crate::retention::Policy>> {
    let Some(v) = std::env::var_os(BACKUP_RETENTION).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let v = v.to_string_lossy();
    match v.trim().parse::<u32>() {
        Ok(days) if days > 0 => Ok(Some(crate::retention::Policy {
            keep_within: Some(std::time::Duration::from_secs(u64::from(days) * 86_400)),
            ..Default::default()
        })),
        _ => Err(Error::Config(format!(
            "{BACKUP_RETENTION}={v:?} is not a number of days above 0; set it to how many days of backups to keep, or unset it"
        ))),
    }
}

/// `[local]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
            let at = e
                .span()
                .map(|s| format!(" at line {}", text[..s.start].matches('\n').count() + 1))
                .unwrap_or_default();
            Error::Config(format!(
                "settings file {} is not valid{at}: {}",
                path.display(),
                e.message().trim_end()
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
