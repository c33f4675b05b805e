use super::object::*;
use super::*;
use crate::keys::{DedupKey, Identity};

const SEG: u64 = 16 << 20;

#[test]
fn names_round_trip() {
    for name in [
        "000000010000000A000000FE",
        "000000020000000000000003.partial",
        "000000010000000000000002.00000028.backup",
        "00000002.history",
    ] {
        let f = WalFile::parse(name).unwrap();
        assert_eq!(f.name(), name);
    }
    for bad in [
        "00000001000000000000000",
        "000000010000000000000002.backup",
        "0000000G0000000000000002",
        "history",
        "00000002.partial",
        "../000000010000000000000002",
    ] {
        assert!(WalFile::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn segment_numbers_and_lsns() {
    let s = SegmentName {
        tli: 1,
        log: 0x0A,
        seg: 0xFE,
    };
    assert_eq!(s.segno(SEG), 0x0A * 256 + 0xFE);
    assert_eq!(SegmentName::from_segno(1, s.segno(SEG), SEG), s);
    assert_eq!(s.start_lsn(SEG).to_string(), "A/FE000000");
    let lsn: Lsn = "A/FE000028".parse().unwrap();
    assert_eq!(SegmentName::holding(1, lsn, SEG), s);
    assert!("A-FE".parse::<Lsn>().is_err());
}

fn header(pageaddr: u64, sysid: u64) -> Vec<u8> {
    let mut h = vec![0u8; 8192];
    h[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    h[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
    h[4..8].copy_from_slice(&1u32.to_le_bytes());
    h[8..16].copy_from_slice(&pageaddr.to_le_bytes());
    h[24..32].copy_from_slice(&sysid.to_le_bytes());
    h[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
    h[36..40].copy_from_slice(&8192u32.to_le_bytes());
    h
}

#[test]
fn headers_are_checked_against_names() {
    let name = SegmentName::parse("000000010000000000000003").unwrap();
    let h = SegmentHeader::parse(&header(3 * SEG, 42)).unwrap();
    assert_eq!(h.system_identifier, 42);
    h.check(&name, SEG, false).unwrap();
    let other = SegmentName::parse("000000010000000000000004").unwrap();
    assert!(h
        .check(&other, SEG, false)
        .unwrap_err()
        .to_string()
        .contains("should start at 0/4000000"));
    assert!(h.check(&name, SEG - 1, false).is_err());
    h.check(&name, 8192, true).unwrap();
    let mut zeros = header(0, 0);
    zeros[0] = 0;
    assert!(SegmentHeader::parse(&zeros).is_err());
    assert!(SegmentHeader::parse(&[0u8; 10]).is_err());
}

#[test]
fn objects_open_only_with_the_identity_and_keep_their_hash() {
    let id = Identity::generate();
    let key = DedupKey::generate().wal_key();
    let data = header(3 * SEG, 7);
    let obj = seal_object(&id.to_recipients(), &key, &data, 1).unwrap();
    assert_eq!(object_hash(&obj).unwrap(), key.content_hash(&data));
    assert_eq!(open_object(&id, &key, &obj).unwrap(), data);
    assert!(open_object(&Identity::generate(), &key, &obj).is_err());
    let mut altered = obj.clone();
    altered[10] ^= 1;
    assert!(open_object(&id, &key, &altered).is_err());
    let mut altered = obj.clone();
    let n = altered.len();
    altered[n - 20] ^= 1;
    assert!(open_object(&id, &key, &altered).is_err());
}

#[test]
fn a_file_sealed_in_pieces_opens_whole_and_its_length_is_held_to() {
    let id = Identity::generate();
    let key = DedupKey::generate().wal_key();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut s = ObjectSealer::new(&key, 1, data.len() as u64).unwrap();
    for piece in data.chunks(65_537) {
        s.update(piece).unwrap();
    }
    let (obj, hash) = s.finish(&id.to_recipients()).unwrap();
    assert_eq!(hash, key.content_hash(&data));
    assert_eq!(object_hash(&obj).unwrap(), hash);
    assert_eq!(open_object(&id, &key, &obj).unwrap(), data);
    // A file that grew or shrank while it was read is not sealed.
    for len in [data.len() as u64 - 1, data.len() as u64 + 1] {
        let mut s = ObjectSealer::new(&key, 1, len).unwrap();
        let fed = s.update(&data);
        assert!(
            fed.is_err() || s.finish(&id.to_recipients()).is_err(),
            "{len}"
        );
    }
}

#[test]
fn batch_headers_round_trip_and_reject_damage() {
    let entries = vec![
        ("000000010000000000000003".to_string(), 100),
        ("00000002.history".to_string(), 7),
    ];
    let h = batch_header(&entries).unwrap();
    let parsed = parse_batch_header(&h).unwrap().unwrap();
    assert_eq!(parsed[0].offset, h.len() as u64);
    assert_eq!(parsed[1].offset, h.len() as u64 + 100);
    assert_eq!(parsed[1].len, 7);
    assert_eq!(parse_batch_header(&h[..h.len() - 1]).unwrap(), None);
    let mut bad = h.clone();
    bad[0] = b'X';
    assert!(parse_batch_header(&bad).is_err());
}
