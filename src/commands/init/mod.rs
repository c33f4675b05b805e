//! `coffer init`: create a vault, its keys and this host's settings.

use std::path::{Path, PathBuf};

use serde::Serialize;
use vault_format::chunker::ChunkerParams;
use vault_format::config::VaultConfig;
use vault_format::keys::{DedupKey, Identity, Recipients};
use vault_format::pack::PackParams;
use vault_format::VaultId;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::tier::local::LocalTier;
use crate::tier::s3::{S3Settings, S3Tier};
use crate::tier::{keys, Put, Tier};
use crate::vault::keyfiles::PushKey;
use crate::vault::settings::{absolute, default_local_dir, LocalSettings, Settings};

/// What to create.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Settings file to write.
    pub settings_path: PathBuf,
    /// Local tier directory.
    pub local: PathBuf,
    /// Recipients; empty means "generate an identity here".
    pub recipients: Vec<String>,
    /// Chunker parameters (fixed for the vault's life).
    pub chunker: ChunkerParams,
    /// Pack parameters.
    pub pack: PackParams,
    /// The offsite S3 tier, if any. When its bucket already holds a vault,
    /// init *attaches* to it instead of creating one (needs the identity).
    pub s3: Option<S3Settings>,
    /// Identity file for attaching to an existing vault.
    pub identity: Option<PathBuf>,
}

/// What was created (`--json` of `coffer init`).
#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    /// New vault id.
    pub vault_id: String,
    /// Settings file (`config` in JSON, like the `--config` flag).
    #[serde(rename = "config")]
    pub settings: PathBuf,
    /// Identity file, when one was generated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<PathBuf>,
    /// Push key file.
    pub push_key: PathBuf,
    /// Local tier.
    pub local: PathBuf,
    /// Catalog file.
    pub catalog: PathBuf,
    /// The recipients everything is sealed to.
    pub recipients: Vec<String>,
    /// The S3 tier, as `s3://bucket/prefix`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<String>,
    /// True when init attached to a vault that already existed in S3.
    pub attached: bool,
}

/// The quick start: when no settings file was named (`--config`,
/// `COFFER_CONFIG`) and none exists where coffer looks by default, a backup
/// first creates the default local-directory vault (in
/// [`default_local_dir`], keys generated here). Returns what it created.
///
/// # Errors
/// As [`init`].
pub fn init_default_if_missing(settings_path: &Path, explicit: bool) -> Result<Option<InitReport>> {
    if explicit || settings_path.exists() {
        return Ok(None);
    }
    init(&InitOptions {
        settings_path: settings_path.to_path_buf(),
        local: default_local_dir(),
        recipients: vec![],
        chunker: ChunkerParams::default(),
        pack: PackParams::default(),
        s3: None,
        identity: None,
    })
    .map(Some)
}

