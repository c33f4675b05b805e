//! The library's operation-level error, and the exit status each kind maps to.
//!
//! Lower layers have their own narrow errors ([`crate::tier::TierError`],
//! [`crate::catalog::CatalogError`], [`vault_format::FormatError`]); this type
//! adds what only an operation knows: which snapshot a damaged pack belonged
//! to, that a key is missing, that the input failed.

use thiserror::Error;

use crate::catalog::CatalogError;
use crate::tier::TierError;
use vault_format::{FormatError, PackId};

/// Exit statuses (documented in README and `coffer --help`).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// The operation failed; nothing was committed.
    pub const FAILURE: i32 = 1;
    /// Bad usage or configuration.
    pub const USAGE: i32 = 2;
    /// Backup committed locally, but its offsite copy is pending.
    pub const OFFSITE_PENDING: i32 = 3;
    /// Data is missing or corrupt (restore aborted, or verify found damage).
    pub const INTEGRITY: i32 = 4;
    /// A key is missing or does not open the vault.
    pub const KEY: i32 = 5;
}

/// Errors of coffer's operations.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A tier failed.
    #[error(transparent)]
    Tier(#[from] TierError),
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A vault object failed to encode or decode.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The configuration is missing or wrong.
    #[error("{0}")]
    Config(String),
    /// A key is needed and was not given, or does not fit the vault.
    #[error("{0}")]
    Key(String),
    /// Stored data is missing or damaged.
    #[error("{problem}{}{}; {}",
        integrity_place(pack.as_ref(), tier),
        snapshot.as_ref().map(|s| format!(", needed by snapshot {s}")).unwrap_or_default(),
        integrity_hint(tier))]
    Integrity {
        /// What is wrong.
        problem: String,
        /// The pack, when the damage is in one.
        pack: Option<PackId>,
        /// The tier(s) tried, or `catalog` when the catalog is what is wrong.
        tier: String,
        /// The snapshot being read, if any.
        snapshot: Option<String>,
    },
    /// Reading the input failed; nothing was committed.
    #[error("reading {what} failed: {detail}; no snapshot was committed")]
    Source {
        /// The input.
        what: String,
        /// Why.
        detail: String,
    },
    /// A bug: a stage of coffer itself failed in a way it should not.
    #[error("internal error in {what}: {detail}; nothing was committed; please report this")]
    Internal {
        /// Which stage.
        what: String,
        /// What happened.
        detail: String,
    },
    /// Another operation holds a lock this one needs, or this one lost its
    /// lock; nothing was committed.
    #[error("{0}")]
    Busy(String),
    /// The process could not start a thread (out of threads or memory).
    #[error("cannot start {what}: {io}; the process is out of threads or memory: check `ulimit -u` and free memory, then run again")]
    Resources {
        /// What could not be started.
        what: String,
        /// Why (in the message; not a `source`, so `{:#}` prints it once).
        io: std::io::Error,
    },
    /// `backup pg` committed the dump, then failed to back up the globals.
    #[error("snapshot {snapshot} of database {database:?} was committed, but backing up the cluster globals (job {job}) failed: {cause}")]
    GlobalsAfterDump {
        /// The dump's snapshot, committed.
        snapshot: String,
        /// The database.
        database: String,
        /// The globals' job.
        job: String,
        /// Why the globals failed.
        cause: Box<Error>,
    },
    /// A disk filled up during a backup; nothing was committed.
    #[error("{cause}: the disk is full; nothing was committed: free space (`coffer prune` reclaims what failed backups left behind) and run the backup again")]
    DiskFull {
        /// The failure as it was reported.
        cause: Box<Error>,
    },
    /// The WAL archive refused a file or cannot serve one (the message says
    /// which file, which job and what to do).
    #[error("{0}")]
    Wal(String),
    /// Writing the output failed.
    #[error("writing {what} failed: {io}")]
    Output {
        /// The output.
        what: String,
        /// Why (in the message; not a `source`, so `{:#}` prints it once).
        io: std::io::Error,
    },
}

impl Error {
    /// True when the error comes from a full disk (a tier's, the catalog's
    /// or a spool file's).
    pub fn is_disk_full(&self) -> bool {
        let full = |io: &std::io::Error| io.kind() == std::io::ErrorKind::StorageFull;
        match self {
            Error::Tier(t) => t.is_disk_full(),
            Error::Catalog(c) => c.is_disk_full(),
            Error::Format(FormatError::Io { io, .. }) => full(io),
            Error::Output { io, .. } | Error::Resources { io, .. } => full(io),
            Error::DiskFull { .. } => true,
            _ => false,
        }
    }

    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => exit::USAGE,
            Error::Catalog(
                CatalogError::SnapshotNotFound(_) | CatalogError::AmbiguousSnapshot { .. },
            ) => exit::USAGE,
            Error::Key(_) => exit::KEY,
            Error::Integrity { .. } => exit::INTEGRITY,
            Error::GlobalsAfterDump { cause, .. } => cause.exit_code(),
            Error::Format(FormatError::Decrypt { .. }) => exit::KEY,
            _ => exit::FAILURE,
        }
    }
}

/// Where damaged data is: a pack in a tier, or the catalog.
fn integrity_place(pack: Option<&PackId>, tier: &str) -> String {
    match (pack, tier) {
        (Some(p), "catalog") => format!(": the catalog's entry for pack {p}"),
        (Some(p), t) => format!(": pack {p} in tier {t}"),
        (None, t) => format!(" (in the {t})"),
    }
}

/// What to do about damaged data: the catalog is rebuilt from the vault;
/// a damaged pack is repaired from another tier.
fn integrity_hint(tier: &str) -> &'static str {
    if tier == "catalog" {
        "run `coffer index rebuild` to recreate the catalog from the vault"
    } else {
        "run `coffer sync` to repair it from another tier, and `coffer verify --read-data` to see the extent"
    }
}

/// Result with [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
