//! Errors of the format crate.
//!
//! Decoders say *what* is wrong with an object (so an operator can name the
//! pack or manifest that is damaged) but crypto failures carry no detail that
//! would help an attacker: "could not be decrypted with the given identity".

use thiserror::Error;

/// Everything that can go wrong while encoding, decoding, sealing or opening
/// a vault object.
// Field names (what, found, detail, source) say what they hold.
#[allow(missing_docs)]
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The object is not of the kind we expected (wrong magic bytes).
    #[error("not a coffer {what}: bad magic bytes")]
    BadMagic { what: &'static str },

    /// The object was written by a newer coffer.
    #[error("{what} format version {found} is not supported (this coffer reads up to {supported}); upgrade coffer")]
    UnsupportedVersion {
        what: &'static str,
        found: u64,
        supported: u64,
    },

    /// The object is structurally damaged.
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },

    /// The object is shorter than its own framing says.
    #[error("truncated {what}")]
    Truncated { what: &'static str },

    /// Decryption failed: wrong identity, or the ciphertext was altered.
    #[error("{what} could not be decrypted with the given identity (wrong key, or the object was altered)")]
    Decrypt { what: &'static str },

    /// A key, recipient or identity could not be parsed.
    #[error("invalid {what}: {detail}")]
    InvalidKey { what: &'static str, detail: String },

    /// Reading or writing the underlying stream failed.
    #[error("I/O error while processing {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl FormatError {
    pub(crate) fn corrupt(what: &'static str, detail: impl Into<String>) -> Self {
        FormatError::Corrupt {
            what,
            detail: detail.into(),
        }
    }

    pub(crate) fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| {
            if source.kind() == std::io::ErrorKind::UnexpectedEof {
                FormatError::Truncated { what }
            } else {
                FormatError::Io { what, source }
            }
        }
    }
}

/// Result with [`FormatError`].
pub type Result<T, E = FormatError> = std::result::Result<T, E>;
