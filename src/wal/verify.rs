//! What the WAL archive covers: per timeline, the segments from the base
//! backup retention keeps all WAL from (or the first archived segment) to
//! the newest, the gaps in between, each base backup's completeness, and how far the offsite tier
//! lags behind the local one.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use vault_format::wal::{SegmentName, WalFile};

use std::io::{Read, Seek, SeekFrom};

use vault_format::wal::object::{parse_batch_header, BatchEntry};

use super::Archive;
use crate::catalog::{Catalog, WalRecord};
use crate::error::{Error, Result};
use crate::pg::basebackup::{BaseFacts, KIND_BASE};
use crate::tier::Tier;
use crate::vault::Vault;

/// One timeline's archived segments.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineReport {
    /// The timeline.
    pub timeline: u32,
    /// First segment the check starts from.
    pub first: String,
    /// Newest archived segment.
    pub last: String,
    /// Segments archived on it.
    pub segments: usize,
    /// Missing segments between `first` and `last` (ranges, inclusive).
    pub gaps: Vec<(String, String)>,
}

/// A base backup and whether its WAL is all archived.
#[derive(Debug, Clone, Serialize)]
pub struct BaseReport {
    /// Snapshot id.
    pub snapshot: String,
    /// When it finished.
    pub stopped_at: String,
    /// Start and stop LSN.
    pub start_lsn: String,
    /// Stop LSN.
    pub stop_lsn: String,
    /// True when every segment from start to stop is archived.
    pub complete: bool,
    /// The segments still missing.
    pub missing: Vec<String>,
}

/// The archive of one job.
#[derive(Debug, Clone, Serialize)]
pub struct WalReport {
    /// The job.
    pub job: String,
    /// The cluster it archives.
    pub system_identifier: Option<String>,
    /// WAL files archived (all kinds).
    pub files: usize,
    /// Their stored bytes.
    pub stored_bytes: u64,
    /// Newest push (RFC 3339).
    pub last_push: Option<String>,
    /// Per timeline.
    pub timelines: Vec<TimelineReport>,
    /// Base backups of the job, oldest first.
    pub base_backups: Vec<BaseReport>,
    /// Files not yet in the offsite tier (only with S3 configured).
    pub offsite_pending: usize,
    /// The oldest of them was pushed at.
    pub offsite_oldest_pending: Option<String>,
}

impl WalReport {
    /// True when there is a gap or an incomplete base backup.
    pub fn damaged(&self) -> bool {
        self.timelines.iter().any(|t| !t.gaps.is_empty())
            || self.base_backups.iter().any(|b| !b.complete)
    }
}

/// Base backups of `job` with their facts, oldest first.
///
/// # Errors
/// Catalog errors.
pub fn base_backups(catalog: &Catalog, job: &str) -> Result<Vec<(String, BaseFacts)>> {
    let mut out = Vec::new();
    for s in catalog.snapshots(Some(job))? {
        if s.kind != KIND_BASE {
            continue;
        }
        let m = catalog.manifest(&s.id)?;
        if let Some(f) = BaseFacts::from_source(&m.source) {
            out.push((s.id.to_hex(), f));
        }
    }
    Ok(out)
}

/// The segments of `needed` the archive lacks.
pub fn missing(needed: &[String], archived: &BTreeSet<String>) -> Vec<String> {
    needed
        .iter()
        .filter(|n| !archived.contains(*n))
        .cloned()
        .collect()
}

/// Every WAL file name the archive holds: the catalog's rows of the job
/// (`files`), the local tier's objects and the S3 batches' contents that
/// the rows do not name (a catalog rebuilt on a new machine knows no WAL;
/// the tiers do).
///
/// # Errors
/// Tier errors listing or reading batch headers.
pub fn archived_names(
    vault: &Vault,
    files: &[WalRecord],
    archive: &Archive,
) -> Result<BTreeSet<String>> {
    let mut names: BTreeSet<String> = files.iter().map(|w| w.name.clone()).collect();
    for o in vault.local.list(archive.prefix())? {
        if let Some(n) = archive.file_name(&o.key) {
            names.insert(n.to_string());
        }
    }
    if let Some(s3) = &vault.s3 {
        let known: BTreeSet<&str> = files.iter().filter_map(|w| w.batch.as_deref()).collect();
        for b in s3.list(&archive.batches_prefix())? {
            if !known.contains(b.key.as_str()) {
                names.extend(batch_names(&**s3, &b.key)?);
            }
        }
    }
    Ok(names)
}

/// The file names in a batch, from its header (read in ranges).
fn batch_names(s3: &dyn Tier, key: &str) -> Result<Vec<String>> {
    Ok(batch_entries(s3, key)?
        .into_iter()
        .map(|e| e.name)
        .collect())
}

