//! # vault-format
//!
//! The objects coffer stores in a tier, and nothing else: ids, chunking,
//! blobs, packs, chunk lists, manifests and the vault config, with their
//! encoders, decoders and age sealing. No async, no database, no network:
//! everything here is a pure function of bytes (plus `Read`/`Write`/`Seek`
//! for streaming packs), specified in `SPEC.md` and fuzzed from `fuzz/`.
//!
//! ```
//! use vault_format::{keys::{DedupKey, Identity}, pack::{PackWriter, PackReader, ChunkKind}, blob::{BlobEncoder, BlobDecoder}};
//!
//! let identity = Identity::generate();
//! let key = DedupKey::generate().chunk_id_key();
//! let chunk = b"one chunk of a pg_dump".to_vec();
//!
//! // Seal a pack holding one blob of one chunk.
//! let mut stored = Vec::new();
//! let codec = BlobEncoder::new(3)?.encode(&chunk, &mut stored)?;
//! let mut w = PackWriter::new(&identity.to_recipients(), Vec::new())?;
//! w.add_blob(codec, ChunkKind::Data, &stored, vec![(key.id(&chunk), chunk.len() as u32)])?;
//! let pack = w.finish()?;
//!
//! // Open it again from its bytes alone.
//! let mut r = PackReader::open(&identity, std::io::Cursor::new(&pack.writer))?;
//! let blob = r.index().blobs[0].clone();
//! let mut buf = Vec::new();
//! r.read_blob(&blob, &mut buf)?;
//! let mut raw = Vec::new();
//! BlobDecoder::new()?.decode(blob.codec, &buf, blob.raw_len as usize, &mut raw)?;
//! assert_eq!(raw, chunk);
//! assert_eq!(key.id(&raw), blob.chunks[0].0);
//! # Ok::<(), vault_format::FormatError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod blob;
pub mod chunker;
pub mod chunklist;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod ids;
pub mod keys;
pub mod manifest;
pub mod pack;
pub mod pad;
pub mod seal;
#[doc(hidden)]
pub mod testdata;
pub mod wal;

pub use error::FormatError;
pub use ids::{ChunkId, PackId, SnapshotId, VaultId};
