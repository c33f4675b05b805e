//! The WAL archive: `archive_command` and `restore_command` for PostgreSQL,
//! and what base backups and point-in-time recovery need to know of it.
//!
//! ```text
//!  wal push %p ──seal──▶ local tier  wal/<job tag>/<file name>   (fsynced: the RPO)
//!       │                   │
//!       └─spawns─▶ wal upload: N files or T seconds ──▶ S3  wal/<job tag>/batches/<first>_<last>_<hash>
//!  wal fetch %f %p ◀── spool (prefetched) ◀── local object ◀── S3 batch (its other files go to the spool)
//! ```
//!
//! One sealed object per WAL file ([`vault_format::wal::object`]): WAL does
//! not deduplicate (every segment is new), so chunking it would only add
//! work on the path PostgreSQL waits on. The object's header carries the
//! keyed hash of the content, so a second push of the same name is
//! compared without the identity, as PostgreSQL's documentation asks of
//! an `archive_command`: same content succeeds, different content fails.
//!
//! Job names and system identifiers reach the tiers only as keyed tags
//! ([`vault_format::keys::WalKey`]); WAL file names are in the clear (they
//! carry timeline and position, as in every peer's archive).

pub mod fetch;
pub mod push;
pub mod rebuild;
pub mod retain;
pub mod upload;
pub mod verify;

use vault_format::keys::WalKey;

/// Where one job's WAL lives in a tier.
#[derive(Debug, Clone)]
pub struct Archive {
    /// The job.
    pub job: String,
    /// `wal/<job tag>/`.
    prefix: String,
    key: WalKey,
}

impl Archive {
    /// The archive of `job` under `key`.
    pub fn new(key: WalKey, job: &str) -> Self {
        Archive {
            prefix: format!("wal/{}/", key.job_tag(job)),
            job: job.to_string(),
            key,
        }
    }

    /// The WAL key.
    pub fn key(&self) -> &WalKey {
        &self.key
    }

    /// `wal/<job tag>/<name>`: one WAL file's object in the local tier.
    pub fn object(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// `wal/<job tag>/system/`: where the cluster marker is.
    pub fn systems_prefix(&self) -> String {
        format!("{}system/", self.prefix)
    }

    /// The marker of the cluster with `system_identifier`.
    pub fn system_marker(&self, system_identifier: u64) -> String {
        format!(
            "{}{}",
            self.systems_prefix(),
            self.key.system_tag(system_identifier)
        )
    }

    /// `wal/<job tag>/batches/`.
    pub fn batches_prefix(&self) -> String {
        format!("{}batches/", self.prefix)
    }

    /// The key of a batch holding `first` to `last` (by name), whose bytes
    /// hash to `hash`.
    pub fn batch(&self, first: &str, last: &str, hash: &blake3::Hash) -> String {
        format!(
            "{}{first}_{last}_{}",
            self.batches_prefix(),
            &hash.to_hex()[..16]
        )
    }

    /// The name range of a batch key: `(first, last)`.
    pub fn batch_range<'a>(&self, key: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = key.strip_prefix(&self.batches_prefix())?;
        let mut parts = rest.splitn(3, '_');
        Some((parts.next()?, parts.next()?))
    }

    /// The WAL file name of an object key in this archive, if it is one.
    pub fn file_name<'a>(&self, key: &'a str) -> Option<&'a str> {
        let rest = key.strip_prefix(&self.prefix)?;
        (!rest.contains('/')).then_some(rest)
    }

    /// Prefix of everything the job's archive holds.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_format::keys::DedupKey;

    #[test]
    fn keys_name_the_job_only_by_its_tag() {
        let a = Archive::new(DedupKey::generate().wal_key(), "main-db");
        let obj = a.object("000000010000000000000003");
        assert!(!obj.contains("main-db"));
        assert_eq!(a.file_name(&obj), Some("000000010000000000000003"));
        assert_eq!(a.file_name(&a.system_marker(7)), None);
        let b = a.batch("A", "B", &blake3::hash(b"x"));
        assert_eq!(a.batch_range(&b), Some(("A", "B")));
    }
}
