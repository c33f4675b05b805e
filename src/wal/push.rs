//! `coffer wal push`: one WAL file into the local tier, durable before it
//! returns (PostgreSQL recycles the segment as soon as `archive_command`
//! exits 0).
//!
//! Checks, in order, before anything is written:
//! 1. the name is a WAL file name PostgreSQL archives;
//! 2. a segment's (or partial segment's) first page header matches its
//!    name (its page address is the name's LSN) and its size; a file that
//!    is not what its name says is refused;
//! 3. the segment's system identifier is the job's cluster (the first
//!    segment pushed decides it, recorded as a marker object): WAL of two
//!    clusters in one archive would make every recovery wrong;
//! 4. a name already archived compares keyed content hashes: equal is
//!    success (PostgreSQL retries a push whose success it did not see),
//!    different is a loud failure.
//!
//! Crash safety: the object is written by the local tier's put-if-absent
//! (temporary file in the tier's `tmp/`, fsync, link, directory fsync), so
//! a kill at any point leaves no object or the whole one (and at worst a
//! stray file in `tmp/`, never in `wal/`); the catalog row is written
//! after, and a push that finds the object without a row adds the row. A
//! push that finds the object already there fsyncs it and its directories
//! before exiting 0: the push that wrote it may have been killed between
//! its link and its directory fsync. The cluster marker is written the
//! same way, before the catalog row that names the job's cluster; a push
//! that finds its marker without that row adds the row.
//!
//! Progress: each step is reported as an [`Event::Step`] once it is done
//! (what it wrote durable, as far as a kill goes): `wal push: cluster
//! marker written NAME` (the job's first segment only), `wal push: checked
//! NAME`, then `wal push: sealed NAME` and `wal push: object written
//! NAME` (or `object found` when it was there), `wal push: recorded NAME`
//! (the catalog row). The crash test (tests/wal_crash.rs) kills a push
//! right after each of them.

use std::io::Read;
use std::path::Path;

use vault_format::wal::object::{object_hash, ObjectSealer, MAX_FILE, OBJECT_HEADER_LEN};
use vault_format::wal::{SegmentHeader, WalFile};

use super::Archive;
use crate::catalog::{WalRecord, WalSystem};
use crate::error::{Error, Result};
use crate::progress::{Event, Progress};
use crate::tier::{Put, Tier};
use crate::util::now_rfc3339_micros;
use crate::vault::Vault;

/// zstd level for WAL objects: level 1 keeps a 16 MiB segment's push
/// within PostgreSQL's archiving pace on one core; WAL compresses well
/// even so (full-page images and zero padding).
const ZSTD_LEVEL: i32 = 1;

/// What a push did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushReport {
    /// The WAL file name.
    pub name: String,
    /// The job.
    pub job: String,
    /// False when it was already archived with the same content.
    pub stored: bool,
    /// Plaintext bytes.
    pub size: u64,
    /// Bytes of its sealed object.
    pub stored_size: u64,
    /// Files of this job waiting for the offsite tier.
    pub offsite_pending: usize,
}

/// Archives the WAL file at `path` into `job`, reporting its steps to
/// `progress`.
///
/// # Errors
/// [`Error::Wal`] for a file that is not a WAL file, not what its name
/// says, from another cluster, or archived before with other content;
/// tier and catalog errors otherwise. Nothing is recorded on error.
pub fn push(vault: &Vault, job: &str, path: &Path, progress: &dyn Progress) -> Result<PushReport> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Wal(format!("{} is not a WAL file path", path.display())))?;
    let file = WalFile::parse(name).map_err(|e| {
        Error::Wal(format!(
            "{name} is not a WAL file name ({e}); archive_command must pass %p"
        ))
    })?;
    vault.require_local("archiving WAL")?;
    let mut input = Input::open(path)?;
    let key = vault.push_key()?;
    let archive = Archive::new(key.dedup_key.wal_key(), job);
    let catalog = vault.catalog()?;
    let header = file.check_start(input.first(), input.len).map_err(|e| {
        Error::Wal(format!(
            "{} is not a WAL segment of its name ({e}); nothing was archived",
            path.display()
        ))
    })?;
    let step = |what: &str| progress.event(&Event::Step(format!("wal push: {what} {name}")));
    if let Some(header) = header {
        check_system(vault, &catalog, &archive, &header, name, &step)?;
    }
    step("checked");
    let object_key = archive.object(name);
    let local = vault.local.clone();
    let (stored, stored_size, hash) = match local.head(&object_key)? {
        Some(size) => {
            let mut h = archive.key().content_hasher();
            input.feed(|piece| {
                h.update(piece);
                Ok(())
            })?;
            let hash = *h.finalize().as_bytes();
            same_content(&*local, &archive, &object_key, &hash)?;
            // Found, not written: the push that wrote it may have been
            // killed before its fsyncs, and PostgreSQL recycles the
            // segment on exit 0.
            local.make_durable(&object_key)?;
            step("object found");
            (false, size, hash)
        }
        None => {
            let mut sealer = ObjectSealer::new(archive.key(), ZSTD_LEVEL, input.len)?;
            input.feed(|piece| Ok(sealer.update(piece)?))?;
            let (sealed, hash) = sealer.finish(&key.recipients)?;
            step("sealed");
            let put = local.put_bytes(&object_key, &sealed)?;
            if put == Put::AlreadyExisted {
                // A concurrent push of the same name won the race (the
                // tier made its object durable before answering).
                same_content(&*local, &archive, &object_key, &hash)?;
            }
            step("object written");
            (put == Put::Created, sealed.len() as u64, hash)
        }
    };
    catalog.insert_wal(&WalRecord {
        job: job.to_string(),
        name: name.to_string(),
        tli: file.tli(),
        kind: file.kind().to_string(),
        hash,
        size: input.len,
        stored: stored_size,
        pushed: now_rfc3339_micros(),
        batch: None,
    })?;
    step("recorded");
    let offsite_pending = if vault.s3.is_some() {
        catalog.wal_pending_count(Some(job))?
    } else {
        0
    };
    Ok(PushReport {
        name: name.to_string(),
        job: job.to_string(),
        stored,
        size: input.len,
        stored_size,
        offsite_pending,
    })
}

