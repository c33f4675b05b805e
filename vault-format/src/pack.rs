//! Packs: the objects that hold chunk data.
//!
//! A pack is one age file. Its plaintext is (version 1):
//!
//! ```text
//!  0        8                                 I            I+L      I+L+4     I+L+12
//!  +--------+--------+--------+-----+--------+------------+--------+---------+
//!  | HEADER | blob 0 | blob 1 | ... | blob n | index (L)  | L u32  | TRAILER |
//!  +--------+--------+--------+-----+--------+------------+--------+---------+
//!  HEADER  = "CFRPACK" 0x01   (magic, pack format version 1)
//!  TRAILER = "CFRPIDX" 0x01   (magic, index format version 1)
//! ```
//!
//! Blobs are contiguous from offset 8 in index order, so their offsets are
//! derived, not stored: fewer fields, fewer ways to be inconsistent.
//!
//! Index (all integers little-endian):
//!
//! ```text
//!  u8  index version (1)
//!  u32 blob count
//!  per blob:  u8 codec | u8 kind | u32 stored_len | u32 raw_len | u32 chunk count
//!             per chunk: [32] chunk id | u32 length
//! ```
//!
//! The index sits inside the encryption, so the storage side sees a pack's
//! total size only: never chunk ids, chunk sizes or blob boundaries. It sits
//! at the end so a pack can be written in one pass, and read by seeking to its
//! end (age's STREAM is seekable in 64 KiB segments).
//!
//! The pack id is BLAKE3 of the ciphertext, computed while writing.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::blob::{Codec, MAX_BLOB_RAW};
use crate::error::{FormatError, Result};
use crate::ids::{ChunkId, PackId};
use crate::keys::{Identity, Recipients};

/// Magic and version at the start of a pack's plaintext.
pub const PACK_HEADER: [u8; 8] = *b"CFRPACK\x01";
/// Magic and version at the very end of a pack's plaintext.
pub const PACK_TRAILER: [u8; 8] = *b"CFRPIDX\x01";
/// Version byte that starts the index. The trailer's last byte holds the
/// same number, so a reader can refuse an unknown index before reading it.
pub const INDEX_VERSION: u8 = 1;
/// Largest index a reader accepts (bounds memory against a hostile pack).
pub const MAX_INDEX_LEN: usize = 64 * 1024 * 1024;

// Framing: the fixed-size parts at both ends of a pack's plaintext. Every
// reader checks them through `check_header` and `Tail::parse` (and
// `read_index` for readers that want the index), nowhere else.
//
//   header, at offset 0              tail, the last TAIL_LEN bytes (E = plaintext length)
//   0                7       8       E-12         E-8                  E-1       E
//   +----------------+-------+       +------------+--------------------+---------+
//   | "CFRPACK"      | pack  |  ...  | index len  | "CFRPIDX"          | index   |
//   |                | vers. |       | L, u32 LE  |                    | version |
//   +----------------+-------+       +------------+--------------------+---------+
//                                    \____________ PACK_TRAILER (8) ____________/
//
// The index occupies [E-12-L, E-12); blobs tile [8, E-12-L).
const MAGIC_LEN: usize = 7;
const HEADER_MAGIC_OFFSET: usize = 0;
const HEADER_VERSION_OFFSET: usize = HEADER_MAGIC_OFFSET + MAGIC_LEN;
const HEADER_LEN: usize = HEADER_VERSION_OFFSET + 1;
// Offsets within the tail.
const TAIL_INDEX_LEN_OFFSET: usize = 0;
const TAIL_MAGIC_OFFSET: usize = TAIL_INDEX_LEN_OFFSET + 4;
const TAIL_VERSION_OFFSET: usize = TAIL_MAGIC_OFFSET + MAGIC_LEN;
const TAIL_LEN: usize = TAIL_VERSION_OFFSET + 1;
const TRAILER_LEN: usize = TAIL_LEN - TAIL_MAGIC_OFFSET;
/// The smallest index: its version byte and a zero blob count.
const MIN_INDEX_LEN: usize = 1 + 4;
/// The smallest plaintext: header, empty index, tail.
const MIN_PLAINTEXT_LEN: usize = HEADER_LEN + MIN_INDEX_LEN + TAIL_LEN;

const BLOB_HEADER_LEN: usize = 1 + 1 + 4 + 4 + 4;
const CHUNK_ENTRY_LEN: usize = 32 + 4;

// The two copies of the index version agree, and the constants match the drawing.
const _: () = assert!(PACK_TRAILER[TRAILER_LEN - 1] == INDEX_VERSION);
const _: () = assert!(HEADER_LEN == 8 && TAIL_LEN == 12 && TRAILER_LEN == 8);

/// What a chunk holds. On-disk tags: never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum ChunkKind {
    /// A piece of a backed-up stream.
    Data = 0,
    /// A piece of a snapshot's serialized chunk list.
    List = 1,
}

