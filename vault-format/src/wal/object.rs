//! The sealed form of an archived WAL file, and batches of them.
//!
//! ```text
//! WAL object:  "CWALOBJ" 0x01 | content hash (32) | age( zstd frames( file ) )
//! batch:       "CWALBAT" 0x01 | count u32 | count × (name len u8, name, object len u64) | objects
//! ```
//! The content hash is the keyed BLAKE3 of the file under the vault's WAL
//! key ([`WalKey`]): a host holding only the push key can tell whether an
//! archived file is the one it is asked to archive again (PostgreSQL's
//! archive contract) without being able to read it; the storage side learns
//! only whether two files are equal. All integers little-endian.

use std::io::Write;

use crate::error::{FormatError, Result};
use crate::keys::{Identity, Recipients, WalKey};
use crate::seal;

/// Magic and version of a WAL object.
pub const OBJECT_MAGIC: &[u8; 8] = b"CWALOBJ\x01";
/// Magic and version of a batch.
pub const BATCH_MAGIC: &[u8; 8] = b"CWALBAT\x01";
/// Bytes before the age file in a WAL object.
pub const OBJECT_HEADER_LEN: usize = 40;
/// The largest file a WAL object may hold (PostgreSQL's largest segment).
pub const MAX_FILE: usize = 1 << 30;

/// Seals `content` (a WAL file) for `recipients`, compressed at zstd `level`.
///
/// # Errors
/// When compression or sealing fails.
pub fn seal_object(
    recipients: &Recipients,
    key: &WalKey,
    content: &[u8],
    level: i32,
) -> Result<Vec<u8>> {
    let mut s = ObjectSealer::new(key, level, content.len() as u64)?;
    s.update(content)?;
    Ok(s.finish(recipients)?.0)
}

/// Seals a WAL file fed in pieces, so that a 16 MiB segment is read once
/// through a small buffer instead of held whole: each piece is hashed and
/// compressed as it comes, as a zstd frame of its own (a single
/// streaming frame costs ~40% more time for the same ratio: its input is
/// copied into a ring buffer and matched as an external dictionary);
/// [`ObjectSealer::finish`] encrypts the (small) compressed frames behind
/// the hash.
pub struct ObjectSealer {
    hasher: blake3::Hasher,
    zstd: zstd::bulk::Compressor<'static>,
    frames: Vec<u8>,
    scratch: Vec<u8>,
    /// Bytes still expected.
    left: u64,
}

impl ObjectSealer {
    /// A sealer for a file of `len` bytes (a file that turns out longer or
    /// shorter fails).
    ///
    /// # Errors
    /// When the compressor cannot be set up.
    pub fn new(key: &WalKey, level: i32, len: u64) -> Result<Self> {
        let mut zstd = zstd::bulk::Compressor::new(level)
            .map_err(FormatError::io("WAL object compression"))?;
        zstd.include_checksum(false)
            .and_then(|()| zstd.include_contentsize(true))
            .map_err(FormatError::io("WAL object compression"))?;
        Ok(ObjectSealer {
            hasher: key.content_hasher(),
            zstd,
            frames: Vec::new(),
            scratch: Vec::new(),
            left: len,
        })
    }

    /// The next piece of the file.
    ///
    /// # Errors
    /// When compression fails, or the file is longer than announced.
    pub fn update(&mut self, piece: &[u8]) -> Result<()> {
        self.left = self
            .left
            .checked_sub(piece.len() as u64)
            .ok_or_else(|| FormatError::corrupt("WAL file", "longer than when it was opened"))?;
        self.hasher.update(piece);
        self.scratch.clear();
        self.scratch
            .reserve(zstd::zstd_safe::compress_bound(piece.len()));
        self.zstd
            .compress_to_buffer(piece, &mut self.scratch)
            .map_err(FormatError::io("WAL object compression"))?;
        self.frames.extend_from_slice(&self.scratch);
        Ok(())
    }

    /// The sealed object and the file's content hash.
    ///
    /// # Errors
    /// When the file was shorter than announced, or sealing fails.
    pub fn finish(self, recipients: &Recipients) -> Result<(Vec<u8>, [u8; 32])> {
        if self.left != 0 {
            return Err(FormatError::corrupt(
                "WAL file",
                "shorter than when it was opened",
            ));
        }
        let hash = *self.hasher.finalize().as_bytes();
        let mut out = Vec::with_capacity(OBJECT_HEADER_LEN + self.frames.len() + 256);
        out.extend_from_slice(OBJECT_MAGIC);
        out.extend_from_slice(&hash);
        let mut w = seal::seal_writer(recipients, out)?;
        w.write_all(&self.frames)
            .map_err(FormatError::io("WAL object"))?;
        Ok((w.finish().map_err(FormatError::io("WAL object"))?, hash))
    }
}

