//! Sources: what produces a backup stream.
//!
//! A [`Source`] is a reader plus a `finish` check that runs after the stream
//! ended and *before* anything is committed: a tar writer that failed half
//! way, or a pg_dump that exited non-zero, must never become a snapshot,
//! even though its output looked like a clean end of stream.
//!
//! One file per kind: [`mod@file`] (a file, stdin), [`mod@tar`] (a directory as a
//! tar stream), [`command`] (a command's output, committed only if it
//! exits 0), [`pg_dump`] (a database over an exported snapshot) and
//! [`memory`] (a small stream already in memory, e.g. the cluster globals).

pub mod basebackup;
pub mod command;
pub mod file;
pub mod memory;
pub mod pg_dump;
pub mod tar;

use std::io::Read;
use std::path::Path;

use crate::error::Result;

pub use command::CommandSource;
pub use file::{FileSource, StdinSource};
pub use memory::MemorySource;
pub use pg_dump::PgDumpSource;
pub use tar::TarSource;

/// A stream to back up.
pub trait Source: Send {
    /// Snapshot kind (see `vault_format::manifest::kinds`).
    fn kind(&self) -> &str;
    /// The stream.
    fn reader(&mut self) -> &mut (dyn Read + Send);
    /// Called once the stream hit EOF: confirms the producer succeeded and
    /// returns facts to record in the manifest.
    ///
    /// # Errors
    /// [`crate::Error::Source`] when the producer failed.
    fn finish(&mut self) -> Result<serde_json::Map<String, serde_json::Value>>;
}

/// Opens `arg` as a source: `-` is stdin, a directory is a tar stream,
/// anything else a file.
///
/// # Errors
/// [`crate::Error::Source`] when it cannot be opened.
pub fn open(arg: &str) -> Result<Box<dyn Source>> {
    if arg == "-" {
        return Ok(Box::new(StdinSource::new()));
    }
    let p = Path::new(arg);
    if p.is_dir() {
        Ok(Box::new(TarSource::start(p)?))
    } else {
        Ok(Box::new(FileSource::open(p)?))
    }
}

/// Looks at the first bytes of a stream and says why it will not dedup
/// well when it is already compressed: gzip, zstd, or a pg_dump custom
/// archive written with compression. Compressed bytes change everywhere
/// after the first changed row, so night-over-night dedup drops to ~0%;
/// coffer compresses after chunking instead.
pub fn compression_warning(head: &[u8]) -> Option<String> {
    const HINT: &str = "it will not deduplicate against earlier backups; feed coffer uncompressed data (coffer compresses after chunking)";
    if head.starts_with(&[0x1f, 0x8b]) {
        return Some(format!("the input is gzip-compressed: {HINT}"));
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Some(format!("the input is zstd-compressed: {HINT}"));
    }
    if head.len() >= 12 && head.starts_with(b"PGDMP") && head[10] == 1 {
        // pg_backup_archiver.c ReadHead: magic, vmaj, vmin, vrev, intSize,
        // offSize, format (1 = custom), then the compression: archive
        // version >= 1.15 stores an algorithm byte (0 = none), older ones a
        // signed int (sign byte + intSize bytes, LE; 0 = none, -1 = default).
        let (vmaj, vmin, int_size) = (head[5], head[6], head[8] as usize);
        let compressed = if (vmaj, vmin) >= (1, 15) {
            head[11] != 0
        } else {
            let end = 12 + int_size;
            head.len() >= end && head[12..end].iter().any(|&b| b != 0)
        };
        if compressed {
            return Some(format!(
                "the input is a pg_dump custom-format archive written with compression (use pg_dump -Z0): {HINT}"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::compression_warning;

    #[test]
    fn compressed_inputs_are_recognised() {
        assert!(compression_warning(&[0x1f, 0x8b, 8, 0])
            .unwrap()
            .contains("gzip"));
        assert!(compression_warning(&[0x28, 0xb5, 0x2f, 0xfd, 0])
            .unwrap()
            .contains("zstd"));
        // PG15 pg_dump -Fc (archive 1.14), default compression (-1) vs -Z0.
        let mut h = b"PGDMP\x01\x0e\x00\x04\x08\x01".to_vec();
        let mut z = h.clone();
        h.extend_from_slice(&[1, 1, 0, 0, 0]);
        z.extend_from_slice(&[0, 0, 0, 0, 0]);
        assert!(compression_warning(&h).unwrap().contains("-Z0"));
        assert_eq!(compression_warning(&z), None);
        // Archive 1.15+: algorithm byte.
        assert!(compression_warning(b"PGDMP\x01\x0f\x00\x04\x08\x01\x03").is_some());
        assert_eq!(
            compression_warning(b"PGDMP\x01\x0f\x00\x04\x08\x01\x00"),
            None
        );
        assert_eq!(compression_warning(b"plain text"), None);
    }
}
