//! Blobs: the unit of compression inside a pack.
//!
//! A blob is a run of consecutive *new* chunks of one stream, compressed
//! together as one zstd frame. Compressing each 8 KiB chunk alone would lose
//! much of zstd's ratio (its window would hold one chunk); compressing runs of
//! up to [`crate::pack::PackParams::blob_target_size`] keeps the ratio within
//! a few percent of whole-stream zstd, while a restore of one chunk still
//! decompresses at most one blob. When compression saves too little the run
//! is stored raw.

use crate::error::{FormatError, Result};

/// Largest raw size of a blob a reader accepts (bounds decompression memory
/// against hostile or damaged packs).
pub const MAX_BLOB_RAW: usize = 64 * 1024 * 1024;

/// How a blob's bytes are stored. The numbers are on-disk tags: never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    /// Stored as is.
    Raw = 0,
    /// One zstd frame.
    Zstd = 1,
}

impl Codec {
    /// Decodes the on-disk tag.
    ///
    /// # Errors
    /// [`FormatError::Corrupt`] for an unknown tag.
    pub fn from_tag(t: u8) -> Result<Self> {
        match t {
            0 => Ok(Codec::Raw),
            1 => Ok(Codec::Zstd),
            _ => Err(FormatError::corrupt(
                "pack index",
                format!("unknown blob codec {t}"),
            )),
        }
    }
}

/// Compresses blobs, reusing one zstd context (no allocation per blob once
/// the output buffer has grown).
pub struct BlobEncoder {
    level: i32,
    ctx: zstd::bulk::Compressor<'static>,
}

impl BlobEncoder {
    /// An encoder at a zstd level (1-22; negative levels are zstd's fast modes).
    ///
    /// # Errors
    /// When zstd rejects the level.
    pub fn new(level: i32) -> Result<Self> {
        let ctx = zstd::bulk::Compressor::new(level).map_err(FormatError::io("zstd compressor"))?;
        Ok(BlobEncoder { level, ctx })
    }

    /// The zstd level.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// Encodes `raw` into `out` (cleared first) and says how it is stored.
    /// Compression must save at least 1/32 of the bytes to be kept: below
    /// that, the decompression cost on restore is not worth the space.
    ///
    /// # Errors
    /// Only if zstd fails internally.
    pub fn encode(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<Codec> {
        out.clear();
        let bound = zstd::zstd_safe::compress_bound(raw.len());
        out.reserve(bound);
        let n = self
            .ctx
            .compress_to_buffer(raw, out)
            .map_err(FormatError::io("zstd compression"))?;
        if n + raw.len() / 32 < raw.len() {
            Ok(Codec::Zstd)
        } else {
            out.clear();
            out.extend_from_slice(raw);
            Ok(Codec::Raw)
        }
    }
}

/// Decompresses blobs, reusing one zstd context.
pub struct BlobDecoder {
    ctx: zstd::bulk::Decompressor<'static>,
}

impl BlobDecoder {
    /// A new decoder.
    ///
    /// # Errors
    /// Only if zstd cannot allocate its context.
    pub fn new() -> Result<Self> {
        Ok(BlobDecoder {
            ctx: zstd::bulk::Decompressor::new().map_err(FormatError::io("zstd decompressor"))?,
        })
    }

    /// Decodes a stored blob of `raw_len` bytes into `out` (cleared first).
    ///
    /// # Errors
    /// [`FormatError::Corrupt`] when the bytes do not decode to exactly
    /// `raw_len` bytes.
    pub fn decode(
        &mut self,
        codec: Codec,
        stored: &[u8],
        raw_len: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        out.clear();
        if raw_len > MAX_BLOB_RAW {
            return Err(FormatError::corrupt("blob", "raw length over the limit"));
        }
        match codec {
            Codec::Raw => {
                if stored.len() != raw_len {
                    return Err(FormatError::corrupt("blob", "raw blob length mismatch"));
                }
                out.extend_from_slice(stored);
            }
            Codec::Zstd => {
                out.reserve(raw_len);
                let n = self
                    .ctx
                    .decompress_to_buffer(stored, out)
                    .map_err(|_| FormatError::corrupt("blob", "zstd frame does not decode"))?;
                if n != raw_len {
                    return Err(FormatError::corrupt("blob", "decoded length mismatch"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_round_trip_and_incompressible_stays_raw() {
        let mut enc = BlobEncoder::new(3).unwrap();
        let mut dec = BlobDecoder::new().unwrap();
        let text = b"hello world ".repeat(10_000);
        let mut out = Vec::new();
        assert_eq!(enc.encode(&text, &mut out).unwrap(), Codec::Zstd);
        assert!(out.len() < text.len() / 10);
        let mut back = Vec::new();
        dec.decode(Codec::Zstd, &out, text.len(), &mut back)
            .unwrap();
        assert_eq!(back, text);
        assert!(dec
            .decode(Codec::Zstd, &out, text.len() + 1, &mut back)
            .is_err());

        let noisy = crate::testdata::noise(100_000, 12345);
        assert_eq!(enc.encode(&noisy, &mut out).unwrap(), Codec::Raw);
        assert_eq!(out, noisy);
    }
}
