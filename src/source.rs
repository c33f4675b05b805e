//! Sources: what produces a backup stream.
//!
//! A [`Source`] is a reader plus a `finish` check that runs after the stream
//! ended and *before* anything is committed: a tar writer that failed half
//! way, or (later) a pg_dump that exited non-zero, must never become a
//! snapshot, even though its output looked like a clean end of stream.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use vault_format::manifest::kinds;

use crate::error::{Error, Result};

/// A stream to back up.
pub trait Source: Send {
    /// Snapshot kind (see `vault_format::manifest::kinds`).
    fn kind(&self) -> &str;
    /// The stream.
    fn reader(&mut self) -> &mut (dyn Read + Send);
    /// Called once the stream hit EOF: confirms the producer succeeded and
    /// returns facts to record in the manifest.
    ///
    /// # Errors
    /// [`Error::Source`] when the producer failed.
    fn finish(&mut self) -> Result<serde_json::Map<String, serde_json::Value>>;
}

/// A regular file.
pub struct FileSource {
    path: PathBuf,
    file: File,
}

impl FileSource {
    /// Opens a file.
    ///
    /// # Errors
    /// [`Error::Source`] when it cannot be opened.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::Source {
            what: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Ok(FileSource {
            path: path.to_path_buf(),
            file,
        })
    }
}

impl Source for FileSource {
    fn kind(&self) -> &str {
        kinds::FILE
    }
    fn reader(&mut self) -> &mut (dyn Read + Send) {
        &mut self.file
    }
    fn finish(&mut self) -> Result<serde_json::Map<String, serde_json::Value>> {
        let mut m = serde_json::Map::new();
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        m.insert("file_name".into(), name.into());
        m.insert(
            "path".into(),
            crate::settings::absolute(&self.path)
                .display()
                .to_string()
                .into(),
        );
        Ok(m)
    }
}

/// Standard input.
pub struct StdinSource {
    stdin: io::Stdin,
}

impl StdinSource {
    /// Wraps this process's standard input.
    pub fn new() -> Self {
        StdinSource { stdin: io::stdin() }
    }
}

impl Default for StdinSource {
    fn default() -> Self {
        Self::new()
    }
}

impl Source for StdinSource {
    fn kind(&self) -> &str {
        kinds::STDIN
    }
    fn reader(&mut self) -> &mut (dyn Read + Send) {
        &mut self.stdin
    }
    fn finish(&mut self) -> Result<serde_json::Map<String, serde_json::Value>> {
        Ok(serde_json::Map::new())
    }
}

/// A directory, streamed as a tar archive by a writer thread (this is how
/// Docker volumes are backed up). Ownership, modes and mtimes are kept;
/// symlinks are stored as links, not followed.
pub struct TarSource {
    dir: PathBuf,
    reader: io::PipeReader,
    writer: Option<JoinHandle<io::Result<Vec<String>>>>,
}

impl TarSource {
    /// Starts archiving `dir`.
    ///
    /// # Errors
    /// [`Error::Source`] when `dir` is not a readable directory.
    pub fn start(dir: &Path) -> Result<Self> {
        let src_err = |e: io::Error| Error::Source {
            what: dir.display().to_string(),
            detail: e.to_string(),
        };
        std::fs::read_dir(dir).map_err(src_err)?;
        let (reader, writer) = io::pipe().map_err(src_err)?;
        let root = dir.to_path_buf();
        let handle = std::thread::Builder::new()
            .name("tar".into())
            .spawn(move || -> io::Result<Vec<String>> {
                let mut b = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, writer));
                b.follow_symlinks(false);
                b.mode(tar::HeaderMode::Complete);
                let mut skipped = Vec::new();
                append_sorted(&mut b, &root, Path::new(""), &mut skipped)?;
                let mut w = b.into_inner()?;
                io::Write::flush(&mut w)?;
                Ok(skipped)
            })
            .map_err(src_err)?;
        Ok(TarSource {
            dir: dir.to_path_buf(),
            reader,
            writer: Some(handle),
        })
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
    skipped: &mut Vec<String>,
) -> io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let rel_path = rel.join(e.file_name());
        let ft = e.file_type()?;
        if ft.is_dir() {
            b.append_dir(&rel_path, e.path())?;
            append_sorted(b, root, &rel_path, skipped)?;
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
            crate::settings::absolute(&self.dir)
                .display()
                .to_string()
                .into(),
        );
        m.insert("format".into(), "tar".into());
        Ok(m)
    }
}

