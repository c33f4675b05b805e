//! Vaults that coffer once wrote must restore, byte for byte, with every
//! later version. tests/fixtures/vaults holds small committed vaults (the
//! tier's objects and their keys, never a catalog: the vault is the truth):
//! one with today's chunker and one with the 4/16/64 KiB chunker of vaults
//! made before 04abb03. Each test copies one and attaches to it as a host
//! that kept only the vault and the identity would (settings file written
//! by hand, `coffer index rebuild --identity`), then checks it through the
//! binary against the data made again from its seed
//! (tests/support/testdata.rs).
//!
//! The fixtures are made once by the ignored test `make_fixtures` and
//! committed; the normal run only reads them (see
//! tests/fixtures/vaults/README.md).

#[path = "support/cli.rs"]
mod cli_support;
#[path = "support/testdata.rs"]
mod testdata;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cli_support::*;
use serde_json::Value;
use vault_format::chunker::{ChunkerParams, ALGORITHM_FASTCDC_V2020};
use vault_format::config::VaultConfig;

/// Today's chunker (2/8/32 KiB), written out: the fixture keeps these
/// sizes even when the default changes.
fn chunker_8k() -> ChunkerParams {
    chunker(2048, 8192, 32_768)
}

/// The chunker of vaults made before 04abb03 (4/16/64 KiB).
fn chunker_16k() -> ChunkerParams {
    chunker(4096, 16_384, 65_536)
}

fn chunker(min_size: u32, avg_size: u32, max_size: u32) -> ChunkerParams {
    ChunkerParams {
        algorithm: ALGORITHM_FASTCDC_V2020.to_string(),
        min_size,
        avg_size,
        max_size,
        normalization: 1,
    }
}

/// A fixture vault: its directory and the chunker it was made with.
struct Fixture {
    name: &'static str,
    chunker: fn() -> ChunkerParams,
}

const FIXTURES: [Fixture; 2] = [
    Fixture {
        name: "chunks-8k",
        chunker: chunker_8k,
    },
    Fixture {
        name: "chunks-16k",
        chunker: chunker_16k,
    },
];

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vaults")
        .join(name)
}

