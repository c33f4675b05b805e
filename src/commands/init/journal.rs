//! Init's journal: what an unfinished `coffer init` created, so that a
//! failed init leaves nothing behind and the same command run again
//! succeeds.
//!
//! Before it writes anything, init writes `<settings>.init` naming the
//! vault and every file it is about to create. Two writes commit:
//! - the bucket's `config` object (with an S3 tier): from then on the vault
//!   exists for every host, and the identity init generated is the only key
//!   to it, so it is never removed again;
//! - the settings file (this host): once it is written the journal goes.
//!
//! An init that fails before the first commit undoes its journal at once;
//! one killed is undone (or, when the bucket already holds its vault,
//! finished) by the next init with the same settings path.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tier::keys;

/// What an unfinished init created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    /// The vault it was creating or attaching to.
    pub vault_id: String,
    /// The identity it generated, if it did.
    pub identity: Option<PathBuf>,
    /// The push key it writes.
    pub push_key: PathBuf,
    /// The catalog it creates, when there was none (an older catalog is
    /// never removed).
    pub catalog: Option<PathBuf>,
    /// The local tier's directory.
    pub local: PathBuf,
    /// True when init created that directory (undo removes it if it holds
    /// no snapshot or pack).
    pub local_created: bool,
    /// The bucket it committed to (`s3://bucket/prefix`), if any: an init
    /// run again for another bucket must not undo this one.
    #[serde(default)]
    pub s3: Option<String>,
}

impl Journal {
    fn path(settings: &Path) -> PathBuf {
        let mut p = settings.as_os_str().to_owned();
        p.push(".init");
        PathBuf::from(p)
    }

    /// Writes the journal (it must not exist).
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn begin(&self, settings: &Path) -> Result<()> {
        let p = Self::path(settings);
        // TOML has no bytes type: a path that is not UTF-8 cannot be written.
        let body = toml::to_string_pretty(self).map_err(|e| {
            Error::Config(format!(
                "cannot record init's journal ({e}); use settings and vault paths that are valid UTF-8"
            ))
        })?;
        crate::util::write_secret_file(&p, body.as_bytes()).map_err(|e| {
            Error::Config(format!(
                "cannot write init's journal {}: {e}; check that the directory is writable",
                p.display()
            ))
        })
    }

    /// The journal an unfinished init left beside `settings`, if any.
    ///
    /// # Errors
    /// When it exists but cannot be read.
    pub fn load(settings: &Path) -> Result<Option<Journal>> {
        let p = Self::path(settings);
        match std::fs::read_to_string(&p) {
            Ok(t) => toml::from_str(&t).map(Some).map_err(|e| {
                Error::Config(format!(
                    "{} (left by an unfinished `coffer init`) cannot be read: {e}; remove it and \
                     the files it names, then run init again",
                    p.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Config(format!("cannot read {}: {e}", p.display()))),
        }
    }

    /// Init finished: the journal goes.
    pub fn finish(settings: &Path) {
        let _ = std::fs::remove_file(Self::path(settings));
    }

    /// Removes what the unfinished init created, and the journal. Only for
    /// an init whose vault no bucket holds: its identity protects nothing.
    ///
    /// # Errors
    /// When a file cannot be removed (the journal stays, naming them).
    pub fn undo(&self, settings: &Path) -> Result<()> {
        // Backups went into it since (the journal outlived a finished
        // init): its keys are in use, whatever the journal says.
        if !holds_no_objects(&self.local) {
            return Err(Error::Config(format!(
                "{} names files of an unfinished init, but {} holds snapshots or packs: \
                 remove {} by hand if that init is long finished",
                Self::path(settings).display(),
                self.local.display(),
                Self::path(settings).display()
            )));
        }
        let gone = |p: &Path| match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Config(format!(
                "cannot remove {} (left by an unfinished `coffer init`): {e}",
                p.display()
            ))),
            _ => Ok(()),
        };
        // The local config only if it is this vault's: a directory that
        // held another vault was refused before anything was written.
        let config = self.local.join(keys::CONFIG);
        if let Ok(bytes) = std::fs::read(&config) {
            let ours = vault_format::config::VaultConfig::decode(&bytes)
                .is_ok_and(|c| c.vault_id.to_hex() == self.vault_id);
            if ours {
                gone(&config)?;
            }
        }
        if self.local_created && holds_no_objects(&self.local) {
            let _ = std::fs::remove_dir_all(&self.local);
        }
        for suffix in ["", "-wal", "-shm"] {
            if let Some(c) = &self.catalog {
                let mut p = c.as_os_str().to_owned();
                p.push(suffix);
                gone(Path::new(&p))?;
            }
        }
        gone(&self.push_key)?;
        if let Some(id) = &self.identity {
            gone(id)?;
        }
        gone(&Self::path(settings))
    }
}

/// True when a local tier directory holds no snapshot and no pack.
fn holds_no_objects(root: &Path) -> bool {
    ["snapshots", "packs"]
        .iter()
        .all(|d| walkdir_is_empty(&root.join(d)))
}

fn walkdir_is_empty(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return true;
    };
    rd.flatten()
        .all(|e| e.path().is_dir() && walkdir_is_empty(&e.path()))
}
