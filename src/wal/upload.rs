//! Offsite copies of the WAL archive: the files `wal push` stored locally,
//! gathered into batches so that a busy cluster's thousands of segments do
//! not become thousands of small S3 objects (and requests).
//!
//! A batch is uploaded once it holds `[wal] batch-files` files, or once its
//! oldest file has waited `[wal] batch-wait`; `coffer sync` and `coffer
//! wal upload` flush whatever is pending. Offsite lag is therefore bounded
//! by `batch-wait` while the background uploader runs (it is started by
//! `wal push` and stays until nothing is pending), plus the upload time.
//!
//! Crash safety: a batch is written by put-if-absent under a key holding
//! its content hash, and recorded in the catalog after; an upload killed in
//! between leaves the files pending, and the next upload stores them again
//! in a new batch (fetch reads whichever batch it finds first).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use vault_format::wal::object::batch_header;

use super::Archive;
use crate::catalog::WalRecord;
use crate::error::Result;
use crate::tier::Tier;
use crate::util::parse_time;
use crate::vault::Vault;

/// A batch closes at this many object bytes even below `batch-files`.
const MAX_BATCH_BYTES: u64 = 64 << 20;

/// What an upload did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UploadReport {
    /// Batches stored.
    pub batches: usize,
    /// WAL files they hold.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Files still waiting (their batch is not due yet).
    pub pending: usize,
    /// When the oldest waiting file becomes due, if any waits.
    #[serde(skip)]
    pub next_due: Option<SystemTime>,
    /// Files that could not be uploaded (missing from the local tier).
    pub problems: Vec<String>,
}

/// Uploads the due batches of `job` (every job when `None`); with `flush`,
/// everything pending.
///
/// # Errors
/// [`Error::Config`] without an S3 tier; tier and catalog errors.
pub fn upload(vault: &Vault, job: Option<&str>, flush: bool) -> Result<UploadReport> {
    let Some(s3) = vault.s3.clone() else {
        return Ok(UploadReport::default());
    };
    let key = vault.push_key()?.dedup_key.wal_key();
    let mut catalog = vault.catalog()?;
    let per_batch = vault.settings.wal.batch_files();
    let wait = vault.settings.wal.batch_wait()?;
    let mut by_job: BTreeMap<String, Vec<WalRecord>> = BTreeMap::new();
    for w in catalog.wal_pending(job)? {
        by_job.entry(w.job.clone()).or_default().push(w);
    }
    let mut report = UploadReport::default();
    let now = SystemTime::now();
    for (job, pending) in by_job {
        let archive = Archive::new(key.clone(), &job);
        copy_markers(vault, &*s3, &archive)?;
        let oldest_due = pending
            .first()
            .and_then(|w| parse_time(&w.pushed))
            .map(|t| t + wait);
        let mut rest: &[WalRecord] = &pending;
        while !rest.is_empty() {
            let take = batch_len(rest, per_batch);
            let full = take == per_batch || take < rest.len();
            if !(flush || full || oldest_due.is_some_and(|d| d <= now)) {
                break;
            }
            let (batch, tail) = rest.split_at(take);
            let stored = store_batch(
                vault,
                &*s3,
                &archive,
                batch,
                &mut catalog,
                &mut report.problems,
            )?;
            if stored.files > 0 {
                report.bytes += stored.bytes;
                report.batches += 1;
                report.files += stored.files;
            }
            rest = tail;
        }
        if !rest.is_empty() {
            report.pending += rest.len();
            let due = parse_time(&rest[0].pushed).map_or(now, |t| t + wait);
            report.next_due = Some(report.next_due.map_or(due, |d: SystemTime| d.min(due)));
        }
    }
    Ok(report)
}

/// How many of `files` the next batch takes.
fn batch_len(files: &[WalRecord], per_batch: usize) -> usize {
    let mut bytes = 0;
    let mut n = 0;
    for w in files.iter().take(per_batch) {
        if n > 0 && bytes + w.stored > MAX_BATCH_BYTES {
            break;
        }
        bytes += w.stored;
        n += 1;
    }
    n
}

/// What one batch held.
struct Stored {
    files: usize,
    bytes: u64,
}

/// Reads the batch's objects from the local tier, stores the batch, and
/// records it. A file missing from the local tier is reported in
/// `problems` and left out (it stays pending, and `wal verify` shows it),
/// so one lost object does not hold back every later upload.
fn store_batch(
    vault: &Vault,
    s3: &dyn Tier,
    archive: &Archive,
    files: &[WalRecord],
    catalog: &mut crate::catalog::Catalog,
    problems: &mut Vec<String>,
) -> Result<Stored> {
    let mut files: Vec<&WalRecord> = files.iter().collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let mut objects = Vec::with_capacity(files.len());
    for w in &files {
        match vault.local.get(&archive.object(&w.name)) {
            Ok(obj) => objects.push((w.name.clone(), obj)),
            Err(e) if e.is_not_found() => problems.push(format!(
                "WAL file {} of job {} is in the catalog but missing from tier local, so it \
                 cannot be uploaded; `coffer wal verify` shows what that costs",
                w.name, archive.job
            )),
            Err(e) => return Err(e.into()),
        }
    }
    let (Some((first, _)), Some((last, _))) = (objects.first(), objects.last()) else {
        return Ok(Stored { files: 0, bytes: 0 });
    };
    let sizes: Vec<(String, u64)> = objects
        .iter()
        .map(|(n, o)| (n.clone(), o.len() as u64))
        .collect();
    let mut body = batch_header(&sizes)?;
    for (_, o) in &objects {
        body.extend_from_slice(o);
    }
    let key = archive.batch(first, last, &blake3::hash(&body));
    s3.put_bytes(&key, &body)?;
    let names: Vec<String> = objects.iter().map(|(n, _)| n.clone()).collect();
    catalog.set_wal_batch(&archive.job, &names, &key)?;
    Ok(Stored {
        files: names.len(),
        bytes: body.len() as u64,
    })
}

/// Copies the job's cluster marker so that an archive restored from S3
/// alone still refuses another cluster's WAL.
fn copy_markers(vault: &Vault, s3: &dyn Tier, archive: &Archive) -> Result<()> {
    for m in vault.local.list(&archive.systems_prefix())? {
        if s3.head(&m.key)?.is_none() {
            s3.put_bytes(&m.key, b"")?;
        }
    }
    Ok(())
}

/// How long the background uploader sleeps before the next due batch
/// (at least a second, so a clock step cannot make it spin).
pub fn until(due: SystemTime) -> Duration {
    due.duration_since(SystemTime::now())
        .unwrap_or_default()
        .max(Duration::from_secs(1))
}