/// The content hash in a WAL object's header (readable without a key).
///
/// # Errors
/// [`FormatError::BadMagic`] or [`FormatError::Truncated`].
pub fn object_hash(object: &[u8]) -> Result<[u8; 32]> {
    if object.len() < OBJECT_HEADER_LEN {
        return Err(FormatError::Truncated { what: "WAL object" });
    }
    if &object[..8] != OBJECT_MAGIC {
        return Err(version_or_magic(&object[..8], b"CWALOBJ", "WAL object"));
    }
    super::bytes_at(object, 8, "WAL object")
}

/// Opens a WAL object: decrypts, decompresses and checks the content hash.
///
/// # Errors
/// [`FormatError::Decrypt`] for a wrong identity or altered ciphertext,
/// [`FormatError::Corrupt`] when the content does not match its hash.
pub fn open_object(identity: &Identity, key: &WalKey, object: &[u8]) -> Result<Vec<u8>> {
    let hash = object_hash(object)?;
    let frame = seal::open(
        identity,
        &object[OBJECT_HEADER_LEN..],
        "WAL object",
        MAX_FILE,
    )?;
    let content = zstd::bulk::decompress(&frame, MAX_FILE)
        .map_err(|e| FormatError::corrupt("WAL object", format!("zstd: {e}")))?;
    if key.content_hash(&content) != hash {
        return Err(FormatError::corrupt(
            "WAL object",
            "content does not match its hash",
        ));
    }
    Ok(content)
}

fn version_or_magic(found: &[u8], stem: &[u8], what: &'static str) -> FormatError {
    if found.starts_with(stem) {
        FormatError::UnsupportedVersion {
            what,
            found: u64::from(found[7]),
            supported: 1,
        }
    } else {
        FormatError::BadMagic { what }
    }
}

/// One file in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEntry {
    /// The WAL file's name.
    pub name: String,
    /// Where its WAL object starts in the batch.
    pub offset: u64,
    /// The WAL object's length.
    pub len: u64,
}

/// The header of a batch holding objects of these (name, length)s, in order.
///
/// # Errors
/// [`FormatError::Corrupt`] for a name over 255 bytes.
pub fn batch_header(entries: &[(String, u64)]) -> Result<Vec<u8>> {
    let mut h = Vec::with_capacity(12 + entries.len() * 48);
    h.extend_from_slice(BATCH_MAGIC);
    h.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (name, len) in entries {
        let n = u8::try_from(name.len())
            .map_err(|_| FormatError::corrupt("WAL batch", "name longer than 255 bytes"))?;
        h.push(n);
        h.extend_from_slice(name.as_bytes());
        h.extend_from_slice(&len.to_le_bytes());
    }
    Ok(h)
}

/// Parses a batch's header from its first bytes; offsets are from the start
/// of the batch. Returns `Ok(None)` when `data` is too short to hold the
/// whole header (read more and try again).
///
/// # Errors
/// [`FormatError::BadMagic`] or [`FormatError::Corrupt`].
pub fn parse_batch_header(data: &[u8]) -> Result<Option<Vec<BatchEntry>>> {
    const WHAT: &str = "WAL batch";
    if data.len() < 12 {
        return Ok(None);
    }
    if &data[..8] != BATCH_MAGIC {
        return Err(version_or_magic(&data[..8], b"CWALBAT", WHAT));
    }
    let count = u32::from_le_bytes(super::bytes_at(data, 8, WHAT)?) as usize;
    // Each entry is at least 10 bytes; a count beyond what a batch of the
    // largest allowed header could hold is damage, not a short read.
    if count > 1 << 20 {
        return Err(FormatError::corrupt(WHAT, format!("{count} entries")));
    }
    let mut pos = 12;
    let mut named = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let Some(&n) = data.get(pos) else {
            return Ok(None);
        };
        let end = pos + 1 + n as usize + 8;
        if data.len() < end {
            return Ok(None);
        }
        let name = std::str::from_utf8(&data[pos + 1..pos + 1 + n as usize])
            .map_err(|_| FormatError::corrupt(WHAT, "a name is not UTF-8"))?
            .to_string();
        let len = u64::from_le_bytes(super::bytes_at(data, end - 8, WHAT)?);
        named.push((name, len));
        pos = end;
    }
    let mut offset = pos as u64;
    let mut out = Vec::with_capacity(named.len());
    for (name, len) in named {
        out.push(BatchEntry { name, offset, len });
        offset = offset
            .checked_add(len)
            .ok_or_else(|| FormatError::corrupt(WHAT, "lengths overflow"))?;
    }
    Ok(Some(out))
}
