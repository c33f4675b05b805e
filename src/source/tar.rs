//! A directory as a tar stream: how Docker volumes are backed up.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use vault_format::manifest::kinds;

use super::Source;
use crate::error::{Error, Result};

/// A directory, streamed as a tar archive by a writer thread (this is how
/// Docker volumes are backed up). Ownership, modes and mtimes are kept;
/// symlinks are stored as links, not followed.
pub struct TarSource {
    dir: PathBuf,
    excluded: Vec<String>,
    reader: io::PipeReader,
    writer: Option<JoinHandle<io::Result<Vec<String>>>>,
}

impl TarSource {
    /// Starts archiving `dir`.
    ///
    /// # Errors
    /// [`Error::Source`] when `dir` is not a readable directory.
    pub fn start(dir: &Path) -> Result<Self> {
        Self::start_excluding(dir, Excludes::default())
    }

    /// Starts archiving `dir` without what `exclude` matches.
    ///
    /// # Errors
    /// [`Error::Source`] when `dir` is not a readable directory.
    pub fn start_excluding(dir: &Path, exclude: Excludes) -> Result<Self> {
        let src_err = |e: io::Error| Error::Source {
            what: dir.display().to_string(),
            detail: e.to_string(),
        };
        std::fs::read_dir(dir).map_err(src_err)?;
        let (reader, writer) = io::pipe().map_err(src_err)?;
        let root = dir.to_path_buf();
        let excluded = exclude.given.clone();
        let handle = std::thread::Builder::new()
            .name("tar".into())
            .spawn(move || -> io::Result<Vec<String>> {
                let mut b = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, writer));
                b.follow_symlinks(false);
                b.mode(tar::HeaderMode::Complete);
                let mut skipped = Vec::new();
                append_sorted(&mut b, &root, Path::new(""), &exclude, &mut skipped)?;
                let mut w = b.into_inner()?;
                io::Write::flush(&mut w)?;
                Ok(skipped)
            })
            .map_err(src_err)?;
        Ok(TarSource {
            dir: dir.to_path_buf(),
            excluded,
            reader,
            writer: Some(handle),
        })
    }
}

/// What a directory's backup leaves out: `node_modules`, `.git`, `*.log`
/// (a pattern without `/` matches a name at any depth) or `app/cache/*`
/// (with `/`: the path from the directory; a leading `/` is the same).
/// An excluded directory is left out with everything in it.
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    names: Vec<glob::Pattern>,
    paths: Vec<glob::Pattern>,
    /// As given (recorded in the manifest).
    given: Vec<String>,
}

impl Excludes {
    /// Compiles `patterns` (glob syntax: `*`, `?`, `[…]`, `**`).
    ///
    /// # Errors
    /// [`Error::Config`] for a pattern that does not compile.
    pub fn new(patterns: &[String]) -> Result<Self> {
        let mut e = Excludes {
            given: patterns.to_vec(),
            ..Excludes::default()
        };
        for p in patterns {
            let compiled = glob::Pattern::new(p.trim_start_matches('/')).map_err(|err| {
                Error::Config(format!("exclude pattern {p:?} does not compile: {err}"))
            })?;
            if p.trim_start_matches('/').contains('/') {
                e.paths.push(compiled);
            } else {
                e.names.push(compiled);
            }
        }
        Ok(e)
    }

    /// Whether the entry at `rel` (from the directory) is left out.
    pub fn matches(&self, rel: &Path) -> bool {
        let opts = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::default()
        };
        let name_hit = rel
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| self.names.iter().any(|p| p.matches_with(n, opts)));
        name_hit || self.paths.iter().any(|p| p.matches_path_with(rel, opts))
    }
}

/// Appends a tree in name order, so that unchanged trees give identical tar
/// streams night after night (directory order on disk is not stable).
/// FIFOs and device nodes are stored as such (no data); sockets cannot be
/// archived and are skipped (a live PostgreSQL socket in a volume must not
/// fail the night's backup) and reported in `skipped`.
fn append_sorted<W: io::Write>(
    b: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    exclude: &Excludes,
    skipped: &mut Vec<String>,
) -> io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let rel_path = rel.join(e.file_name());
        if exclude.matches(&rel_path) {
            continue;
        }
        let ft = e.file_type()?;
        if ft.is_dir() {
            b.append_dir(&rel_path, e.path())?;
            append_sorted(b, root, &rel_path, exclude, skipped)?;
        } else if ft.is_socket() {
            skipped.push(rel_path.display().to_string());
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            // tar's own append_path names special files by their source
            // path; build the header ourselves with the relative name.
            let meta = std::fs::symlink_metadata(e.path())?;
            let mut h = tar::Header::new_gnu();
            h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            h.set_entry_type(if ft.is_fifo() {
                tar::EntryType::Fifo
            } else if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            let dev = meta.rdev();
            h.set_device_major(rustix::fs::major(dev))?;
            h.set_device_minor(rustix::fs::minor(dev))?;
            h.set_size(0);
            b.append_data(&mut h, &rel_path, io::empty())?;
        } else {
            b.append_path_with_name(e.path(), &rel_path)?;
        }
    }
    Ok(())
}

impl Source for TarSource {
    fn kind(&self) -> &str {
        kinds::TAR
    }
    fn reader(&mut self) -> &mut (dyn Read + Send) {
        &mut self.reader
    }
    fn finish(&mut self) -> Result<serde_json::Map<String, serde_json::Value>> {
        let h = self.writer.take().expect("finish is called once");
        let what = self.dir.display().to_string();
        let skipped = match h.join() {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(Error::Source {
                    what,
                    detail: format!("archiving failed: {e}"),
                })
            }
            Err(_) => {
                return Err(Error::Source {
                    what,
                    detail: "the archiving thread panicked".into(),
                })
            }
        };
        let mut m = serde_json::Map::new();
        if !skipped.is_empty() {
            m.insert("skipped_sockets".into(), skipped.into());
        }
        m.insert(
            "path".into(),
            crate::vault::settings::absolute(&self.dir)
                .display()
                .to_string()
                .into(),
        );
        m.insert("format".into(), "tar".into());
        if !self.excluded.is_empty() {
            m.insert("exclude".into(), self.excluded.clone().into());
        }
        Ok(m)
    }
}
