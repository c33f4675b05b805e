//! End-to-end tests of the `coffer` binary against a local-directory vault:
//! round trips, deduplication, confidentiality of the tier, key handling,
//! damage detection, catalog rebuild, failed sources, snapshot selection and
//! file modes. Every test gets its own vault, `HOME` and scratch directory.

#[path = "support/cli.rs"]
mod cli_support;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cli_support::*;
use serde_json::Value;

const MB: usize = 1_000_000;

// ---------------------------------------------------------------------------
// Helpers local to these tests.

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// A small tree with nested directories, a symlink, an empty file, a file
/// with mode 0640 and an empty directory.
fn make_tree(root: &Path, seed: u64) {
    std::fs::create_dir_all(root.join("nested/deeper")).unwrap();
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    write_random_file(&root.join("top.bin"), seed, 300_000);
    write_random_file(&root.join("nested/deeper/big.bin"), seed + 1, 3 * MB);
    std::fs::write(root.join("nested/note.txt"), b"a note\n").unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join("secret.conf"), b"password = hunter2\n").unwrap();
    set_mode(&root.join("secret.conf"), 0o640);
    set_mode(&root.join("nested/deeper"), 0o750);
    set_mode(&root.join("nested/deeper/big.bin"), 0o600);
    std::os::unix::fs::symlink("top.bin", root.join("link-to-top")).unwrap();
    std::os::unix::fs::symlink("../nowhere", root.join("nested/dangling")).unwrap();
}

/// Names of the entries in `dir`.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

// ---------------------------------------------------------------------------
// 1. Round trips.

#[test]
fn file_round_trip_spans_several_packs_and_restores_identical_bytes() {
    let v = Vault::new();
    let input = v.work.join("db.dump");
    let data = write_random_file(&input, 1, 45 * MB);
    let rep = v.backup_json(&["--job", "db", "--tag", "nightly", input.to_str().unwrap()]);
    let id = rep["id"].as_str().unwrap().to_string();
    assert!(is_hex(&id, 32), "{rep}");
    assert_eq!(rep["kind"], "file");
    assert_eq!(rep["job"], "db");
    assert_eq!(u(&rep, "raw_size"), data.len() as u64);
    assert!(
        u(&rep, "packs") >= 2,
        "45 MB should fill several packs: {rep}"
    );
    assert_eq!(v.pack_files().len() as u64, u(&rep, "packs"));

    let list = v.snapshots();
    assert_eq!(list.len(), 1, "{list:?}");
    let s = &list[0];
    assert_eq!(s["id"], id.as_str());
    assert_eq!(s["job"], "db");
    assert_eq!(s["kind"], "file");
    assert_eq!(u(s, "raw_size"), data.len() as u64);
    assert_eq!(u(s, "chunk_count"), u(&rep, "new_chunks"));
    assert_eq!(s["tags"], serde_json::json!(["nightly"]));
    assert_eq!(
        v.manifest_ids().into_iter().collect::<Vec<_>>(),
        vec![id.clone()]
    );

    v.assert_restores(&id, &data);
    v.assert_restores_stdout("latest", &[], &data);
}

#[test]
fn stdin_round_trip_restores_identical_bytes() {
    let v = Vault::new();
    let data = random_bytes(2, 6 * MB);
    let o = v.run_stdin(&["--json", "backup", "--job", "pipe", "-"], &data);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["kind"], "stdin");
    assert_eq!(u(&rep, "raw_size"), data.len() as u64);
    let id = rep["id"].as_str().unwrap();
    v.assert_restores_stdout(id, &[], &data);
    v.assert_restores(id, &data);

    // An empty stream is a valid (empty) snapshot too.
    let empty = v.backup_stdin(b"", &["--job", "empty"]);
    v.assert_restores_stdout(&empty, &[], b"");
    v.assert_restores(&empty, b"");
}

