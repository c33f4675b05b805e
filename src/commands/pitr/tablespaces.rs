//! A base backup's tablespaces on restore: where each goes (its original
//! directory, or its `--tablespace-mapping`), the directories made for
//! them, and undoing both when the restore fails.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::PitrOptions;
use crate::commands::restore::Tablespaces;
use crate::error::{Error, Result};
use crate::pg::basebackup::BaseFacts;
use crate::vault::settings::absolute;

/// Where a tablespace was restored.
#[derive(Debug, Clone, Serialize)]
pub struct RestoredTablespace {
    /// Its OID.
    pub oid: u32,
    /// Its directory on the backed-up server.
    pub was: String,
    /// Where its files are now (linked from `pg_tblspc/<oid>`).
    pub dir: PathBuf,
}

/// The tablespaces placed for one restore.
pub(super) struct Placed {
    /// Where each goes.
    pub(super) list: Vec<RestoredTablespace>,
    /// The directories this restore created (the others were there, empty).
    made: Vec<PathBuf>,
}

impl Placed {
    /// Decides where each tablespace goes and makes its directory.
    ///
    /// # Errors
    /// [`Error::Config`] for a mapping or directory that cannot be used;
    /// [`Error::Output`] when a directory cannot be made.
    pub(super) fn prepare(facts: &BaseFacts, opts: &PitrOptions) -> Result<Placed> {
        let list = place(facts, opts)?;
        let made = make_tablespace_dirs(&list)?;
        Ok(Placed { list, made })
    }

    /// Where the restore puts each tablespace.
    pub(super) fn map(&self) -> Tablespaces {
        Tablespaces {
            at: self.list.iter().map(|t| (t.oid, t.dir.clone())).collect(),
        }
    }

    /// Removes what the restore put there: the directories it made, and in
    /// a directory that was there (empty) the server's version directory
    /// (`PG_*`) where a tablespace's files live.
    pub(super) fn undo(&self) {
        for dir in &self.made {
            let _ = std::fs::remove_dir_all(dir);
        }
        for t in self.list.iter().filter(|t| !self.made.contains(&t.dir)) {
            if let Ok(d) = std::fs::read_dir(&t.dir) {
                for e in d.flatten() {
                    if e.file_name().to_string_lossy().starts_with("PG_") {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
    }
}

/// Where each of the base backup's tablespaces goes: its mapping, else its
/// original directory. Refuses a mapping that names no tablespace, a
/// relative directory, one inside the data directory, and one that
/// exists and is not empty (a tablespace in use on this machine).
fn place(facts: &BaseFacts, opts: &PitrOptions) -> Result<Vec<RestoredTablespace>> {
    for (old, _) in &opts.tablespace_mapping {
        if !facts
            .tablespaces
            .iter()
            .any(|t| Path::new(&t.location) == old)
        {
            let known: Vec<&str> = facts
                .tablespaces
                .iter()
                .map(|t| t.location.as_str())
                .collect();
            return Err(Error::Config(format!(
                "--tablespace-mapping {}: the base backup has no tablespace there (it has: {})",
                old.display(),
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    let mut placed: Vec<RestoredTablespace> = Vec::new();
    for t in &facts.tablespaces {
        let dir = opts
            .tablespace_mapping
            .iter()
            .find(|(old, _)| Path::new(&t.location) == old)
            .map_or_else(|| PathBuf::from(&t.location), |(_, new)| new.clone());
        if !dir.is_absolute() || dir.starts_with(absolute(&opts.to)) {
            return Err(Error::Config(format!(
                "tablespace directory {} must be an absolute path outside the data directory",
                dir.display()
            )));
        }
        if let Ok(mut d) = std::fs::read_dir(&dir) {
            if d.next().is_some() {
                return Err(Error::Config(format!(
                    "tablespace {} goes to {}, which is not empty; pass --tablespace-mapping {}=NEWDIR \
                     with a new or empty directory",
                    t.oid,
                    dir.display(),
                    t.location
                )));
            }
        }
        if let Some(other) = placed.iter().find(|p| p.dir == dir) {
            return Err(Error::Config(format!(
                "tablespaces {} and {} would both go to {}; map each to its own directory",
                other.oid,
                t.oid,
                dir.display()
            )));
        }
        placed.push(RestoredTablespace {
            oid: t.oid,
            was: t.location.clone(),
            dir,
        });
    }
    Ok(placed)
}

/// Creates the tablespace directories that do not exist (mode 0700);
/// returns them, for removal if the restore fails.
fn make_tablespace_dirs(tablespaces: &[RestoredTablespace]) -> Result<Vec<PathBuf>> {
    let mut made = Vec::new();
    match make_each(tablespaces, &mut made) {
        Ok(()) => Ok(made),
        Err(e) => {
            // Half made: nothing of this run stays behind.
            for dir in &made {
                let _ = std::fs::remove_dir_all(dir);
            }
            Err(e)
        }
    }
}

fn make_each(tablespaces: &[RestoredTablespace], made: &mut Vec<PathBuf>) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    for t in tablespaces {
        if !t.dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&t.dir)
                .map_err(|io| Error::Output {
                    what: t.dir.display().to_string(),
                    io,
                })?;
            made.push(t.dir.clone());
        }
        std::fs::set_permissions(&t.dir, std::fs::Permissions::from_mode(0o700)).map_err(|io| {
            Error::Output {
                what: t.dir.display().to_string(),
                io,
            }
        })?;
    }
    Ok(())
}