impl ChunkKind {
    /// Decodes the on-disk tag.
    ///
    /// # Errors
    /// [`FormatError::Corrupt`] for an unknown tag.
    pub fn from_tag(t: u8) -> Result<Self> {
        match t {
            0 => Ok(ChunkKind::Data),
            1 => Ok(ChunkKind::List),
            _ => Err(FormatError::corrupt(
                "pack index",
                format!("unknown chunk kind {t}"),
            )),
        }
    }
}

/// Pack parameters, recorded in the vault config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackParams {
    /// A pack is sealed once its plaintext reaches this size.
    pub target_size: u64,
    /// A blob (one zstd frame) is closed once its raw size reaches this.
    pub blob_target_size: u32,
    /// zstd level for blobs.
    pub zstd_level: i32,
}

impl Default for PackParams {
    fn default() -> Self {
        PackParams {
            target_size: 32 * 1024 * 1024,
            blob_target_size: 1024 * 1024,
            zstd_level: 3,
        }
    }
}

/// One blob as listed in a pack index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    /// Offset of the stored bytes in the pack's plaintext.
    pub offset: u64,
    /// Stored (possibly compressed) length.
    pub stored_len: u32,
    /// Length once decoded: the sum of its chunks' lengths.
    pub raw_len: u32,
    /// How it is stored.
    pub codec: Codec,
    /// What its chunks hold.
    pub kind: ChunkKind,
    /// Its chunks, in order: id and plaintext length.
    pub chunks: Vec<(ChunkId, u32)>,
}

/// The decoded index of a pack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackIndex {
    /// The blobs, in pack order.
    pub blobs: Vec<BlobEntry>,
}

impl PackIndex {
    /// Number of chunks in the pack.
    pub fn chunk_count(&self) -> usize {
        self.blobs.iter().map(|b| b.chunks.len()).sum()
    }

    /// Encodes the index (without length and trailer).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            MIN_INDEX_LEN
                + self.blobs.len() * BLOB_HEADER_LEN
                + self.chunk_count() * CHUNK_ENTRY_LEN,
        );
        out.push(INDEX_VERSION);
        out.extend_from_slice(&(self.blobs.len() as u32).to_le_bytes());
        for b in &self.blobs {
            out.push(b.codec as u8);
            out.push(b.kind as u8);
            out.extend_from_slice(&b.stored_len.to_le_bytes());
            out.extend_from_slice(&b.raw_len.to_le_bytes());
            out.extend_from_slice(&(b.chunks.len() as u32).to_le_bytes());
            for (id, len) in &b.chunks {
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(&len.to_le_bytes());
            }
        }
        out
    }

    /// Decodes an index that occupies plaintext `[index_start, index_start + bytes.len())`.
    /// Checks that the blobs tile `[8, index_start)` exactly and that every
    /// blob's chunk lengths add up to its raw length.
    ///
    /// # Errors
    /// [`FormatError::UnsupportedVersion`] for a newer index,
    /// [`FormatError::Corrupt`] for anything inconsistent.
    pub fn decode(bytes: &[u8], index_start: u64) -> Result<Self> {
        const W: &str = "pack index";
        let mut r = Cursor { b: bytes, pos: 0 };
        let version = r.u8()?;
        if version != INDEX_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: W,
                found: version.into(),
                supported: INDEX_VERSION.into(),
            });
        }
        let blob_count = r.u32()? as usize;
        if blob_count > r.remaining() / BLOB_HEADER_LEN {
            return Err(FormatError::corrupt(W, "blob count exceeds index size"));
        }
        let mut blobs = Vec::with_capacity(blob_count);
        let mut offset = HEADER_LEN as u64;
        for _ in 0..blob_count {
            let codec = Codec::from_tag(r.u8()?)?;
            let kind = ChunkKind::from_tag(r.u8()?)?;
            let stored_len = r.u32()?;
            let raw_len = r.u32()?;
            let n = r.u32()? as usize;
            if n == 0 || n > r.remaining() / CHUNK_ENTRY_LEN {
                return Err(FormatError::corrupt(W, "bad chunk count"));
            }
            if raw_len as usize > MAX_BLOB_RAW {
                return Err(FormatError::corrupt(W, "blob larger than the limit"));
            }
            if codec == Codec::Raw && stored_len != raw_len {
                return Err(FormatError::corrupt(W, "raw blob with differing lengths"));
            }
            let mut chunks = Vec::with_capacity(n);
            let mut sum: u64 = 0;
            for _ in 0..n {
                let id = ChunkId::from_slice(r.take(32)?).expect("32 bytes");
                let len = r.u32()?;
                if len == 0 {
                    return Err(FormatError::corrupt(W, "empty chunk"));
                }
                sum += u64::from(len);
                chunks.push((id, len));
            }
            if sum != u64::from(raw_len) {
                return Err(FormatError::corrupt(
                    W,
                    "chunk lengths do not add up to the blob",
                ));
            }
            blobs.push(BlobEntry {
                offset,
                stored_len,
                raw_len,
                codec,
                kind,
                chunks,
            });
            offset += u64::from(stored_len);
        }
        if r.remaining() != 0 {
            return Err(FormatError::corrupt(
                W,
                "trailing bytes after the last blob",
            ));
        }
        if offset != index_start {
            return Err(FormatError::corrupt(
                W,
                "blobs do not end where the index starts",
            ));
        }
        Ok(PackIndex { blobs })
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(FormatError::Truncated { what: "pack index" });
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
}

