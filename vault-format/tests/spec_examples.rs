//! SPEC.md's examples, constants and limits, checked against the code so
//! they cannot go stale (issue 9: "SPEC.md's examples come from a real vault
//! with today's 2/8/32 KiB chunker").
//!
//! What the pure format crate can produce is checked here: the config
//! example's chunker and pack parameters, the pack header and trailer bytes,
//! a pack built the way a backup builds one (its framing bytes and sizes are
//! quoted in SPEC.md), the chunk-list arithmetic and the reader limits. The
//! manifest example needs a real vault and is checked by the main crate.
//!
//! When a test here fails, its message holds the text SPEC.md should say.

use std::collections::HashSet;
use std::path::Path;

use vault_format::blob::{BlobEncoder, MAX_BLOB_RAW};
use vault_format::chunker::{Chunker, ChunkerParams};
use vault_format::chunklist::{self, ENTRY_LEN, LIST_HEADER};
use vault_format::config::{
    VaultConfig, CONFIG_FORMAT, CONFIG_VERSION, MAX_CONFIG_LEN, MAX_DEDUP_KEY_LEN,
};
use vault_format::keys::{DedupKey, Identity};
use vault_format::manifest::MAX_MANIFEST_LEN;
use vault_format::pack::{
    self, ChunkKind, PackIndex, PackParams, PackWriter, INDEX_VERSION, MAX_INDEX_LEN, PACK_HEADER,
    PACK_TRAILER,
};
use vault_format::{seal, testdata, ChunkId};

fn spec() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("SPEC.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text under the heading `## {title}`, up to the next `## ` heading.
fn section<'a>(spec: &'a str, title: &str) -> &'a str {
    let head = format!("\n## {title}\n");
    let start = spec
        .find(&head)
        .unwrap_or_else(|| panic!("SPEC.md has no section {title:?}"))
        + head.len();
    let end = spec[start..]
        .find("\n## ")
        .map_or(spec.len(), |n| start + n);
    &spec[start..end]
}

/// The body of the first fenced block with info string `lang` in `text`.
fn fenced<'a>(text: &'a str, lang: &str) -> &'a str {
    let open = format!("```{lang}\n");
    let start = text
        .find(&open)
        .unwrap_or_else(|| panic!("no ```{lang} block"))
        + open.len();
    let end = start + text[start..].find("```").expect("closing fence");
    &text[start..end]
}

/// Whitespace runs collapsed to one space, so line wrapping does not matter.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Asserts that `haystack` says `want` (modulo line wrapping).
fn assert_says(haystack: &str, want: &str, where_: &str) {
    assert!(
        squash(haystack).contains(&squash(want)),
        "SPEC.md, {where_}, should say:\n\n{want}\n"
    );
}

