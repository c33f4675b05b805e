//! Errors of the format crate.
//!
//! Decoders say *what* is wrong with an object (so an operator can name the
//! pack or manifest that is damaged) but crypto failures carry no detail that
//! would help an attacker: "could not be decrypted with the given identity".
//!
//! A variant that wraps another error says it in its own message and does
//! not also return it from [`std::error::Error::source`]: a caller printing
//! the whole chain (anyhow's `{:#}`) then names each cause exactly once
//! ("I/O error while processing pack: No space left on device"), and one
//! that keeps only the message keeps the cause.

use thiserror::Error;

/// Everything that can go wrong while encoding, decoding, sealing or opening
/// a vault object.
// Field names (what, found, detail, io) say what they hold.
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

    /// Reading or writing the underlying stream failed. The I/O error is
    /// part of the message, not a [`source`](std::error::Error::source), as
    /// in the main crate's errors: each cause is printed once, and a caller
    /// that keeps only `to_string()` (a problem list, a run record) keeps
    /// the cause too.
    #[error("I/O error while processing {what}: {io}")]
    Io {
        what: &'static str,
        io: std::io::Error,
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
                FormatError::Io { what, io: source }
            }
        }
    }
}

/// Result with [`FormatError`].
pub type Result<T, E = FormatError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The message of `e` and of every error below it, joined with ": ", as
    /// anyhow's `{:#}` prints a chain.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut parts = vec![e.to_string()];
        let mut cur = e.source();
        while let Some(s) = cur {
            parts.push(s.to_string());
            cur = s.source();
        }
        parts.join(": ")
    }

    #[test]
    fn io_error_cause_is_printed_once_in_the_chain() {
        // ENOSPC: "No space left on device (os error 28)" on Linux.
        let io = std::io::Error::from_raw_os_error(28);
        let cause = io.to_string();
        let e = FormatError::io("pack")(io);
        assert!(matches!(e, FormatError::Io { .. }), "{e:?}");
        let printed = chain(&e);
        assert_eq!(printed.matches(cause.as_str()).count(), 1, "{printed}");
        assert_eq!(printed, format!("I/O error while processing pack: {cause}"));
    }
}
