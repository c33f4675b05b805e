//! `coffer restore`: a snapshot back to a file, stdout, or (for directory
//! snapshots) an extracted tree.
//!
//! Never a silently short result: a file is written under a temporary name
//! in the target's directory and renamed into place only after every chunk
//! verified and the length matched; a tree is extracted into a temporary
//! sibling directory and renamed likewise. On error the temporary is removed.

mod unpack;

use std::io::Write;
use std::path::{Path, PathBuf};

use vault_format::manifest::{kinds, Manifest};

use crate::catalog::RunKind;
use crate::error::{Error, Result};
use crate::pipeline::restore::{self, ReadContext, RestoreReport};
use crate::progress::Progress;
use crate::vault::Vault;
use unpack::unpack;
pub use unpack::Tablespaces;

/// Where to restore to.
#[derive(Debug, Clone)]
pub enum Target {
    /// Standard output (the raw stream; a tar stream for directory snapshots).
    Stdout,
    /// A path: a file for stream snapshots, a directory for tar snapshots
    /// (a base backup's tablespaces inside it, in place).
    Path(PathBuf),
    /// A base backup's data directory, its tablespaces where they map to.
    DataDir(PathBuf, Tablespaces),
}

/// Resolves `query` (`latest`, an id or a unique prefix) to a manifest.
///
/// # Errors
/// Catalog errors (not found, ambiguous).
pub fn find(vault: &Vault, query: &str, job: Option<&str>) -> Result<Manifest> {
    let catalog = vault.catalog()?;
    let id = catalog.resolve_snapshot(query, job)?;
    Ok(catalog.manifest(&id)?)
}

/// Restores a snapshot; records the run.
///
/// # Errors
/// [`Error::Integrity`] when data is missing or damaged in every tier,
/// [`Error::Output`] when the target cannot be written, [`Error::Config`]
/// when the target already exists.
pub fn restore(
    vault: &Vault,
    ctx: &ReadContext,
    manifest: &Manifest,
    target: &Target,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    // Another host's prune may have moved chunks this catalog places in
    // packs that are gone.
    crate::deletion::refresh::catch_up(vault, Some(ctx), progress)?;
    let catalog = vault.catalog()?;
    catalog
        .record_run(
            RunKind::Restore,
            Some(&manifest.job),
            Some(&manifest.id),
            |_| match target {
                Target::Stdout => {
                    let stdout = std::io::stdout();
                    let mut lock = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
                    restore::run(ctx, manifest, &mut lock, progress)
                }
                Target::Path(p) if manifest.kind == kinds::TAR => {
                    to_tree(ctx, manifest, p, None, progress)
                }
                Target::Path(p) if manifest.kind == crate::pg::basebackup::KIND_BASE => {
                    to_tree(ctx, manifest, p, Some(&Tablespaces::default()), progress)
                }
                Target::DataDir(p, t) => to_tree(ctx, manifest, p, Some(t), progress),
                Target::Path(p) => to_file(ctx, manifest, p, progress),
            },
        )
        .inspect(|_| super::warn_hidden(&ctx.tiers, progress))
}

fn out_err(what: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Output {
        what: what.display().to_string(),
        io: e,
    }
}

/// `.NAME.coffer-partial-` (tempfile adds a random suffix) beside the
/// target: same filesystem, so the final rename is atomic; hidden, and named
/// for what it is if a crash leaves it behind.
fn partial_prefix(target: &Path) -> String {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.coffer-partial-")
}

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn to_file(
    ctx: &ReadContext,
    manifest: &Manifest,
    path: &Path,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    if path.exists() {
        return Err(Error::Config(format!(
            "{} already exists; restore to a new path (coffer never overwrites)",
            path.display()
        )));
    }
    let dir = parent_of(path);
    let tmp = tempfile::Builder::new()
        .prefix(&partial_prefix(path))
        .tempfile_in(&dir)
        .map_err(out_err(path))?;
    reserve(tmp.as_file(), manifest.raw_size).map_err(out_err(path))?;
    let rep = crate::pipeline::restore_file::run(ctx, manifest, tmp.as_file(), progress)?;
    tmp.as_file().sync_all().map_err(out_err(path))?;
    tmp.persist_noclobber(path)
        .map_err(|e| out_err(path)(e.error))?;
    crate::tier::local::sync_dir(&dir).map_err(out_err(path))?;
    Ok(rep)
}

/// Allocates the whole output before the workers write into it: a disk
/// too small fails now, with nothing written, instead of after most of the
/// restore; and writes that land out of order (a snapshot whose chunks sit
/// in many nights' blobs) find their blocks allocated instead of
/// allocating and zeroing them under the inode lock both workers share.
/// A filesystem without `fallocate` is simply not reserved.
fn reserve(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    use rustix::fs::{fallocate, FallocateFlags};
    if len == 0 {
        return Ok(());
    }
    match fallocate(file, FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn to_tree(
    ctx: &ReadContext,
    manifest: &Manifest,
    path: &Path,
    tablespaces: Option<&Tablespaces>,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let existing_empty = match std::fs::read_dir(path) {
        Ok(mut d) => {
            if d.next().is_some() {
                return Err(Error::Config(format!(
                    "{} is not empty; restore a directory snapshot into a new or empty directory",
                    path.display()
                )));
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(out_err(path)(e)),
    };
    let dir = parent_of(path);
    let tmp = tempfile::Builder::new()
        .prefix(&partial_prefix(path))
        .tempdir_in(&dir)
        .map_err(out_err(path))?;
    let (reader, mut writer) = std::io::pipe().map_err(out_err(path))?;
    let dest = tmp.path().to_path_buf();
    let rep = std::thread::scope(|s| -> Result<RestoreReport> {
        let untar = s.spawn(move || -> std::io::Result<()> {
            let mut a = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, reader));
            a.set_preserve_permissions(true);
            a.set_preserve_mtime(true);
            // Only root may give files away; anyone else restores them as their
            // own (a base backup's injected backup_manifest claims uid 2048).
            a.set_preserve_ownerships(rustix::process::geteuid().is_root());
            a.set_overwrite(false);
            unpack(&mut a, &dest, tablespaces)?;
            // Drain anything after the archive's end marker, so the writer
            // never blocks on a full pipe.
            std::io::copy(&mut a.into_inner(), &mut std::io::sink())?;
            Ok(())
        });
        let r = restore::run(ctx, manifest, &mut writer, progress);
        let _ = writer.flush();
        drop(writer);
        let u = untar
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("tar extraction panicked")));
        let rep = r?;
        u.map_err(out_err(path))?;
        Ok(rep)
    })?;
    if existing_empty {
        std::fs::remove_dir(path).map_err(out_err(path))?;
    }
    let kept = tmp.keep();
    std::fs::rename(&kept, path).map_err(out_err(path))?;
    crate::tier::local::sync_dir(&dir).map_err(out_err(path))?;
    Ok(rep)
}