#[test]
fn exec_commits_a_commands_output_only_when_it_exits_0() {
    let v = Vault::new();
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(3, 3 * MB);
    let input = dir.path().join("input");
    std::fs::write(&input, &data).unwrap();
    let cat = format!("cat {}", input.display());

    let o = v.ok(&[
        "--json", "backup", "--job", "app", "--exec", "--", "sh", "-c", &cat,
    ]);
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["kind"], "command");
    let id = rep["id"].as_str().unwrap();
    v.assert_restores(id, &data);

    // The same output, then the producer fails: through a pipe that would
    // be a complete-looking stream; under --exec nothing is committed.
    for (script, says) in [
        (format!("{cat}; exit 3"), "exited with status 3"),
        (
            format!("head -c 1000000 {}; kill -9 $$", input.display()),
            "killed by signal 9",
        ),
    ] {
        let o = v.fails(
            &[
                "backup", "--job", "app", "--exec", "--", "sh", "-c", &script,
            ],
            1,
        );
        let err = stderr(&o);
        assert!(
            err.contains(says) && err.contains("no snapshot was committed"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let o = v.fails(
        &[
            "backup",
            "--job",
            "app",
            "--exec",
            "--",
            "/nonexistent/producer",
        ],
        1,
    );
    assert!(stderr(&o).contains("cannot start it"), "{}", stderr(&o));
    let snaps = v.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    // A path and --exec together, or --exec without a command: refused by
    // the parser (status 2).
    v.fails(&["backup", "--exec"], 2);
    v.fails(
        &["backup", input.to_str().unwrap(), "--exec", "--", "true"],
        2,
    );
}

#[test]
fn directory_round_trip_keeps_contents_modes_symlinks_and_empty_entries() {
    let v = Vault::new();
    let src = v.work.join("volume");
    make_tree(&src, 3);
    let rep = v.backup_json(&["--job", "vol", src.to_str().unwrap()]);
    assert_eq!(rep["kind"], "tar");
    let id = rep["id"].as_str().unwrap();

    let to = v.work.join("restored-volume");
    let o = v.restore_to(id, &to, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let (want, got) = (tree(&src), tree(&to));
    assert!(want.len() >= 9, "{:?}", want.keys());
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (k, w) in &want {
        assert!(*w == got[k], "{k} differs after restore");
    }
    assert_eq!(mode_of(&to.join("secret.conf")), 0o640);
    assert_eq!(mode_of(&to.join("nested/deeper")), 0o750);
    assert_eq!(std::fs::metadata(to.join("empty")).unwrap().len(), 0);
    assert_eq!(
        std::fs::read_link(to.join("link-to-top")).unwrap(),
        Path::new("top.bin")
    );
    assert!(to.join("empty-dir").is_dir());

    // Into an existing empty directory works too, and leaves no temporaries.
    let empty = v.work.join("empty-target");
    std::fs::create_dir(&empty).unwrap();
    let o = v.restore_to(id, &empty, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(tree(&empty) == want);
    assert!(
        entries(&v.work)
            .iter()
            .all(|n| !n.contains("coffer-partial")),
        "{:?}",
        entries(&v.work)
    );
}

#[test]
fn directory_round_trip_keeps_directory_mtimes() {
    // docs/cli.md: directories are archived with "ownership, modes and
    // mtimes kept".
    let v = Vault::new();
    let src = v.work.join("volume");
    make_tree(&src, 30);
    let past = std::time::UNIX_EPOCH + std::time::Duration::from_secs(981_173_106);
    // Deepest first: setting a child's time does not touch its parent's.
    for d in ["nested/deeper", "nested", "empty-dir"] {
        std::fs::File::open(src.join(d))
            .unwrap()
            .set_times(std::fs::FileTimes::new().set_modified(past))
            .unwrap();
    }
    let id = v.backup(&src, &[]);
    let to = v.work.join("restored");
    let o = v.restore_to(&id, &to, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for d in ["nested/deeper", "nested", "empty-dir"] {
        let want = std::fs::metadata(src.join(d)).unwrap().mtime();
        assert_eq!(want, 981_173_106);
        let got = std::fs::metadata(to.join(d)).unwrap().mtime();
        assert_eq!(got, want, "mtime of directory {d} was not restored");
    }
}

#[test]
fn directory_with_a_fifo_restores_it_in_place_as_a_fifo() {
    use std::os::unix::fs::FileTypeExt;
    let v = Vault::new();
    let src = v.work.join("volume");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("data.txt"), b"data").unwrap();
    let fifo = std::ffi::CString::new(src.join("pipe").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    let id = v.backup(&src, &[]);
    let to = v.work.join("restored");
    let o = v.restore_to(&id, &to, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let got: Vec<String> = tree(&to).into_keys().collect();
    assert_eq!(
        got,
        vec!["data.txt", "pipe"],
        "the FIFO should come back as {}/pipe",
        to.display()
    );
    let ft = std::fs::symlink_metadata(to.join("pipe"))
        .unwrap()
        .file_type();
    assert!(ft.is_fifo(), "pipe restored as {ft:?}, not a FIFO");
    assert_eq!(tree(&to), tree(&src), "mode and mtime of the FIFO too");
}

// ---------------------------------------------------------------------------
// 2. Deduplication.

#[test]
fn backing_up_the_same_file_twice_stores_nothing_new() {
    let v = Vault::new();
    let input = v.work.join("same.bin");
    let data = write_random_file(&input, 4, 24 * MB);
    let first = v.backup_json(&[input.to_str().unwrap()]);
    let packs_before = v.pack_files();
    let second = v.backup_json(&[input.to_str().unwrap()]);
    assert!(u(&first, "new_chunks") > 100, "{first}");
    assert_eq!(u(&second, "new_chunks"), 0, "{second}");
    assert_eq!(
        u(&second, "reused_chunks"),
        u(&first, "new_chunks") + u(&first, "reused_chunks"),
        "{second}"
    );
    assert!(u(&second, "stored_size") < 64 * 1024, "{second}");
    assert_eq!(u(&second, "packs"), 0, "{second}");
    assert_eq!(v.pack_files(), packs_before, "no new pack objects");
    assert_ne!(first["id"], second["id"]);
    v.assert_restores(first["id"].as_str().unwrap(), &data);
    v.assert_restores(second["id"].as_str().unwrap(), &data);
}

#[test]
fn the_same_bytes_through_a_pipe_dedup_fully_against_a_file() {
    // Chunk boundaries must not depend on how the input arrives (one big
    // file read vs. a pipe's small, irregular reads across block edges).
    let v = Vault::new();
    let input = v.work.join("f.bin");
    let data = write_random_file(&input, 21, 20 * MB + 12_345);
    let first = v.backup_json(&[input.to_str().unwrap()]);
    let o = v.run_stdin(&["--json", "backup", "-"], &data);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let second: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(u(&first, "new_chunks") > 500, "{first}");
    assert_eq!(u(&second, "new_chunks"), 0, "{second}");
    assert_eq!(u(&second, "reused_chunks"), u(&first, "new_chunks"));
}

#[test]
fn inserting_bytes_mid_file_stores_only_a_few_new_chunks() {
    let v = Vault::new();
    let (p1, p2) = (v.work.join("v1.bin"), v.work.join("v2.bin"));
    let v1 = write_random_file(&p1, 5, 50 * MB);
    let mut v2 = v1[..25 * MB].to_vec();
    v2.extend_from_slice(b"INSERTED!");
    v2.extend_from_slice(&v1[25 * MB..]);
    std::fs::write(&p2, &v2).unwrap();

    let r1 = v.backup_json(&[p1.to_str().unwrap()]);
    let r2 = v.backup_json(&[p2.to_str().unwrap()]);
    let new = u(&r2, "new_chunks");
    assert!((1..=4).contains(&new), "new_chunks {new}: {r2}");
    assert!(
        u(&r2, "reused_chunks") + 4 >= u(&r1, "new_chunks"),
        "{r1} {r2}"
    );
    assert!(u(&r2, "stored_size") < 512 * 1024, "{r2}");
    v.assert_restores(r1["id"].as_str().unwrap(), &v1);
    v.assert_restores(r2["id"].as_str().unwrap(), &v2);
}

/// A file restore writes chunks out of order (blob by blob, see
/// `pipeline::restore_file`); stdout gets them in order. Both must give the
/// same bytes for a snapshot that interleaves old and new blobs and repeats
/// chunks at many offsets, and for a tiny snapshot in a larger vault
/// (resolved by catalog lookups rather than a scan of the chunk table).
#[test]
fn file_and_stdout_restores_agree_on_interleaved_repeated_and_tiny_snapshots() {
    let v = Vault::new();
    let p1 = v.work.join("n1.bin");
    let n1 = write_random_file(&p1, 31, 6 * MB);
    let mut n2 = n1.clone();
    for i in (0..n2.len()).step_by(300_000) {
        n2[i] ^= 0xff;
    }
    let block = random_bytes(32, 100_000);
    for _ in 0..40 {
        n2.extend_from_slice(&block);
    }
    let p2 = v.work.join("n2.bin");
    std::fs::write(&p2, &n2).unwrap();
    let tiny = random_bytes(33, 3_000);
    let p3 = v.work.join("tiny.bin");
    std::fs::write(&p3, &tiny).unwrap();

    let r1 = v.backup_json(&[p1.to_str().unwrap()]);
    let r2 = v.backup_json(&[p2.to_str().unwrap()]);
    let r3 = v.backup_json(&[p3.to_str().unwrap()]);
    assert!(
        u(&r2, "reused_chunks") > 100,
        "night 2 reuses night 1: {r2}"
    );
    // 20 edits cost at most ~40 chunks and the 4 MB of repeats one period's
    // worth (<= 100 KB / 2 KiB) plus a phase-in: the rest of the ~500
    // chunks of the repeats are the same chunks at other offsets.
    assert!(
        u(&r2, "new_chunks") < 200,
        "the repeated block gives repeated chunks: {r2}"
    );
    for (r, data) in [(&r1, &n1), (&r2, &n2), (&r3, &tiny)] {
        let id = r["id"].as_str().unwrap();
        v.assert_restores(id, data);
        v.assert_restores_stdout(id, &[], data);
    }
}

// ---------------------------------------------------------------------------
// 3. Confidentiality of the tier.

#[test]
fn tier_holds_no_plaintext_names_or_dedup_key() {
    let v = Vault::new();
    const MARKER: &str = "COFFER-PLAINTEXT-MARKER-7f3a9c";
    // Incompressible data with the marker every 64 KiB, so that an
    // unencrypted (even compressed) pack would still show it.
    let mut data = Vec::new();
    for i in 0..48u64 {
        data.extend_from_slice(MARKER.as_bytes());
        data.extend_from_slice(&random_bytes(600 + i, 64 * 1024));
    }
    let input = v.work.join("FILENAME-MARKER-e1d2.sql");
    std::fs::write(&input, &data).unwrap();
    assert!(contains_ascii(&data, MARKER));
    let id = v.backup(
        &input,
        &["--job", "JOBNAME-MARKER-5b6c", "--tag", "TAG-MARKER-0a9d"],
    );
    v.assert_restores(&id, &data);

    let push = std::fs::read_to_string(v.dir.join("push-key.toml")).unwrap();
    let dedup_key = push
        .lines()
        .find_map(|l| l.strip_prefix("dedup_key = "))
        .expect("push-key.toml has a dedup_key")
        .trim_matches('"')
        .to_string();
    assert!(is_hex(&dedup_key, 64), "{dedup_key}");

    let files = all_files(&v.vault);
    assert!(files.iter().any(|f| f.ends_with("config")));
    assert!(files.iter().any(|f| f.starts_with(v.vault.join("packs"))));
    assert!(files
        .iter()
        .any(|f| f.starts_with(v.vault.join("snapshots"))));
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for needle in [
            MARKER,
            "FILENAME-MARKER-e1d2",
            "JOBNAME-MARKER-5b6c",
            "TAG-MARKER-0a9d",
            dedup_key.as_str(),
            &dedup_key.to_uppercase(),
        ] {
            assert!(
                !contains_ascii(&bytes, needle),
                "{} contains {needle:?} in the clear",
                f.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 4. Keys.

#[test]
fn restore_without_any_identity_exits_5_and_says_how_to_give_one() {
    let v = Vault::uninit();
    let key = v.work.join("offline-key.txt");
    let recipient = age_keygen(&key);
    let rep = v.init(&["--recipient", &recipient]);
    assert!(rep.get("identity").is_none(), "{rep}");
    assert!(!v.identity().exists(), "init must not write an identity");
    assert_eq!(rep["recipients"], serde_json::json!([recipient]));

    let data = random_bytes(7, 2 * MB);
    let id = v.backup_stdin(&data, &[]);
    let to = v.work.join("out.bin");
    for args in [
        vec!["restore", id.as_str(), "--to", to.to_str().unwrap()],
        vec!["index", "rebuild"],
        vec!["verify", "--read-data"],
    ] {
        let o = v.fails(&args, 5);
        assert_one_error_line(&o);
        let e = stderr(&o);
        assert!(
            e.contains("--identity") && e.contains("COFFER_IDENTITY"),
            "{args:?}: {e}"
        );
    }
    assert!(!to.exists());
    // Verify without --read-data needs no key at all.
    v.ok(&["verify"]);

    // The matching identity opens it, by flag or by environment.
    let by_flag = ["--identity", key.to_str().unwrap()];
    assert_restores_with(v.cmd(), &id, RestoreTo::File(&to), &by_flag, &data);
    let mut by_env = v.cmd();
    by_env.env("COFFER_IDENTITY", &key);
    assert_restores_with(by_env, &id, RestoreTo::Stdout, &[], &data);
}

/// Issue 13 (smaller item): the settings remember where init wrote the
/// identity; once it is moved offline, the error says that is where the
/// settings point and how to name the new place.
#[test]
fn an_identity_moved_away_is_named_with_how_to_point_at_it() {
    let v = Vault::new();
    let data = random_bytes(9, MB);
    let id = v.backup_stdin(&data, &[]);
    let moved = v.work.join("usb-identity.txt");
    std::fs::rename(v.identity(), &moved).unwrap();
    let to = v.work.join("out.bin");
    let o = v.fails(&["restore", &id, "--to", to.to_str().unwrap()], 5);
    assert_one_error_line(&o);
    let e = stderr(&o);
    assert!(
        e.contains(v.identity().to_str().unwrap())
            && e.contains(v.config.to_str().unwrap())
            && e.contains("if you moved it, pass --identity FILE"),
        "{e}"
    );
    let by_flag = ["--identity", moved.to_str().unwrap()];
    assert_restores_with(v.cmd(), &id, RestoreTo::File(&to), &by_flag, &data);
}

#[test]
fn restore_with_the_wrong_identity_exits_5() {
    let v = Vault::new();
    let data = random_bytes(8, MB);
    let id = v.backup_stdin(&data, &[]);
    let wrong = v.work.join("wrong-key.txt");
    age_keygen(&wrong);
    let to = v.work.join("out.bin");

    // --identity overrides the identity init wrote.
    let o = v.fails(
        &[
            "restore",
            &id,
            "--to",
            to.to_str().unwrap(),
            "--identity",
            wrong.to_str().unwrap(),
        ],
        5,
    );
    assert_one_error_line(&o);
    assert!(stderr(&o).contains("does not open vault"), "{}", stderr(&o));
    assert!(!to.exists());
    assert_eq!(entries(&v.work), vec!["wrong-key.txt"]);

    // So does COFFER_IDENTITY.
    let o = v
        .cmd()
        .env("COFFER_IDENTITY", &wrong)
        .args(["restore", &id, "--to", to.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(!to.exists());

    v.fails(
        &["index", "rebuild", "--identity", wrong.to_str().unwrap()],
        5,
    );
    // The right (default) identity still works.
    v.assert_restores(&id, &data);
}

// ---------------------------------------------------------------------------
// 5. Damaged packs.

/// Backs up 45 MB, damages its first pack with `damage`, and checks that
/// restore exits 4 naming the pack and snapshot without leaving any file,
/// and that verify exits 4 naming the pack as `verdict`.
fn damaged_pack_is_reported(damage: impl Fn(&Path), verdict: &str) {
    let v = Vault::new();
    let input = v.work.join("input.bin");
    let data = write_random_file(&input, 9, 45 * MB);
    let (sid, packs) = v.backup_verbose(&input, &[]);
    assert!(packs.len() >= 2, "{packs:?}");
    let o = v.ok(&["verify"]);
    assert!(stderr(&o).contains("no problems"), "{}", stderr(&o));
    v.ok(&["verify", "--read-data"]);
    v.assert_restores(&sid, &data);

    let victim = &packs[0];
    let path = v.pack_path(victim);
    assert!(path.is_file(), "{}", path.display());
    damage(&path);

    let out_dir = v.work.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let to = out_dir.join("restored.bin");
    let o = v.restore_to(&sid, &to, &[]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert_one_error_line(&o);
    let e = stderr(&o);
    assert!(
        e.contains(victim.as_str()),
        "error should name pack {victim}: {e}"
    );
    assert!(e.contains(&sid), "error should name snapshot {sid}: {e}");
    assert!(!to.exists(), "a failed restore must not leave its target");
    assert_eq!(entries(&out_dir), Vec::<String>::new(), "partial file left");

    // To stdout it fails the same way (and says so in the status).
    let o = v.fails(&["restore", &sid, "--to", "-"], 4);
    assert!(stderr(&o).contains(victim.as_str()));

    let o = v.fails(&["verify"], 4);
    let e = stderr(&o);
    let line = e
        .lines()
        .find(|l| l.contains(victim.as_str()))
        .unwrap_or_else(|| panic!("verify should name pack {victim}: {e}"));
    assert!(
        line.contains(verdict) && line.contains("tier local"),
        "{line}"
    );
    assert!(
        !packs[1..].iter().any(|p| e.contains(p.as_str())),
        "verify blamed an intact pack: {e}"
    );
    let o = v.fails(&["--json", "verify"], 4);
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["problems"].as_array().unwrap().len(), 1, "{rep}");
    v.fails(&["verify", "--read-data"], 4);
}

#[test]
fn restore_of_pack_with_flipped_byte_names_pack_and_snapshot_and_leaves_nothing() {
    damaged_pack_is_reported(
        |p| {
            let mut b = std::fs::read(p).unwrap();
            let mid = b.len() / 2;
            b[mid] ^= 0x40;
            std::fs::write(p, b).unwrap();
        },
        "corrupt",
    );
}

#[test]
fn restore_of_truncated_pack_names_pack_and_snapshot_and_leaves_nothing() {
    damaged_pack_is_reported(
        |p| {
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            let len = f.metadata().unwrap().len();
            f.set_len(len / 2).unwrap();
        },
        "corrupt",
    );
}

#[test]
fn restore_of_deleted_pack_names_pack_and_snapshot_and_leaves_nothing() {
    damaged_pack_is_reported(|p| std::fs::remove_file(p).unwrap(), "missing");
}

#[test]
fn restore_of_tree_with_missing_pack_leaves_no_directory() {
    let v = Vault::new();
    let src = v.work.join("volume");
    std::fs::create_dir(&src).unwrap();
    write_random_file(&src.join("data.bin"), 10, 40 * MB);
    std::fs::write(src.join("small.txt"), b"small").unwrap();
    let (sid, packs) = v.backup_verbose(&src, &[]);
    assert!(packs.len() >= 2, "{packs:?}");
    std::fs::remove_file(v.pack_path(&packs[0])).unwrap();

    let out_dir = v.work.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let to = out_dir.join("tree");
    let o = v.restore_to(&sid, &to, &[]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert_one_error_line(&o);
    assert!(stderr(&o).contains(packs[0].as_str()), "{}", stderr(&o));
    assert!(stderr(&o).contains(&sid), "{}", stderr(&o));
    assert_eq!(entries(&out_dir), Vec::<String>::new(), "partial tree left");

    // Into an existing empty directory: it stays, empty.
    let o = v.restore_to(&sid, &out_dir, &[]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(out_dir.is_dir());
    assert_eq!(entries(&out_dir), Vec::<String>::new());
    assert_eq!(entries(&v.work), vec!["out", "volume"]);
}

/// The catalog is only a cache of the vault, but a damaged one must never
/// yield a wrong file: a chunk whose row points at another chunk's bytes,
/// or whose row is gone, fails a restore to a file (exit 4) and leaves
/// nothing, whether the planner scans the chunk table (the large snapshot)
/// or looks chunks up one by one (the small one, in a larger vault).
#[test]
fn a_damaged_catalog_fails_file_restores_and_leaves_nothing() {
    let v = Vault::new();
    let big = v.work.join("big.bin");
    let big_data = write_random_file(&big, 41, 3 * MB);
    let small = v.work.join("small.bin");
    let small_data = write_random_file(&small, 42, 40_000);
    let rb = v.backup_json(&[big.to_str().unwrap()]);
    let rs = v.backup_json(&[small.to_str().unwrap()]);
    let (big_id, small_id) = (rb["id"].as_str().unwrap(), rs["id"].as_str().unwrap());
    v.assert_restores(big_id, &big_data);
    v.assert_restores(small_id, &small_data);

    let db = rusqlite::Connection::open(v.dir.join("catalog.sqlite")).unwrap();
    // (id, offset) of the first two data chunks of the first and of the
    // last data blob: the big and the small snapshot's.
    let first_two = |order: &str| -> Vec<(Vec<u8>, i64)> {
        let sql = format!(
            "SELECT c.id, c.offset FROM chunks c WHERE c.blob =
               (SELECT id FROM blobs WHERE kind = 0 ORDER BY id {order} LIMIT 1)
             ORDER BY c.offset LIMIT 2"
        );
        let mut st = db.prepare(&sql).unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let cases = [(big_id, first_two("ASC")), (small_id, first_two("DESC"))];
    for (sid, chunks) in &cases {
        assert_eq!(chunks.len(), 2, "{sid}: {chunks:?}");
        let (a, b) = (&chunks[0], &chunks[1]);
        let restore_fails = |what: &str| {
            let to = v.work.join("restored.bin");
            let o = v.fails(&["restore", sid, "--to", to.to_str().unwrap()], 4);
            assert_one_error_line(&o);
            assert!(stderr(&o).contains(what), "{sid}: {}", stderr(&o));
            assert!(!to.exists());
            let mut left = entries(&v.work);
            left.sort();
            assert_eq!(left, ["big.bin", "small.bin"], "{sid}: no partial file");
        };
        // Chunk b's row points at chunk a's bytes.
        db.execute(
            "UPDATE chunks SET offset = ?1 WHERE id = ?2",
            rusqlite::params![a.1, b.0],
        )
        .unwrap();
        restore_fails("hash check");
        db.execute(
            "UPDATE chunks SET offset = ?1 WHERE id = ?2",
            rusqlite::params![b.1, b.0],
        )
        .unwrap();
        // Chunk b's row is gone.
        let row: (i64, i64, i64) = db
            .query_row(
                "SELECT blob, offset, length FROM chunks WHERE id = ?1",
                [&b.0],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        db.execute("DELETE FROM chunks WHERE id = ?1", [&b.0])
            .unwrap();
        restore_fails("not in the catalog");
        db.execute(
            "INSERT INTO chunks(id, blob, offset, length) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![b.0, row.0, row.1, row.2],
        )
        .unwrap();
    }
    drop(db);
    v.assert_restores(big_id, &big_data);
    v.assert_restores(small_id, &small_data);
}

#[test]
fn verify_names_a_snapshot_whose_manifest_is_missing() {
    let v = Vault::new();
    let keep = v.backup_stdin(b"kept", &[]);
    let lost = v.backup_stdin(b"lost", &[]);
    v.ok(&["verify"]);
    std::fs::remove_file(v.vault.join("snapshots").join(&lost)).unwrap();
    let o = v.fails(&["verify"], 4);
    let e = stderr(&o);
    assert!(
        e.lines().any(|l| l.contains(&lost)
            && l.contains("manifest")
            && l.contains("missing")
            && l.contains("tier local")),
        "{e}"
    );
    assert!(!e.contains(&keep), "{e}");
}

// ---------------------------------------------------------------------------
// 6. Catalog rebuild.

#[test]
fn index_rebuild_after_catalog_loss_lists_and_restores_every_snapshot() {
    let v = Vault::new();
    let file = v.work.join("db.dump");
    let file_data = write_random_file(&file, 11, 40 * MB);
    let stdin_data = random_bytes(12, 3 * MB);
    let src = v.work.join("volume");
    make_tree(&src, 13);

    let a = v.backup(&file, &["--job", "db", "--tag", "t1"]);
    let b = v.backup_stdin(&stdin_data, &["--job", "logs"]);
    let c = v.backup(&src, &["--job", "vol"]);
    let by_id = |list: Vec<Value>| -> BTreeMap<String, Value> {
        list.into_iter()
            .map(|s| (s["id"].as_str().unwrap().to_string(), s))
            .collect()
    };
    let before = by_id(v.snapshots());
    assert_eq!(before.len(), 3);

    v.delete_catalog();
    assert_eq!(v.snapshots(), Vec::<Value>::new(), "catalog really gone");
    let o = v.ok(&["--json", "index", "rebuild"]);
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(u(&rep, "snapshots"), 3, "{rep}");
    assert_eq!(rep["problems"], serde_json::json!([]), "{rep}");
    assert_eq!(u(&rep, "packs"), v.pack_files().len() as u64, "{rep}");

    let after = by_id(v.snapshots());
    assert_eq!(before, after);

    v.assert_restores(&a, &file_data);
    v.assert_restores(&b, &stdin_data);
    let to = v.work.join("restored-volume");
    let o = v.restore_to(&c, &to, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(tree(&to) == tree(&src), "tree differs after rebuild");
    v.ok(&["verify", "--read-data"]);

    // The chunk index came back too: the same file deduplicates fully.
    let again = v.backup_json(&[file.to_str().unwrap()]);
    assert_eq!(u(&again, "new_chunks"), 0, "{again}");
}

// ---------------------------------------------------------------------------
// 7. Failed sources commit nothing.

#[test]
fn backup_of_missing_path_fails_and_commits_nothing() {
    let v = Vault::new();
    let missing = v.work.join("no-such-file.dump");
    let o = v.fails(&["backup", missing.to_str().unwrap()], 1);
    assert_one_error_line(&o);
    assert!(stderr(&o).contains("no-such-file.dump"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    assert_eq!(v.snapshots(), Vec::<Value>::new());
    assert!(v.manifest_ids().is_empty());
    assert!(v.pack_files().is_empty());
}

#[test]
fn backup_of_directory_whose_archiving_fails_commits_nothing() {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let v = Vault::new();
    let src = v.work.join("volume");
    std::fs::create_dir(&src).unwrap();
    // Archived in name order: 40 MB go through the pipeline (and into
    // packs) before the tar writer meets a file it may not read.
    write_random_file(&src.join("a-data.bin"), 14, 40 * MB);
    let secret = src.join("z-secret");
    std::fs::write(&secret, b"not for coffer").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads anything: run coffer as `nobody`, owning everything but the
    // unreadable file, as a backup of someone else's volume would.
    let as_root = unsafe_free_euid() == 0;
    if as_root {
        chown_tree(v.tmp.path(), 65534);
        std::os::unix::fs::chown(&secret, Some(0), Some(0)).unwrap();
    }
    let mut cmd = v.cmd();
    if as_root {
        cmd.uid(65534).gid(65534);
    }
    let o = cmd
        .args(["-v", "backup", src.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("pack stored"),
        "data reached the tier first: {e}"
    );
    assert!(!e.contains("manifest stored"), "{e}");
    let last = e.lines().last().unwrap();
    assert!(
        last.starts_with("coffer: error: ")
            && last.contains("archiving failed")
            && last.contains("no snapshot was committed"),
        "{e}"
    );
    assert!(o.stdout.is_empty());
    if as_root {
        chown_tree(v.tmp.path(), 0);
    }
    assert_eq!(v.snapshots(), Vec::<Value>::new());
    assert!(v.manifest_ids().is_empty());
    // The orphan packs are intact and harmless.
    v.ok(&["verify"]);

    // Without the unreadable file the same tree backs up, reusing those packs.
    std::fs::remove_file(&secret).unwrap();
    let rep = v.backup_json(&[src.to_str().unwrap()]);
    assert!(u(&rep, "reused_chunks") > 1000, "{rep}");
    let to = v.work.join("restored");
    let o = v.restore_to(rep["id"].as_str().unwrap(), &to, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(tree(&to) == tree(&src));
}

#[test]
fn sockets_in_a_directory_are_skipped_with_a_warning() {
    let v = Vault::new();
    let src = v.work.join("volume");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("data"), b"rows").unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(src.join(".s.PGSQL.5432")).unwrap();
    let o = v.ok(&["--json", "backup", src.to_str().unwrap()]);
    assert!(
        stderr(&o).contains("skipped 1 socket(s)") && stderr(&o).contains(".s.PGSQL.5432"),
        "{}",
        stderr(&o)
    );
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    let to = v.work.join("restored");
    let o = v.restore_to(rep["id"].as_str().unwrap(), &to, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::read(to.join("data")).unwrap(), b"rows");
    assert!(!to.join(".s.PGSQL.5432").exists());
}

fn unsafe_free_euid() -> u32 {
    // /proc/self/status "Uid: real effective ..." — no libc call needed.
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

fn chown_tree(p: &Path, id: u32) {
    std::os::unix::fs::lchown(p, Some(id), Some(id)).unwrap();
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), id);
        }
    }
}

// ---------------------------------------------------------------------------
// 8. Selecting snapshots.

#[test]
fn latest_with_job_picks_that_jobs_snapshot_not_a_newer_one_of_another_job() {
    let v = Vault::new();
    let a = v.backup_stdin(b"job a", &["--job", "a"]);
    let b1 = v.backup_stdin(b"job b 1", &["--job", "b"]);
    v.assert_restores_stdout("latest", &["--job", "a"], b"job a");
    let b2 = v.backup_stdin(b"job b 2", &["--job", "b"]);
    v.assert_restores_stdout("latest", &["--job", "a"], b"job a");

    let o = v.ok(&["--json", "snapshots", "--job", "b"]);
    let list: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    let mut ids: Vec<&str> = list.iter().map(|s| s["id"].as_str().unwrap()).collect();
    ids.sort();
    let mut want = vec![b1.as_str(), b2.as_str()];
    want.sort();
    assert_eq!(ids, want);
    assert!(list.iter().all(|s| s["job"] == "b"));
    assert!(!ids.contains(&a.as_str()));

    let o = v.fails(&["restore", "latest", "--job", "nope", "--to", "-"], 2);
    assert_one_error_line(&o);
    assert!(stderr(&o).contains("no snapshot matches"), "{}", stderr(&o));
    assert!(stderr(&o).contains("nope"), "{}", stderr(&o));
}

#[test]
fn latest_is_the_most_recent_backup_even_within_one_second() {
    let v = Vault::new();
    for i in 0..8 {
        let a = format!("a{i}");
        let b = format!("b{i}");
        v.backup_stdin(a.as_bytes(), &["--job", "a"]);
        v.backup_stdin(b.as_bytes(), &["--job", "b"]);
        // A mismatch shows both values, which name the backup.
        v.assert_restores_stdout("latest", &["--job", "a"], a.as_bytes());
        v.assert_restores_stdout("latest", &[], b.as_bytes());
    }
}

#[test]
fn snapshot_prefixes_resolve_when_unique_and_fail_clearly_otherwise() {
    let v = Vault::new();
    let made: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            let data = format!("snapshot {i}").into_bytes();
            (v.backup_stdin(&data, &[]), data)
        })
        .collect();

    // A unique prefix of 4 or 8 characters, or a full id in either case,
    // selects that snapshot.
    for (id, data) in &made {
        v.assert_restores_stdout(&id[..8], &[], data);
        v.assert_restores_stdout(&id.to_uppercase(), &[], data);
        if made.iter().filter(|(o, _)| o[..4] == id[..4]).count() == 1 {
            v.assert_restores_stdout(&id[..4], &[], data);
        }
    }

    // Unknown ids, and prefixes too short to be meant, are usage errors.
    let (id0, _) = &made[0];
    let last = if id0.ends_with('0') { '1' } else { '0' };
    let unknown = format!("{}{last}", &id0[..31]);
    for q in [unknown.as_str(), "zzzz", &id0[..3], &id0[..1]] {
        let o = v.fails(&["restore", q, "--to", "-"], 2);
        assert_one_error_line(&o);
        let e = stderr(&o);
        assert!(
            e.contains("no snapshot matches") && e.contains(q),
            "{q}: {e}"
        );
        if q.len() < 4 {
            assert!(e.contains("at least 4 hex digits"), "{q}: {e}");
        }
        assert!(o.stdout.is_empty());
    }

    // Two snapshots sharing an 8-digit prefix: plant a copy of a catalog
    // row under such an id (random ids practically never collide).
    let twin = format!("{}{}", &id0[..8], "0".repeat(24));
    assert_ne!(&twin, id0);
    let db = rusqlite::Connection::open(v.dir.join("catalog.sqlite")).unwrap();
    let n = db
        .execute(
            "INSERT INTO snapshots(id, job, kind, created, host, raw_size, stored_size, chunk_count, tags, manifest)
             SELECT ?1, job, kind, created, host, raw_size, stored_size, chunk_count, tags, manifest
             FROM snapshots WHERE id = ?2",
            [&twin, id0],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(db);
    let o = v.fails(&["restore", &id0[..8], "--to", "-"], 2);
    assert_one_error_line(&o);
    let e = stderr(&o);
    assert!(
        e.contains(&format!("{:?}", &id0[..8]))
            && e.contains("matches 2 snapshots")
            && e.contains("give more characters"),
        "{e}"
    );
    assert!(o.stdout.is_empty());
    // The full id still selects the real one.
    v.assert_restores_stdout(id0, &[], &made[0].1);
}

// ---------------------------------------------------------------------------
// 9. Modes.

#[test]
fn key_files_are_0600_and_the_tier_is_private() {
    let v = Vault::uninit();
    let rep = v.init(&[]);
    for k in ["config", "identity", "push_key", "catalog"] {
        let p = PathBuf::from(rep[k].as_str().unwrap());
        assert!(p.starts_with(&v.dir), "{k}: {}", p.display());
        assert_eq!(mode_of(&p), 0o600, "{k} {}", p.display());
    }
    assert_eq!(Path::new(rep["local"].as_str().unwrap()), v.vault);
    let id = v.backup_stdin(&random_bytes(15, 2 * MB), &[]);

    let mut dirs = vec![v.vault.clone()];
    for d in ["packs", "snapshots", "tmp"] {
        dirs.push(v.vault.join(d));
    }
    for p in v.pack_files() {
        dirs.push(p.parent().unwrap().to_path_buf());
    }
    for d in &dirs {
        assert_eq!(mode_of(d), 0o700, "{}", d.display());
    }
    let objects = all_files(&v.vault);
    assert!(objects.contains(&v.vault.join("config")));
    assert!(objects.contains(&v.vault.join("snapshots").join(&id)));
    assert!(objects.len() >= 3, "{objects:?}");
    for f in objects {
        assert_eq!(mode_of(&f), 0o600, "{}", f.display());
    }
}

/// Issue 13, failure 5: init either completes or leaves nothing, and the
/// same command run again succeeds (reporting the vault it made).
#[test]
fn init_that_fails_leaves_nothing_and_init_is_idempotent() {
    let v = Vault::uninit();
    std::fs::create_dir_all(&v.dir).unwrap();
    // The settings cannot be written (a dangling link where they go): the
    // last step fails after the keys and the local tier were written.
    std::os::unix::fs::symlink(v.work.join("nowhere/config.toml"), &v.config).unwrap();
    let local = v.vault.to_str().unwrap();
    let o = v.fails(&["init", "--local", local], 2);
    assert_one_error_line(&o);
    let left: Vec<_> = std::fs::read_dir(&v.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["config.toml"], "only the link: {left:?}");
    assert!(!v.vault.exists(), "the local tier init created is gone");

    std::fs::remove_file(&v.config).unwrap();
    let first = v.init(&[]);
    // Again: the same vault, reported, nothing rewritten.
    let identity = std::fs::read(v.dir.join("identity.txt")).unwrap();
    let again = v.init(&[]);
    assert_eq!(again["vault_id"], first["vault_id"]);
    assert_eq!(again["recipients"], first["recipients"]);
    assert_eq!(std::fs::read(v.dir.join("identity.txt")).unwrap(), identity);
    v.assert_restores(
        &v.backup_stdin(b"after init twice\n", &[]),
        b"after init twice\n",
    );
    // Another local directory under the same settings is refused.
    let other = v.work.join("other-vault");
    let o = v.fails(&["init", "--local", other.to_str().unwrap()], 2);
    assert!(
        stderr(&o).contains("settings already exist"),
        "{}",
        stderr(&o)
    );
}

// ---------------------------------------------------------------------------
// 10. Never overwrite.

#[test]
fn restore_refuses_an_existing_target_and_leaves_it_untouched() {
    let v = Vault::new();
    let id = v.backup_stdin(&random_bytes(16, MB), &[]);
    let target = v.work.join("precious.txt");
    std::fs::write(&target, b"precious contents\n").unwrap();
    set_mode(&target, 0o644);
    let before = std::fs::metadata(&target).unwrap();

    let o = v.fails(&["restore", &id, "--to", target.to_str().unwrap()], 2);
    assert_one_error_line(&o);
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&target).unwrap(), b"precious contents\n");
    let after = std::fs::metadata(&target).unwrap();
    assert_eq!(
        (
            before.ino(),
            before.mtime(),
            before.mtime_nsec(),
            before.mode()
        ),
        (after.ino(), after.mtime(), after.mtime_nsec(), after.mode())
    );
    assert_eq!(entries(&v.work), vec!["precious.txt"]);

    // A directory snapshot will not extract into a non-empty directory.
    let src = v.work.join("volume");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"new").unwrap();
    let tid = v.backup(&src, &[]);
    let dest = v.work.join("dest");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("f"), b"old").unwrap();
    let o = v.fails(&["restore", &tid, "--to", dest.to_str().unwrap()], 2);
    assert_one_error_line(&o);
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    assert_eq!(entries(&dest), vec!["f"]);
    assert_eq!(std::fs::read(dest.join("f")).unwrap(), b"old");
    assert_eq!(entries(&v.work), vec!["dest", "precious.txt", "volume"]);
}
