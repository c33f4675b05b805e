//! Prune through the binary: it reclaims what forgotten snapshots held,
//! repacks sparse packs, waits out the grace period and running backups,
//! refuses to run twice, and every kept snapshot restores byte for byte
//! afterwards with `verify --read-data` clean.

#[path = "support/cli.rs"]
mod cli_support;

use std::path::Path;

use cli_support::*;
use serde_json::Value;

fn backup_file(v: &Vault, job: &str, data: &[u8]) -> String {
    let p = v.fresh_path("in");
    std::fs::write(&p, data).unwrap();
    let o = v.ok(&["-q", "backup", "--job", job, p.to_str().unwrap()]);
    stdout(&o).trim().to_string()
}

fn prune(v: &Vault, args: &[&str]) -> Value {
    let mut a = vec!["--json", "prune"];
    a.extend_from_slice(args);
    let o = v.ok(&a);
    serde_json::from_slice(&o.stdout).unwrap()
}

fn tier_bytes(dir: &Path) -> u64 {
    all_files(&dir.join("packs"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

fn verify_clean(v: &Vault) {
    let o = v.ok(&["--json", "verify", "--read-data"]);
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["problems"], Value::Array(vec![]), "{rep}");
}

fn marks(v: &Vault) -> Vec<Value> {
    let dir = v.vault.join("condemned");
    if !dir.exists() {
        return vec![];
    }
    all_files(&dir)
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

#[test]
fn prune_reclaims_forgotten_data_and_kept_snapshots_restore() {
    let v = Vault::new();
    let a = random_bytes(1, 3 << 20);
    let b = random_bytes(2, 3 << 20);
    let first = backup_file(&v, "db", &a);
    let second = backup_file(&v, "db", &b);
    let before = tier_bytes(&v.vault);
    v.ok(&["forget", &first]);
    let rep = prune(&v, &["--grace", "0"]);
    assert_eq!(rep["tiers"][0]["deleted"], 1, "{rep}");
    assert!(tier_bytes(&v.vault) < before - (2 << 20));
    v.assert_restores(&second, &b);
    verify_clean(&v);
    // Nothing is left to do; marks are gone once their packs are.
    let rep = prune(&v, &["--grace", "0"]);
    assert_eq!(rep["tiers"][0]["deleted"], 0, "{rep}");
    assert_eq!(rep["tiers"][0]["condemned"], 0, "{rep}");
    assert!(marks(&v).is_empty());
}

#[test]
fn condemned_packs_wait_for_the_grace_period_and_backups_do_not_reuse_them() {
    let v = Vault::new();
    let a = random_bytes(3, 2 << 20);
    let first = backup_file(&v, "db", &a);
    let keep = backup_file(&v, "db", &random_bytes(4, 1 << 20));
    v.ok(&["forget", &first]);
    let files = all_files(&v.vault.join("packs")).len();
    // Default grace: condemned, not deleted.
    let rep = prune(&v, &[]);
    assert_eq!(rep["tiers"][0]["condemned"], 1, "{rep}");
    assert_eq!(rep["tiers"][0]["deleted"], 0, "{rep}");
    assert_eq!(all_files(&v.vault.join("packs")).len(), files);
    assert_eq!(marks(&v).len(), 1);
    // A backup of the same data now stores it again instead of reusing the
    // condemned pack.
    let out = v.ok(&[
        "--json",
        "backup",
        "--job",
        "db",
        {
            let p = v.fresh_path("again");
            std::fs::write(&p, &a).unwrap();
            p.to_str().unwrap().to_string()
        }
        .as_str(),
    ]);
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["reused_chunks"], 0, "{again}");
    // Within the grace period a second prune still deletes nothing.
    let rep = prune(&v, &[]);
    assert_eq!(rep["tiers"][0]["deleted"], 0, "{rep}");
    assert_eq!(rep["tiers"][0]["marks_in_grace"], 1, "{rep}");
    // Two days later (the mark says so), it goes.
    for p in all_files(&v.vault.join("condemned")) {
        let mut m: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        m["created"] = "2020-01-01T00:00:00Z".into();
        std::fs::write(&p, serde_json::to_vec(&m).unwrap()).unwrap();
    }
    let rep = prune(&v, &[]);
    assert_eq!(rep["tiers"][0]["deleted"], 1, "{rep}");
    v.assert_restores(&keep, &random_bytes(4, 1 << 20));
    v.assert_restores(again["id"].as_str().unwrap(), &a);
    verify_clean(&v);
}

/// Plants a lock heartbeat as another process would write it.
fn plant_lock(v: &Vault, kind: &str, created_ago: u64, refreshed_ago: u64) -> std::path::PathBuf {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let dir = v.vault.join("locks");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!(
        "{kind}-0123456789abcdef-{}-{}",
        now - created_ago,
        now - refreshed_ago
    ));
    std::fs::write(&p, b"").unwrap();
    p
}

#[test]
fn a_running_backup_holds_deletion_off_and_a_stale_lock_does_not() {
    let v = Vault::new();
    let first = backup_file(&v, "db", &random_bytes(5, 1 << 20));
    backup_file(&v, "db", &random_bytes(6, 1 << 20));
    v.ok(&["forget", &first]);
    // A backup that started a minute ago and is still refreshing its lock.
    let lock = plant_lock(&v, "backup", 60, 10);
    let o = v.ok(&["--json", "prune", "--grace", "0"]);
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["tiers"][0]["deleted"], 0, "{rep}");
    assert_eq!(
        rep["tiers"][0]["waiting_for"][0], "0123456789abcdef",
        "{rep}"
    );
    std::fs::remove_file(lock).unwrap();
    // A lock last refreshed an hour ago belongs to a dead process.
    plant_lock(&v, "backup", 7200, 3600);
    let rep = prune(&v, &["--grace", "0"]);
    assert_eq!(rep["tiers"][0]["deleted"], 1, "{rep}");
    verify_clean(&v);
}

