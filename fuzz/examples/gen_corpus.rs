//! Writes valid seed inputs for every fuzz target to `corpus/<target>/`,
//! built with vault-format's own encoders, so libFuzzer starts from real
//! packs, indexes, manifests, configs and chunk lists instead of having to
//! discover JSON field names or an age X25519 stanza for `FUZZ_IDENTITY` by
//! chance (it never would for the latter: that needs the key).
//!
//! Run from `fuzz/`: `cargo run --release --example gen_corpus`.

use std::collections::BTreeMap;
use std::path::Path;

use vault_format::blob::{BlobEncoder, Codec};
use vault_format::chunker::ChunkerParams;
use vault_format::chunklist::{encode_entry, LIST_HEADER};
use vault_format::config::VaultConfig;
use vault_format::keys::{DedupKey, Identity};
use vault_format::manifest::{kinds, Manifest, MANIFEST_VERSION};
use vault_format::pack::{ChunkKind, PackIndex, PackParams, PackWriter};
use vault_format::testdata::{Xorshift64, DEFAULT_SEED};
use vault_format::{ChunkId, SnapshotId, VaultId};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("create corpus dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

/// A small pack: `blobs` blobs of two chunks each, alternating compressible
/// and incompressible content. Returns (ciphertext, index).
fn pack(identity: &Identity, blobs: usize) -> (Vec<u8>, PackIndex) {
    let key = DedupKey::from_bytes([7; 32]).chunk_id_key();
    let mut w = PackWriter::new(&identity.to_recipients(), Vec::new()).expect("pack writer");
    let mut enc = BlobEncoder::new(3).expect("zstd");
    let mut rng = Xorshift64::new(DEFAULT_SEED);
    for i in 0..blobs {
        let c1: Vec<u8> = if i % 2 == 0 {
            b"abcabcabc".repeat(20 + i)
        } else {
            rng.bytes(40 + i)
        };
        let c2 = format!("chunk two of blob {i}").into_bytes();
        let raw = [c1.clone(), c2.clone()].concat();
        let mut stored = Vec::new();
        let codec = enc.encode(&raw, &mut stored).expect("encode");
        let kind = if i == blobs - 1 {
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
        .expect("add blob");
    }
    let f = w.finish().expect("finish pack");
    (f.writer, f.index)
}

fn index_end(idx: &PackIndex) -> u64 {
    idx.blobs
        .last()
        .map(|b| b.offset + u64::from(b.stored_len))
        .unwrap_or(8)
}

fn main() {
    let identity = Identity::parse(vault_format::fuzz::FUZZ_IDENTITY).expect("fuzz identity");

    for blobs in [0usize, 1, 3] {
        let (ct, idx) = pack(&identity, blobs);
        let name = format!("seed-{blobs}-blobs");
        write("sealed_pack", &name, &ct);
        let pt = vault_format::seal::open(&identity, &ct, "pack", 1 << 20).expect("open");
        write("pack_plaintext", &name, &pt);
        let mut ix = index_end(&idx).to_le_bytes().to_vec();
        ix.extend_from_slice(&idx.encode());
        write("pack_index", &name, &ix);
    }
    // A raw blob next to a zstd one, for the index decoder's codec checks.
    let raw = PackIndex {
        blobs: vec![vault_format::pack::BlobEntry {
            offset: 8,
            stored_len: 10,
            raw_len: 10,
            codec: Codec::Raw,
            kind: ChunkKind::Data,
            chunks: vec![(ChunkId([1; 32]), 4), (ChunkId([2; 32]), 6)],
        }],
    };
    let mut ix = 18u64.to_le_bytes().to_vec();
    ix.extend_from_slice(&raw.encode());
    write("pack_index", "seed-raw-blob", &ix);

    let mut source = serde_json::Map::new();
    source.insert("file".into(), "dump.pgc".into());
    source.insert("databases".into(), serde_json::json!(["app", "auth"]));
    source.insert(
        "rows".into(),
        serde_json::json!({"users": 12, "ratio": 0.5}),
    );
    let mut extra = BTreeMap::new();
    extra.insert(
        "future_field".into(),
        serde_json::json!({"x": [1, null, true]}),
    );
    let m = Manifest {
        format: MANIFEST_VERSION,
        id: SnapshotId([1; 16]),
        vault_id: VaultId([2; 16]),
        job: "nightly-db".into(),
        kind: kinds::FILE.into(),
        created: "2026-11-24T01:00:00Z".into(),
        host: "db1".into(),
        tags: vec!["weekly".into(), "pre-migration".into()],
        source,
        raw_size: 5_000_000,
        stored_size: 1_234_567,
        chunk_count: 300,
        chunk_list: vec![ChunkId([3; 32]), ChunkId([4; 32])],
        extra,
    };
    write("manifest", "seed-pretty", &m.encode());
    write(
        "manifest",
        "seed-compact",
        &serde_json::to_vec(&m).expect("json"),
    );

    let c = VaultConfig::new(
        VaultId([5; 16]),
        "2026-11-24T00:00:00Z".into(),
        ChunkerParams::default(),
        PackParams::default(),
        &identity.to_recipients(),
        &DedupKey::from_bytes([9; 32]),
    )
    .expect("config");
    write("config", "seed-pretty", &c.encode());

    for (name, n, split) in [("seed-empty", 0u8, 3u8), ("seed-5", 5, 50)] {
        let mut list = vec![split];
        list.extend_from_slice(&LIST_HEADER);
        for i in 0..n {
            encode_entry(&ChunkId([i; 32]), 1000 + u32::from(i), &mut list);
        }
        write("chunk_list", name, &list);
    }
    println!(
        "seeds written to {}/corpus",
        Path::new(env!("CARGO_MANIFEST_DIR")).display()
    );
}
