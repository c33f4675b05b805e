//! Pack writer and reader tests.

use super::read::Tail;
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
