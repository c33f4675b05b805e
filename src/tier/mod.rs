//! Tiers: where vault objects live.
//!
//! The [`Tier`] trait is deliberately small so that a local directory, S3, an
//! in-memory store for tests and fault-injecting wrappers are each a page.
//!
//! Contract every implementation keeps:
//! - Objects are immutable. `put_*` creates an object only if it is absent and
//!   never overwrites: a second put of the same key returns
//!   [`Put::AlreadyExisted`] and leaves the first bytes in place. (Keys are
//!   content addresses or random ids, so equal keys mean equal bytes.)
//! - When `put_*` returns, the object is durable (for a local directory:
//!   data and directory entry fsynced).
//! - A missing object is [`TierError::NotFound`], never an empty read.
//! - `list` returns every object under a prefix (no pagination leaks out).

pub mod fault;
pub mod keys;
pub mod local;
pub mod s3;

use std::io::{Read, Seek};
use std::path::Path;

use thiserror::Error;

/// Outcome of a put-if-absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// The object was written.
    Created,
    /// An object with that key was already there; nothing was written.
    AlreadyExisted,
}

/// What [`Tier::remove`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// The object is gone (or was not there).
    Removed,
    /// The store must keep it for now (S3 Object Lock): until when, if it
    /// said (RFC 3339).
    Retained {
        /// When the retention ends.
        until: Option<String>,
    },
}

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Full key, e.g. `packs/ab/ab12...`.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// A readable, seekable object body.
pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// What went wrong talking to a tier. Every variant names the tier and, where
/// there is one, the object.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TierError {
    /// The object does not exist.
    #[error("{key} is missing from tier {tier}")]
    NotFound { tier: String, key: String },
    /// Local I/O failed. The cause is in the message, not in `source()`,
    /// so a printed error chain says it once.
    #[error("tier {tier}: {op} {key}: {io}")]
    Io {
        tier: String,
        op: &'static str,
        key: String,
        io: std::io::Error,
    },
    /// The tier refused the request (permissions, credentials, a missing
    /// bucket, a bad request): trying again will not help.
    #[error("tier {tier}: {op} {key} failed: {detail}")]
    Remote {
        tier: String,
        op: &'static str,
        key: String,
        detail: String,
    },
    /// The tier did not answer, answered with a server error or
    /// throttling, or a download broke off: trying again later may work.
    #[error("tier {tier}: {op} {key} failed: {detail}")]
    Unavailable {
        tier: String,
        op: &'static str,
        key: String,
        detail: String,
    },
}

impl TierError {
    /// True when the tier's disk is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, TierError::Io { io, .. } if io.kind() == std::io::ErrorKind::StorageFull)
    }

    /// True when the object is simply absent.
    pub fn is_not_found(&self) -> bool {
        matches!(self, TierError::NotFound { .. })
    }

    /// True when trying again later may work ([`TierError::Unavailable`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, TierError::Unavailable { .. })
    }

    /// The same error with its detail rewritten by `f` (a remote error's;
    /// others are returned as they are): for adding what to do next.
    pub fn with_detail(self, f: impl FnOnce(String) -> String) -> Self {
        match self {
            TierError::Remote {
                tier,
                op,
                key,
                detail,
            } => TierError::Remote {
                tier,
                op,
                key,
                detail: f(detail),
            },
            TierError::Unavailable {
                tier,
                op,
                key,
                detail,
            } => TierError::Unavailable {
                tier,
                op,
                key,
                detail: f(detail),
            },
            other => other,
        }
    }
}

/// A place that stores vault objects. See the module docs for the contract.
pub trait Tier: Send + Sync {
    /// Short name used in the catalog and in messages (`local`, `s3`).
    fn name(&self) -> &str;

    /// Stores `data` under `key` unless an object is already there.
    ///
    /// # Errors
    /// When the object could not be made durable.
    fn put_bytes(&self, key: &str, data: &[u8]) -> Result<Put, TierError>;

    /// Stores the complete file at `path` under `key` unless already there.
    /// The file is not modified; the caller removes it afterwards.
    ///
    /// # Errors
    /// When the object could not be made durable.
    fn put_file(&self, key: &str, path: &Path) -> Result<Put, TierError>;

    /// Reads a whole object (small objects: config, manifests).
    ///
    /// # Errors
    /// [`TierError::NotFound`] when absent.
    fn get(&self, key: &str) -> Result<Vec<u8>, TierError>;

    /// Opens an object for streaming, seekable reads (packs).
    ///
    /// # Errors
    /// [`TierError::NotFound`] when absent.
    fn open(&self, key: &str) -> Result<Box<dyn ReadSeek>, TierError>;

    /// Size of an object, or `None` when absent.
    ///
    /// # Errors
    /// When the tier cannot be asked.
    fn head(&self, key: &str) -> Result<Option<u64>, TierError>;

    /// Every object whose key starts with `prefix`.
    ///
    /// # Errors
    /// When the tier cannot be listed.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, TierError>;

    /// Removes an object; removing an absent object is not an error.
    ///
    /// # Errors
    /// When the tier refuses.
    fn delete(&self, key: &str) -> Result<(), TierError>;

    /// Removes an object for good: in a store that keeps versions, every
    /// stored version, so that its space is reclaimed. A store that must
    /// keep it for now (S3 Object Lock) answers [`Removal::Retained`];
    /// removing an absent object is not an error.
    ///
    /// # Errors
    /// When the tier cannot be asked or refuses for another reason.
    fn remove(&self, key: &str) -> Result<Removal, TierError> {
        self.delete(key).map(|_| Removal::Removed)
    }

    /// Days of S3 Object Lock retention new objects get, if any.
    fn object_lock_days(&self) -> Option<u32> {
        None
    }

    /// Until when the store retains an object (S3 Object Lock), if it
    /// does (RFC 3339).
    ///
    /// # Errors
    /// When the tier cannot be asked.
    fn retained_until(&self, _key: &str) -> Result<Option<String>, TierError> {
        Ok(None)
    }

    /// Extends the retention of an object to `until` (S3 Object Lock; a
    /// no-op elsewhere).
    ///
    /// # Errors
    /// When the store refuses.
    fn extend_retention(&self, _key: &str, _until: std::time::SystemTime) -> Result<(), TierError> {
        Ok(())
    }

    /// Objects this tier found deleted behind coffer's back but still kept
    /// (S3 Object Lock: a delete marker over a locked version), which reads
    /// and listings used; reported by verify, restore and sync.
    fn hidden_by_delete_markers(&self) -> Vec<String> {
        Vec::new()
    }

    /// Makes an object hidden by delete markers current again.
    ///
    /// # Errors
    /// When the store refuses.
    fn remove_delete_markers(&self, _key: &str) -> Result<(), TierError> {
        Ok(())
    }

    /// A directory on the same filesystem where packs can be spooled while
    /// they are sealed, so that storing them is a link, not a copy.
    fn spool_dir(&self) -> Option<&Path> {
        None
    }

    /// The file holding an object, for tiers that are local directories:
    /// lets replication upload straight from it.
    fn local_path(&self, _key: &str) -> Option<std::path::PathBuf> {
        None
    }
}
