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

use std::io::{self, Read, Seek, SeekFrom, Write};

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

/// Reads a pack through a seekable source: the index first, then any blob,
/// decrypting only the 64 KiB segments it touches.
pub struct PackReader<R: Read + Seek> {
    inner: age::stream::StreamReader<R>,
    index: PackIndex,
}

impl<R: Read + Seek> PackReader<R> {
    /// Opens a pack and reads its index.
    ///
    /// # Errors
    /// [`FormatError::Decrypt`] for a wrong identity or altered bytes,
    /// [`FormatError::Truncated`] for a cut-short pack,
    /// [`FormatError::UnsupportedVersion`] for a pack or index version this
    /// crate does not know, [`FormatError::BadMagic`] / [`FormatError::Corrupt`]
    /// for anything else.
    pub fn open(identity: &Identity, source: R) -> Result<Self> {
        let mut inner = crate::seal::open_reader(identity, source, "pack")?;
        let index = read_index(&mut inner, |e| crate::seal::map_payload_error(e, "pack"))?;
        Ok(PackReader { inner, index })
    }

    /// The pack's index.
    pub fn index(&self) -> &PackIndex {
        &self.index
    }

    /// Reads a blob's stored bytes into `buf` (cleared first).
    ///
    /// # Errors
    /// As for [`PackReader::open`].
    pub fn read_blob(&mut self, blob: &BlobEntry, buf: &mut Vec<u8>) -> Result<()> {
        let map = |e| crate::seal::map_payload_error(e, "pack");
        buf.clear();
        buf.resize(blob.stored_len as usize, 0);
        self.inner.seek(SeekFrom::Start(blob.offset)).map_err(map)?;
        self.inner.read_exact(buf).map_err(map)
    }
}

/// Reads blobs at known offsets (from a catalog) without reading the
/// pack's index: opening costs the age header and one 64 KiB segment, which
/// matters when a restore of a late night jumps between many packs.
/// Integrity still holds: age authenticates every segment read, and the
/// caller checks every chunk's keyed hash.
pub struct BlobReader<R: Read + Seek> {
    inner: age::stream::StreamReader<R>,
}

impl<R: Read + Seek> BlobReader<R> {
    /// Opens a pack and checks its header.
    ///
    /// # Errors
    /// As for [`PackReader::open`].
    pub fn open(identity: &Identity, source: R) -> Result<Self> {
        let mut inner = crate::seal::open_reader(identity, source, "pack")?;
        let mut head = [0u8; HEADER_LEN];
        inner
            .read_exact(&mut head)
            .map_err(|e| crate::seal::map_payload_error(e, "pack"))?;
        check_header(&head)?;
        Ok(BlobReader { inner })
    }

    /// Reads `len` stored bytes at plaintext `offset` into `buf` (cleared first).
    ///
    /// # Errors
    /// [`FormatError::Decrypt`] / [`FormatError::Truncated`] as for [`PackReader::read_blob`].
    pub fn read_at(&mut self, offset: u64, len: u32, buf: &mut Vec<u8>) -> Result<()> {
        let map = |e| crate::seal::map_payload_error(e, "pack");
        buf.clear();
        buf.resize(len as usize, 0);
        self.inner.seek(SeekFrom::Start(offset)).map_err(map)?;
        self.inner.read_exact(buf).map_err(map)
    }
}

/// Checks a pack's first [`HEADER_LEN`] bytes.
///
/// # Errors
/// [`FormatError::BadMagic`] when they are not "CFRPACK",
/// [`FormatError::UnsupportedVersion`] for a pack version other than ours.
fn check_header(head: &[u8; HEADER_LEN]) -> Result<()> {
    if head[HEADER_MAGIC_OFFSET..HEADER_VERSION_OFFSET] != PACK_HEADER[..MAGIC_LEN] {
        return Err(FormatError::BadMagic { what: "pack" });
    }
    let version = head[HEADER_VERSION_OFFSET];
    if version != PACK_HEADER[HEADER_VERSION_OFFSET] {
        return Err(FormatError::UnsupportedVersion {
            what: "pack",
            found: version.into(),
            supported: PACK_HEADER[HEADER_VERSION_OFFSET].into(),
        });
    }
    Ok(())
}

/// Where a pack's index lies, as its tail says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tail {
    /// Plaintext offset of the index (where the blobs end).
    index_start: u64,
    /// Index length in bytes (at most [`MAX_INDEX_LEN`]).
    index_len: usize,
}

