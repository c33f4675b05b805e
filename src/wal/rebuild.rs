//! The WAL rows of a rebuilt catalog, recreated from the tiers.
//!
//! `coffer index rebuild` reads snapshots and packs from one tier; without
//! this step the new catalog would know no WAL: `wal verify` and `status`
//! would show an empty archive, retention would never delete any, and the
//! uploader would never send files that were waiting for the offsite tier.
//! The rows come from every tier that answers:
//!
//! - the local tier's objects (`wal/<job tag>/<name>`): name, timeline,
//!   kind, the content hash from the object's header, its stored size;
//! - the S3 batches' headers: which batch holds each file (a file only in
//!   S3 gets its row too, its hash read from its object's header there).
//!
//! A job's archive is found by its keyed tag, so only jobs coffer knows by
//! name are recreated: those of the rebuilt snapshots and of `[[jobs]]`.
//! Archives of other tags are reported. What the tiers do not say is set
//! conservatively: `pushed` is the time of the rebuild (retention's window
//! then keeps everything for its length), the plaintext size is 0
//! (unknown without decrypting every file), and the job's cluster is
//! recorded when a base backup of the job names it (else the next push
//! records it from the marker).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};

use vault_format::keys::WalKey;
use vault_format::wal::object::{object_hash, OBJECT_HEADER_LEN};
use vault_format::wal::WalFile;

use super::verify::{base_backups, batch_entries};
use super::Archive;
use crate::catalog::{Catalog, WalRecord, WalSystem};
use crate::error::Result;
use crate::tier::Tier;
use crate::util::now_rfc3339_micros;
use crate::vault::Vault;

/// What the WAL part of a rebuild found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WalRebuild {
    /// Jobs whose archive was found.
    pub jobs: u64,
    /// WAL files recorded.
    pub files: u64,
    /// Of those, files an S3 batch holds.
    pub offsite: u64,
    /// What could not be read or placed.
    pub problems: Vec<String>,
}

/// Recreates the WAL rows of `jobs` in `cat` from the vault's tiers.
///
/// # Errors
/// Catalog errors; tier errors are reported as problems.
pub fn rebuild(
    cat: &mut Catalog,
    vault: &Vault,
    key: &WalKey,
    jobs: &BTreeSet<String>,
) -> Result<WalRebuild> {
    let mut rep = WalRebuild::default();
    let now = now_rfc3339_micros();
    let local = vault.local.clone();
    let mut known_tags = BTreeSet::new();
    for job in jobs {
        let archive = Archive::new(key.clone(), job);
        known_tags.insert(archive.prefix().to_string());
        let mut found = false;
        let listed = match local.list(archive.prefix()) {
            Ok(l) => l,
            Err(e) => {
                rep.problems
                    .push(format!("WAL of job {job} in tier {}: {e}", local.name()));
                Vec::new()
            }
        };
        let keys: BTreeSet<String> = listed.iter().map(|o| o.key.clone()).collect();
        for o in &listed {
            let Some(name) = archive.file_name(&o.key) else {
                continue;
            };
            let Ok(file) = WalFile::parse(name) else {
                continue;
            };
            match header_hash(&*local, &o.key, 0) {
                Ok(hash) => {
                    cat.insert_wal(&row(job, &file, hash, o.size, &now, None))?;
                    rep.files += 1;
                    found = true;
                }
                Err(e) => rep.problems.push(e),
            }
        }
        if let Some(s3) = &vault.s3 {
            found |= from_batches(cat, &**s3, &archive, &now, &mut rep)?;
        }
        for (_, f) in base_backups(cat, job)? {
            let Ok(sys) = f.system_identifier.parse::<u64>() else {
                continue;
            };
            if keys.contains(&archive.system_marker(sys)) {
                cat.set_wal_system(
                    job,
                    &WalSystem {
                        system_identifier: sys,
                        segment_size: f.segment_size,
                    },
                )?;
            }
        }
        rep.jobs += u64::from(found);
    }
    unknown_archives(vault, &known_tags, &mut rep);
    Ok(rep)
}

fn row(
    job: &str,
    file: &WalFile,
    hash: [u8; 32],
    stored: u64,
    now: &str,
    batch: Option<&str>,
) -> WalRecord {
    WalRecord {
        job: job.to_string(),
        name: file.name(),
        tli: file.tli(),
        kind: file.kind().to_string(),
        hash,
        size: 0,
        stored,
        pushed: now.to_string(),
        batch: batch.map(str::to_string),
    }
}

/// The content hash in the header of the WAL object at `offset` of `key`.
fn header_hash(tier: &dyn Tier, key: &str, offset: u64) -> std::result::Result<[u8; 32], String> {
    let why = |e: String| format!("WAL object {key} in tier {}: {e}", tier.name());
    let mut r = tier.open(key).map_err(|e| why(e.to_string()))?;
    let mut head = Vec::with_capacity(OBJECT_HEADER_LEN);
    r.seek(SeekFrom::Start(offset))
        .and_then(|_| r.take(OBJECT_HEADER_LEN as u64).read_to_end(&mut head))
        .map_err(|e| why(e.to_string()))?;
    object_hash(&head).map_err(|e| why(e.to_string()))
}

/// Marks the rows an S3 batch holds, adding rows for files only S3 has.
/// Returns whether any batch was found.
fn from_batches(
    cat: &mut Catalog,
    s3: &dyn Tier,
    archive: &Archive,
    now: &str,
    rep: &mut WalRebuild,
) -> Result<bool> {
    let batches = match s3.list(&archive.batches_prefix()) {
        Ok(b) => b,
        Err(e) => {
            rep.problems.push(format!(
                "WAL batches of job {} in tier {}: {e}; the uploader sends those files again",
                archive.job,
                s3.name()
            ));
            return Ok(false);
        }
    };
    for b in &batches {
        let entries = match batch_entries(s3, &b.key) {
            Ok(e) => e,
            Err(e) => {
                rep.problems.push(e.to_string());
                continue;
            }
        };
        let mut held = Vec::new();
        for e in entries {
            let Ok(file) = WalFile::parse(&e.name) else {
                continue;
            };
            if cat.wal_file(&archive.job, &e.name)?.is_none() {
                match header_hash(s3, &b.key, e.offset) {
                    Ok(hash) => {
                        cat.insert_wal(&row(&archive.job, &file, hash, e.len, now, Some(&b.key)))?;
                        rep.files += 1;
                    }
                    Err(p) => {
                        rep.problems.push(p);
                        continue;
                    }
                }
            }
            held.push(e.name);
        }
        rep.offsite += held.len() as u64;
        cat.set_wal_batch(&archive.job, &held, &b.key)?;
    }
    Ok(!batches.is_empty())
}

/// Reports WAL archives whose job tag matches no job coffer knows.
fn unknown_archives(vault: &Vault, known: &BTreeSet<String>, rep: &mut WalRebuild) {
    let Ok(all) = vault.local.list("wal/") else {
        return;
    };
    let mut unknown: BTreeMap<String, u64> = BTreeMap::new();
    for o in all {
        let Some(tag) = o.key.split('/').nth(1) else {
            continue;
        };
        let prefix = format!("wal/{tag}/");
        if !known.contains(&prefix) {
            *unknown.entry(prefix).or_default() += 1;
        }
    }
    for (prefix, n) in unknown {
        rep.problems.push(format!(
            "{prefix} holds {n} WAL object(s) of a job this catalog does not know by name \
             (no snapshot of it was found): add the job to [[jobs]] in the settings and run \
             `coffer index rebuild` again"
        ));
    }
}
