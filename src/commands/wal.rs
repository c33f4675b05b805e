//! `coffer wal push|fetch|upload|verify`: the WAL archive as PostgreSQL's
//! `archive_command` and `restore_command` call it ([`crate::wal`]).
//!
//! The helpers that outlive one call are separate processes started here:
//! the uploader (`wal upload --background`, one per catalog, holding an
//! advisory lock while it waits for batches to become due) and the
//! prefetcher (`wal prefetch`, one per spool). PostgreSQL waits only for
//! the push or the fetch itself.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vault_format::wal::WalFile;

use crate::error::Result;
use crate::progress::Progress;
use crate::vault::Vault;
use crate::wal::fetch::{Fetched, Reader};
use crate::wal::push::PushReport;
use crate::wal::upload::UploadReport;
use crate::wal::verify::WalReport;
use crate::wal::{self, Archive};

/// Archives one WAL file (its steps reported to `progress`), then starts
/// the background uploader (for every job of the catalog) when the offsite
/// tier has files waiting and none runs.
///
/// # Errors
/// As [`wal::push::push`].
pub fn push(vault: &Vault, job: &str, path: &Path, progress: &dyn Progress) -> Result<PushReport> {
    let report = wal::push::push(vault, job, path, progress)?;
    if report.offsite_pending > 0 && vault.settings.wal.background_upload() {
        // Only a probe: the uploader takes the lock itself, and a second
        // uploader started in a race simply finds it taken and exits.
        if try_lock(&upload_lock(vault)).is_some() {
            spawn_self(vault, &["wal", "upload", "--background"]);
        }
    }
    Ok(report)
}

/// Uploads pending WAL batches. `background`: only if no other uploader
/// runs, and then until nothing is pending, sleeping until the next batch
/// is due; otherwise everything pending now, at once (a background
/// uploader racing it at worst stores a file in two batches, which is
/// harmless: any copy serves).
///
/// # Errors
/// As [`wal::upload::upload`].
pub fn upload(vault: &Vault, job: Option<&str>, background: bool) -> Result<UploadReport> {
    if !background {
        return wal::upload::upload(vault, job, true);
    }
    let mut total = UploadReport::default();
    loop {
        let Some(lock) = try_lock(&upload_lock(vault)) else {
            return Ok(total);
        };
        loop {
            let r = wal::upload::upload(vault, job, false)?;
            total.batches += r.batches;
            total.files += r.files;
            total.bytes += r.bytes;
            total.pending = r.pending;
            total.problems.extend(r.problems);
            match r.next_due {
                Some(due) if r.pending > 0 => std::thread::sleep(wal::upload::until(due)),
                _ => break,
            }
        }
        drop(lock);
        // A push that found the lock held just before it was released
        // started no uploader: look once more, now that it is free.
        if vault.catalog()?.wal_pending_count(job)? == 0 || !total.problems.is_empty() {
            return Ok(total);
        }
    }
}

/// What `wal fetch` needs besides the vault.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The job.
    pub job: String,
    /// The identity file (restore_command runs without COFFER_IDENTITY).
    pub identity: Option<PathBuf>,
    /// The spool [default: `.coffer-spool` beside the destination].
    pub spool: Option<PathBuf>,
}

impl FetchOptions {
    fn spool_for(&self, dest: &Path) -> PathBuf {
        self.spool.clone().unwrap_or_else(|| {
            dest.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join(".coffer-spool")
        })
    }
}