impl Tail {
    /// Plaintext offset of the tail in a plaintext of `len` bytes.
    ///
    /// # Errors
    /// [`FormatError::Truncated`] when `len` is too short for a header, an
    /// empty index and a tail.
    fn offset(len: u64) -> Result<u64> {
        if len < MIN_PLAINTEXT_LEN as u64 {
            return Err(FormatError::Truncated { what: "pack" });
        }
        Ok(len - TAIL_LEN as u64)
    }

    /// Parses the last [`TAIL_LEN`] bytes of a plaintext of `len` bytes
    /// (`len` as checked by [`Tail::offset`]).
    ///
    /// # Errors
    /// [`FormatError::BadMagic`] when the trailer is not "CFRPIDX",
    /// [`FormatError::UnsupportedVersion`] for an index version other than
    /// [`INDEX_VERSION`], [`FormatError::Corrupt`] for an index length over
    /// [`MAX_INDEX_LEN`] or longer than the space between header and tail.
    fn parse(tail: &[u8; TAIL_LEN], len: u64) -> Result<Tail> {
        if tail[TAIL_MAGIC_OFFSET..TAIL_VERSION_OFFSET] != PACK_TRAILER[..MAGIC_LEN] {
            return Err(FormatError::BadMagic {
                what: "pack trailer",
            });
        }
        let version = tail[TAIL_VERSION_OFFSET];
        if version != INDEX_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: "pack index",
                found: version.into(),
                supported: INDEX_VERSION.into(),
            });
        }
        let index_len = u32::from_le_bytes(
            tail[TAIL_INDEX_LEN_OFFSET..TAIL_MAGIC_OFFSET]
                .try_into()
                .expect("4 bytes"),
        );
        let room = len.saturating_sub((HEADER_LEN + TAIL_LEN) as u64);
        if index_len as usize > MAX_INDEX_LEN || u64::from(index_len) > room {
            return Err(FormatError::corrupt("pack index", "length out of range"));
        }
        Ok(Tail {
            index_start: len - TAIL_LEN as u64 - u64::from(index_len),
            index_len: index_len as usize,
        })
    }
}

/// Reads and checks a pack's framing, then reads and decodes its index,
/// from a seekable plaintext. The one path by which [`PackReader::open`]
/// and [`parse_plaintext`] find an index. `map` turns read errors into
/// format errors.
fn read_index<R: Read + Seek>(
    r: &mut R,
    map: impl Fn(io::Error) -> FormatError,
) -> Result<PackIndex> {
    let mut head = [0u8; HEADER_LEN];
    r.read_exact(&mut head).map_err(&map)?;
    check_header(&head)?;
    let len = r.seek(SeekFrom::End(0)).map_err(&map)?;
    r.seek(SeekFrom::Start(Tail::offset(len)?)).map_err(&map)?;
    let mut tail = [0u8; TAIL_LEN];
    r.read_exact(&mut tail).map_err(&map)?;
    let tail = Tail::parse(&tail, len)?;
    r.seek(SeekFrom::Start(tail.index_start)).map_err(&map)?;
    let mut idx = vec![0u8; tail.index_len];
    r.read_exact(&mut idx).map_err(&map)?;
    PackIndex::decode(&idx, tail.index_start)
}