/// A batch's entries, from its header (read in ranges).
///
/// # Errors
/// Tier errors, and a damaged header.
pub(crate) fn batch_entries(s3: &dyn Tier, key: &str) -> Result<Vec<BatchEntry>> {
    let mut r = s3.open(key)?;
    let mut head = Vec::new();
    let mut want = 4096u64;
    loop {
        head.clear();
        r.seek(SeekFrom::Start(0))
            .and_then(|_| r.by_ref().take(want).read_to_end(&mut head))
            .map_err(|e| Error::Wal(format!("reading batch {key} in tier {}: {e}", s3.name())))?;
        match parse_batch_header(&head) {
            Ok(Some(entries)) => return Ok(entries),
            Ok(None) if (head.len() as u64) == want => want *= 4,
            _ => {
                return Err(Error::Wal(format!(
                    "batch {key} in tier {} is damaged; `coffer sync` uploads its files again from the local tier",
                    s3.name()
                )))
            }
        }
    }
}

/// Checks the archive of `job`.
///
/// # Errors
/// Catalog errors.
pub fn report(
    catalog: &Catalog,
    job: &str,
    offsite: bool,
    window: Option<std::time::Duration>,
) -> Result<WalReport> {
    let files = catalog.wal_files(Some(job))?;
    let system = catalog.wal_system(job)?;
    let bases = base_backups(catalog, job)?;
    let names: BTreeSet<String> = files.iter().map(|w| w.name.clone()).collect();
    let seg_size = system
        .as_ref()
        .map(|s| s.segment_size)
        .or_else(|| bases.first().map(|(_, f)| f.segment_size))
        .unwrap_or(16 << 20);
    let base_reports: Vec<BaseReport> = bases
        .iter()
        .map(|(id, f)| {
            let miss = missing(&f.needed_segments(), &names);
            BaseReport {
                snapshot: id.clone(),
                stopped_at: f.stopped_at.clone(),
                start_lsn: f.start_lsn.clone(),
                stop_lsn: f.stop_lsn.clone(),
                complete: miss.is_empty(),
                missing: miss,
            }
        })
        .collect();
    // Continuity is checked from where retention keeps all WAL (the
    // anchor); older base backups keep only their own range and are
    // checked one by one above.
    let anchor = super::retain::plan(job, &files, &bases, window).anchor;
    let oldest_base = bases
        .iter()
        .find(|(id, _)| Some(id) == anchor.as_ref())
        .or(bases.first())
        .and_then(|(_, f)| f.needed_segments().into_iter().next());
    let timelines = timelines(&files, oldest_base.as_deref(), seg_size);
    let pending: Vec<&WalRecord> = if offsite {
        files.iter().filter(|w| w.batch.is_none()).collect()
    } else {
        Vec::new()
    };
    Ok(WalReport {
        job: job.to_string(),
        system_identifier: system.map(|s| s.system_identifier.to_string()),
        files: files.len(),
        stored_bytes: files.iter().map(|w| w.stored).sum(),
        last_push: files.iter().map(|w| w.pushed.clone()).max(),
        timelines,
        base_backups: base_reports,
        offsite_pending: pending.len(),
        offsite_oldest_pending: pending.iter().map(|w| w.pushed.clone()).min(),
    })
}

/// Segments per timeline, with gaps from the start point to the newest.
fn timelines(files: &[WalRecord], oldest_base: Option<&str>, seg: u64) -> Vec<TimelineReport> {
    let mut by_tli: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for w in files {
        if let Ok(WalFile::Segment(s)) = WalFile::parse(&w.name) {
            by_tli.entry(s.tli).or_default().insert(s.segno(seg));
        }
    }
    let base = oldest_base.and_then(|n| match WalFile::parse(n) {
        Ok(WalFile::Segment(s)) => Some(s),
        _ => None,
    });
    by_tli
        .into_iter()
        .filter_map(|(tli, segs)| {
            let last = *segs.last()?;
            // From the oldest base backup on its timeline; a later timeline
            // starts where it branched, i.e. at its first archived segment.
            let first = match base {
                Some(b) if b.tli == tli => b.segno(seg).min(last),
                _ => *segs.first()?,
            };
            let mut gaps = Vec::new();
            let mut n = first;
            while n <= last {
                if segs.contains(&n) {
                    n += 1;
                    continue;
                }
                let start = n;
                while n <= last && !segs.contains(&n) {
                    n += 1;
                }
                let name = |x| SegmentName::from_segno(tli, x, seg).to_string();
                gaps.push((name(start), name(n - 1)));
            }
            Some(TimelineReport {
                timeline: tli,
                first: SegmentName::from_segno(tli, first, seg).to_string(),
                last: SegmentName::from_segno(tli, last, seg).to_string(),
                segments: segs.len(),
                gaps,
            })
        })
        .collect()
}
