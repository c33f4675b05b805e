//! Sealing with age: every pack and manifest is an ordinary age file
//! (X25519 recipients, STREAM payload), so `age -d -i identity` opens it
//! without coffer.

use std::io::{Read, Write};

use crate::error::{FormatError, Result};
use crate::keys::{Identity, Recipients};

/// Starts an age file to `recipients` over `out`. The caller MUST call
/// `finish()` on the returned writer: an unfinished age file is truncated and
/// will (rightly) fail to decrypt.
///
/// # Errors
/// When writing the header fails.
pub fn seal_writer<W: Write>(
    recipients: &Recipients,
    out: W,
) -> Result<age::stream::StreamWriter<W>> {
    let enc = age::Encryptor::with_recipients(recipients.as_dyn()).map_err(|e| {
        FormatError::InvalidKey {
            what: "age recipients",
            detail: e.to_string(),
        }
    })?;
    enc.wrap_output(out).map_err(FormatError::io("age header"))
}

/// Opens an age file for reading with `identity`. The returned reader is
/// seekable when `input` is, which lets a restore read one blob of a pack
/// without decrypting the rest.
///
/// # Errors
/// [`FormatError::Decrypt`] when no identity matches or the header is
/// damaged; [`FormatError::BadMagic`] when it is not an age file at all.
pub fn open_reader<R: Read>(
    identity: &Identity,
    input: R,
    what: &'static str,
) -> Result<age::stream::StreamReader<R>> {
    let dec = age::Decryptor::new(input).map_err(|e| match e {
        age::DecryptError::Io(io) => FormatError::io(what)(io),
        age::DecryptError::InvalidHeader | age::DecryptError::UnknownFormat => {
            FormatError::BadMagic { what }
        }
        _ => FormatError::Decrypt { what },
    })?;
    dec.decrypt(identity.as_dyn())
        .map_err(|_| FormatError::Decrypt { what })
}

/// Seals a small object (manifest, config key) in memory.
///
/// # Errors
/// See [`seal_writer`].
pub fn seal(recipients: &Recipients, plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut w = seal_writer(recipients, Vec::with_capacity(plaintext.len() + 256))?;
    w.write_all(plaintext)
        .map_err(FormatError::io("age payload"))?;
    w.finish().map_err(FormatError::io("age payload"))
}

/// Opens a small object in memory, refusing plaintexts over `limit` bytes.
///
/// # Errors
/// [`FormatError::Decrypt`] when the identity does not match or a byte was
/// altered; [`FormatError::Truncated`] when the file was cut short.
pub fn open(
    identity: &Identity,
    ciphertext: &[u8],
    what: &'static str,
    limit: usize,
) -> Result<Vec<u8>> {
    read_limited(open_reader(identity, ciphertext, what)?, what, limit)
}

/// Reads a whole payload, refusing more than `limit` bytes (a damaged or
/// hostile object must not make us allocate without bound).
fn read_limited(r: impl Read, what: &'static str, limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    r.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| map_payload_error(e, what))?;
    if out.len() > limit {
        return Err(FormatError::corrupt(what, "larger than any valid object"));
    }
    Ok(out)
}

/// age reports an altered or truncated payload as an I/O error of kind
/// `InvalidData`/`UnexpectedEof`; turn it into a format error that names the object.
pub(crate) fn map_payload_error(e: std::io::Error, what: &'static str) -> FormatError {
    match e.kind() {
        std::io::ErrorKind::InvalidData => FormatError::Decrypt { what },
        std::io::ErrorKind::UnexpectedEof => FormatError::Truncated { what },
        _ => FormatError::Io { what, io: e },
    }
}

/// Seals `plaintext` as ASCII-armored age (PEM-like text), for embedding in
/// the JSON vault config.
///
/// # Errors
/// See [`seal_writer`].
pub fn seal_armored(recipients: &Recipients, plaintext: &[u8]) -> Result<String> {
    use age::armor::{ArmoredWriter, Format};
    let armor = ArmoredWriter::wrap_output(Vec::new(), Format::AsciiArmor)
        .map_err(FormatError::io("age armor"))?;
    let mut w = seal_writer(recipients, armor)?;
    w.write_all(plaintext)
        .map_err(FormatError::io("age payload"))?;
    let armor = w.finish().map_err(FormatError::io("age payload"))?;
    let bytes = armor.finish().map_err(FormatError::io("age armor"))?;
    String::from_utf8(bytes).map_err(|_| FormatError::corrupt("age armor", "not UTF-8"))
}

/// Opens ASCII-armored age text.
///
/// # Errors
/// See [`open`].
pub fn open_armored(
    identity: &Identity,
    text: &str,
    what: &'static str,
    limit: usize,
) -> Result<Vec<u8>> {
    let reader = age::armor::ArmoredReader::new(text.as_bytes());
    read_limited(open_reader(identity, reader, what)?, what, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_wrong_key() {
        let id = Identity::generate();
        let ct = seal(&id.to_recipients(), b"secret").unwrap();
        assert!(!ct.windows(6).any(|w| w == b"secret"));
        assert_eq!(open(&id, &ct, "test", 100).unwrap(), b"secret");
        let other = Identity::generate();
        assert!(matches!(
            open(&other, &ct, "test", 100),
            Err(FormatError::Decrypt { .. })
        ));
        let mut bad = ct.clone();
        let n = bad.len();
        bad[n - 3] ^= 1;
        assert!(open(&id, &bad, "test", 100).is_err());
        assert!(open(&id, &ct[..ct.len() - 1], "test", 100).is_err());
    }

    #[test]
    fn armored_round_trip() {
        let id = Identity::generate();
        let t = seal_armored(&id.to_recipients(), b"key").unwrap();
        assert!(t.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        assert_eq!(open_armored(&id, &t, "k", 10).unwrap(), b"key");
    }
}