/// Opens `arg` as a source: `-` is stdin, a directory is a tar stream,
/// anything else a file.
///
/// # Errors
/// [`Error::Source`] when it cannot be opened.
pub fn open(arg: &str) -> Result<Box<dyn Source>> {
    if arg == "-" {
        return Ok(Box::new(StdinSource::new()));
    }
    let p = Path::new(arg);
    if p.is_dir() {
        Ok(Box::new(TarSource::start(p)?))
    } else {
        Ok(Box::new(FileSource::open(p)?))
    }
}

/// Looks at the first bytes of a stream and says why it will not dedup
/// well when it is already compressed: gzip, zstd, or a pg_dump custom
/// archive written with compression. Compressed bytes change everywhere
/// after the first changed row, so night-over-night dedup drops to ~0%;
/// coffer compresses after chunking instead.
pub fn compression_warning(head: &[u8]) -> Option<String> {
    const HINT: &str = "it will not deduplicate against earlier backups; feed coffer uncompressed data (coffer compresses after chunking)";
    if head.starts_with(&[0x1f, 0x8b]) {
        return Some(format!("the input is gzip-compressed: {HINT}"));
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Some(format!("the input is zstd-compressed: {HINT}"));
    }
    if head.len() >= 12 && head.starts_with(b"PGDMP") && head[10] == 1 {
        // pg_backup_archiver.c ReadHead: magic, vmaj, vmin, vrev, intSize,
        // offSize, format (1 = custom), then the compression: archive
        // version >= 1.15 stores an algorithm byte (0 = none), older ones a
        // signed int (sign byte + intSize bytes, LE; 0 = none, -1 = default).
        let (vmaj, vmin, int_size) = (head[5], head[6], head[8] as usize);
        let compressed = if (vmaj, vmin) >= (1, 15) {
            head[11] != 0
        } else {
            let end = 12 + int_size;
            head.len() >= end && head[12..end].iter().any(|&b| b != 0)
        };
        if compressed {
            return Some(format!(
                "the input is a pg_dump custom-format archive written with compression (use pg_dump -Z0): {HINT}"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::compression_warning;

    #[test]
    fn compressed_inputs_are_recognised() {
        assert!(compression_warning(&[0x1f, 0x8b, 8, 0])
            .unwrap()
            .contains("gzip"));
        assert!(compression_warning(&[0x28, 0xb5, 0x2f, 0xfd, 0])
            .unwrap()
            .contains("zstd"));
        // PG15 pg_dump -Fc (archive 1.14), default compression (-1) vs -Z0.
        let mut h = b"PGDMP\x01\x0e\x00\x04\x08\x01".to_vec();
        let mut z = h.clone();
        h.extend_from_slice(&[1, 1, 0, 0, 0]);
        z.extend_from_slice(&[0, 0, 0, 0, 0]);
        assert!(compression_warning(&h).unwrap().contains("-Z0"));
        assert_eq!(compression_warning(&z), None);
        // Archive 1.15+: algorithm byte.
        assert!(compression_warning(b"PGDMP\x01\x0f\x00\x04\x08\x01\x03").is_some());
        assert_eq!(
            compression_warning(b"PGDMP\x01\x0f\x00\x04\x08\x01\x00"),
            None
        );
        assert_eq!(compression_warning(b"plain text"), None);
    }
}