#[test]
fn another_prune_running_is_refused_with_its_holder() {
    let v = Vault::new();
    backup_file(&v, "db", &random_bytes(7, 100_000));
    let holder = serde_json::json!({
        "format": 1, "id": "0123456789abcdef", "host": "other-host",
        "pid": 4242, "created": "2026-11-28T00:00:00Z"
    });
    std::fs::create_dir_all(v.vault.join("locks")).unwrap();
    std::fs::write(v.vault.join("locks/prune"), holder.to_string()).unwrap();
    plant_lock(&v, "prune", 30, 5);
    let o = v.fails(&["prune"], 1);
    assert!(
        stderr(&o).contains("another prune holds the lock"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("other-host"), "{}", stderr(&o));
    assert_one_error_line(&o);
    // The holder's lock is untouched.
    assert!(v.vault.join("locks/prune").is_file());
}

#[test]
fn sparse_packs_are_repacked_and_the_newest_night_restores() {
    let v = Vault::new();
    // Night 1: 36 MiB in two packs (32 MiB + 4 MiB). Night 2 keeps the
    // first 16 MiB and adds 4 MiB: half of night 1's big pack is dead.
    let night1 = random_bytes(8, 36 << 20);
    let night2 = [&night1[..16 << 20], &random_bytes(9, 4 << 20)[..]].concat();
    let first = backup_file(&v, "db", &night1);
    let second = backup_file(&v, "db", &night2);
    v.ok(&["forget", &first]);
    let rep = prune(
        &v,
        &["--grace", "0", "--max-unused", "5", "--max-repack", "100"],
    );
    // Both of night 1's packs hold something night 2 needs (the small one:
    // the start of the chunk list, which night 2's shares), and both are
    // mostly dead: both are repacked, into one new pack, and deleted.
    assert_eq!(
        rep["repacked"]["packs"].as_array().unwrap().len(),
        2,
        "{rep}"
    );
    assert_eq!(
        rep["repacked"]["new_packs"].as_array().unwrap().len(),
        1,
        "{rep}"
    );
    assert_eq!(rep["tiers"][0]["deleted"], 2, "{rep}");
    // What is left is about what night 2 needs.
    let left = tier_bytes(&v.vault);
    assert!(left < (21 << 20), "{left} bytes left");
    v.assert_restores(&second, &night2);
    verify_clean(&v);
    // The catalog can be rebuilt from what prune left, and agrees.
    v.delete_catalog();
    let id = v.identity();
    v.ok(&["index", "rebuild", "--identity", id.to_str().unwrap()]);
    v.assert_restores(&second, &night2);
}

#[test]
fn prune_dry_run_changes_nothing() {
    let v = Vault::new();
    let first = backup_file(&v, "db", &random_bytes(10, 1 << 20));
    backup_file(&v, "db", &random_bytes(11, 1 << 20));
    v.ok(&["forget", &first]);
    let files = all_files(&v.vault).len();
    let rep = prune(&v, &["--dry-run", "--grace", "0"]);
    assert_eq!(rep["dry_run"], true);
    assert_eq!(rep["tiers"][0]["condemned"], 1, "{rep}");
    assert_eq!(all_files(&v.vault).len(), files, "a dry run writes nothing");
}

#[test]
fn one_prune_rewrites_at_most_max_repack_of_the_vault() {
    let v = Vault::new();
    let night1 = random_bytes(12, 36 << 20);
    let night2 = [&night1[..16 << 20], &random_bytes(13, 4 << 20)[..]].concat();
    let first = backup_file(&v, "db", &night1);
    let second = backup_file(&v, "db", &night2);
    v.ok(&["forget", &first]);
    // 10% of ~40 MB stored: the 32 MiB pack (16 MiB live) is over budget,
    // so only the small one is repacked this time...
    let rep = prune(
        &v,
        &["--grace", "0", "--max-unused", "0", "--max-repack", "10"],
    );
    let written = rep["repacked"]["bytes"].as_u64().unwrap();
    assert!(written <= rep["bytes"].as_u64().unwrap() / 10, "{rep}");
    // ...and the next prune takes the next.
    let rep2 = prune(
        &v,
        &["--grace", "0", "--max-unused", "0", "--max-repack", "100"],
    );
    assert!(
        !rep2["repacked"]["packs"].as_array().unwrap().is_empty(),
        "{rep2}"
    );
    v.assert_restores(&second, &night2);
    verify_clean(&v);
}

#[test]
fn the_newest_nights_chunks_move_out_of_blobs_it_uses_little_of() {
    let v = Vault::new();
    // Night 2 keeps the first 64 KiB of every 256 KiB of night 1: it reads
    // well under half of each of night 1's 1 MiB blobs, which night 1
    // still needs whole.
    let night1 = random_bytes(40, 16 << 20);
    let night2: Vec<u8> = night1
        .chunks(256 << 10)
        .enumerate()
        .flat_map(|(i, seg)| {
            [
                &seg[..64 << 10],
                &random_bytes(100 + i as u64, 192 << 10)[..],
            ]
            .concat()
        })
        .collect();
    let first = backup_file(&v, "db", &night1);
    let night1_packs = v.pack_files();
    let second = backup_file(&v, "db", &night2);

    // Not without being asked.
    let rep = prune(&v, &["--grace", "0", "--max-repack", "100"]);
    assert_eq!(rep["relocated"]["chunks"], 0, "{rep}");
    let rep = prune(&v, &["--grace", "0", "--max-repack", "100", "--locality"]);
    let moved = &rep["relocated"];
    assert!(moved["chunks"].as_u64().unwrap() > 0, "{rep}");
    assert!(!moved["new_packs"].as_array().unwrap().is_empty(), "{rep}");
    // Night 1 still needs every pack it had: none is condemned or deleted.
    assert_eq!(rep["tiers"][0]["condemned"], 0, "{rep}");
    assert!(night1_packs.iter().all(|p| p.exists()));
    v.assert_restores(&first, &night1);
    v.assert_restores(&second, &night2);
    verify_clean(&v);

    // Night 2's chunks now fill their own blobs: nothing more to move.
    let rep = prune(&v, &["--grace", "0", "--max-repack", "100", "--locality"]);
    assert_eq!(rep["relocated"]["chunks"], 0, "{rep}");
    assert_eq!(rep["relocated"]["packs"], Value::Array(vec![]), "{rep}");

    // Once night 1 is forgotten, its packs hold only dead chunks and
    // copies of what moved: they go, and night 2 still restores.
    v.ok(&["forget", &first]);
    prune(
        &v,
        &["--grace", "0", "--max-unused", "0", "--max-repack", "100"],
    );
    assert!(night1_packs.iter().all(|p| !p.exists()));
    v.assert_restores(&second, &night2);
    verify_clean(&v);
}
