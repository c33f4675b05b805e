//! The offsite S3 tier against real S3 servers the suite starts itself:
//! s3s-fs in process for the fast cases, SeaweedFS (a production S3
//! server) for the end-to-end disaster recovery and Object Lock.

#[path = "support/cli.rs"]
mod cli_support;
#[path = "support/s3.rs"]
mod s3;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cli_support::{assert_restores_with, RestoreTo};
use s3::S3Server;

const BIN: &str = env!("CARGO_BIN_EXE_coffer");

/// A host: its own config dir, local vault and HOME.
struct Host {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    endpoint: String,
}

impl Host {
    fn new(server: &S3Server) -> Host {
        Host {
            dir: tempfile::tempdir().unwrap(),
            env: server.env(),
            endpoint: server.endpoint(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .arg("--config")
            .arg(self.path("cfg/config.toml"));
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "coffer {args:?} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn init(&self, bucket_url: &str, extra: &[&str]) -> serde_json::Value {
        let local = self.path("vault");
        let mut args = vec![
            "--json",
            "init",
            "--local",
            local.to_str().unwrap(),
            "--s3",
            bucket_url,
            "--s3-endpoint",
            &self.endpoint,
        ];
        args.extend_from_slice(extra);
        serde_json::from_str(&self.ok(&args)).unwrap()
    }

    /// Sets `key = value` (TOML) in the settings' `[s3]` table.
    fn set_s3(&self, key: &str, value: &str) {
        let path = self.path("cfg/config.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("[s3]\n"), "{text}");
        let text = text.replacen("[s3]\n", &format!("[s3]\n{key} = {value}\n"), 1);
        std::fs::write(&path, text).unwrap();
    }

    fn backup(&self, file: &Path) -> (String, Output) {
        let o = self.run(&["backup", file.to_str().unwrap()]);
        (String::from_utf8_lossy(&o.stdout).trim().to_string(), o)
    }

    /// Asserts that restoring `sel` (with `extra` arguments) to the new
    /// file `out` in the host's directory yields exactly `data`.
    #[track_caller]
    fn assert_restores(&self, sel: &str, out: &str, extra: &[&str], data: &[u8]) -> Output {
        let to = self.path(out);
        assert_restores_with(self.cmd(), sel, RestoreTo::File(&to), extra, data)
    }

    fn status(&self, tier: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["--json", "status"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|t| t["tier"] == tier)
            .unwrap()
            .clone()
    }
}

fn noise(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let data = vault_format::testdata::noise(len, seed);
    std::fs::write(path, &data).unwrap();
    data
}

fn local_keys(root: &Path, sub: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in walk(&root.join(sub)) {
        out.push(e.strip_prefix(root).unwrap().to_string_lossy().into_owned());
    }
    out.sort();
    out
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap().path();
        if e.is_dir() {
            out.extend(walk(&e));
        } else {
            out.push(e);
        }
    }
    out
}

#[test]
fn backup_lands_in_both_tiers_and_restores_from_s3_alone() {
    let server = s3::s3s_fs();
    let h = Host::new(&server);
    h.init(&format!("s3://{}/vault", server.bucket()), &[]);
    let data = noise(&h.path("in.bin"), 70 << 20, 1);
    let (id, o) = h.backup(&h.path("in.bin"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let local = local_keys(&h.path("vault"), "packs");
    let remote: Vec<_> = s3::keys_under(&server, "vault/packs/")
        .into_iter()
        .map(|k| k.trim_start_matches("vault/").to_string())
        .collect();
    assert!(local.len() >= 2, "{local:?}");
    assert_eq!(local, remote, "every pack is in both tiers");
    assert_eq!(
        s3::keys_under(&server, &format!("vault/snapshots/{id}")).len(),
        1
    );
    let s3s = h.status("s3");
    assert_eq!(s3s["packs_pending"], 0);
    assert_eq!(s3s["snapshots_complete"], 1);

    // The local tier loses its packs: restore falls back to S3 per pack.
    std::fs::remove_dir_all(h.path("vault/packs")).unwrap();
    std::fs::create_dir(h.path("vault/packs")).unwrap();
    let o = h.assert_restores(&id, "out1", &[], &data);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("missing in tier local") && err.contains("from tier s3"),
        "{err}"
    );
    h.assert_restores(&id, "out2", &["--tier", "s3"], &data);

    // sync repairs the local tier from S3, byte for byte.
    h.ok(&["sync"]);
    assert_eq!(local_keys(&h.path("vault"), "packs"), local);
    h.assert_restores(&id, "out3", &["--tier", "local"], &data);
}

/// Starts `coffer -v backup FILE` and stops `server` once the first pack
/// is stored in S3; returns the backup and its stderr so far.
fn backup_losing_s3_midway(
    h: &Host,
    server: &S3Server,
    file: &Path,
) -> (
    std::process::Child,
    BufReader<std::process::ChildStderr>,
    String,
) {
    let mut child = h
        .cmd()
        .args(["-v", "backup", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        log.push_str(&line);
        if line.contains("pack stored") && line.trim_end().ends_with("in s3") {
            server.stop();
            break;
        }
        line.clear();
    }
    assert!(
        !server.is_running(),
        "no pack reached S3 before the end: {log}"
    );
    (child, stderr, log)
}

#[test]
fn s3_stopped_mid_backup_leaves_it_pending_until_sync() {
    let server = s3::s3s_fs();
    let h = Host::new(&server);
    h.init(&format!("s3://{}/", server.bucket()), &[]);
    // Retries are bounded: S3 stays down for longer than this.
    h.set_s3("retry_uploads_for", "\"5s\"");
    let data = noise(&h.path("in.bin"), 160 << 20, 2);
    let (child, mut stderr, log) = backup_losing_s3_midway(&h, &server, &h.path("in.bin"));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "offsite pending is exit 3: {log}{rest}"
    );
    assert!(rest.contains("PENDING"), "{rest}");
    // Retried, with backoff, for no longer than the window.
    assert!(rest.contains("retrying in 1s"), "{rest}");
    assert!(!rest.contains("retrying in 8s"), "{rest}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 32);

    server.start_again();
    let pending = h.status("s3");
    assert!(pending["packs_pending"].as_u64().unwrap() > 0, "{pending}");
    assert_eq!(pending["snapshots_complete"], 0);
    assert_eq!(h.status("local")["snapshots_complete"], 1);

    h.ok(&["sync"]);
    let done = h.status("s3");
    assert_eq!(done["packs_pending"], 0, "{done}");
    assert_eq!(done["snapshots_complete"], 1);
    // Safe to re-run: nothing left to copy.
    let again: serde_json::Value = serde_json::from_str(&h.ok(&["--json", "sync"])).unwrap();
    assert!(again
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["packs_copied"] == 0 && r["manifests_copied"] == 0));
    h.assert_restores(&id, "out", &["--tier", "s3"], &data);
}

/// Issue 13, failure 4: S3 goes away part way through a backup and comes
/// back within the retry window: the backup retries the failed uploads
/// with backoff and completes offsite (exit 0), nothing left pending.
#[test]
fn s3_back_within_the_retry_window_completes_the_backup() {
    let server = s3::s3s_fs();
    let h = Host::new(&server);
    h.init(&format!("s3://{}/", server.bucket()), &[]);
    let data = noise(&h.path("in.bin"), 160 << 20, 3);
    let (child, mut stderr, mut log) = backup_losing_s3_midway(&h, &server, &h.path("in.bin"));
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        log.push_str(&line);
        if line.contains("retrying in") {
            break;
        }
        line.clear();
    }
    assert!(line.contains("tier s3"), "{log}");
    server.start_again();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{log}{rest}");
    assert!(!rest.contains("PENDING"), "{rest}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let s3 = h.status("s3");
    assert_eq!(s3["packs_pending"], 0, "{s3}");
    assert_eq!(s3["snapshots_complete"], 1, "{s3}");
    h.assert_restores(&id, "out", &["--tier", "s3"], &data);
}

#[test]
fn a_pack_corrupt_in_one_tier_is_read_from_the_other() {
    let server = s3::s3s_fs();
    let h = Host::new(&server);
    h.init(&format!("s3://{}/v", server.bucket()), &[]);
    let data = noise(&h.path("in.bin"), 40 << 20, 3);
    let (id, o) = h.backup(&h.path("in.bin"));
    assert!(o.status.success());
    let packs = walk(&h.path("vault/packs"));
    let victim = packs[0].clone();
    let pack_id = victim.file_name().unwrap().to_string_lossy().into_owned();
    let good = std::fs::read(&victim).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&victim, &bad).unwrap();

    let o = h.assert_restores(&id, "out", &[], &data);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&pack_id) && err.contains("corrupt") && err.contains("tier s3"),
        "{err}"
    );
    // Said once for the pack, not once per blob read from it.
    assert_eq!(err.matches(pack_id.as_str()).count(), 1, "{err}");

