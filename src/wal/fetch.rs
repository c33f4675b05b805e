//! `coffer wal fetch`: one WAL file for PostgreSQL's `restore_command`.
//!
//! Where it looks, in order: the spool (files fetched ahead), the local
//! tier's object, the S3 batches whose name range holds it. Every object is
//! opened with the identity, which checks its keyed content hash, so a
//! damaged copy is never handed to PostgreSQL: the next place is tried, and
//! when none has a good copy the fetch fails with [`Error::Integrity`].
//!
//! "Missing" ([`Fetched::Missing`]) is only said when every tier answered
//! that it does not have the file: PostgreSQL ends archive recovery at the
//! first missing file, so a tier that cannot be asked is an error, not an
//! absence.
//!
//! The spool (`pg_wal/.coffer-spool` by default) holds two kinds of file:
//! `<name>`, decrypted ahead by [`prefetch`] from the local tier, and
//! `<name>.sealed`, the other objects of an S3 batch fetched whole (still
//! sealed; opened and checked when asked for). Files before the one asked
//! for are removed on each fetch, as replay has passed them.

use std::fs;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use vault_format::keys::Identity;
use vault_format::wal::object::{open_object, parse_batch_header};
use vault_format::wal::{SegmentName, WalFile};

use super::Archive;
use crate::error::{Error, Result};
use crate::tier::Tier;
use crate::vault::Vault;

/// What a fetch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// Written to the destination, from the place named (`spool`, a tier).
    Delivered {
        /// Where it came from.
        from: String,
        /// The segment size, for a segment (from its header).
        segment_size: Option<u64>,
    },
    /// No tier has it.
    Missing,
}

/// What reading one WAL file needs.
pub struct Reader<'a> {
    /// The opened vault.
    pub vault: &'a Vault,
    /// The identity (opens the objects).
    pub identity: &'a Identity,
    /// The job's archive.
    pub archive: Archive,
    /// The spool directory, if any.
    pub spool: Option<PathBuf>,
}

