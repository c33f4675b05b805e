//! A tier in a local directory.
//!
//! Crash safety: an object is written to `tmp/` (created with `O_EXCL`, mode
//! 0600), its data fsynced, then *hard-linked* to its final name and the
//! directory fsynced. `link(2)` fails with `EEXIST` instead of replacing, so
//! put-if-absent is atomic even between processes, and a crash at any point
//! leaves either no object or the complete one (plus, at worst, a stray file
//! in `tmp/` that is never read). Directories are 0700, files 0600.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{ObjectInfo, Put, ReadSeek, Tier, TierError};

/// A local-directory tier.
pub struct LocalTier {
    name: String,
    root: PathBuf,
    tmp: PathBuf,
}

fn mkdir_0700(p: &Path) -> io::Result<bool> {
    match fs::DirBuilder::new().mode(0o700).create(p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// fsync a directory so a new or removed entry in it survives a crash.
pub(crate) fn sync_dir(p: &Path) -> io::Result<()> {
    File::open(p)?.sync_all()
}

impl LocalTier {
    /// A local tier whose directory is lost (gone, or emptied of its
    /// `config`), touching nothing on disk: it lists nothing and every
    /// object in it is missing, until `coffer sync --recreate-local`
    /// recreates it.
    pub fn lost(name: &str, root: &Path) -> Self {
        LocalTier {
            name: name.to_string(),
            root: root.to_path_buf(),
            tmp: root.join("tmp"),
        }
    }

    /// Opens (creating if needed) a local tier at `root`.
    ///
    /// # Errors
    /// When the directories cannot be created.
    pub fn create(name: &str, root: &Path) -> Result<Self, TierError> {
        let t = LocalTier {
            name: name.to_string(),
            root: root.to_path_buf(),
            tmp: root.join("tmp"),
        };
        let io = |e| t.io_err("create", root.display().to_string(), e);
        fs::create_dir_all(root).map_err(io)?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700)).map_err(io)?;
        for d in ["packs", "snapshots", "tmp"] {
            mkdir_0700(&root.join(d)).map_err(io)?;
        }
        Ok(t)
    }

    /// Opens an existing local tier.
    ///
    /// # Errors
    /// [`TierError::NotFound`] when `root` holds no vault.
    pub fn open(name: &str, root: &Path) -> Result<Self, TierError> {
        if !root.join(super::keys::CONFIG).is_file() {
            return Err(TierError::NotFound {
                tier: name.to_string(),
                key: format!(
                    "{} (no vault config in this directory)",
                    root.join("config").display()
                ),
            });
        }
        Self::create(name, root)
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes files in `tmp/` older than `age`: spool files left by a
    /// backup that was killed (each up to one pack). Younger files may
    /// belong to a backup running right now and are left alone.
    ///
    /// # Errors
    /// When `tmp/` cannot be listed.
    pub fn remove_stale_tmp(&self, age: std::time::Duration) -> Result<u64, TierError> {
        let mut removed = 0;
        let entries = fs::read_dir(&self.tmp).map_err(|e| self.io_err("list", "tmp", e))?;
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|el| el > age);
            if old && fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Makes an object that is already there durable: its data, and the
    /// directory entries from it up to the root. A writer killed between
    /// linking an object and fsyncing its directory leaves it visible but
    /// not yet durable; whoever then relies on it (`wal push` finding the
    /// file archived) calls this before saying so.
    ///
    /// # Errors
    /// When the object or a directory cannot be fsynced.
    pub fn make_durable(&self, key: &str) -> Result<(), TierError> {
        let path = self.root.join(key);
        File::open(&path)
            .and_then(|f| f.sync_all())
            .and_then(|()| self.sync_ancestors(&path))
            .map_err(|e| self.io_err("sync", key, e))
    }

    /// Path of an object (for tools and tests).
    pub fn path_of(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn io_err(&self, op: &'static str, key: impl Into<String>, source: io::Error) -> TierError {
        let key = key.into();
        if source.kind() == io::ErrorKind::NotFound && (op == "get" || op == "open") {
            return TierError::NotFound {
                tier: self.name.clone(),
                key,
            };
        }
        TierError::Io {
            tier: self.name.clone(),
            op,
            key,
            io: source,
        }
    }

    /// Makes sure the object's parent directory exists (fsyncing its parent
    /// when it had to be created, so the new directory survives a crash).
    fn ensure_parent(&self, dest: &Path) -> io::Result<()> {
        let parent = dest.parent().expect("object paths have a parent");
        self.ensure_dir(parent)
    }

    /// Creates `dir` and any missing parents up to the root (WAL objects
    /// live two levels deep), fsyncing each parent that gained an entry.
    fn ensure_dir(&self, dir: &Path) -> io::Result<()> {
        let Some(parent) = dir.parent() else {
            return Err(io::Error::other(format!(
                "{} has no parent directory",
                dir.display()
            )));
        };
        match mkdir_0700(dir) {
            Ok(true) => sync_dir(parent),
            Ok(false) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir != self.root => {
                self.ensure_dir(parent)?;
                if mkdir_0700(dir)? {
                    sync_dir(parent)?;
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Links a complete, fsynced file to its final name.
    fn link_into_place(&self, src: &Path, key: &str) -> io::Result<Put> {
        let dest = self.root.join(key);
        self.ensure_parent(&dest)?;
        match fs::hard_link(src, &dest) {
            Ok(()) => {
                self.sync_ancestors(&dest)?;
                Ok(Put::Created)
            }
            // The writer that linked it may have been killed before its
            // fsyncs: "durable when put returns" holds for this case too.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                File::open(&dest)?.sync_all()?;
                self.sync_ancestors(&dest)?;
                Ok(Put::AlreadyExisted)
            }
            Err(e) => Err(e),
        }
    }

    /// fsyncs the directories from `path`'s parent up to the root.
    fn sync_ancestors(&self, path: &Path) -> io::Result<()> {
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| d.starts_with(&self.root)) {
            sync_dir(d)?;
            dir = d.parent();
        }
        Ok(())
    }

    fn put_via_tmp(
        &self,
        key: &str,
        write: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> io::Result<Put> {
        let mut tmp = tempfile::Builder::new()
            .prefix("put-")
            .tempfile_in(&self.tmp)?;
        write(tmp.as_file_mut())?;
        tmp.as_file().sync_data()?;
        self.link_into_place(tmp.path(), key)
        // `tmp` is unlinked on drop; the object keeps the inode.
    }
}

impl Tier for LocalTier {
    fn name(&self) -> &str {
        &self.name
    }

    fn put_bytes(&self, key: &str, data: &[u8]) -> Result<Put, TierError> {
        self.put_via_tmp(key, |f| f.write_all(data))
            .map_err(|e| self.io_err("put", key, e))
    }

    fn put_file(&self, key: &str, path: &Path) -> Result<Put, TierError> {
        let r = (|| {
            // The caller's file must be durable before it gets a name.
            OpenOptions::new().read(true).open(path)?.sync_data()?;
            match self.link_into_place(path, key) {
                // Another filesystem (EXDEV) or a filesystem without links: copy.
                Err(e)
                    if e.raw_os_error() == Some(libc::EXDEV)
                        || e.kind() == io::ErrorKind::Unsupported =>
                {
                    self.put_via_tmp(key, |f| {
                        io::copy(&mut File::open(path)?, f)?;
                        Ok(())
                    })
                }
                other => other,
            }
        })();
        r.map_err(|e| self.io_err("put", key, e))
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, TierError> {
        fs::read(self.root.join(key)).map_err(|e| self.io_err("get", key, e))
    }

    fn open(&self, key: &str) -> Result<Box<dyn ReadSeek>, TierError> {
        // Unbuffered: readers (age's STREAM) read whole 64 KiB segments,
        // and restore workers keep 32 packs open each, so a 256 KiB buffer
        // per open pack was ~16 MiB of peak RSS for nothing.
        let f = File::open(self.root.join(key)).map_err(|e| self.io_err("open", key, e))?;
        Ok(Box::new(f))
    }

    fn head(&self, key: &str) -> Result<Option<u64>, TierError> {
        match fs::metadata(self.root.join(key)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_err("head", key, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, TierError> {
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            let dir = self.root.join(&rel);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io_err("list", rel, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.io_err("list", rel.clone(), e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let key = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let ft = entry
                    .file_type()
                    .map_err(|e| self.io_err("list", key.clone(), e))?;
                if ft.is_dir() {
                    // Only descend where matching keys can be; never into tmp/.
                    if key != "tmp"
                        && (prefix.starts_with(&format!("{key}/"))
                            || key.starts_with(prefix)
                            || format!("{key}/").starts_with(prefix))
                    {
                        stack.push(key);
                    }
                } else if ft.is_file() && key.starts_with(prefix) {
                    let size = entry
                        .metadata()
                        .map_err(|e| self.io_err("list", key.clone(), e))?
                        .len();
                    out.push(ObjectInfo { key, size });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), TierError> {
        let p = self.root.join(key);
        match fs::remove_file(&p) {
            Ok(()) => {
                sync_dir(p.parent().expect("has parent")).map_err(|e| self.io_err("delete", key, e))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_err("delete", key, e)),
        }
    }

    fn spool_dir(&self) -> Option<&Path> {
        Some(&self.tmp)
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        Some(self.root.join(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn put_is_create_once_and_private() {
        let d = tempfile::tempdir().unwrap();
        let t = LocalTier::create("local", &d.path().join("v")).unwrap();
        assert_eq!(t.put_bytes("packs/ab/abcd", b"one").unwrap(), Put::Created);
        assert_eq!(
            t.put_bytes("packs/ab/abcd", b"two").unwrap(),
            Put::AlreadyExisted
        );
        assert_eq!(t.get("packs/ab/abcd").unwrap(), b"one");
        let m = fs::metadata(t.path_of("packs/ab/abcd")).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(t.path_of("packs/ab")).unwrap().mode() & 0o777,
            0o700
        );
        assert_eq!(fs::metadata(t.root()).unwrap().mode() & 0o777, 0o700);
        assert!(t.get("packs/ab/none").unwrap_err().is_not_found());
        assert_eq!(t.head("packs/ab/none").unwrap(), None);
        assert_eq!(fs::read_dir(t.root().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn only_stale_spool_files_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let t = LocalTier::create("local", d.path()).unwrap();
        let old = t.spool_dir().unwrap().join("pack-old");
        fs::write(&old, b"x").unwrap();
        let f = File::options().write(true).open(&old).unwrap();
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86400))
            .unwrap();
        fs::write(t.spool_dir().unwrap().join("pack-new"), b"y").unwrap();
        assert_eq!(
            t.remove_stale_tmp(std::time::Duration::from_secs(86400))
                .unwrap(),
            1
        );
        assert!(!old.exists());
        assert!(t.spool_dir().unwrap().join("pack-new").exists());
    }

    #[test]
    fn put_file_links_and_lists() {
        let d = tempfile::tempdir().unwrap();
        let t = LocalTier::create("local", d.path()).unwrap();
        let src = t.spool_dir().unwrap().join("spool");
        fs::write(&src, b"packdata").unwrap();
        assert_eq!(t.put_file("packs/cd/cdef", &src).unwrap(), Put::Created);
        t.put_bytes("snapshots/0102", b"m").unwrap();
        t.put_bytes("config", b"c").unwrap();
        let keys: Vec<_> = t
            .list("packs/")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, vec!["packs/cd/cdef"]);
        assert_eq!(t.list("snapshots/").unwrap().len(), 1);
        assert_eq!(t.list("").unwrap().len(), 3);
        let mut s = String::new();
        t.open("packs/cd/cdef")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "packdata");
        t.delete("packs/cd/cdef").unwrap();
        t.delete("packs/cd/cdef").unwrap();
        assert_eq!(t.head("packs/cd/cdef").unwrap(), None);
    }
}
