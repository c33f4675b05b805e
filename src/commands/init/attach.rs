//! Joining a vault that exists in the bucket: attaching a new host, and
//! finishing an init whose vault the bucket already holds.

use std::path::Path;

use vault_format::config::VaultConfig;

use super::journal::Journal;
use super::{host_settings, undone, InitOptions, InitReport};
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::tier::local::LocalTier;
use crate::tier::s3::S3Tier;
use crate::tier::{keys, Tier};
use crate::vault::keyfiles::PushKey;
use crate::vault::settings::absolute;

/// Attaches this host to a vault that already exists in S3 (a new database
/// host, or disaster recovery on a fresh machine). Unsealing the dedup key
/// needs the identity; the recipients are taken from the bucket's config
/// this once (trust on first use: they are printed for the operator to
/// check) and from the push key ever after.
pub(super) fn attach(
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
    if push_path.exists() {
        return Err(Error::Config(format!(
            "{} already exists; move it away or pass another --config",
            push_path.display()
        )));
    }
    let journal = Journal {
        vault_id: config.vault_id.to_hex(),
        identity: None,
        push_key: push_path.clone(),
        catalog: Some(dir.join("catalog.sqlite")).filter(|c| !c.exists()),
        local: local_path.to_path_buf(),
        local_created: !local_path.exists(),
        s3: Some(s3.settings().url()),
    };
    journal.begin(settings_path)?;
    let settings = host_settings(
        opts,
        config.vault_id.to_hex(),
        dir,
        &push_path,
        id_path,
        local_path,
    );
    let written = (|| -> Result<()> {
        PushKey {
            vault_id: config.vault_id.to_hex(),
            recipients: recipients.clone(),
            dedup_key,
        }
        .save_new(&push_path)?;
        LocalTier::create("local", local_path)?.put_bytes(keys::CONFIG, bytes)?;
        Catalog::open(&settings.catalog)?.bind_vault(&settings.vault_id)?;
        settings.save_new(settings_path)
    })();
    if let Err(e) = written {
        return Err(undone(&journal, settings_path, e));
    }
    Journal::finish(settings_path);
    Ok(InitReport::of(
        settings_path,
        &settings,
        &recipients,
        None,
        true,
    ))
}

/// The bucket holds the vault an unfinished init (killed, or failed after
/// the bucket took its config) was making: writes what it had not.
pub(super) fn finish(
    opts: &InitOptions,
    settings_path: &Path,
    dir: &Path,
    s3: &S3Tier,
    j: &Journal,
    bytes: &[u8],
) -> Result<InitReport> {
    let config = VaultConfig::decode(bytes)?;
    let push = match crate::vault::keyfiles::PushKey::load(&j.push_key) {
        Ok(p) if p.vault_id == j.vault_id => p,
        _ => {
            // The push key never got written: the identity makes it again.
            let id_path = opts.identity.clone().or_else(|| j.identity.clone());
            let identity = crate::vault::keyfiles::load_identity(
                id_path.as_deref(),
                "finishing an unfinished init",
            )?;
            let dedup_key = config.open_dedup_key(&identity).map_err(|_| {
                Error::Key(format!(
                    "the identity does not open vault {} in {}",
                    config.vault_id,
                    s3.settings().url()
                ))
            })?;
            let _ = std::fs::remove_file(&j.push_key);
            let p = PushKey {
                vault_id: j.vault_id.clone(),
                recipients: config.recipients()?,
                dedup_key,
            };
            p.save_new(&j.push_key)?;
            p
        }
    };
    LocalTier::create("local", &j.local)?.put_bytes(keys::CONFIG, bytes)?;
    let settings = host_settings(
        opts,
        j.vault_id.clone(),
        dir,
        &j.push_key,
        j.identity
            .clone()
            .or_else(|| opts.identity.as_deref().map(absolute)),
        &j.local,
    );
    Catalog::open(&settings.catalog)?.bind_vault(&settings.vault_id)?;
    settings.save_new(settings_path)?;
    Journal::finish(settings_path);
    Ok(InitReport::of(
        settings_path,
        &settings,
        &push.recipients,
        j.identity.clone(),
        j.identity.is_none(),
    ))
}