fn vault_config(vault: &Path) -> VaultConfig {
    VaultConfig::decode(&std::fs::read(vault.join("config")).unwrap()).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A private copy of fixture `name`, attached the way an operator who kept
/// only the vault and the keys would: the vault and the key files copied,
/// a settings file written by hand (its format is pinned here too), and the
/// catalog rebuilt from the vault with `coffer index rebuild --identity`.
fn rebuilt_copy(name: &str) -> Vault {
    let src = fixture_dir(name);
    let v = Vault::uninit();
    copy_dir(&src.join("vault"), &v.vault);
    std::fs::create_dir_all(&v.dir).unwrap();
    for key in ["identity.txt", "push-key.toml"] {
        let to = v.dir.join(key);
        std::fs::copy(src.join(key), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let toml_path = |p: &Path| toml::Value::String(p.to_str().unwrap().into()).to_string();
    let settings = format!(
        "vault_id = \"{}\"\ncatalog = {}\npush_key = {}\nidentity = {}\n\n[local]\npath = {}\n",
        vault_config(&v.vault).vault_id.to_hex(),
        toml_path(&v.dir.join("catalog.sqlite")),
        toml_path(&v.dir.join("push-key.toml")),
        toml_path(&v.identity()),
        toml_path(&v.vault),
    );
    std::fs::write(&v.config, settings).unwrap();

    let identity = v.identity();
    let o = v.ok(&[
        "--json",
        "index",
        "rebuild",
        "--identity",
        identity.to_str().unwrap(),
    ]);
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["snapshots"], 3, "{name}: {rep}");
    assert_eq!(rep["packs"], v.pack_files().len(), "{name}: {rep}");
    assert_eq!(rep["problems"], serde_json::json!([]), "{name}: {rep}");
    v
}

/// The fixture's three snapshots, as listed after the rebuild.
struct Snapshots {
    night_1: Value,
    night_2: Value,
    volume: Value,
}

fn snapshots(v: &Vault) -> Snapshots {
    let list = v.snapshots();
    assert_eq!(list.len(), 3, "{list:?}");
    let find = |job: &str, tags: Value| -> Value {
        list.iter()
            .find(|s| s["job"] == job && s["tags"] == tags)
            .unwrap_or_else(|| panic!("no snapshot of job {job} tagged {tags}: {list:?}"))
            .clone()
    };
    Snapshots {
        night_1: find("db", serde_json::json!(["night-1"])),
        night_2: find("db", serde_json::json!(["night-2"])),
        volume: find("volume", serde_json::json!([])),
    }
}

fn id(s: &Value) -> &str {
    s["id"].as_str().unwrap()
}

/// Rebuilds the catalog of fixture `name`, restores every snapshot (files
/// to a file and to stdout, the volume to a directory) and compares each
/// with its data made again; `verify --read-data` must find nothing.
fn restores_byte_for_byte(name: &str) {
    let v = rebuilt_copy(name);
    let s = snapshots(&v);
    for (snap, data) in [
        (&s.night_1, testdata::night_1()),
        (&s.night_2, testdata::night_2()),
    ] {
        assert_eq!(snap["kind"], "file", "{snap}");
        assert_eq!(snap["raw_size"], data.len(), "{snap}");
        v.assert_restores(id(snap), &data);
        v.assert_restores_stdout(id(snap), &[], &data);
    }

    assert_eq!(s.volume["kind"], "tar", "{}", s.volume);
    let want = v.work.join("volume");
    testdata::make_tree(&want);
    let to = v.work.join("restored-volume");
    let o = v.restore_to(id(&s.volume), &to, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let (want, got) = (tree(&want), tree(&to));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "{name}: the restored volume has other entries"
    );
    for (k, w) in &want {
        assert!(*w == got[k], "{name}: {k} differs after restore");
    }

    let o = v.ok(&["--json", "verify", "--read-data"]);
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["problems"], serde_json::json!([]), "{name}: {rep}");
}

/// A new backup into fixture `name` cuts with the chunker in its config:
/// night one's dump again is all old chunks.
fn new_backup_dedups_against_old_chunks(name: &str) {
    let v = rebuilt_copy(name);
    let night_1 = snapshots(&v).night_1;
    let input = v.work.join("night-1.dump");
    let data = testdata::night_1();
    std::fs::write(&input, &data).unwrap();
    let rep = v.backup_json(&["--job", "db", input.to_str().unwrap()]);
    assert_eq!(rep["new_chunks"], 0, "{name}: {rep}");
    assert_eq!(
        rep["reused_chunks"], night_1["chunk_count"],
        "{name}: {rep}"
    );
    assert_eq!(rep["packs"], 0, "{name}: {rep}");
    v.assert_restores(rep["id"].as_str().unwrap(), &data);
}

#[test]
fn vault_made_with_8k_chunks_restores_byte_for_byte() {
    restores_byte_for_byte("chunks-8k");
}

#[test]
fn vault_made_with_16k_chunks_restores_byte_for_byte() {
    restores_byte_for_byte("chunks-16k");
}

#[test]
fn backup_into_the_8k_vault_dedups_against_its_chunks() {
    new_backup_dedups_against_old_chunks("chunks-8k");
}

#[test]
fn backup_into_the_16k_vault_still_cuts_16k_chunks() {
    new_backup_dedups_against_old_chunks("chunks-16k");
}

#[test]
fn each_fixture_config_records_the_chunker_it_was_made_with() {
    for Fixture { name, chunker } in FIXTURES {
        let config = vault_config(&fixture_dir(name).join("vault"));
        assert_eq!(config.chunker, chunker(), "{name}");
    }
}

/// Known answers for tests/support/testdata.rs: if this fails, the data
/// generator changed and no longer makes what the committed fixtures hold.
/// Put it back; never regenerate the fixtures to match.
#[test]
fn fixture_data_is_still_what_the_fixtures_hold() {
    let hex = |b: &[u8]| blake3::hash(b).to_hex().to_string();
    let dir = tempfile::tempdir().unwrap();
    testdata::make_tree(&dir.path().join("volume"));
    let mut listing = String::new();
    for (path, node) in tree(&dir.path().join("volume")) {
        let line = match node {
            Node::Dir { mode } => format!("dir {path} {mode:o}"),
            Node::File { mode, mtime, data } => {
                format!("file {path} {mode:o} {mtime} {}", hex(&data))
            }
            Node::Link { target } => format!("link {path} {}", target.display()),
            Node::Special { .. } => panic!("{path}: the volume has no special files"),
        };
        listing.push_str(&line);
        listing.push('\n');
    }
    assert_eq!(
        [
            hex(&testdata::night_1()),
            hex(&testdata::night_2()),
            hex(listing.as_bytes())
        ],
        [NIGHT_1_BLAKE3, NIGHT_2_BLAKE3, VOLUME_LISTING_BLAKE3],
        "the volume is now:\n{listing}"
    );
}

const NIGHT_1_BLAKE3: &str = "af7326bd36b730ca605cdb70017c924b7857c9c3b0bcc473830d0eb034c4d0aa";
const NIGHT_2_BLAKE3: &str = "2ecc2faf5827f93f2cfdd475a27fd1f228fc7191242e6d479cfde7704ac0c3a0";
const VOLUME_LISTING_BLAKE3: &str =
    "c419adae902a52d09bf1d8db9f8e9d311999e4aec1c8ca155b0417df4c7b25c0";

/// Makes the fixture vaults that are missing, with the library: `init`
/// with the fixture's chunker, then night one's dump, night two's and the
/// volume. An existing fixture is left alone: committed fixtures stand for
/// what an earlier coffer wrote and are never made again. Run with
/// `cargo test --test backward_compatibility -- --ignored make_fixtures`.
#[test]
#[ignore = "writes tests/fixtures/vaults; run by hand (tests/fixtures/vaults/README.md)"]
fn make_fixtures() {
    for Fixture { name, chunker } in FIXTURES {
        if fixture_dir(name).exists() {
            eprintln!("{name}: exists, left alone");
        } else {
            make_fixture(name, chunker());
            eprintln!("{name}: made");
        }
    }
}

fn make_fixture(name: &str, chunker: ChunkerParams) {
    use coffer::commands::backup::backup;
    use coffer::commands::init::{init, InitOptions};
    use coffer::pipeline::backup::BackupRequest;

    let dest = fixture_dir(name);
    assert!(
        !dest.exists(),
        "{} exists: committed fixtures are never made again",
        dest.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host");
    let settings = host.join("config.toml");
    init(&InitOptions {
        settings_path: settings.clone(),
        local: dest.join("vault"),
        recipients: vec![],
        chunker: chunker.clone(),
        pack: vault_format::pack::PackParams::default(),
        s3: None,
        identity: None,
    })
    .unwrap();
    let vault = coffer::Vault::open(&settings).unwrap();

    let inputs = tmp.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    std::fs::write(inputs.join("night-1.dump"), testdata::night_1()).unwrap();
    std::fs::write(inputs.join("night-2.dump"), testdata::night_2()).unwrap();
    testdata::make_tree(&inputs.join("volume"));
    for (input, job, tags) in [
        ("night-1.dump", "db", vec!["night-1".to_string()]),
        ("night-2.dump", "db", vec!["night-2".to_string()]),
        ("volume", "volume", vec![]),
    ] {
        let path = inputs.join(input);
        let mut source = coffer::source::open(path.to_str().unwrap()).unwrap();
        let req = BackupRequest {
            job: job.to_string(),
            tags,
            facts: Default::default(),
        };
        backup(&vault, source.as_mut(), &req, &coffer::progress::Silent).unwrap();
    }

    for key in ["identity.txt", "push-key.toml"] {
        std::fs::copy(host.join(key), dest.join(key)).unwrap();
    }
    // The spool directory is empty, and git keeps no empty directories.
    std::fs::remove_dir(dest.join("vault/tmp")).unwrap();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let dirty = if git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " with uncommitted changes"
    };
    std::fs::write(
        dest.join("made-with.txt"),
        format!(
            "coffer {} at git {}{dirty}, {}\nchunker {}/{}/{} bytes, normalization {}\n",
            env!("CARGO_PKG_VERSION"),
            git(&["rev-parse", "--short", "HEAD"]),
            coffer::util::now_rfc3339(),
            chunker.min_size,
            chunker.avg_size,
            chunker.max_size,
            chunker.normalization
        ),
    )
    .unwrap();
}
