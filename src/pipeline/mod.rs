//! The streaming pipelines.
//!
//! Backup ([`backup`], one file per stage; push, bounded queues between
//! them; offsite uploads beside the packer):
//!
//! ```text
//!  reader ─▶ chunk+hash+dedup ──blob jobs──▶ N compressors ──blobs──▶ packer ──▶ tier + catalog
//!  (thread)  (caller's thread)   bounded        (zstd)        bounded  (age, spool, link, commit)
//!                                                                        └──▶ uploaders ──▶ offsite
//! ```
//!
//! Restore (planner resolves chunk locations, workers fetch/open/decode/verify
//! blobs in parallel, the writer restores order):
//!
//! ```text
//!  planner ──tasks──▶ N workers ──results──▶ writer (reorders, writes)
//! ```
//!
//! Restore into a regular file (`restore_file`) skips the reordering: the
//! planner sorts a window of the stream by pack and blob, and each worker
//! decodes a blob once and writes its chunks at their offsets.
//!
//! ```text
//!  planner (window, sorted by pack/blob) ──jobs──▶ N workers ──pwrite──▶ file
//! ```
//!
//! Both restores read blobs through [`fetch`], which tries each tier in
//! turn per pack and checks every chunk's keyed hash.
//!
//! Buffers are recycled through pools, so the hot path allocates nothing per
//! chunk, and every queue is bounded, so memory does not grow with the input.

pub mod backup;
pub mod dedup;
pub mod fetch;
pub(crate) mod pack_sink;
pub mod restore;
pub mod restore_file;

use crate::error::{Error, Result};

/// Starts a named thread in `scope`. Failing to start one (the process or
/// the system is out of threads or memory) is an error, not a panic;
/// whatever the caller started before is stopped by the channels it drops
/// on return.
///
/// # Errors
/// [`Error::Resources`].
pub(crate) fn spawn<'scope, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    name: String,
    f: impl FnOnce() -> T + Send + 'scope,
) -> Result<std::thread::ScopedJoinHandle<'scope, T>> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn_scoped(scope, f)
        .map_err(|io| Error::Resources {
            what: format!("thread {name}"),
            io,
        })
}

/// Worker threads for CPU-bound stages.
pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 16)
}
