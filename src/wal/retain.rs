//! WAL retention: which archived WAL files no kept base backup and no
//! point-in-time recovery window needs (run by `coffer prune`).
//!
//! Kept, per job:
//! - everything from the *anchor* on: the newest kept base backup that
//!   ended before the window's start (`keep-wal-within` back from the
//!   newest WAL pushed), or the oldest kept base backup without a window
//!   or when none ended before it;
//! - for each older kept base backup, only the segments from its start to
//!   its stop (and its `.backup` file), so it stays restorable on its own;
//! - every `.history` file (tiny, and every later timeline needs them).
//!
//! A job without a base backup keeps all its WAL: nothing could be
//! restored from it yet, and deleting it would make the next base backup
//! the only possible start.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;
use vault_format::wal::WalFile;

use super::Archive;
use crate::catalog::{Catalog, WalRecord};
use crate::error::Result;
use crate::pg::basebackup::BaseFacts;
use crate::progress::Progress;
use crate::tier::Tier;
use crate::util::parse_time;
use crate::vault::Vault;

/// What WAL retention decided for a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WalPlan {
    /// The job.
    pub job: String,
    /// The base backup the continuous WAL starts at (snapshot id).
    pub anchor: Option<String>,
    /// WAL files to delete, by name.
    pub delete: Vec<String>,
}

/// Decides which of `files` can go, given the job's kept base backups
/// (any order) and its `keep-wal-within` window.
pub fn plan(
    job: &str,
    files: &[WalRecord],
    bases: &[(String, BaseFacts)],
    window: Option<Duration>,
) -> WalPlan {
    let mut bases: Vec<&(String, BaseFacts)> = bases.iter().collect();
    bases.sort_by(|a, b| a.1.stopped_at.cmp(&b.1.stopped_at));
    let Some(oldest) = bases.first() else {
        return WalPlan {
            job: job.to_string(),
            ..Default::default()
        };
    };
    let newest_push = files.iter().filter_map(|w| parse_time(&w.pushed)).max();
    let window_start = window.zip(newest_push).and_then(|(w, n)| n.checked_sub(w));
    let mut anchor = *window_start
        .and_then(|start| {
            bases
                .iter()
                .rev()
                .find(|(_, f)| parse_time(&f.stopped_at).is_some_and(|t| t <= start))
        })
        .unwrap_or(oldest);
    let seg = anchor.1.segment_size.max(1);
    let start_of = |f: &BaseFacts| f.start().map(|l| l.0 / seg);
    // A timeline that forked before the anchor started (a recovery from an
    // older base backup) does not contain the anchor in its history: its
    // WAL must be recoverable from a base backup before the fork. Move the
    // anchor back until no later timeline forked before it; without such a
    // base backup, keep everything.
    loop {
        let (Some(from), tli) = (start_of(&anchor.1), anchor.1.timeline) else {
            return WalPlan {
                job: job.to_string(),
                ..Default::default()
            };
        };
        let fork = files
            .iter()
            .filter_map(|w| match WalFile::parse(&w.name) {
                Ok(WalFile::Segment(s) | WalFile::Partial(s)) if s.tli > tli => Some(s.segno(seg)),
                _ => None,
            })
            .filter(|&n| n < from)
            .min();
        let Some(fork) = fork else { break };
        match bases
            .iter()
            .rev()
            .find(|(_, f)| start_of(f).is_some_and(|s| s <= fork))
        {
            Some(b) => anchor = *b,
            None => {
                return WalPlan {
                    job: job.to_string(),
                    ..Default::default()
                }
            }
        }
    }
    let Some(from) = start_of(&anchor.1) else {
        return WalPlan::default();
    };
    let mut kept: BTreeSet<String> = BTreeSet::new();
    for (_, f) in bases.iter().take_while(|(id, _)| id != &anchor.0) {
        kept.extend(f.needed_segments());
        kept.insert(f.start_wal.clone());
    }
    let delete = files
        .iter()
        .filter(|w| {
            let segno = match WalFile::parse(&w.name) {
                Ok(WalFile::TimelineHistory { .. }) | Err(_) => return false,
                Ok(WalFile::BackupHistory { segment, .. }) => Some(segment.segno(seg)),
                Ok(f) => f.segment().map(|s| s.segno(seg)),
            };
            let Some(segno) = segno else { return false };
            // Never what was pushed inside the window.
            let recent =
                window_start.is_some_and(|start| parse_time(&w.pushed).is_none_or(|t| t >= start));
            if segno >= from || recent {
                return false;
            }
            // A `.backup` file is kept with its base backup's first segment.
            let base_name = w.name.get(..24).unwrap_or(&w.name);
            !kept.contains(&w.name) && !kept.contains(base_name)
        })
        .map(|w| w.name.clone())
        .collect();
    WalPlan {
        job: job.to_string(),
        anchor: Some(anchor.0.clone()),
        delete,
    }
}

