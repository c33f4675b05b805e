//! Reading packs: the framing checked in one place, the index decoded,
//! blobs read at their offsets (see the parent module for the layout).

use std::io::{self, Read, Seek, SeekFrom};

use super::*;

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
pub(super) struct Tail {
    /// Plaintext offset of the index (where the blobs end).
    pub(super) index_start: u64,
    /// Index length in bytes (at most [`MAX_INDEX_LEN`]).
    pub(super) index_len: usize,
}

impl Tail {
    /// Plaintext offset of the tail in a plaintext of `len` bytes.
    ///
    /// # Errors
    /// [`FormatError::Truncated`] when `len` is too short for a header, an
    /// empty index and a tail.
    pub(super) fn offset(len: u64) -> Result<u64> {
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
    pub(super) fn parse(tail: &[u8; TAIL_LEN], len: u64) -> Result<Tail> {
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
