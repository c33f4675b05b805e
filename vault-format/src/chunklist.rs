//! Chunk lists: the ordered chunks of one snapshot's stream.
//!
//! Serialized (version 1) as an 8-byte header followed by one 36-byte entry
//! per chunk:
//!
//! ```text
//!  "CFRLIST" 0x01 | ([32] chunk id | u32 LE length)*
//! ```
//!
//! The serialized list is itself cut with the vault's chunker and stored as
//! chunks of kind [`crate::pack::ChunkKind::List`], so a manifest holds only
//! the ids of those list chunks (a 100 GB dump has ~12.2M data chunks of
//! ~8 KiB, ~440 MB of list, but its manifest names only the ~54,000 list
//! chunks), and two nights whose streams share long runs share most of
//! their list chunks too. Lengths are stored so a restore knows the
//! exact output size and offsets before fetching any data.

use crate::error::{FormatError, Result};
use crate::ids::ChunkId;

/// Header that starts a serialized chunk list.
pub const LIST_HEADER: [u8; 8] = *b"CFRLIST\x01";
/// Bytes per entry.
pub const ENTRY_LEN: usize = 36;

/// Appends one entry to a serialized list.
pub fn encode_entry(id: &ChunkId, len: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&len.to_le_bytes());
}

/// Incremental decoder: feed the list chunks' plaintext in order with
/// [`ChunkListDecoder::push`]; call [`ChunkListDecoder::finish`] at the end.
#[derive(Default)]
pub struct ChunkListDecoder {
    header_seen: bool,
    pending: Vec<u8>,
    count: u64,
}

impl ChunkListDecoder {
    /// A decoder expecting the header first.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes what `bytes` completes, calling `f` for each entry in order.
    ///
    /// # Errors
    /// [`FormatError::BadMagic`] / [`FormatError::UnsupportedVersion`] on a
    /// bad header, [`FormatError::Corrupt`] for a zero length, or whatever `f`
    /// returns.
    pub fn push<E: From<FormatError>>(
        &mut self,
        mut bytes: &[u8],
        mut f: impl FnMut(ChunkId, u32) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        if !self.header_seen {
            let need = 8 - self.pending.len();
            let take = need.min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() < 8 {
                return Ok(());
            }
            if self.pending[..7] != LIST_HEADER[..7] {
                return Err(FormatError::BadMagic { what: "chunk list" }.into());
            }
            if self.pending[7] != LIST_HEADER[7] {
                return Err(FormatError::UnsupportedVersion {
                    what: "chunk list",
                    found: self.pending[7].into(),
                    supported: LIST_HEADER[7].into(),
                }
                .into());
            }
            self.pending.clear();
            self.header_seen = true;
        }
        if !self.pending.is_empty() {
            let take = (ENTRY_LEN - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() < ENTRY_LEN {
                return Ok(());
            }
            let e = std::mem::take(&mut self.pending);
            self.entry(&e, &mut f)?;
        }
        let mut it = bytes.chunks_exact(ENTRY_LEN);
        for e in &mut it {
            self.entry(e, &mut f)?;
        }
        self.pending.extend_from_slice(it.remainder());
        Ok(())
    }

    fn entry<E: From<FormatError>>(
        &mut self,
        e: &[u8],
        f: &mut impl FnMut(ChunkId, u32) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let id = ChunkId::from_slice(&e[..32]).expect("32 bytes");
        let len = u32::from_le_bytes(e[32..36].try_into().expect("4 bytes"));
        if len == 0 {
            return Err(FormatError::corrupt("chunk list", "zero-length entry").into());
        }
        self.count += 1;
        f(id, len)
    }

    /// Checks the list ended on an entry boundary; returns the entry count.
    ///
    /// # Errors
    /// [`FormatError::Truncated`] otherwise.
    pub fn finish(self) -> Result<u64> {
        if !self.header_seen || !self.pending.is_empty() {
            return Err(FormatError::Truncated { what: "chunk list" });
        }
        Ok(self.count)
    }
}

/// Decodes a whole serialized list in memory.
///
/// # Errors
/// As for [`ChunkListDecoder`].
pub fn decode_all(bytes: &[u8]) -> Result<Vec<(ChunkId, u32)>> {
    let mut d = ChunkListDecoder::new();
    let mut out = Vec::new();
    d.push::<FormatError>(bytes, |id, len| {
        out.push((id, len));
        Ok(())
    })?;
    d.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_pieces() {
        let mut buf = LIST_HEADER.to_vec();
        let entries: Vec<_> = (0..100u32)
            .map(|i| (ChunkId([i as u8; 32]), i + 1))
            .collect();
        for (id, len) in &entries {
            encode_entry(id, *len, &mut buf);
        }
        assert_eq!(decode_all(&buf).unwrap(), entries);
        for step in [1, 5, 35, 37, 1000] {
            let mut d = ChunkListDecoder::new();
            let mut got = Vec::new();
            for piece in buf.chunks(step) {
                d.push::<FormatError>(piece, |id, len| {
                    got.push((id, len));
                    Ok(())
                })
                .unwrap();
            }
            assert_eq!(d.finish().unwrap(), 100);
            assert_eq!(got, entries);
        }
        assert!(decode_all(&buf[..buf.len() - 1]).is_err());
        assert!(decode_all(b"CFRLIST\x02").is_err());
    }
}