impl Reader<'_> {
    /// Fetches `name` into `dest`.
    ///
    /// # Errors
    /// [`Error::Integrity`] when every copy found is damaged; tier errors
    /// when a tier cannot be asked; [`Error::Output`] when `dest` cannot be
    /// written.
    pub fn fetch(&self, name: &str, dest: &Path) -> Result<Fetched> {
        let file = WalFile::parse(name)
            .map_err(|e| Error::Wal(format!("{name} is not a WAL file name ({e})")))?;
        if let Some(spool) = &self.spool {
            tidy_spool(spool, &file);
            if let Some(content) = self.in_spool(spool, &file) {
                return deliver(&file, &content, dest, "spool");
            }
        }
        let mut damage = Vec::new();
        match self.vault.local.get(&self.archive.object(name)) {
            Ok(obj) => match open_object(self.identity, self.archive.key(), &obj) {
                Ok(content) => return deliver(&file, &content, dest, "local"),
                Err(e) => damage.push(format!("tier local: {e}")),
            },
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(s3) = &self.vault.s3 {
            if let Some(content) = self.in_batches(&**s3, name, &mut damage)? {
                return deliver(&file, &content, dest, s3.name());
            }
        }
        if damage.is_empty() {
            return Ok(Fetched::Missing);
        }
        Err(Error::Integrity {
            problem: format!(
                "WAL file {name} of job {} is damaged everywhere it is stored ({})",
                self.archive.job,
                damage.join("; ")
            ),
            pack: None,
            tier: "WAL archive".into(),
            snapshot: None,
        })
    }

    /// A spooled copy: decrypted ahead, or a sealed object to open now.
    /// A copy that does not check out (torn by a crash, or not this file)
    /// is dropped and the tiers are asked instead.
    fn in_spool(&self, spool: &Path, file: &WalFile) -> Option<Vec<u8>> {
        let name = file.name();
        let plain = spool.join(&name);
        let sealed = spool.join(format!("{name}.sealed"));
        let content = if let Ok(c) = fs::read(&plain) {
            let _ = fs::remove_file(&plain);
            Some(c)
        } else if let Ok(obj) = fs::read(&sealed) {
            let _ = fs::remove_file(&sealed);
            open_object(self.identity, self.archive.key(), &obj).ok()
        } else {
            None
        };
        content.filter(|c| file.check_content(c).is_ok())
    }

    /// Looks for `name` in the S3 batches; spools the batch's later files.
    fn in_batches(
        &self,
        s3: &dyn Tier,
        name: &str,
        damage: &mut Vec<String>,
    ) -> Result<Option<Vec<u8>>> {
        let batches = s3.list(&self.archive.batches_prefix())?;
        for b in batches.iter().rev() {
            let Some((first, last)) = self.archive.batch_range(&b.key) else {
                continue;
            };
            if !(first <= name && name <= last) {
                continue;
            }
            let body = s3.get(&b.key)?;
            let entries = match parse_batch_header(&body) {
                Ok(Some(e)) => e,
                Ok(None) | Err(_) => {
                    damage.push(format!("tier {}: batch {} is damaged", s3.name(), b.key));
                    continue;
                }
            };
            let Some(me) = entries.iter().find(|e| e.name == name) else {
                continue;
            };
            let obj = slice(&body, me.offset, me.len);
            match obj.map(|o| open_object(self.identity, self.archive.key(), o)) {
                Some(Ok(content)) => {
                    if let Some(spool) = &self.spool {
                        for e in entries.iter().filter(|e| e.name.as_str() > name) {
                            if let Some(o) = slice(&body, e.offset, e.len) {
                                spool_file(spool, &format!("{}.sealed", e.name), o);
                            }
                        }
                    }
                    return Ok(Some(content));
                }
                Some(Err(e)) => damage.push(format!("tier {}, batch {}: {e}", s3.name(), b.key)),
                None => damage.push(format!("tier {}: batch {} is truncated", s3.name(), b.key)),
            }
        }
        Ok(None)
    }

    /// Decrypts up to `count` segments after `after` from the local tier
    /// into the spool, `threads` at a time. Best effort: what fails is
    /// fetched (and its failure reported) when PostgreSQL asks for it.
    pub fn prefetch(&self, after: &SegmentName, segment_size: u64, count: usize, threads: usize) {
        let Some(spool) = &self.spool else { return };
        let next = after.segno(segment_size);
        let names: Vec<String> = (1..=count as u64)
            .map(|i| SegmentName::from_segno(after.tli, next + i, segment_size).to_string())
            .filter(|n| !spool.join(n).exists() && !spool.join(format!("{n}.sealed")).exists())
            .collect();
        let work = std::sync::Mutex::new(names.into_iter());
        std::thread::scope(|s| {
            for _ in 0..threads.max(1) {
                s.spawn(|| loop {
                    let Some(n) = work.lock().ok().and_then(|mut w| w.next()) else {
                        return;
                    };
                    let Ok(obj) = self.vault.local.get(&self.archive.object(&n)) else {
                        continue;
                    };
                    if let Ok(content) = open_object(self.identity, self.archive.key(), &obj) {
                        spool_file(spool, &n, &content);
                    }
                });
            }
        });
    }
}

fn slice(body: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    body.get(start..end)
}

/// Writes a spool file whole under a temporary name, then renames it, so a
/// fetch never reads half of one.
fn spool_file(spool: &Path, name: &str, data: &[u8]) {
    let _ = fs::DirBuilder::new().mode(0o700).create(spool);
    let tmp = spool.join(format!(".{name}.{}", std::process::id()));
    // fsynced before the rename: a spool file torn by a power loss could
    // pass the header check with garbage after it.
    let ok = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&tmp, spool.join(name)));
    if ok.is_err() {
        let _ = fs::remove_file(&tmp);
    }
}

/// Removes spooled segments of `file`'s timeline before it: replay is past them.
fn tidy_spool(spool: &Path, file: &WalFile) {
    let Some(seg) = file.segment() else { return };
    let Ok(entries) = fs::read_dir(spool) else {
        return;
    };
    let me = seg.to_string();
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let base = n.strip_suffix(".sealed").unwrap_or(&n);
        if base.len() == 24 && base[..8] == me[..8] && base < me.as_str() {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Writes the file for PostgreSQL (under a temporary name, then renamed);
/// a segment's header is checked against its name first.
fn deliver(file: &WalFile, content: &[u8], dest: &Path, from: &str) -> Result<Fetched> {
    let header = file.check_content(content).map_err(|e| Error::Integrity {
        problem: format!("WAL file {file} from {from} is not the segment its name says ({e})"),
        pack: None,
        tier: from.to_string(),
        snapshot: None,
    })?;
    let segment_size = header.map(|h| u64::from(h.seg_size));
    let tmp = dest.with_extension("coffer-tmp");
    let out = |io| Error::Output {
        what: dest.display().to_string(),
        io,
    };
    fs::write(&tmp, content).map_err(out)?;
    fs::rename(&tmp, dest).map_err(out)?;
    Ok(Fetched::Delivered {
        from: from.to_string(),
        segment_size,
    })
}