/// Creates a vault. One function on purpose: the order of its writes is
/// the crash-safety argument (the identity first, as the one thing that
/// cannot be recreated; then the push key, the tier configs, and the
/// settings last), and it reads best top to bottom.
///
/// # Errors
/// [`Error::Config`] when a config or vault already exists there;
/// [`Error::Key`] for bad recipients.
pub fn init(opts: &InitOptions) -> Result<InitReport> {
    let settings_path = absolute(&opts.settings_path);
    let local_path = absolute(&opts.local);
    refuse_existing(&settings_path, &local_path)?;
    let dir = settings_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let s3 = match &opts.s3 {
        Some(st) => Some(S3Tier::new("s3", st)?),
        None => None,
    };
    if let Some(t) = &s3 {
        match t.get(keys::CONFIG) {
            Ok(bytes) => return attach(opts, &settings_path, &dir, &local_path, t, &bytes),
            // `--identity` means "attach": a mistyped bucket or prefix must
            // not quietly become a new, empty vault with a new identity.
            Err(e) if e.is_not_found() && opts.identity.is_some() => {
                return Err(Error::Config(format!(
                    "no vault at {}: it holds no `config` object. --identity attaches to an \
                     existing vault: check the bucket and prefix, or leave out --identity to \
                     create a new vault there",
                    t.settings().url()
                )))
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let created = crate::util::now_rfc3339();
    let (identity, recipients) = keys_for(opts)?;
    let identity_path = dir.join("identity.txt");
    let push_path = dir.join("push-key.toml");
    for p in [&identity_path, &push_path] {
        if p.exists() && (identity.is_some() || p == &push_path) {
            return Err(Error::Config(format!(
                "{} already exists; move it away or pass another --config",
                p.display()
            )));
        }
    }
    let vault_id = VaultId::random();
    let dedup_key = DedupKey::generate();
    let config = VaultConfig::new(
        vault_id,
        created.clone(),
        opts.chunker.clone(),
        opts.pack.clone(),
        &recipients,
        &dedup_key,
    )?;

    // The identity first: it is the one thing that cannot be recreated.
    if let Some(id) = &identity {
        crate::util::write_secret_file(&identity_path, id.to_file_text(&created).as_bytes())
            .map_err(|e| {
                Error::Key(format!(
                    "cannot write identity {}: {e}",
                    identity_path.display()
                ))
            })?;
    }
    let push = PushKey {
        vault_id: vault_id.to_hex(),
        recipients: recipients.clone(),
        dedup_key,
    };
    push.save_new(&push_path)?;
    let tier = LocalTier::create("local", &local_path)?;
    if tier.put_bytes(keys::CONFIG, &config.encode())? == Put::AlreadyExisted {
        return Err(Error::Config(format!(
            "{} already holds a coffer vault",
            local_path.display()
        )));
    }
    let settings = Settings {
        vault_id: vault_id.to_hex(),
        catalog: dir.join("catalog.sqlite"),
        push_key: push_path.clone(),
        identity: identity.as_ref().map(|_| identity_path.clone()),
        local: LocalSettings {
            path: local_path.clone(),
        },
        s3: opts.s3.clone(),
        ..Settings::default()
    };
    if let Some(t) = &s3 {
        if t.put_bytes(keys::CONFIG, &config.encode())? == Put::AlreadyExisted {
            return Err(Error::Config(format!(
                "{} was given a vault by another host meanwhile; run init again to attach to it",
                t.settings().url()
            )));
        }
    }
    settings.save_new(&settings_path)?;
    Catalog::open(&settings.catalog)?.bind_vault(&settings.vault_id)?;
    Ok(InitReport {
        vault_id: vault_id.to_hex(),
        settings: settings_path,
        identity: identity.map(|_| identity_path),
        push_key: push_path,
        local: local_path,
        catalog: settings.catalog,
        recipients: recipients.to_strings(),
        s3: opts.s3.as_ref().map(S3Settings::url),
        attached: false,
    })
}

/// Refuses to overwrite this host's settings or another vault's directory.
fn refuse_existing(settings_path: &Path, local_path: &Path) -> Result<()> {
    if settings_path.exists() {
        return Err(Error::Config(format!(
            "coffer settings already exist at {}; pass --config FILE to create another",
            settings_path.display()
        )));
    }
    if local_path.join(keys::CONFIG).exists() {
        return Err(Error::Config(format!(
            "{} already holds a coffer vault; choose another --local directory",
            local_path.display()
        )));
    }
    Ok(())
}

/// The identity to generate here (none when recipients were given) and the
/// recipients everything will be sealed to.
fn keys_for(opts: &InitOptions) -> Result<(Option<Identity>, Recipients)> {
    if opts.recipients.is_empty() {
        let id = Identity::generate();
        let r = id.to_recipients();
        return Ok((Some(id), r));
    }
    let r = Recipients::parse(&opts.recipients)
        .map_err(|e| Error::Key(format!("{e}; a recipient looks like age1...")))?;
    Ok((None, r))
}

/// Attaches this host to a vault that already exists in S3 (a new database
/// host, or disaster recovery on a fresh machine). Unsealing the dedup key
/// needs the identity; the recipients are taken from the bucket's config
/// this once (trust on first use: they are printed for the operator to
/// check) and from the push key ever after.
fn attach(
    opts: &InitOptions,
    settings_path: &Path,
    dir: &Path,
    local_path: &Path,
    s3: &S3Tier,
    bytes: &[u8],
) -> Result<InitReport> {
    let config = VaultConfig::decode(bytes)?;
    let id_path =
        crate::vault::keyfiles::identity_path(opts.identity.as_deref(), None).map(|p| absolute(&p));
    let identity = crate::vault::keyfiles::load_identity(
        id_path.as_deref(),
        "attaching to the existing vault in S3",
    )?;
    let dedup_key = config.open_dedup_key(&identity).map_err(|_| {
        Error::Key(format!(
            "the identity does not open vault {} in {} (it is not one of its recipients)",
            config.vault_id,
            s3.settings().url()
        ))
    })?;
    let recipients = config.recipients()?;
    let push_path = dir.join("push-key.toml");
    PushKey {
        vault_id: config.vault_id.to_hex(),
        recipients: recipients.clone(),
        dedup_key,
    }
    .save_new(&push_path)?;
    let tier = LocalTier::create("local", local_path)?;
    tier.put_bytes(keys::CONFIG, bytes)?;
    let settings = Settings {
        vault_id: config.vault_id.to_hex(),
        catalog: dir.join("catalog.sqlite"),
        push_key: push_path.clone(),
        identity: id_path,
        local: LocalSettings {
            path: local_path.to_path_buf(),
        },
        s3: opts.s3.clone(),
        ..Settings::default()
    };
    settings.save_new(settings_path)?;
    Catalog::open(&settings.catalog)?.bind_vault(&settings.vault_id)?;
    Ok(InitReport {
        vault_id: config.vault_id.to_hex(),
        settings: settings_path.to_path_buf(),
        identity: None,
        push_key: push_path,
        local: local_path.to_path_buf(),
        catalog: settings.catalog,
        recipients: recipients.to_strings(),
        s3: Some(s3.settings().url()),
        attached: true,
    })
}
