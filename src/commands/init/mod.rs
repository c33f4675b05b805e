//! `coffer init`: create a vault, its keys and this host's settings.

mod attach;
mod journal;

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
use journal::Journal;

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

/// Creates a vault, or attaches this host to the one already in the
/// bucket. Idempotent: an init that fails leaves nothing behind (see
/// [`journal`]), one that was killed is undone or finished by the next,
/// and running it again once it succeeded reports the vault it made.
///
/// # Errors
/// [`Error::Config`] when other settings or another vault already exist
/// there; [`Error::Key`] for bad recipients.
pub fn init(opts: &InitOptions) -> Result<InitReport> {
    let settings_path = absolute(&opts.settings_path);
    let local_path = absolute(&opts.local);
    if settings_path.exists() {
        return already_initialised(opts, &settings_path, &local_path);
    }
    let dir = settings_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let s3 = match &opts.s3 {
        Some(st) => Some(S3Tier::new("s3", st)?),
        None => None,
    };
    // What the bucket holds decides between create and attach, and what to
    // do with an unfinished init's leftovers.
    let in_bucket = match &s3 {
        Some(t) => match t.get(keys::CONFIG) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    if let Some(j) = Journal::load(&settings_path)? {
        let asked = opts.s3.as_ref().map(S3Settings::url);
        if j.s3.is_some() && j.s3 != asked {
            return Err(Error::Config(format!(
                "an unfinished init for {} left its files here (named in {}.init): run that \
                 init again to finish or undo it",
                j.s3.as_deref().unwrap_or_default(),
                settings_path.display()
            )));
        }
        if let (Some(t), Some(bytes)) = (&s3, &in_bucket) {
            let committed =
                VaultConfig::decode(bytes).is_ok_and(|c| c.vault_id.to_hex() == j.vault_id);
            if committed {
                return attach::finish(opts, &settings_path, &dir, t, &j, bytes);
            }
        }
        // Nothing of it was committed anywhere: its identity protects nothing.
        j.undo(&settings_path)?;
    }
    refuse_existing(&settings_path, &local_path)?;
    if let (Some(t), Some(bytes)) = (&s3, &in_bucket) {
        return attach::attach(opts, &settings_path, &dir, &local_path, t, bytes);
    }
    // `--identity` means "attach": a mistyped bucket or prefix must not
    // quietly become a new, empty vault with a new identity.
    if let (Some(t), Some(_)) = (&s3, &opts.identity) {
        return Err(Error::Config(format!(
            "no vault at {}: it holds no `config` object. --identity attaches to an \
             existing vault: check the bucket and prefix, or leave out --identity to \
             create a new vault there",
            t.settings().url()
        )));
    }
    create(opts, &settings_path, &dir, &local_path, s3.as_ref())
}

/// Creates a new vault. The order of its writes is the crash-safety
/// argument: the journal; the identity (the one thing that cannot be
/// recreated); the push key and the local config; the bucket's config (the
/// vault now exists); the settings (this host is set up).
fn create(
    opts: &InitOptions,
    settings_path: &Path,
    dir: &Path,
    local_path: &Path,
    s3: Option<&S3Tier>,
) -> Result<InitReport> {
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
    let config_bytes = config.encode();
    let journal = Journal {
        vault_id: vault_id.to_hex(),
        identity: identity.as_ref().map(|_| identity_path.clone()),
        push_key: push_path.clone(),
        catalog: Some(dir.join("catalog.sqlite")).filter(|c| !c.exists()),
        local: local_path.to_path_buf(),
        local_created: !local_path.exists(),
        s3: opts.s3.as_ref().map(S3Settings::url),
    };
    journal.begin(settings_path)?;
    // Until the bucket holds the config, a failure undoes everything.
    let local_part = || -> Result<()> {
        if let Some(id) = &identity {
            crate::util::write_secret_file(&identity_path, id.to_file_text(&created).as_bytes())
                .map_err(|e| {
                    Error::Key(format!(
                        "cannot write identity {}: {e}",
                        identity_path.display()
                    ))
                })?;
        }
        PushKey {
            vault_id: vault_id.to_hex(),
            recipients: recipients.clone(),
            dedup_key,
        }
        .save_new(&push_path)?;
        let tier = LocalTier::create("local", local_path)?;
        if tier.put_bytes(keys::CONFIG, &config_bytes)? == Put::AlreadyExisted {
            return Err(Error::Config(format!(
                "{} already holds a coffer vault",
                local_path.display()
            )));
        }
        Ok(())
    };
    if let Err(e) = local_part() {
        return Err(undone(&journal, settings_path, e));
    }
    if let Some(t) = s3 {
        commit_in_bucket(t, &config_bytes, &journal, settings_path)?;
    }
    let settings = host_settings(
        opts,
        vault_id.to_hex(),
        dir,
        &push_path,
        identity.as_ref().map(|_| identity_path.clone()),
        local_path,
    );
    // The settings last: they are this host's commit.
    let saved = (|| -> Result<()> {
        Catalog::open(&settings.catalog)?.bind_vault(&settings.vault_id)?;
        settings.save_new(settings_path)
    })();
    if let Err(e) = saved {
        // With a bucket, the vault exists now: the next init finishes it.
        return Err(if s3.is_some() {
            unfinished(e)
        } else {
            undone(&journal, settings_path, e)
        });
    }
    Journal::finish(settings_path);
    Ok(InitReport::of(
        settings_path,
        &settings,
        &recipients,
        identity.map(|_| identity_path),
        false,
    ))
}

/// This host's settings for the vault `vault_id`, as init writes them.
pub(super) fn host_settings(
    opts: &InitOptions,
    vault_id: String,
    dir: &Path,
    push_key: &Path,
    identity: Option<PathBuf>,
    local: &Path,
) -> Settings {
    Settings {
        vault_id,
        catalog: dir.join("catalog.sqlite"),
        push_key: push_key.to_path_buf(),
        identity,
        local: LocalSettings {
            path: local.to_path_buf(),
        },
        s3: opts.s3.clone(),
        ..Settings::default()
    }
}

impl InitReport {
    /// The report of an init that wrote (or found) `settings`; `identity`
    /// is the identity file this init generated, if it did.
    pub(super) fn of(
        settings_path: &Path,
        settings: &Settings,
        recipients: &Recipients,
        identity: Option<PathBuf>,
        attached: bool,
    ) -> InitReport {
        InitReport {
            vault_id: settings.vault_id.clone(),
            settings: settings_path.to_path_buf(),
            identity,
            push_key: settings.push_key.clone(),
            local: settings.local.path.clone(),
            catalog: settings.catalog.clone(),
            recipients: recipients.to_strings(),
            s3: settings.s3.as_ref().map(S3Settings::url),
            attached,
        }
    }
}

/// Puts the new vault's config in the bucket: the commit. A reply lost
/// after the write (the SDK's retry then finds the object) and a failure
/// after which the bucket holds these very bytes both count as written;
/// another vault's config there (another host's init won the race), or
/// none, undo this init; not knowing leaves it for the next init.
fn commit_in_bucket(t: &S3Tier, config: &[u8], j: &Journal, settings: &Path) -> Result<()> {
    let put = t.put_bytes(keys::CONFIG, config);
    if matches!(put, Ok(Put::Created)) {
        return Ok(());
    }
    match t.get(keys::CONFIG) {
        Ok(there) if there == config => Ok(()),
        Ok(_) => Err(undone(
            j,
            settings,
            Error::Config(format!(
                "another host created a vault at {} meanwhile; nothing was kept here. To join \
                 it, run init again with --identity (that vault's identity file)",
                t.settings().url()
            )),
        )),
        Err(e) if e.is_not_found() => Err(undone(
            j,
            settings,
            match put {
                Err(pe) => object_lock_hint(t, pe),
                Ok(_) => e.into(),
            },
        )),
        Err(e) => Err(unfinished(Error::Config(format!(
            "cannot tell whether {} took the new vault's config: {e}",
            t.settings().url()
        )))),
    }
}

/// A refused first write with Object Lock asked for is most often a bucket
/// created without it: say so.
fn object_lock_hint(t: &S3Tier, e: crate::tier::TierError) -> Error {
    match (&e, t.object_lock_days()) {
        (crate::tier::TierError::Remote { detail, .. }, Some(_)) => Error::Config(format!(
            "{} refused the vault's first object ({detail}); Object Lock was asked for: \
             check that the bucket was created with Object Lock enabled, or leave out the \
             --s3-object-lock options; init kept nothing",
            t.settings().url()
        )),
        _ => e.into(),
    }
}

/// The error of an init that undid itself.
pub(super) fn undone(j: &Journal, settings: &Path, e: Error) -> Error {
    let e = match e {
        Error::Tier(te) => Error::Tier(te.with_detail(|d| {
            format!(
                "{d}; init kept nothing: run the same command again once the bucket takes writes"
            )
        })),
        e => e,
    };
    match j.undo(settings) {
        Ok(()) => e,
        Err(u) => Error::Config(format!("{e}; and cleaning up failed: {u}")),
    }
}

/// The error of an init the next init must finish.
fn unfinished(e: Error) -> Error {
    Error::Config(format!(
        "{e}; init did not finish (the vault may already exist in the bucket): run the same \
         command again to finish it"
    ))
}

/// Init run again once it succeeded: the same vault (same local directory
/// and bucket) is reported again; anything else is refused.
fn already_initialised(
    opts: &InitOptions,
    settings_path: &Path,
    local_path: &Path,
) -> Result<InitReport> {
    let refuse = || {
        Error::Config(format!(
            "coffer settings already exist at {}; pass --config FILE to create another",
            settings_path.display()
        ))
    };
    let Ok(s) = Settings::load(settings_path) else {
        return Err(refuse());
    };
    let same_bucket = match (&s.s3, &opts.s3) {
        (None, None) => true,
        (Some(a), Some(b)) => a.url() == b.url() && a.endpoint == b.endpoint,
        _ => false,
    };
    if absolute(&s.local.path) != local_path || !same_bucket {
        return Err(refuse());
    }
    let push = crate::vault::keyfiles::PushKey::load(&s.push_key)?;
    // Killed between the settings and the journal's removal: done.
    Journal::finish(settings_path);
    Ok(InitReport::of(
        settings_path,
        &s,
        &push.recipients,
        s.identity.clone(),
        opts.identity.is_some(),
    ))
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