fn hex_spaced(b: &[u8]) -> String {
    b.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// 70773 -> "70,773".
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A size as SPEC.md writes it: "64 MiB", "2 KiB", "256 bytes".
fn size(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

#[test]
fn spec_examples_are_current() {
    let spec = spec();

    // The config example holds today's defaults and is a config this crate reads.
    let config = section(&spec, "config");
    let json = fenced(config, "json");
    let v: serde_json::Value = serde_json::from_str(json).expect("the config example is JSON");
    assert_eq!(
        v["chunker"],
        serde_json::to_value(ChunkerParams::default()).unwrap(),
        "the config example's chunker"
    );
    assert_eq!(
        v["pack"],
        serde_json::to_value(PackParams::default()).unwrap(),
        "the config example's pack parameters"
    );
    assert_eq!(v["format"], CONFIG_FORMAT);
    assert_eq!(v["version"], CONFIG_VERSION);
    VaultConfig::decode(json.as_bytes()).expect("the config example decodes");

    // The pack diagram's constants.
    let packs = section(&spec, "Packs");
    assert_says(
        packs,
        &format!(
            "HEADER = {} \"CFRPACK\" + pack version {}",
            hex_spaced(&PACK_HEADER),
            PACK_HEADER[7]
        ),
        "Packs",
    );
    assert_says(
        packs,
        &format!(
            "TRAILER = {} \"CFRPIDX\" + index version {}",
            hex_spaced(&PACK_TRAILER),
            INDEX_VERSION
        ),
        "Packs",
    );
    assert_says(
        packs,
        &format!("u8 index version = {INDEX_VERSION}"),
        "Packs",
    );

    // The example pack.
    let ex = ExamplePack::build();
    assert_says(packs, &ex.spec_text(), "Packs (the example pack)");
}

/// The defaults as the prose states them.
#[test]
fn spec_defaults_are_current() {
    let spec = spec();
    let c = ChunkerParams::default();
    assert_says(
        section(&spec, "Chunking"),
        &format!(
            "Defaults: {} / {} / {}, normalization level {}",
            size(c.min_size as usize),
            size(c.avg_size as usize),
            size(c.max_size as usize),
            c.normalization
        ),
        "Chunking",
    );
    let p = PackParams::default();
    assert_says(
        section(&spec, "Blobs"),
        &format!(
            "`blob_target_size` (default {})",
            size(p.blob_target_size as usize)
        ),
        "Blobs",
    );
    assert_says(
        section(&spec, "Packs"),
        &format!("`target_size` (default {})", size(p.target_size as usize)),
        "Packs",
    );
}

/// The chunk-list header and the "100 GB dump" arithmetic.
#[test]
fn spec_chunk_list_numbers_are_current() {
    let spec = spec();
    let lists = section(&spec, "Chunk lists");
    assert_says(
        lists,
        &format!(
            "\"CFRLIST\" {:02x} | ( [32] chunk id | u32 length )*",
            LIST_HEADER[7]
        ),
        "Chunk lists",
    );
    assert_eq!(&LIST_HEADER[..7], b"CFRLIST");
    let avg = f64::from(ChunkerParams::default().avg_size);
    let chunks = 100e9 / avg;
    let list_mb = chunks * ENTRY_LEN as f64 / 1e6;
    assert_says(
        lists,
        &format!(
            "a 100 GB dump has ~{:.1}M chunks of ~{} ({ENTRY_LEN} bytes each in the list: ~{} MB of list",
            chunks / 1e6,
            size(avg as usize),
            (list_mb / 10.0).round() * 10.0
        ),
        "Chunk lists",
    );
}

/// Every limit a decoder enforces is listed with its constant and value.
#[test]
fn spec_reader_limits_are_current() {
    let spec = spec();
    let limits = section(&spec, "Reader limits");
    for (name, value) in [
        ("pack::MAX_INDEX_LEN", MAX_INDEX_LEN),
        ("blob::MAX_BLOB_RAW", MAX_BLOB_RAW),
        ("manifest::MAX_MANIFEST_LEN", MAX_MANIFEST_LEN),
        ("config::MAX_CONFIG_LEN", MAX_CONFIG_LEN),
        ("config::MAX_DEDUP_KEY_LEN", MAX_DEDUP_KEY_LEN),
    ] {
        let row = format!("| `{name}` | {} |", size(value));
        assert!(
            limits.lines().any(|l| l.starts_with(&row)),
            "SPEC.md, Reader limits, should have a row starting {row:?}"
        );
    }
}

/// A pack built from deterministic data the way a backup builds one.
struct ExamplePack {
    stream_len: usize,
    plaintext: Vec<u8>,
    index: PackIndex,
}

impl ExamplePack {
    const STREAM_LEN: usize = 4 << 20;

    /// `testdata::dump_like(4 MiB)`, cut with the default chunker under the
    /// dedup key 07..07; new chunks join a run of their kind, closed as a
    /// blob when its raw size reaches `blob_target_size` and at the end of
    /// the stream; then the stream's chunk list, cut with the same chunker,
    /// as list chunks. All in one pack (the stream is under `target_size`).
    fn build() -> Self {
        let key = DedupKey::from_bytes([7; 32]);
        let chunker = Chunker::new(&ChunkerParams::default(), &key).unwrap();
        let idkey = key.chunk_id_key();
        let params = PackParams::default();
        let identity = Identity::generate();
        let mut w = PackWriter::new(&identity.to_recipients(), Vec::new()).unwrap();
        let mut enc = BlobEncoder::new(params.zstd_level).unwrap();
        let mut seen = HashSet::new();
        let mut stored = Vec::new();
        let mut add_stream = |w: &mut PackWriter<Vec<u8>>, data: &[u8], kind| {
            let mut list = LIST_HEADER.to_vec();
            let mut run: (Vec<u8>, Vec<(ChunkId, u32)>) = (Vec::new(), Vec::new());
            let mut flush = |w: &mut PackWriter<Vec<u8>>, run: &mut (Vec<u8>, Vec<_>)| {
                if !run.1.is_empty() {
                    let codec = enc.encode(&run.0, &mut stored).unwrap();
                    w.add_blob(codec, kind, &stored, std::mem::take(&mut run.1))
                        .unwrap();
                    run.0.clear();
                }
            };
            for c in chunker.split(data) {
                let id = idkey.id(c);
                chunklist::encode_entry(&id, c.len() as u32, &mut list);
                if seen.insert(id) {
                    run.0.extend_from_slice(c);
                    run.1.push((id, c.len() as u32));
                    if run.0.len() >= params.blob_target_size as usize {
                        flush(w, &mut run);
                    }
                }
            }
            flush(w, &mut run);
            list
        };
        let data = testdata::dump_like(Self::STREAM_LEN);
        let list = add_stream(&mut w, &data, ChunkKind::Data);
        add_stream(&mut w, &list, ChunkKind::List);
        assert!(w.len() < params.target_size, "the example fits one pack");
        let f = w.finish().unwrap();
        let plaintext = seal::open(&identity, &f.writer, "pack", 64 << 20).unwrap();
        assert_eq!(pack::parse_plaintext(&plaintext).unwrap(), f.index);
        ExamplePack {
            stream_len: data.len(),
            plaintext,
            index: f.index,
        }
    }

    fn blobs(&self, kind: ChunkKind) -> usize {
        self.index.blobs.iter().filter(|b| b.kind == kind).count()
    }

    fn chunks(&self, kind: ChunkKind) -> usize {
        self.index
            .blobs
            .iter()
            .filter(|b| b.kind == kind)
            .map(|b| b.chunks.len())
            .sum()
    }

    /// The paragraph SPEC.md quotes.
    fn spec_text(&self) -> String {
        let pt = &self.plaintext;
        let n = pt.len();
        let index_len = u32::from_le_bytes(pt[n - 12..n - 8].try_into().unwrap());
        let (db, lb) = (self.blobs(ChunkKind::Data), self.blobs(ChunkKind::List));
        let (dc, lc) = (self.chunks(ChunkKind::Data), self.chunks(ChunkKind::List));
        assert_eq!(
            index_len as usize,
            5 + (db + lb) * 14 + (dc + lc) * 36,
            "index length = version + count + blob headers + chunk entries"
        );
        format!(
            "Example, generated by `spec_examples_are_current` in \
             `vault-format/tests/spec_examples.rs` (which fails when this \
             paragraph is stale): `testdata::dump_like` ({}) cut with the \
             default chunker under the dedup key `07…07` and packed as a \
             backup packs it makes a pack of {} blobs ({db} of {dc} data \
             chunks, {lb} of {lc} list chunks) whose plaintext is {} bytes. \
             It starts `{}` and ends `{}` (index length 0x{index_len:06x} = \
             {} bytes = 5 + {} × 14 + {} × 36).",
            size(self.stream_len),
            db + lb,
            thousands(n as u64),
            hex_spaced(&pt[..8]),
            hex_spaced(&pt[n - 12..]),
            thousands(u64::from(index_len)),
            db + lb,
            dc + lc,
        )
    }
}