/// Parses a pack's whole decrypted plaintext (for tools, tests and fuzzing).
///
/// # Errors
/// As for [`PackReader::open`], without [`FormatError::Decrypt`].
pub fn parse_plaintext(pt: &[u8]) -> Result<PackIndex> {
    read_index(&mut io::Cursor::new(pt), |e| FormatError::io("pack")(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{BlobDecoder, BlobEncoder};
    use crate::keys::DedupKey;

    pub(crate) fn sample_pack(id: &Identity) -> (Vec<u8>, PackIndex, Vec<Vec<u8>>) {
        let key = DedupKey::from_bytes([3; 32]).chunk_id_key();
        let mut w = PackWriter::new(&id.to_recipients(), Vec::new()).unwrap();
        let mut enc = BlobEncoder::new(3).unwrap();
        let mut raws = Vec::new();
        for i in 0..3u8 {
            let c1 = vec![i; 1000 + i as usize];
            let c2 = format!("chunk two of blob {i}").into_bytes();
            let raw = [c1.clone(), c2.clone()].concat();
            let mut stored = Vec::new();
            let codec = enc.encode(&raw, &mut stored).unwrap();
            let kind = if i == 2 {
                ChunkKind::List
            } else {
                ChunkKind::Data
            };
            w.add_blob(
                codec,
                kind,
                &stored,
                vec![
                    (key.id(&c1), c1.len() as u32),
                    (key.id(&c2), c2.len() as u32),
                ],
            )
            .unwrap();
            raws.push(raw);
        }
        let f = w.finish().unwrap();
        assert_eq!(f.id, PackId::of_ciphertext(&f.writer));
        assert_eq!(f.size, f.writer.len() as u64);
        (f.writer, f.index, raws)
    }

    #[test]
    fn pack_round_trip() {
        let id = Identity::generate();
        let (ct, index, raws) = sample_pack(&id);
        let mut r = PackReader::open(&id, std::io::Cursor::new(&ct)).unwrap();
        assert_eq!(r.index(), &index);
        let mut dec = BlobDecoder::new().unwrap();
        let mut buf = Vec::new();
        let mut raw = Vec::new();
        for (b, want) in index.blobs.clone().iter().zip(&raws) {
            r.read_blob(b, &mut buf).unwrap();
            dec.decode(b.codec, &buf, b.raw_len as usize, &mut raw)
                .unwrap();
            assert_eq!(&raw, want);
        }
        let pt = crate::seal::open(&id, &ct, "pack", 1 << 20).unwrap();
        assert_eq!(parse_plaintext(&pt).unwrap(), index);
        assert_eq!(
            PackIndex::decode(
                &index.encode(),
                index
                    .blobs
                    .last()
                    .map(|b| b.offset + b.stored_len as u64)
                    .unwrap()
            )
            .unwrap(),
            index
        );
    }

    #[test]
    fn blob_reader_reads_what_the_index_lists() {
        let id = Identity::generate();
        let (ct, index, _) = sample_pack(&id);
        let mut full = PackReader::open(&id, std::io::Cursor::new(&ct)).unwrap();
        let mut quick = BlobReader::open(&id, std::io::Cursor::new(&ct)).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for blob in &index.blobs {
            full.read_blob(blob, &mut a).unwrap();
            quick.read_at(blob.offset, blob.stored_len, &mut b).unwrap();
            assert_eq!(a, b);
        }
        assert!(BlobReader::open(&Identity::generate(), std::io::Cursor::new(&ct)).is_err());
    }

    #[test]
    fn truncated_pack_is_rejected() {
        let id = Identity::generate();
        let (ct, _, _) = sample_pack(&id);
        for cut in [1, 12, 100, ct.len() / 2] {
            let short = &ct[..ct.len() - cut];
            assert!(
                PackReader::open(&id, std::io::Cursor::new(short)).is_err(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn altered_pack_is_rejected() {
        let id = Identity::generate();
        let (mut ct, _, _) = sample_pack(&id);
        let n = ct.len();
        ct[n - 20] ^= 0x40;
        assert!(matches!(
            PackReader::open(&id, std::io::Cursor::new(&ct)),
            Err(FormatError::Decrypt { .. })
        ));
    }

    #[test]
    fn inconsistent_index_is_rejected() {
        let id = Identity::generate();
        let (_, index, _) = sample_pack(&id);
        let end = index
            .blobs
            .last()
            .map(|b| b.offset + b.stored_len as u64)
            .unwrap();
        let enc = index.encode();
        assert!(PackIndex::decode(&enc, end + 1).is_err());
        let mut v2 = enc.clone();
        v2[0] = 2;
        assert!(matches!(
            PackIndex::decode(&v2, end),
            Err(FormatError::UnsupportedVersion { found: 2, .. })
        ));
        let mut big = enc.clone();
        big[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(PackIndex::decode(&big, end).is_err());
    }

    /// The plaintext of a sample pack, and `edit` applied to a copy of it
    /// read both ways: whole through [`parse_plaintext`], and resealed and
    /// opened through [`PackReader::open`].
    fn read_both_ways(edit: impl FnOnce(&mut Vec<u8>)) -> [Result<PackIndex>; 2] {
        let id = Identity::generate();
        let (ct, _, _) = sample_pack(&id);
        let mut pt = crate::seal::open(&id, &ct, "pack", 1 << 20).unwrap();
        edit(&mut pt);
        let resealed = crate::seal::seal(&id.to_recipients(), &pt).unwrap();
        [
            parse_plaintext(&pt),
            PackReader::open(&id, std::io::Cursor::new(&resealed)).map(|r| r.index().clone()),
        ]
    }

    #[test]
    fn resealed_plaintext_reads_back_both_ways() {
        let [whole, sealed] = read_both_ways(|_| {});
        assert_eq!(whole.unwrap(), sealed.unwrap());
    }

    #[test]
    fn pack_with_newer_index_version_is_refused_as_unsupported() {
        // "CFRPIDX" followed by 0x02: the index version in the trailer.
        for r in read_both_ways(|pt| *pt.last_mut().unwrap() = 2) {
            let e = r.unwrap_err();
            assert!(
                matches!(
                    e,
                    FormatError::UnsupportedVersion {
                        what: "pack index",
                        found: 2,
                        supported: 1
                    }
                ),
                "{e:?}"
            );
            let msg = e.to_string();
            assert!(
                msg.contains("pack index format version 2 is not supported"),
                "{msg}"
            );
            assert!(msg.ends_with("upgrade coffer"), "{msg}");
        }
    }

    #[test]
    fn pack_with_newer_pack_version_is_refused_as_unsupported() {
        for r in read_both_ways(|pt| pt[7] = 2) {
            let e = r.unwrap_err();
            assert!(
                matches!(
                    e,
                    FormatError::UnsupportedVersion {
                        what: "pack",
                        found: 2,
                        supported: 1
                    }
                ),
                "{e:?}"
            );
        }
    }

    #[test]
    fn pack_with_wrong_trailer_magic_is_bad_magic() {
        // The X of "CFRPIDX", just before the index version byte.
        let edit = |pt: &mut Vec<u8>| {
            let n = pt.len();
            pt[n - 2] = b'Y';
        };
        for r in read_both_ways(edit) {
            let e = r.unwrap_err();
            assert!(
                matches!(
                    e,
                    FormatError::BadMagic {
                        what: "pack trailer"
                    }
                ),
                "{e:?}"
            );
        }
    }

    #[test]
    fn pack_with_wrong_header_magic_is_bad_magic() {
        for r in read_both_ways(|pt| pt[0] = b'X') {
            let e = r.unwrap_err();
            assert!(matches!(e, FormatError::BadMagic { what: "pack" }), "{e:?}");
        }
    }

    #[test]
    fn index_length_beyond_the_blobs_is_corrupt() {
        let edit = |pt: &mut Vec<u8>| {
            let n = pt.len();
            let room = (n - HEADER_LEN - TAIL_LEN) as u32;
            pt[n - TAIL_LEN..n - TAIL_LEN + 4].copy_from_slice(&(room + 1).to_le_bytes());
        };
        for r in read_both_ways(edit) {
            let e = r.unwrap_err();
            assert!(
                matches!(
                    e,
                    FormatError::Corrupt {
                        what: "pack index",
                        ..
                    }
                ),
                "{e:?}"
            );
        }
    }

    #[test]
    fn plaintext_shorter_than_the_framing_is_truncated() {
        let edit = |pt: &mut Vec<u8>| pt.truncate(MIN_PLAINTEXT_LEN - 1);
        for r in read_both_ways(edit) {
            let e = r.unwrap_err();
            assert!(
                matches!(e, FormatError::Truncated { what: "pack" }),
                "{e:?}"
            );
        }
    }

    #[test]
    fn tail_parse_checks_in_order() {
        let mut tail = [0u8; TAIL_LEN];
        tail[TAIL_MAGIC_OFFSET..].copy_from_slice(&PACK_TRAILER);
        tail[..4].copy_from_slice(&5u32.to_le_bytes());
        let len = MIN_PLAINTEXT_LEN as u64;
        assert_eq!(
            Tail::parse(&tail, len).unwrap(),
            Tail {
                index_start: HEADER_LEN as u64,
                index_len: MIN_INDEX_LEN
            }
        );
        // A too-long length is only reported once magic and version are known.
        tail[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Tail::parse(&tail, len),
            Err(FormatError::Corrupt { .. })
        ));
        tail[TAIL_VERSION_OFFSET] = 9;
        assert!(matches!(
            Tail::parse(&tail, len),
            Err(FormatError::UnsupportedVersion { found: 9, .. })
        ));
        tail[TAIL_MAGIC_OFFSET] = 0;
        assert!(matches!(
            Tail::parse(&tail, len),
            Err(FormatError::BadMagic { .. })
        ));
        assert!(matches!(
            Tail::offset(len - 1),
            Err(FormatError::Truncated { .. })
        ));
    }
}