    // verify names it; sync replaces the damaged local copy from S3.
    let v = h.run(&["verify"]);
    assert_eq!(v.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&v.stderr).contains(&pack_id));
    h.ok(&["sync"]);
    assert_eq!(std::fs::read(&victim).unwrap(), good);
    assert_eq!(h.run(&["verify"]).status.code(), Some(0));

    // Damaged in S3 instead: a restore from S3 alone names pack and tier;
    // the default order (local first) is unaffected.
    server.put(
        server.bucket(),
        &format!("v/packs/{}/{pack_id}", &pack_id[..2]),
        bad,
    );
    let o = h.run(&[
        "restore",
        &id,
        "--tier",
        "s3",
        "--to",
        h.path("out2").to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&pack_id) && err.contains("s3") && err.contains(&id),
        "{err}"
    );
    assert!(!h.path("out2").exists());
    h.ok(&["restore", &id, "--to", h.path("out3").to_str().unwrap()]);
}

#[test]
fn wrong_credentials_give_a_clear_error() {
    let server = s3::s3s_fs();
    let mut h = Host::new(&server);
    let secret = "not-the-secret-key-0123456789";
    for (k, v) in h.env.iter_mut() {
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = secret.into();
        }
    }
    let local = h.path("vault");
    let url = format!("s3://{}/x", server.bucket());
    let o = h.run(&[
        "init",
        "--local",
        local.to_str().unwrap(),
        "--s3",
        &url,
        "--s3-endpoint",
        &h.endpoint,
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(!err.contains(secret), "the secret leaked: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!h.path("cfg/config.toml").exists());
}

#[test]
fn fresh_machine_recovers_from_the_bucket_alone() {
    let server = s3::seaweedfs(false);
    let a = Host::new(&server);
    let url = format!("s3://{}/prod", server.bucket());
    a.init(&url, &[]);
    let data = noise(&a.path("in.bin"), 50 << 20, 4);
    let (id, o) = a.backup(&a.path("in.bin"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let identity = a.path("cfg/identity.txt");

    // A mistyped prefix with --identity is an error naming where it
    // looked, and leaves nothing behind (it used to create a new vault).
    let typo = Host::new(&server);
    let local = typo.path("vault");
    let wrong = format!("s3://{}/prdo", server.bucket());
    let o = typo.run(&[
        "init",
        "--local",
        local.to_str().unwrap(),
        "--s3",
        &wrong,
        "--s3-endpoint",
        &typo.endpoint,
        "--identity",
        identity.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("no vault at {wrong}")), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for left in [
        "cfg/config.toml",
        "cfg/identity.txt",
        "cfg/push-key.toml",
        "vault",
    ] {
        assert!(!typo.path(left).exists(), "{left} was left behind");
    }

    // A new machine: nothing but the bucket, the settings it is told and the identity.
    let b = Host::new(&server);
    let rep = b.init(&url, &["--identity", identity.to_str().unwrap()]);
    assert_eq!(rep["attached"], true, "{rep}");
    let rebuilt: serde_json::Value =
        serde_json::from_str(&b.ok(&["--json", "index", "rebuild", "--tier", "s3"])).unwrap();
    assert_eq!(rebuilt["snapshots"], 1, "{rebuilt}");
    let snaps: serde_json::Value = serde_json::from_str(&b.ok(&["--json", "snapshots"])).unwrap();
    assert_eq!(snaps[0]["id"], id);
    b.assert_restores("latest", "out", &["--tier", "s3"], &data);
    // The new host can back up into the same vault, deduplicating against A's data.
    let (_, o) = b.backup(&a.path("in.bin"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn locked_objects_cannot_be_deleted() {
    let server = s3::seaweedfs(true);
    server.create_bucket("locked", true);
    let h = Host::new(&server);
    h.init(
        "s3://locked/",
        &[
            "--s3-object-lock",
            "governance",
            "--s3-object-lock-days",
            "1",
        ],
    );
    noise(&h.path("in.bin"), 5 << 20, 5);
    let (_, o) = h.backup(&h.path("in.bin"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let client = server.client();
    let refused = s3::run_async(async move {
        let vs = client
            .list_object_versions()
            .bucket("locked")
            .prefix("packs/")
            .send()
            .await
            .unwrap();
        let v = vs.versions().first().expect("a pack version").clone();
        let ret = client
            .get_object_retention()
            .bucket("locked")
            .key(v.key().unwrap())
            .version_id(v.version_id().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(
            ret.retention()
                .and_then(|r| r.mode())
                .map(|m| m.as_str().to_string())
                .as_deref(),
            Some("GOVERNANCE")
        );
        client
            .delete_object()
            .bucket("locked")
            .key(v.key().unwrap())
            .version_id(v.version_id().unwrap())
            .send()
            .await
    });
    let e = refused.expect_err("a locked version must not be deletable");
    assert_eq!(s3::http_status(&e), Some(403));
}

/// Issue 13, failure 2: a snapshot whose upload is still pending (S3 was
/// down during its backup) must survive `index rebuild --tier s3`, and
/// `sync` must then upload it.
#[test]
fn rebuild_from_s3_keeps_a_snapshot_whose_upload_is_pending() {
    let server = s3::s3s_fs();
    let h = Host::new(&server);
    let url = format!("s3://{}/pending", server.bucket());
    h.init(&url, &[]);
    h.set_s3("retry_uploads_for", "\"0s\"");
    noise(&h.path("a.bin"), 3 << 20, 31);
    let (a, o) = h.backup(&h.path("a.bin"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    server.stop();
    let b_data = noise(&h.path("b.bin"), 3 << 20, 32);
    let (b, o) = h.backup(&h.path("b.bin"));
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    server.start_again();

    let rebuilt: serde_json::Value =
        serde_json::from_str(&h.ok(&["--json", "index", "rebuild", "--tier", "s3"])).unwrap();
    assert_eq!(rebuilt["snapshots"], 2, "{rebuilt}");
    let snaps: serde_json::Value = serde_json::from_str(&h.ok(&["--json", "snapshots"])).unwrap();
    let ids: Vec<&str> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&a.as_str()) && ids.contains(&b.as_str()),
        "{snaps}"
    );
    assert!(h.status("s3")["packs_pending"].as_u64().unwrap() > 0);

    h.ok(&["sync"]);
    let s3 = h.status("s3");
    assert_eq!(s3["packs_pending"], 0, "{s3}");
    assert_eq!(s3["snapshots_complete"], 2, "{s3}");
    h.assert_restores(&b, "b.out", &["--tier", "s3"], &b_data);
}

/// Issue 13, failure 1: the local vault directory is lost (removed, or
/// emptied) while the settings and catalog stay. That is a damaged tier,
/// not a missing vault: restores read S3, status and verify and health say
/// the tier is lost, backups say to run sync, and sync recreates it.
#[test]
fn a_lost_local_tier_is_reported_read_around_and_recreated_by_sync() {
    let server = s3::s3s_fs();
    let h = Host::new(&server);
    h.init(&format!("s3://{}/lost", server.bucket()), &[]);
    let a = noise(&h.path("a.bin"), 3 << 20, 41);
    let (ida, o) = h.backup(&h.path("a.bin"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = noise(&h.path("b.bin"), 2 << 20, 42);
    let (idb, _) = h.backup(&h.path("b.bin"));
    let vault = h.path("vault");
    let before_packs = local_keys(&vault, "packs");

    for how in ["removed", "emptied"] {
        if how == "removed" {
            std::fs::remove_dir_all(&vault).unwrap();
        } else {
            for e in std::fs::read_dir(&vault).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    std::fs::remove_dir_all(p).unwrap();
                } else {
                    std::fs::remove_file(p).unwrap();
                }
            }
        }
        // Reads go to S3 without being asked.
        h.assert_restores(&ida, &format!("a-{how}"), &[], &a);
        h.assert_restores(&idb, &format!("b-{how}"), &["--tier", "s3"], &b);
        let o = h.run(&["restore", &ida, "--tier", "local", "--to", "/dev/null"]);
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains("tier local is lost"));
        // Status and health say so; verify reports it and checks S3.
        let local = h.status("local");
        assert_eq!(local["lost"], true, "{local}");
        assert_eq!(local["snapshots_complete"], 0, "{local}");
        assert_eq!(h.status("s3")["snapshots_complete"], 2);
        let o = h.run(&["--json", "verify"]);
        assert_eq!(
            o.status.code(),
            Some(4),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(
            v["problems"][0]
                .as_str()
                .unwrap()
                .contains("tier local is lost"),
            "{v}"
        );
        let o = h.run(&["--json", "health"]);
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stdout).contains("tier-lost"));
        // A rebuild reads S3 first (the local tier is lost) and says so.
        let rebuilt: serde_json::Value =
            serde_json::from_str(&h.ok(&["--json", "index", "rebuild"])).unwrap();
        assert_eq!(rebuilt["snapshots"], 2, "{rebuilt}");
        assert_eq!(rebuilt["tiers_read"][0], "s3", "{rebuilt}");
        // A backup says what to run, and commits nothing.
        let (_, o) = h.backup(&h.path("a.bin"));
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("`coffer sync --recreate-local` recreates it"),
            "{err}"
        );
        // A plain sync does not fill an empty directory (it may be a disk
        // that is not mounted): it says so, and leaves it alone.
        let o = h.run(&["sync"]);
        assert_eq!(o.status.code(), Some(3));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("--recreate-local") && err.contains("mount"),
            "{err}"
        );
        assert!(!vault.join("config").exists());
        // Asked to, sync recreates the tier and refills it from S3.
        h.ok(&["sync", "--recreate-local"]);
        assert_eq!(local_keys(&vault, "packs"), before_packs);
        let local = h.status("local");
        assert!(local["lost"].is_null(), "{local}");
        assert_eq!(local["snapshots_complete"], 2, "{local}");
        assert_eq!(local["packs_pending"], 0, "{local}");
        h.assert_restores(&ida, &format!("a-{how}-local"), &["--tier", "local"], &a);
    }
    let (_, o) = h.backup(&h.path("b.bin"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Smaller item of issue 13: status is the catalog's record and says when
/// each tier was last listed; `status --check` lists the tiers first, so a
/// pack deleted from the bucket behind coffer's back shows as pending.
#[test]
fn status_check_lists_the_tiers_and_finds_a_pack_deleted_behind_our_back() {
    let server = s3::s3s_fs();
    let h = Host::new(&server);
    h.init(&format!("s3://{}/check", server.bucket()), &[]);
    noise(&h.path("a.bin"), 2 << 20, 43);
    let (_, o) = h.backup(&h.path("a.bin"));
    assert!(o.status.success());
    assert!(h.status("s3")["last_listed"].is_string());
    let pack = s3::keys_under(&server, "check/packs/").remove(0);
    server.delete(s3::BUCKET, &pack);
    assert_eq!(h.status("s3")["packs_pending"], 0, "the catalog's belief");
    let st: serde_json::Value =
        serde_json::from_str(&h.ok(&["--json", "status", "--check"])).unwrap();
    let s3 = st
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tier"] == "s3")
        .unwrap();
    assert_eq!(s3["packs_pending"], 1, "{st}");
    h.ok(&["sync"]);
    assert_eq!(h.status("s3")["packs_pending"], 0);
    assert_eq!(
        s3::keys_under(&server, "check/packs/").len(),
        local_keys(&h.path("vault"), "packs").len()
    );
}

/// Issue 13, failure 7: a manifest replaced in the bucket (here by another
/// snapshot's sealed manifest: valid ciphertext, wrong bytes) is found by
/// verify with and without the key, repaired by sync from the local tier,
/// and does not make a rebuild drop the snapshot.
#[test]
fn a_manifest_replaced_in_the_bucket_is_found_by_verify_and_repaired_by_sync() {
    let server = s3::s3s_fs();
    let h = Host::new(&server);
    h.init(&format!("s3://{}/swap", server.bucket()), &[]);
    noise(&h.path("a.bin"), 1 << 20, 51);
    let (a, _) = h.backup(&h.path("a.bin"));
    let b_data = noise(&h.path("b.bin"), 1 << 20, 52);
    let (b, _) = h.backup(&h.path("b.bin"));
    let vault = h.path("vault");
    let a_sealed = std::fs::read(vault.join("snapshots").join(&a)).unwrap();
    let b_sealed = std::fs::read(vault.join("snapshots").join(&b)).unwrap();
    let put = |bytes: Vec<u8>| server.put(s3::BUCKET, &format!("swap/snapshots/{b}"), bytes);
    put(a_sealed);
    for args in [
        &["--json", "verify", "--tier", "s3"][..],
        &["--json", "verify", "--read-data", "--tier", "s3"],
    ] {
        let o = h.run(args);
        assert_eq!(
            o.status.code(),
            Some(4),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let problems = v["problems"].to_string();
        assert!(
            problems.contains(&b) && problems.contains("not the one committed"),
            "{v}"
        );
    }
    assert_eq!(h.status("s3")["snapshots_complete"], 1);
    h.ok(&["sync"]);
    let now = server
        .get(s3::BUCKET, &format!("swap/snapshots/{b}"))
        .unwrap();
    assert!(now == b_sealed, "sync put the committed manifest back");
    h.ok(&["verify", "--tier", "s3"]);
    assert_eq!(h.status("s3")["snapshots_complete"], 2);

    // No good copy anywhere (the local one lost too): sync keeps the bad
    // copy and says so; it neither deletes it nor drops the snapshot.
    let local_b = vault.join("snapshots").join(&b);
    std::fs::remove_file(&local_b).unwrap();
    put(std::fs::read(vault.join("snapshots").join(&a)).unwrap());
    assert_eq!(h.run(&["verify", "--tier", "s3"]).status.code(), Some(4));
    let o = h.run(&["sync"]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is the only copy: kept"), "{err}");
    assert!(s3::keys_under(&server, &format!("swap/snapshots/{b}")).len() == 1);
    assert!(h.ok(&["snapshots"]).contains(&b));
    std::fs::write(&local_b, &b_sealed).unwrap();
    h.ok(&["sync"]);
    h.ok(&["verify"]);

    // Garbage in its place: a rebuild from S3 keeps the snapshot (the
    // local tier's copy is good) and says which copy was bad.
    put(b"not a manifest".to_vec());
    let o = h.run(&["--json", "index", "rebuild", "--tier", "s3"]);
    assert_eq!(o.status.code(), Some(4), "the bad copy is a problem");
    let rebuilt: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rebuilt["snapshots"], 2, "{rebuilt}");
    assert!(rebuilt["problems"].to_string().contains(&b), "{rebuilt}");
    h.assert_restores(&b, "b.out", &[], &b_data);
}

/// Issue 13, failure 8: with Object Lock, a plain delete (the same
/// credentials, no version id) only adds a delete marker over the locked
/// version. coffer reads that version (restore, verify), says so, and sync
/// removes the markers so the objects are current again.
#[test]
fn a_delete_marker_over_a_locked_version_is_read_reported_and_removed() {
    let server = s3::seaweedfs(true);
    server.create_bucket("marked", true);
    let h = Host::new(&server);
    h.init(
        "s3://marked/",
        &[
            "--s3-object-lock",
            "governance",
            "--s3-object-lock-days",
            "1",
        ],
    );
    let data = noise(&h.path("in.bin"), 3 << 20, 61);
    let (id, o) = h.backup(&h.path("in.bin"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listed = |prefix: &'static str| {
        let c = server.client();
        s3::run_async(async move {
            c.list_objects_v2()
                .bucket("marked")
                .prefix(prefix)
                .send()
                .await
                .unwrap()
                .contents()
                .iter()
                .map(|o| o.key().unwrap().to_string())
                .collect::<Vec<_>>()
        })
    };
    let objects: Vec<String> = [listed("packs/"), listed("snapshots/")].concat();
    assert!(objects.len() >= 2, "{objects:?}");
    for k in &objects {
        server.delete("marked", k);
    }
    assert!(listed("packs/").is_empty(), "the delete markers hide them");

    let o = h.assert_restores(&id, "out", &["--tier", "s3"], &data);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("deleted behind coffer's back"), "{err}");
    let o = h.run(&["--json", "verify", "--tier", "s3"]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let problems = v["problems"].to_string();
    for k in &objects {
        assert!(
            problems.contains(k.as_str()) && problems.contains("delete marker"),
            "{v}"
        );
    }
    assert!(!problems.contains("missing"), "{v}");

    let synced: serde_json::Value = serde_json::from_str(&h.ok(&["--json", "sync"])).unwrap();
    let s3 = synced
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tier"] == "s3")
        .unwrap();
    assert_eq!(s3["delete_markers_removed"], objects.len(), "{synced}");
    assert_eq!(s3["packs_copied"], 0, "{synced}");
    let mut now = [listed("packs/"), listed("snapshots/")].concat();
    now.sort();
    let mut before = objects;
    before.sort();
    assert_eq!(now, before, "current again");
    h.ok(&["verify", "--tier", "s3"]);

    // A pin is deleted on purpose (a plain delete: a marker on a locked
    // bucket): coffer must not look under that marker.
    let (id2, o) = h.backup(&h.path("in.bin"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    h.ok(&["pin", &id, "--reason", "audit"]);
    h.ok(&["unpin", &id]);
    let o = h.run(&["forget", &id]);
    assert!(
        o.status.success(),
        "an unpinned snapshot can be forgotten: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_ne!(id, id2);
}

/// Issue 13, failure 9: hosts sharing one vault learn each other's
/// snapshots and chunk index on `sync`, incrementally, and each host's
/// local tier keeps only what its own snapshots need unless `sync --all`.
#[test]
fn hosts_sharing_a_vault_learn_each_other_on_sync_and_keep_their_own_local_tier() {
    let server = s3::s3s_fs();
    let url = format!("s3://{}/shared", server.bucket());
    let mut a = Host::new(&server);
    a.env.push(("COFFER_HOST".into(), "host-a".into()));
    a.init(&url, &[]);
    let mut b = Host::new(&server);
    b.env.push(("COFFER_HOST".into(), "host-b".into()));
    let identity = a.path("cfg/identity.txt");
    b.init(&url, &["--identity", identity.to_str().unwrap()]);

    let a1 = noise(&a.path("a1.bin"), 4 << 20, 71);
    let (ida1, _) = a.backup(&a.path("a1.bin"));
    let sync = |h: &Host, extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["--json", "sync"];
        args.extend_from_slice(extra);
        let v: serde_json::Value = serde_json::from_str(&h.ok(&args)).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|r| r["tier"] == "s3")
            .unwrap()
            .clone()
    };
    let learned = sync(&b, &[]);
    assert_eq!(learned["snapshots_learned"], 1, "{learned}");
    assert!(learned["packs_learned"].as_u64().unwrap() >= 1, "{learned}");
    let snaps: serde_json::Value = serde_json::from_str(&b.ok(&["--json", "snapshots"])).unwrap();
    assert_eq!(snaps[0]["id"], ida1.as_str(), "{snaps}");
    assert!(
        local_keys(&b.path("vault"), "packs").is_empty(),
        "A's packs stay in S3"
    );
    assert_eq!(b.status("local")["packs_pending"], 0);
    b.assert_restores(&ida1, "a1.out", &[], &a1);

    noise(&b.path("b1.bin"), 2 << 20, 72);
    let (_, o) = b.backup(&b.path("b1.bin"));
    assert!(o.status.success());
    let b_packs = local_keys(&b.path("vault"), "packs");
    noise(&a.path("a2.bin"), 2 << 20, 73);
    a.backup(&a.path("a2.bin"));
    let a_packs = local_keys(&a.path("vault"), "packs");
    assert_eq!(sync(&a, &[])["snapshots_learned"], 1);
    assert_eq!(
        local_keys(&a.path("vault"), "packs"),
        a_packs,
        "B's packs stay in S3"
    );
    // Incremental: B learns only A's new snapshot.
    assert_eq!(sync(&b, &[])["snapshots_learned"], 1);
    assert_eq!(sync(&b, &[])["snapshots_learned"], 0);
    assert_eq!(local_keys(&b.path("vault"), "packs"), b_packs);
    // Verifying B's local tier checks what B keeps there, and leaves A's
    // packs and manifests out of it (with or without a budget).
    b.ok(&["verify"]);
    b.ok(&["verify", "--tier", "local", "--budget", "1B"]);
    sync(&b, &[]);
    assert_eq!(local_keys(&b.path("vault"), "packs"), b_packs);
    assert_eq!(
        local_keys(&b.path("vault"), "snapshots").len(),
        1,
        "only B's manifest"
    );
    // A restore on B does not refresh the catalog because A's packs are
    // not in B's local tier.
    let o = b.run(&[
        "-v",
        "restore",
        &ida1,
        "--to",
        b.path("a1.again").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("catalog refreshed"));

    // Asked to: a full local mirror, and then B deduplicates against A.
    sync(&b, &["--all"]);
    let all = local_keys(&b.path("vault"), "packs");
    assert!(all.len() > b_packs.len() && b_packs.iter().all(|p| all.contains(p)));
    let again: serde_json::Value =
        serde_json::from_str(&b.ok(&["--json", "backup", a.path("a1.bin").to_str().unwrap()]))
            .unwrap();
    assert_eq!(again["new_chunks"], 0, "{again}");
}

/// Issue 13 (smaller item): no credentials at all is said as such, with
/// where they are looked for, at once (not blamed on reaching the endpoint
/// after retries), and init keeps nothing.
#[test]
fn no_credentials_says_so_and_where_they_are_looked_for() {
    let server = s3::s3s_fs();
    let mut h = Host::new(&server);
    h.env = vec![
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
    ];
    let local = h.path("vault");
    let url = format!("s3://{}/nocreds", server.bucket());
    let o = h.run(&[
        "init",
        "--local",
        local.to_str().unwrap(),
        "--s3",
        &url,
        "--s3-endpoint",
        &h.endpoint,
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("no AWS credentials were found") && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    assert!(!err.contains("cannot reach"), "{err}");
    assert!(!h.path("cfg/config.toml").exists() && !local.exists());
}

/// A copy that cannot be read (the store is down) is not a damaged copy:
/// verify reports it without marking it, so a later sync never replaces a
/// good copy; and a damaged local copy is never uploaded over anything
/// (sync hashes local sources too).
#[test]
fn an_unreachable_copy_is_not_damage_and_a_damaged_copy_is_never_propagated() {
    let server = s3::s3s_fs();
    let h = Host::new(&server);
    h.init(&format!("s3://{}/down", server.bucket()), &[]);
    let data = noise(&h.path("in.bin"), 2 << 20, 81);
    let (id, o) = h.backup(&h.path("in.bin"));
    assert!(o.status.success());
    server.stop();
    let o = h.run(&["--json", "verify", "--tier", "s3"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stdout).contains("unreadable"));
    server.start_again();

    let pack = walk(&h.path("vault/packs")).remove(0);
    let good = std::fs::read(&pack).unwrap();
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 1;
    std::fs::write(&pack, &bad).unwrap();
    h.ok(&["sync"]);
    h.assert_restores(&id, "from-s3", &["--tier", "s3"], &data);

    // Damaged in both tiers: nothing is copied over anything.
    let name = pack.file_name().unwrap().to_str().unwrap().to_string();
    let key = format!("down/packs/{}/{name}", &name[..2]);
    server.delete(s3::BUCKET, &key);
    server.put(s3::BUCKET, &key, vec![7u8; good.len()]);
    assert_eq!(h.run(&["verify"]).status.code(), Some(4));
    let o = h.run(&["sync"]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("corrupt"), "{err}");
    assert_eq!(
        std::fs::read(&pack).unwrap(),
        bad,
        "the local copy stays as it was"
    );
    // The good bytes back in the local tier: sync repairs S3 from them
    // (the local copy, still recorded damaged, is replaced from S3 by the
    // sync after: the first one found S3's copy bad).
    std::fs::write(&pack, &good).unwrap();
    assert_eq!(h.run(&["sync"]).status.code(), Some(3));
    h.ok(&["sync"]);
    h.assert_restores(&id, "repaired", &["--tier", "s3"], &data);
    h.ok(&["verify"]);
}

/// A store that refuses (here: the credentials) is not retried for the
/// whole window: the backup says so at once (exit 3).
#[test]
fn a_refusing_store_is_not_retried() {
    let server = s3::s3s_fs();
    let mut h = Host::new(&server);
    h.init(&format!("s3://{}/refuse", server.bucket()), &[]);
    for (k, v) in h.env.iter_mut() {
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = "not-the-secret-key-000000000000000".into();
        }
    }
    noise(&h.path("in.bin"), 1 << 20, 91);
    let (_, o) = h.backup(&h.path("in.bin"));
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(!err.contains("retrying in"), "{err}");
}
