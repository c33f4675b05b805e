//! A fault-injecting tier wrapper, for tests of what a failing store does to
//! a backup (nothing committed) and a restore (the object is named).

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use super::{ObjectInfo, Put, ReadSeek, Tier, TierError};

/// Wraps a tier; after `puts_before_failure` successful puts of packs and
/// manifests, every further one fails.
pub struct FaultTier {
    inner: Arc<dyn Tier>,
    puts_left: AtomicI64,
    disk_full: bool,
}

impl FaultTier {
    /// Wraps `inner`; a negative budget never fails.
    pub fn new(inner: Arc<dyn Tier>, puts_before_failure: i64) -> Self {
        FaultTier {
            inner,
            puts_left: AtomicI64::new(puts_before_failure),
            disk_full: false,
        }
    }

    /// Like [`FaultTier::new`], but the failing puts fail as a full disk
    /// does (`ENOSPC`).
    pub fn disk_full(inner: Arc<dyn Tier>, puts_before_failure: i64) -> Self {
        FaultTier {
            disk_full: true,
            ..Self::new(inner, puts_before_failure)
        }
    }

    fn check(&self, key: &str) -> Result<(), TierError> {
        // Only the vault's data counts: lock heartbeats and marks come and
        // go beside it, and tests count packs.
        if !(key.starts_with(super::keys::PACKS) || key.starts_with(super::keys::SNAPSHOTS)) {
            return Ok(());
        }
        let r = self
            .puts_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n > 0).then(|| n - 1)
            });
        match r {
            Ok(_) => Ok(()),
            Err(n) if n < 0 => Ok(()),
            Err(_) if self.disk_full => Err(TierError::Io {
                tier: self.inner.name().to_string(),
                op: "put",
                key: key.to_string(),
                io: std::io::Error::from(std::io::ErrorKind::StorageFull),
            }),
            Err(_) => Err(TierError::Remote {
                tier: self.inner.name().to_string(),
                op: "put",
                key: key.to_string(),
                detail: "injected fault".into(),
            }),
        }
    }
}

impl Tier for FaultTier {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn put_bytes(&self, key: &str, data: &[u8]) -> Result<Put, TierError> {
        self.check(key)?;
        self.inner.put_bytes(key, data)
    }
    fn put_file(&self, key: &str, path: &Path) -> Result<Put, TierError> {
        self.check(key)?;
        self.inner.put_file(key, path)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, TierError> {
        self.inner.get(key)
    }
    fn open(&self, key: &str) -> Result<Box<dyn ReadSeek>, TierError> {
        self.inner.open(key)
    }
    fn head(&self, key: &str) -> Result<Option<u64>, TierError> {
        self.inner.head(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, TierError> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), TierError> {
        self.inner.delete(key)
    }
    fn remove(&self, key: &str) -> Result<super::Removal, TierError> {
        self.inner.remove(key)
    }
    fn object_lock_days(&self) -> Option<u32> {
        self.inner.object_lock_days()
    }
    fn retained_until(&self, key: &str) -> Result<Option<String>, TierError> {
        self.inner.retained_until(key)
    }
    fn extend_retention(&self, key: &str, until: std::time::SystemTime) -> Result<(), TierError> {
        self.inner.extend_retention(key, until)
    }
    fn hidden_by_delete_markers(&self) -> Vec<String> {
        self.inner.hidden_by_delete_markers()
    }
    fn remove_delete_markers(&self, key: &str) -> Result<(), TierError> {
        self.inner.remove_delete_markers(key)
    }
    fn spool_dir(&self) -> Option<&Path> {
        self.inner.spool_dir()
    }
    fn local_path(&self, key: &str) -> Option<std::path::PathBuf> {
        self.inner.local_path(key)
    }
}
