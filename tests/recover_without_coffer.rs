//! Recovery without coffer: a person holding the identity file, the spec
//! and the standard `age` and `zstd` tools can get a backed-up file back.
//!
//! The `coffer` binary only *writes* here (init, backup). Everything read
//! back goes through the Debian `age` and `zstd` binaries and a pack parser
//! written in this file from the layout documented in
//! `vault-format/src/pack.rs` and `vault-format/src/chunklist.rs`; neither
//! coffer nor vault-format is linked for reading. BLAKE3 (keyed, with a
//! `derive_key` sub-key) checks every chunk id, as a recovering person would
//! with `b3sum` or any BLAKE3 library.
//!
//! Needs `age` and `zstd` on PATH (`apt-get install age zstd`); it fails,
//! rather than skips, without them.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `keys.rs`: the context that derives the chunk-id key from the dedup key.
const CHUNK_ID_CONTEXT: &str = "coffer vault 2026-11 chunk id v1";

const PACK_HEADER: &[u8; 8] = b"CFRPACK\x01";
const PACK_TRAILER: &[u8; 8] = b"CFRPIDX\x01";
const LIST_HEADER: &[u8; 8] = b"CFRLIST\x01";

/// Fails (not skips) when a standard tool the recovery relies on is missing.
fn require_tool(name: &str) {
    match Command::new(name).arg("--version").output() {
        Ok(_) => {}
        Err(e) => {
            panic!("the recovery test needs the `{name}` binary ({e}): apt-get install age zstd")
        }
    }
}

/// Runs a command, feeding `stdin` from a thread (so a full stdout pipe can
/// never deadlock us), and returns its stdout; panics with its stderr on
/// failure.
fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Vec<u8> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e} (apt-get install age zstd?)"));
    let feeder = stdin.map(|data| {
        let data = data.to_vec();
        let mut pipe = child.stdin.take().expect("piped stdin");
        std::thread::spawn(move || {
            // The tool may exit early on bad input; its status says so.
            let _ = pipe.write_all(&data);
        })
    });
    let out = child.wait_with_output().expect("wait for child");
    if let Some(f) = feeder {
        f.join().expect("stdin feeder");
    }
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `coffer` with a private HOME and no inherited coffer settings.
fn coffer(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coffer"));
    c.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env_remove("COFFER_CONFIG")
        .env_remove("COFFER_IDENTITY")
        .env_remove("BACKUP_DIRECTORY");
    c
}

/// `age -d -i IDENTITY [FILE]`.
fn age_decrypt(identity: &Path, file: Option<&Path>, stdin: Option<&[u8]>) -> Vec<u8> {
    let mut c = Command::new("age");
    c.arg("-d").arg("-i").arg(identity);
    if let Some(f) = file {
        c.arg(f);
    }
    run(&mut c, stdin)
}

/// ~5 MiB alternating compressible text and random bytes, with an odd tail.
fn mixed_content() -> Vec<u8> {
    let mut out = Vec::with_capacity(5 * 1024 * 1024 + 20_000);
    // Alternating stretches of compressible rows and incompressible bytes,
    // so the vault holds both zstd and raw blobs.
    let mut rows = vault_format::testdata::Xorshift64::new(7);
    let mut noise = vault_format::testdata::Xorshift64::new(11);
    while out.len() < 5 * 1024 * 1024 + 12_345 {
        let seg = 37_000 + (out.len() % 50_000);
        if (out.len() / 100_000) % 2 == 0 {
            out.extend_from_slice(&rows.dump_like(seg));
        } else {
            out.extend_from_slice(&noise.bytes(seg));
        }
    }
    out.truncate(5 * 1024 * 1024 + 12_345);
    out
}

/// Little-endian reader over a byte slice, panicking on truncation.
struct Le<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Le<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        assert!(self.pos + n <= self.b.len(), "pack index truncated");
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        s
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
}