/// Applies WAL retention to every job that archived WAL: records the
/// deletions (local objects; S3 batches all of whose files go), forgets the
/// rows, then deletes (an interrupted delete is finished by `coffer sync`
/// or the next prune). With `dry_run`, only plans.
///
/// # Errors
/// Settings (a job's policy), catalog and push key errors; tier failures
/// are left recorded for the next run.
pub fn prune(
    vault: &Vault,
    catalog: &mut Catalog,
    dry_run: bool,
    progress: &dyn Progress,
) -> Result<Vec<WalPlan>> {
    let jobs = catalog.wal_jobs()?;
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let key = vault.push_key()?.dedup_key.wal_key();
    let mut plans = Vec::new();
    for job in jobs {
        let window = vault
            .settings
            .policy_for(&job)?
            .and_then(|p| p.keep_wal_within);
        let files = catalog.wal_files(Some(&job))?;
        let bases = super::verify::base_backups(catalog, &job)?;
        let p = plan(&job, &files, &bases, window);
        if !dry_run && !p.delete.is_empty() {
            let archive = Archive::new(key.clone(), &job);
            let gone: BTreeSet<&str> = p.delete.iter().map(String::as_str).collect();
            let mut keys: Vec<(String, String)> = p
                .delete
                .iter()
                .map(|n| (archive.object(n), vault.local.name().to_string()))
                .collect();
            if let Some(s3) = &vault.s3 {
                let mut batches: BTreeSet<&str> = BTreeSet::new();
                let mut needed: BTreeSet<&str> = BTreeSet::new();
                for w in &files {
                    if let Some(b) = &w.batch {
                        if gone.contains(w.name.as_str()) {
                            batches.insert(b);
                        } else {
                            needed.insert(b);
                        }
                    }
                }
                keys.extend(
                    batches
                        .difference(&needed)
                        .map(|b| (b.to_string(), s3.name().to_string())),
                );
            }
            catalog.record_deletions(&keys, "wal retention")?;
            catalog.delete_wal(&job, &p.delete)?;
        }
        plans.push(p);
    }
    if !dry_run {
        crate::deletion::pending::run(
            catalog,
            &vault.tiers(),
            |k| k.starts_with("wal/"),
            progress,
        )?;
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn file(name: &str, pushed: &str) -> WalRecord {
        WalRecord {
            job: "j".into(),
            name: name.into(),
            tli: 1,
            kind: "segment".into(),
            hash: [0; 32],
            size: SEG,
            stored: 1,
            pushed: pushed.into(),
            batch: None,
        }
    }

    fn base(id: &str, start_seg: u64, stopped: &str) -> (String, BaseFacts) {
        let start = format!("0/{:X}", start_seg * SEG + 0x28);
        let stop = format!("0/{:X}", start_seg * SEG + 0x100);
        (
            id.into(),
            BaseFacts {
                system_identifier: "1".into(),
                server_version_num: 150000,
                segment_size: SEG,
                timeline: 1,
                start_lsn: start,
                stop_lsn: stop,
                stop_timeline: 1,
                start_wal: format!("{:08X}{:08X}{:08X}", 1, 0, start_seg),
                stop_wal: String::new(),
                stopped_at: stopped.into(),
                backup_label: String::new(),
                backup_manifest_size: 0,
                tablespaces: Vec::new(),
            },
        )
    }

    fn seg(n: u64) -> String {
        format!("{:08X}{:08X}{:08X}", 1, 0, n)
    }

    /// Segments 1..=20, one an hour from 00:00.
    fn archive() -> Vec<WalRecord> {
        let mut f: Vec<WalRecord> = (1..=20)
            .map(|n| file(&seg(n), &format!("2026-01-01T{:02}:00:00Z", n - 1)))
            .collect();
        f.push(file("00000002.history", "2026-01-01T05:30:00Z"));
        f.push(file(
            &format!("{}.00000028.backup", seg(3)),
            "2026-01-01T02:10:00Z",
        ));
        f
    }

    #[test]
    fn a_timeline_forked_before_the_anchor_moves_it_back() {
        // b1 at segment 3 and b2 at 10 on timeline 1; a recovery from b1
        // forked timeline 2 at segment 6. b2 is not in timeline 2's history.
        let mut files = archive();
        files.extend((6..=9).map(|n| {
            let mut f = file(
                &format!("{:08X}{:08X}{:08X}", 2, 0, n),
                "2026-01-01T01:00:00Z",
            );
            f.tli = 2;
            f
        }));
        let bases = [
            base("b1", 3, "2026-01-01T02:30:00Z"),
            base("b2", 10, "2026-01-01T09:30:00Z"),
        ];
        let p = plan("j", &files, &bases, None);
        assert_eq!(p.anchor.as_deref(), Some("b1"));
        let p = plan("j", &files, &bases[1..], None);
        assert!(
            p.delete.is_empty(),
            "no base backup before the fork: keep all, {p:?}"
        );
    }

    #[test]
    fn without_base_backups_nothing_goes() {
        assert!(plan("j", &archive(), &[], Some(Duration::from_secs(3600)))
            .delete
            .is_empty());
    }

    #[test]
    fn without_a_window_wal_before_the_oldest_base_backup_goes() {
        let p = plan(
            "j",
            &archive(),
            &[base("b1", 5, "2026-01-01T04:30:00Z")],
            None,
        );
        assert_eq!(p.anchor.as_deref(), Some("b1"));
        let want: Vec<String> = (1..5)
            .map(seg)
            .chain([format!("{}.00000028.backup", seg(3))])
            .collect();
        let mut got = p.delete.clone();
        got.sort();
        let mut want = want;
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn older_base_backups_keep_only_their_own_range() {
        let bases = [
            base("b1", 3, "2026-01-01T02:30:00Z"),
            base("b2", 10, "2026-01-01T09:30:00Z"),
            base("b3", 15, "2026-01-01T14:30:00Z"),
        ];
        // Newest push 19:00; a 6h window starts at 13:00: b2 is the anchor.
        let p = plan("j", &archive(), &bases, Some(Duration::from_secs(6 * 3600)));
        assert_eq!(p.anchor.as_deref(), Some("b2"));
        let del: BTreeSet<String> = p.delete.into_iter().collect();
        for n in [1, 2, 4, 5, 6, 7, 8, 9] {
            assert!(del.contains(&seg(n)), "{n} should go: {del:?}");
        }
        for n in [3, 10, 11, 19, 20] {
            assert!(!del.contains(&seg(n)), "{n} must stay: {del:?}");
        }
        assert!(!del.contains("00000002.history"));
        assert!(!del.iter().any(|d| d.ends_with(".backup")), "{del:?}");
    }
}
