//! Fuzz hooks: one per decoder. The `fuzz/` targets are one-line calls to
//! these, and the test suite runs the same hooks over arbitrary and mutated
//! inputs (`tests/decoders_never_panic.rs`), so every CI run exercises them.
//!
//! Each hook must never panic, whatever the input; where the input decodes,
//! re-encoding and decoding again must give the same value.

use crate::chunklist;
use crate::config::VaultConfig;
use crate::keys::Identity;
use crate::manifest::Manifest;
use crate::pack::{self, PackIndex, PackReader};

/// A fixed identity for fuzzing sealed objects (public test vector; never use
/// it for data).
pub const FUZZ_IDENTITY: &str =
    "AGE-SECRET-KEY-1676XVYT64TPWWX3T6J2C042K2UVYCT0KSNNYD87HW3X672AHKZWQYZV3JU";

/// Pack index decoder (the index bytes, as if starting at offset `len`).
pub fn pack_index(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let start = u64::from_le_bytes(data[..8].try_into().expect("8 bytes")) % (1 << 40);
    if let Ok(idx) = PackIndex::decode(&data[8..], start) {
        let again = PackIndex::decode(&idx.encode(), start).expect("re-encoded index decodes");
        assert_eq!(again, idx);
    }
}

/// A pack's decrypted plaintext.
pub fn pack_plaintext(data: &[u8]) {
    let _ = pack::parse_plaintext(data);
}

/// A sealed pack, opened with [`FUZZ_IDENTITY`] (exercises age's header
/// parser and our framing on top of it).
pub fn sealed_pack(data: &[u8]) {
    let id = Identity::parse(FUZZ_IDENTITY).expect("valid test identity");
    if let Ok(mut r) = PackReader::open(&id, std::io::Cursor::new(data)) {
        let blobs = r.index().blobs.clone();
        let mut buf = Vec::new();
        for b in &blobs {
            let _ = r.read_blob(b, &mut buf);
        }
    }
}

/// Manifest JSON.
pub fn manifest(data: &[u8]) {
    if let Ok(m) = Manifest::decode(data) {
        let again = Manifest::decode(&m.encode()).expect("re-encoded manifest decodes");
        assert_eq!(again, m);
    }
}

/// Vault config JSON.
pub fn config(data: &[u8]) {
    if let Ok(c) = VaultConfig::decode(data) {
        let again = VaultConfig::decode(&c.encode()).expect("re-encoded config decodes");
        assert_eq!(again, c);
    }
}

/// Serialized chunk list, fed in two pieces at a data-chosen split.
pub fn chunk_list(data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let split = data[0] as usize % data.len();
    let body = &data[1..];
    let whole = chunklist::decode_all(body);
    let mut d = chunklist::ChunkListDecoder::new();
    let mut got = Vec::new();
    let split = split.min(body.len());
    let r = d
        .push::<crate::FormatError>(&body[..split], |i, l| {
            got.push((i, l));
            Ok(())
        })
        .and_then(|_| {
            d.push::<crate::FormatError>(&body[split..], |i, l| {
                got.push((i, l));
                Ok(())
            })
        });
    if let Ok(entries) = whole {
        assert!(r.is_ok());
        assert_eq!(got, entries);
    }
}

/// A fixed WAL key for fuzzing WAL objects.
pub fn fuzz_wal_key() -> crate::keys::WalKey {
    crate::keys::DedupKey::from_bytes([0x5a; 32]).wal_key()
}

/// A WAL file name: what parses, printed, parses to the same file.
pub fn wal_name(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(f) = crate::wal::WalFile::parse(s) {
        let again = crate::wal::WalFile::parse(&f.name()).expect("a printed name parses");
        assert_eq!(again, f);
        let _ = (f.segment(), f.tli(), f.kind());
    }
}

/// A segment's first page header, checked against a data-chosen name.
pub fn wal_header(data: &[u8]) {
    if let Ok(h) = crate::wal::SegmentHeader::parse(data) {
        let seg = u64::from(h.seg_size.max(1));
        let name = crate::wal::SegmentName::holding(h.tli, crate::wal::Lsn(h.page_addr), seg);
        let _ = h.check(&name, data.len() as u64, true);
        let _ = h.check(&name, u64::from(h.seg_size), false);
    }
}

/// A sealed WAL object, opened with [`FUZZ_IDENTITY`] and [`fuzz_wal_key`].
pub fn wal_object(data: &[u8]) {
    let id = Identity::parse(FUZZ_IDENTITY).expect("valid test identity");
    let _ = crate::wal::object::object_hash(data);
    let _ = crate::wal::object::open_object(&id, &fuzz_wal_key(), data);
}

/// A batch header: what parses re-encodes to the same entries.
pub fn wal_batch(data: &[u8]) {
    if let Ok(Some(entries)) = crate::wal::object::parse_batch_header(data) {
        let list: Vec<(String, u64)> = entries.iter().map(|e| (e.name.clone(), e.len)).collect();
        let again = crate::wal::object::batch_header(&list).expect("parsed names fit");
        let reparsed = crate::wal::object::parse_batch_header(&again)
            .expect("re-encoded header parses")
            .expect("complete");
        assert_eq!(reparsed, entries);
    }
}