/// One blob as the index describes it.
struct Blob {
    codec: u8,
    kind: u8,
    offset: usize,
    stored_len: usize,
    raw_len: usize,
    chunks: Vec<([u8; 32], usize)>,
}

/// Parses a pack's plaintext per the layout in `vault-format/src/pack.rs`.
fn parse_pack(pt: &[u8]) -> Vec<Blob> {
    assert!(pt.len() >= 8 + 5 + 12, "pack too short");
    assert_eq!(&pt[..8], PACK_HEADER, "pack header");
    let end = pt.len();
    assert_eq!(&pt[end - 8..], PACK_TRAILER, "pack trailer");
    let index_len = u32::from_le_bytes(pt[end - 12..end - 8].try_into().unwrap()) as usize;
    let index_start = end - 12 - index_len;
    let mut r = Le {
        b: &pt[index_start..end - 12],
        pos: 0,
    };
    assert_eq!(r.u8(), 1, "index version");
    let count = r.u32();
    let mut offset = 8;
    let mut blobs = Vec::new();
    for _ in 0..count {
        let codec = r.u8();
        let kind = r.u8();
        let stored_len = r.u32() as usize;
        let raw_len = r.u32() as usize;
        let n = r.u32();
        let chunks: Vec<([u8; 32], usize)> = (0..n)
            .map(|_| (r.take(32).try_into().unwrap(), r.u32() as usize))
            .collect();
        assert_eq!(
            chunks.iter().map(|c| c.1).sum::<usize>(),
            raw_len,
            "chunk lengths add up to the blob"
        );
        blobs.push(Blob {
            codec,
            kind,
            offset,
            stored_len,
            raw_len,
            chunks,
        });
        offset += stored_len;
    }
    assert_eq!(r.pos, index_len, "index fully consumed");
    assert_eq!(offset, index_start, "blobs are contiguous from offset 8");
    blobs
}