/// Fetches one WAL file for `restore_command`, then starts the
/// prefetcher for the segments after it.
///
/// # Errors
/// As [`Reader::fetch`]; [`Error::Key`] without a usable identity.
pub fn fetch(vault: &Vault, opts: &FetchOptions, name: &str, dest: &Path) -> Result<Fetched> {
    let (identity, key) = vault.identity(opts.identity.as_deref(), "wal fetch")?;
    let spool = opts.spool_for(dest);
    // Best effort: without a spool, fetches still work, one at a time.
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&spool);
    let reader = Reader {
        vault,
        identity: &identity,
        archive: Archive::new(key.wal_key(), &opts.job),
        spool: Some(spool.clone()),
    };
    let got = reader.fetch(name, dest)?;
    let ahead = vault.settings.wal.prefetch();
    if let (
        Fetched::Delivered {
            segment_size: Some(size),
            ..
        },
        true,
    ) = (&got, ahead > 0)
    {
        if try_lock(&spool.join(".prefetch.lock")).is_some() {
            let size = size.to_string();
            let spool = spool.to_string_lossy().into_owned();
            let mut args = vec!["wal", "prefetch", "--job", &opts.job];
            args.extend(["--spool", &spool, "--segment-size", &size]);
            let id;
            if let Some(p) = &opts.identity {
                id = p.to_string_lossy().into_owned();
                args.extend(["--identity", &id]);
            }
            args.push(name);
            spawn_self(vault, &args);
        }
    }
    Ok(got)
}

/// Decrypts the segments after `after` into the spool (the prefetcher).
///
/// # Errors
/// [`Error::Key`] without a usable identity.
pub fn prefetch(vault: &Vault, opts: &FetchOptions, after: &str, segment_size: u64) -> Result<()> {
    let Ok(WalFile::Segment(seg)) = WalFile::parse(after) else {
        return Ok(());
    };
    let Some(spool) = opts.spool.clone() else {
        return Ok(());
    };
    let _ = std::fs::create_dir_all(&spool);
    let Some(_lock) = try_lock(&spool.join(".prefetch.lock")) else {
        return Ok(());
    };
    let (identity, key) = vault.identity(opts.identity.as_deref(), "wal prefetch")?;
    let reader = Reader {
        vault,
        identity: &identity,
        archive: Archive::new(key.wal_key(), &opts.job),
        spool: Some(spool),
    };
    reader.prefetch(&seg, segment_size, vault.settings.wal.prefetch(), 2);
    Ok(())
}

/// Checks the archive of `job` (or of every job that archived WAL).
///
/// # Errors
/// Catalog errors.
pub fn verify(vault: &Vault, job: Option<&str>) -> Result<Vec<WalReport>> {
    let catalog = vault.catalog()?;
    let jobs: Vec<String> = match job {
        Some(j) => vec![j.to_string()],
        None => catalog.wal_jobs()?,
    };
    jobs.iter()
        .map(|j| {
            let window = vault
                .settings
                .policy_for(j)?
                .and_then(|p| p.keep_wal_within);
            wal::verify::report(&catalog, j, vault.s3.is_some(), window)
        })
        .collect()
}

fn upload_lock(vault: &Vault) -> PathBuf {
    let mut p = vault.settings.catalog.clone().into_os_string();
    p.push(".wal-upload.lock");
    PathBuf::from(p)
}

/// An advisory lock held while the returned file is open; `None` when
/// it is held or cannot be taken (the helpers here are best effort).
fn try_lock(path: &Path) -> Option<File> {
    lock_or_busy(path).ok().flatten()
}

/// An advisory lock held while the returned file is open: `Ok(None)` when
/// another process holds it; an error when it cannot be taken at all (a
/// lock file another user owns, a read-only directory).
///
/// # Errors
/// Opening the lock file or locking it, other than "held".
pub(crate) fn lock_or_busy(path: &Path) -> std::io::Result<Option<File>> {
    use rustix::fs::{flock, FlockOperation};
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match flock(&f, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(f)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Starts this program again, detached from PostgreSQL's pipes, with the
/// same settings file. Best effort: the work it does is also done later
/// (by the next push, `coffer sync`, or the fetch itself).
fn spawn_self(vault: &Vault, args: &[&str]) {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = Command::new(exe);
    cmd.arg("--config")
        .arg(&vault.settings_path)
        .arg("--quiet")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a signal PostgreSQL sends the archiver
        // or startup process's group does not cut an upload short.
        .process_group(0);
    let _ = cmd.spawn();
}
