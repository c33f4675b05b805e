//! The library's operation-level error, and the exit status each kind maps to.
//!
//! Lower layers have their own narrow errors ([`crate::tier::TierError`],
//! [`crate::catalog::CatalogError`], [`vault_format::FormatError`]); this type
//! adds what only an operation knows: which snapshot a damaged pack belonged
//! to, that a key is missing, that the input failed.

use thiserror::Error;

use crate::catalog::CatalogError;
use crate::tier::TierError;
use vault_format::FormatError;

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
    #[error("{problem}: pack {pack} in tier {tier}{}", snapshot.as_ref().map(|s| format!(", needed by snapshot {s}")).unwrap_or_default())]
    Integrity {
        /// What is wrong.
        problem: String,
        /// The pack.
        pack: String,
        /// The tier(s) tried.
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
    /// The process could not start a thread (out of threads or memory).
    #[error("cannot start {what}: {io}; the process is out of threads or memory: check `ulimit -u` and free memory, then run again")]
    Resources {
        /// What could not be started.
        what: String,
        /// Why (in the message; not a `source`, so `{:#}` prints it once).
        io: std::io::Error,
    },
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
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => exit::USAGE,
            Error::Catalog(
                CatalogError::SnapshotNotFound(_) | CatalogError::AmbiguousSnapshot { .. },
            ) => exit::USAGE,
            Error::Key(_) => exit::KEY,
            Error::Integrity { .. } => exit::INTEGRITY,
            Error::Format(FormatError::Decrypt { .. }) => exit::KEY,
            _ => exit::FAILURE,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