#[test]
fn a_file_is_recovered_with_age_zstd_and_the_spec_alone() {
    require_tool("age");
    require_tool("zstd");

    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let config = d.join("config.toml");
    let vault = d.join("vault");
    let identity = d.join("identity.txt");

    // --- coffer writes: init and one backup. ---
    run(
        coffer(d)
            .arg("--config")
            .arg(&config)
            .arg("init")
            .arg("--local")
            .arg(&vault),
        None,
    );
    assert!(identity.is_file(), "init wrote {}", identity.display());
    let original = mixed_content();
    let input = d.join("dump.bin");
    std::fs::write(&input, &original).unwrap();
    let out = run(
        coffer(d)
            .arg("--config")
            .arg(&config)
            .arg("backup")
            .arg(&input),
        None,
    );
    let snapshot = String::from_utf8(out).unwrap().trim().to_string();
    assert!(
        snapshot.len() == 32 && snapshot.bytes().all(|b| b.is_ascii_hexdigit()),
        "backup printed a snapshot id: {snapshot:?}"
    );

    // --- From here on: age, zstd, BLAKE3 and this file only. ---

    // The dedup key: sealed (ASCII armor) in the plaintext vault config.
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vault.join("config")).unwrap()).unwrap();
    assert_eq!(cfg["format"], "coffer-vault");
    let armored = cfg["dedup_key"].as_str().expect("config.dedup_key");
    assert!(armored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
    let key_text = age_decrypt(&identity, None, Some(armored.as_bytes()));
    let key_hex = String::from_utf8(key_text).unwrap().trim().to_string();
    let push: toml::Table =
        toml::from_str(&std::fs::read_to_string(d.join("push-key.toml")).unwrap()).unwrap();
    assert_eq!(
        push["dedup_key"].as_str(),
        Some(key_hex.as_str()),
        "the sealed dedup key in the vault config is the push key's"
    );
    let dedup_key: [u8; 32] = hex::decode(&key_hex).unwrap().try_into().unwrap();
    let chunk_id_key = blake3::derive_key(CHUNK_ID_CONTEXT, &dedup_key);

    // The manifest.
    let manifest: serde_json::Value = serde_json::from_slice(&age_decrypt(
        &identity,
        Some(&vault.join("snapshots").join(&snapshot)),
        None,
    ))
    .unwrap();
    assert_eq!(manifest["format"], 1);
    assert_eq!(manifest["id"], snapshot.as_str());
    assert_eq!(manifest["raw_size"], original.len() as u64);
    let list_ids: Vec<[u8; 32]> = manifest["chunk_list"]
        .as_array()
        .expect("manifest.chunk_list")
        .iter()
        .map(|v| {
            hex::decode(v.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect();
    assert!(!list_ids.is_empty());

    // Every pack: decrypt, parse, decompress, split into chunks.
    let mut chunks: HashMap<[u8; 32], (u8, Vec<u8>)> = HashMap::new();
    let (mut packs, mut zstd_blobs, mut raw_blobs) = (0, 0, 0);
    for fan in std::fs::read_dir(vault.join("packs")).unwrap() {
        let fan = fan.unwrap().path();
        for pack in std::fs::read_dir(&fan).unwrap() {
            let path: PathBuf = pack.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            let ciphertext = std::fs::read(&path).unwrap();
            assert_eq!(
                blake3::hash(&ciphertext).to_hex().as_str(),
                name,
                "a pack's name is the BLAKE3 of its ciphertext"
            );
            assert_eq!(fan.file_name().unwrap().to_str().unwrap(), &name[..2]);
            let pt = age_decrypt(&identity, Some(&path), None);
            packs += 1;
            for blob in parse_pack(&pt) {
                let stored = &pt[blob.offset..blob.offset + blob.stored_len];
                let raw = match blob.codec {
                    0 => {
                        raw_blobs += 1;
                        stored.to_vec()
                    }
                    1 => {
                        zstd_blobs += 1;
                        run(Command::new("zstd").args(["-d", "-c"]), Some(stored))
                    }
                    c => panic!("unknown codec {c}"),
                };
                assert_eq!(raw.len(), blob.raw_len, "blob decodes to raw_len bytes");
                let mut at = 0;
                for (id, len) in &blob.chunks {
                    let data = &raw[at..at + len];
                    assert_eq!(
                        blake3::keyed_hash(&chunk_id_key, data).as_bytes(),
                        id,
                        "chunk id = keyed BLAKE3 under derive_key({CHUNK_ID_CONTEXT:?}, dedup key)"
                    );
                    chunks.insert(*id, (blob.kind, data.to_vec()));
                    at += len;
                }
            }
        }
    }
    assert!(packs > 0);
    assert!(
        zstd_blobs > 0 && raw_blobs > 0,
        "the input exercises both codecs ({zstd_blobs} zstd, {raw_blobs} raw)"
    );

    // The chunk list: list chunks in manifest order.
    let mut list = Vec::new();
    for id in &list_ids {
        let (kind, data) = chunks.get(id).expect("every list chunk is in a pack");
        assert_eq!(*kind, 1, "list chunks are stored with kind 1");
        list.extend_from_slice(data);
    }
    assert_eq!(&list[..8], LIST_HEADER, "chunk list header");
    let entries = &list[8..];
    assert_eq!(entries.len() % 36, 0, "whole 36-byte entries");
    assert_eq!(manifest["chunk_count"], (entries.len() / 36) as u64);

    // The data, in order.
    let mut recovered = Vec::with_capacity(original.len());
    for e in entries.chunks_exact(36) {
        let id: [u8; 32] = e[..32].try_into().unwrap();
        let len = u32::from_le_bytes(e[32..].try_into().unwrap()) as usize;
        let (kind, data) = chunks.get(&id).expect("every data chunk is in a pack");
        assert_eq!(*kind, 0, "data chunks are stored with kind 0");
        assert_eq!(data.len(), len);
        recovered.extend_from_slice(data);
    }
    assert_eq!(recovered.len(), original.len());
    assert!(recovered == original, "recovered bytes equal the original");
}