/// Bytes read at a time. A segment streams through one buffer into the
/// hash and the compressor: reading 16 MiB into fresh memory first cost
/// more than compressing it (a page fault and a zeroed page per 4 KiB,
/// then a copy), and hashing it twice (once for the check, once in the
/// seal) another 3 ms.
const BLOCK: usize = 1 << 20;

/// The WAL file being archived, read once from start to end.
struct Input {
    path: std::path::PathBuf,
    file: std::fs::File,
    /// Its length when opened; it must not change while it is read.
    len: u64,
    buf: Vec<u8>,
    /// Bytes of the first block in `buf` (for the header check).
    first: usize,
}

impl Input {
    fn open(path: &Path) -> Result<Input> {
        let cannot = |e: std::io::Error| {
            Error::Wal(format!(
                "cannot read {}: {e}; nothing was archived",
                path.display()
            ))
        };
        let mut file = std::fs::File::open(path).map_err(cannot)?;
        let len = file.metadata().map_err(cannot)?.len();
        if len > MAX_FILE as u64 {
            return Err(Error::Wal(format!(
                "{} is {len} bytes, larger than any WAL file; nothing was archived",
                path.display()
            )));
        }
        let mut buf = vec![0u8; BLOCK];
        let first = fill(&mut file, &mut buf).map_err(cannot)?;
        Ok(Input {
            path: path.to_path_buf(),
            file,
            len,
            buf,
            first,
        })
    }

    fn first(&self) -> &[u8] {
        &self.buf[..self.first]
    }

    /// Hands the whole file to `each`, block by block (once: the first
    /// block's buffer is reused). A file whose length changed while it
    /// was read is refused.
    fn feed(&mut self, mut each: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let cannot = |e: std::io::Error| {
            Error::Wal(format!(
                "cannot read {}: {e}; nothing was archived",
                self.path.display()
            ))
        };
        let mut total = self.first as u64;
        each(&self.buf[..self.first])?;
        loop {
            let n = fill(&mut self.file, &mut self.buf).map_err(cannot)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            each(&self.buf[..n])?;
        }
        if total != self.len {
            return Err(Error::Wal(format!(
                "{} changed while it was archived ({} bytes, then {total}); nothing was archived",
                self.path.display(),
                self.len
            )));
        }
        Ok(())
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn fill(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Succeeds when the archived object holds the same content.
fn same_content(local: &dyn Tier, archive: &Archive, key: &str, hash: &[u8; 32]) -> Result<()> {
    let mut head = Vec::with_capacity(OBJECT_HEADER_LEN);
    local
        .open(key)?
        .take(OBJECT_HEADER_LEN as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::Wal(format!("reading {key} in tier {}: {e}", local.name())))?;
    let archived = object_hash(&head).map_err(|e| {
        Error::Wal(format!(
            "the archived copy of {key} in tier {} is damaged ({e}); move it aside and push again",
            local.name()
        ))
    })?;
    if &archived != hash {
        return Err(Error::Wal(format!(
            "{} is already archived in job {} with different content; refusing to overwrite it: \
             two clusters (or a restored copy) archive into one job — give each its own --job",
            key.rsplit('/').next().unwrap_or(key),
            archive.job
        )));
    }
    Ok(())
}

/// Refuses a segment of another cluster than the job's; the first segment
/// decides the job's cluster (marker object in the local tier, row in the
/// catalog). `step` is told when this push wrote the marker.
fn check_system(
    vault: &Vault,
    catalog: &crate::catalog::Catalog,
    archive: &Archive,
    header: &SegmentHeader,
    name: &str,
    step: &dyn Fn(&str),
) -> Result<()> {
    let sys = header.system_identifier;
    let refuse = |other: String| {
        Error::Wal(format!(
            "{name} comes from the cluster with system identifier {sys}, but job {} archives \
             {other}; give this cluster its own job (--job)",
            archive.job
        ))
    };
    if let Some(known) = catalog.wal_system(&archive.job)? {
        if known.system_identifier != sys {
            return Err(refuse(format!(
                "the cluster with system identifier {}",
                known.system_identifier
            )));
        }
        return Ok(());
    }
    let mine = archive.system_marker(sys);
    let local = &vault.local;
    if local.head(&mine)?.is_none() {
        let others = local.list(&archive.systems_prefix())?;
        if !others.is_empty() {
            return Err(refuse(
                "another cluster (its marker is in the vault)".into(),
            ));
        }
        local.put_bytes(&mine, b"")?;
        // Two first pushes of two clusters racing: the loser sees two markers.
        if local.list(&archive.systems_prefix())?.len() > 1 {
            let _ = local.delete(&mine);
            return Err(refuse(
                "another cluster (its marker is in the vault)".into(),
            ));
        }
        step("cluster marker written");
    }
    catalog.set_wal_system(
        &archive.job,
        &WalSystem {
            system_identifier: sys,
            segment_size: u64::from(header.seg_size),
        },
    )?;
    // The insert keeps a row another cluster's push added first (two
    // first pushes racing, each after the other's marker check): read back
    // which cluster won.
    match catalog.wal_system(&archive.job)? {
        Some(known) if known.system_identifier != sys => Err(refuse(format!(
            "the cluster with system identifier {}",
            known.system_identifier
        ))),
        _ => Ok(()),
    }
}