/// Writes bytes through while hashing and counting them: the pack id is the
/// BLAKE3 of the ciphertext, computed in the same pass that writes it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: blake3::Hasher::new(),
            len: 0,
        }
    }

    /// The hash and length so far, and the inner writer.
    pub fn finish(self) -> (PackId, u64, W) {
        (
            PackId(*self.hasher.finalize().as_bytes()),
            self.len,
            self.inner,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A sealed pack, as returned by [`PackWriter::finish`].
pub struct FinishedPack<W> {
    /// BLAKE3 of the ciphertext.
    pub id: PackId,
    /// Ciphertext length: the object's size in the tier.
    pub size: u64,
    /// The index that was written.
    pub index: PackIndex,
    /// The writer the ciphertext went to.
    pub writer: W,
}

/// Builds a pack in one streaming pass: blobs are encrypted and written as
/// they are added, so a pack never sits in memory whole.
pub struct PackWriter<W: Write> {
    out: age::stream::StreamWriter<HashingWriter<W>>,
    pos: u64,
    index: PackIndex,
}

impl<W: Write> PackWriter<W> {
    /// Starts a pack sealed to `recipients`, writing ciphertext to `out`.
    ///
    /// # Errors
    /// When writing fails.
    pub fn new(recipients: &Recipients, out: W) -> Result<Self> {
        let mut out = crate::seal::seal_writer(recipients, HashingWriter::new(out))?;
        out.write_all(&PACK_HEADER)
            .map_err(FormatError::io("pack"))?;
        Ok(PackWriter {
            out,
            pos: HEADER_LEN as u64,
            index: PackIndex::default(),
        })
    }

    /// Plaintext bytes written so far (compare with the target size).
    pub fn len(&self) -> u64 {
        self.pos
    }

    /// True until the first blob is added.
    pub fn is_empty(&self) -> bool {
        self.index.blobs.is_empty()
    }

    /// Appends one blob holding `chunks` (ids and plaintext lengths, in
    /// order), stored as `stored` with `codec`.
    ///
    /// # Errors
    /// When writing fails, or the blob is inconsistent (empty, or lengths
    /// that do not add up) — a bug in the caller, reported rather than
    /// written into the vault.
    pub fn add_blob(
        &mut self,
        codec: Codec,
        kind: ChunkKind,
        stored: &[u8],
        chunks: Vec<(ChunkId, u32)>,
    ) -> Result<&BlobEntry> {
        let raw: u64 = chunks.iter().map(|c| u64::from(c.1)).sum();
        if chunks.is_empty() || raw > MAX_BLOB_RAW as u64 || chunks.iter().any(|c| c.1 == 0) {
            return Err(FormatError::corrupt("new blob", "empty or oversized blob"));
        }
        if codec == Codec::Raw && raw != stored.len() as u64 {
            return Err(FormatError::corrupt("new blob", "raw blob length mismatch"));
        }
        self.out
            .write_all(stored)
            .map_err(FormatError::io("pack"))?;
        self.index.blobs.push(BlobEntry {
            offset: self.pos,
            stored_len: stored.len() as u32,
            raw_len: raw as u32,
            codec,
            kind,
            chunks,
        });
        self.pos += stored.len() as u64;
        Ok(self.index.blobs.last().expect("just pushed"))
    }

    /// Writes the index and trailer and finishes the age file.
    ///
    /// # Errors
    /// When writing fails.
    pub fn finish(mut self) -> Result<FinishedPack<W>> {
        let idx = self.index.encode();
        self.out.write_all(&idx).map_err(FormatError::io("pack"))?;
        self.out
            .write_all(&(idx.len() as u32).to_le_bytes())
            .map_err(FormatError::io("pack"))?;
        self.out
            .write_all(&PACK_TRAILER)
            .map_err(FormatError::io("pack"))?;
        let hw = self.out.finish().map_err(FormatError::io("pack"))?;
        let (id, size, writer) = hw.finish();
        Ok(FinishedPack {
            id,
            size,
            index: self.index,
            writer,
        })
    }
}

mod read;
pub use read::{parse_plaintext, BlobReader, PackReader};

#[cfg(test)]
mod tests;
