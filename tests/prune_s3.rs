//! Forget and prune with an S3 tier beside the local one, against real S3
//! servers the test starts (SeaweedFS, with Object Lock where it matters;
//! s3s-fs only where it shows that deleting needs versioning): two hosts
//! sharing both tiers, a backup running on one while the other prunes, S3
//! going away during forget and prune, Object Lock refusing deletions and
//! having its retention extended, and pins seen across hosts.

#[path = "support/cli.rs"]
mod cli_support;
#[path = "support/s3.rs"]
mod s3;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use cli_support::*;
use s3::S3Server;
use serde_json::Value;

/// The key prefix of the vault in the bucket.
const PREFIX: &str = "vault/";

/// One host: its own settings directory, HOME, catalog and keys (a
/// [`Vault`] of the CLI helpers), the S3 credentials in its environment,
/// and the local tier it writes to (shared between hosts here, as an NFS
/// mount would be).
struct Host {
    v: Vault,
    local: PathBuf,
    env: Vec<(String, String)>,
}

impl Host {
    /// Host A: `coffer init` creates the vault in a fresh local directory
    /// and under [`PREFIX`] in the bucket; `extra` are more init flags.
    fn create(server: &S3Server, extra: &[&str]) -> Host {
        let v = Vault::uninit();
        let h = Host {
            local: v.vault.clone(),
            v,
            env: host_env(server, "host-a"),
        };
        let rep = h.init(server, &h.local, extra);
        assert_eq!(rep["attached"], false, "{rep}");
        h
    }

    /// Host B, on the same tiers as `self` (host A). `coffer init --s3 …
    /// --identity` attaches it to the vault in the bucket: its own push
    /// key, catalog and settings, with a copy of A's identity. init
    /// refuses a local directory that already holds a vault, so it is
    /// given a scratch one, and its settings' `[local] path` is then
    /// pointed at A's. Its catalog is rebuilt from the shared local tier,
    /// so it knows (and deduplicates against) what A stored.
    fn attach(&self, server: &S3Server, extra: &[&str]) -> Host {
        let v = Vault::uninit();
        std::fs::create_dir_all(&v.dir).unwrap();
        let identity = v.dir.join("identity.txt");
        std::fs::copy(self.v.identity(), &identity).unwrap();
        let h = Host {
            local: self.local.clone(),
            v,
            env: host_env(server, "host-b"),
        };
        let mut args = vec!["--identity", identity.to_str().unwrap()];
        args.extend_from_slice(extra);
        let rep = h.init(server, &h.v.vault, &args);
        assert_eq!(rep["attached"], true, "{rep}");
        let settings = std::fs::read_to_string(&h.v.config).unwrap();
        let path = |p: &Path| format!("path = {}", toml_string(p.to_str().unwrap()));
        let shared = settings.replace(&path(&h.v.vault), &path(&h.local));
        assert_ne!(shared, settings, "no [local] path in {settings}");
        std::fs::write(&h.v.config, shared).unwrap();
        std::fs::remove_dir_all(&h.v.vault).unwrap();
        h.rebuild();
        h
    }

    /// `coffer --json init --local LOCAL --s3 … EXTRA`.
    fn init(&self, server: &S3Server, local: &Path, extra: &[&str]) -> Value {
        let url = format!("s3://{}/{PREFIX}", server.bucket());
        let endpoint = server.endpoint();
        let mut args = vec![
            "--json",
            "init",
            "--local",
            local.to_str().unwrap(),
            "--s3",
            &url,
            "--s3-endpoint",
            &endpoint,
        ];
        args.extend_from_slice(extra);
        self.json(&args, 0)
    }

    /// Rebuilds this host's catalog from the (shared) local tier: what a
    /// host does to learn what other hosts stored and deleted.
    fn rebuild(&self) {
        let rep = self.json(&["--json", "index", "rebuild"], 0);
        assert_eq!(rep["problems"], Value::Array(vec![]), "{rep}");
    }

    fn cmd(&self) -> Command {
        let mut c = self.v.cmd();
        for k in ["AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"] {
            c.env_remove(k);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Runs coffer (stdin closed) and asserts its exit status.
    fn expect(&self, args: &[&str], status: i32) -> Output {
        let o = self.cmd().args(args).stdin(Stdio::null()).output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(status),
            "coffer {args:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&o.stdout[..o.stdout.len().min(2000)]),
            stderr(&o)
        );
        o
    }

    /// Runs coffer with `--json` among `args`; asserts the status and
    /// returns the report.
    fn json(&self, args: &[&str], status: i32) -> Value {
        let o = self.expect(args, status);
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)))
    }

    /// Backs up `data` as job `job`; returns the report (`id`,
    /// `reused_chunks`, `stored_size`, …) and the packs it stored.
    fn backup(&self, job: &str, data: &[u8]) -> (Value, BTreeSet<String>) {
        let p = self.v.fresh_path("in");
        std::fs::write(&p, data).unwrap();
        let o = self.expect(
            &["-v", "--json", "backup", "--job", job, p.to_str().unwrap()],
            0,
        );
        let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
        (rep, stored_packs(&o))
    }

    /// Restores snapshot `id` (from `tier` alone, if given) to stdout.
    fn restore(&self, id: &str, tier: Option<&str>) -> Vec<u8> {
        let mut args = vec!["restore", id, "--to", "-"];
        if let Some(t) = tier {
            args.extend(["--tier", t]);
        }
        self.expect(&args, 0).stdout
    }

    /// Asserts `id` restores to `data` with the default tier order, from
    /// the local tier alone and from S3 alone.
    fn assert_restores_everywhere(&self, id: &str, data: &[u8]) {
        for tier in [None, Some("local"), Some("s3")] {
            let got = self.restore(id, tier);
            assert!(
                got == data,
                "snapshot {id} from {tier:?}: {} bytes that differ from the {} backed up",
                got.len(),
                data.len()
            );
        }
    }

    fn verify_clean(&self) {
        let rep = self.json(&["--json", "verify", "--read-data"], 0);
        assert_eq!(rep["problems"], Value::Array(vec![]), "{rep}");
    }

    /// Pack ids in the local tier.
    fn local_packs(&self) -> BTreeSet<String> {
        let dir = self.local.join("packs");
        all_files(&dir)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    /// Snapshot ids with a manifest in the local tier.
    fn local_manifests(&self) -> BTreeSet<String> {
        all_files(&self.local.join("snapshots"))
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }
}

/// An S3 server coffer can delete from, with versioning: SeaweedFS
/// without Object Lock (s3s-fs has no ListObjectVersions; see
/// `deletions_reach_a_store_without_versioning`).
fn deleting_server() -> S3Server {
    s3::seaweedfs(false)
}

/// The S3 credentials, and the host's name (both hosts run on this
/// machine: `COFFER_HOST` tells them apart, as it does containers).
fn host_env(server: &S3Server, name: &str) -> Vec<(String, String)> {
    let mut env = server.env();
    env.push(("COFFER_HOST".into(), name.into()));
    env
}

/// A TOML basic string, as the settings file writes a path.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The packs a `-v` backup logged as stored (in any tier).
fn stored_packs(o: &Output) -> BTreeSet<String> {
    stderr(o)
        .lines()
        .filter_map(|l| l.strip_prefix("coffer: pack stored "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

/// The names (last path segment) of the objects under `sub` in the
/// vault's prefix of the bucket.
fn bucket_names(server: &S3Server, sub: &str) -> BTreeSet<String> {
    s3::keys_under(server, &format!("{PREFIX}{sub}"))
        .iter()
        .map(|k| k.rsplit('/').next().unwrap().to_string())
        .collect()
}

/// The bucket key of pack `id`.
fn pack_key(id: &str) -> String {
    format!("{PREFIX}packs/{}/{id}", &id[..2])
}

/// The bucket key of snapshot `id`'s manifest.
fn manifest_key(id: &str) -> String {
    format!("{PREFIX}snapshots/{id}")
}

/// Until when Object Lock retains the current version of `key`.
fn retention(server: &S3Server, key: &str) -> jiff::Timestamp {
    let (client, bucket, key) = (
        server.client(),
        server.bucket().to_string(),
        key.to_string(),
    );
    let secs = s3::run_async(async move {
        let r = client
            .get_object_retention()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get retention of {key}: {}", s3::error_text(&e)));
        r.retention().unwrap().retain_until_date().unwrap().secs()
    });
    jiff::Timestamp::from_second(secs).unwrap()
}

/// Sets the governance retention of the current version of `key` to
/// `until`, shortening it (as the harness's credentials may).
fn set_retention(server: &S3Server, key: &str, until: jiff::Timestamp) {
    use aws_sdk_s3::types::{ObjectLockRetention, ObjectLockRetentionMode};
    let (client, bucket, key) = (
        server.client(),
        server.bucket().to_string(),
        key.to_string(),
    );
    s3::run_async(async move {
        let retention = ObjectLockRetention::builder()
            .mode(ObjectLockRetentionMode::Governance)
            .retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(
                until.as_second(),
            ))
            .build();
        client
            .put_object_retention()
            .bucket(bucket)
            .key(&key)
            .retention(retention)
            .bypass_governance_retention(true)
            .send()
            .await
            .unwrap_or_else(|e| panic!("put retention of {key}: {}", s3::error_text(&e)));
    });
}

fn id_of(rep: &Value) -> String {
    let id = rep["id"].as_str().unwrap().to_string();
    assert!(is_hex(&id, 32), "{rep}");
    id
}

fn ids<const N: usize>(reps: [&Value; N]) -> BTreeSet<String> {
    reps.iter().map(|r| id_of(r)).collect()
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The report of tier `name` in a prune report.
fn tier<'a>(rep: &'a Value, name: &str) -> &'a Value {
    rep["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tier"] == name)
        .unwrap_or_else(|| panic!("no tier {name} in {rep}"))
}

/// The `[key, until]` pairs a prune or forget reported as retained by
/// Object Lock in a tier's deletions, with `until` parsed.
fn retained(deletions: &Value) -> Vec<(String, jiff::Timestamp)> {
    deletions["retained"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let until = r[1].as_str().unwrap_or_else(|| panic!("no date: {r}"));
            (r[0].as_str().unwrap().to_string(), until.parse().unwrap())
        })
        .collect()
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

fn hours(h: i64) -> jiff::SignedDuration {
    jiff::SignedDuration::from_hours(h)
}

/// Two hosts on one local directory and one bucket, after host A forgot
/// its old snapshots of job a and pruned with `--grace 0 --max-unused 0`.
/// Host B's first snapshot shares X with A's first (forgotten) one, which
/// B's backup deduplicated against.
struct Shared {
    server: S3Server,
    a: Host,
    b: Host,
    /// A's kept snapshot and its data.
    newest: (String, Vec<u8>),
    /// B's snapshots and their data.
    b_snapshots: Vec<(String, Vec<u8>)>,
    /// The packs of A's forgotten snapshots: the first (shared with B),
    /// the second (nobody's).
    old_packs: [BTreeSet<String>; 2],
    /// What A's prune reported.
    prune: Value,
}

fn a_prunes_what_b_shares() -> Shared {
    let server = deleting_server();
    let a = Host::create(&server, &[]);
    let x = random_bytes(101, 1 << 20);
    let (old1, old1_packs) = a.backup("a", &[&x[..], &random_bytes(102, 1 << 20)].concat());
    let (old2, old2_packs) = a.backup("a", &random_bytes(103, 1 << 20));
    let newest_data = random_bytes(104, 1 << 20);
    let (newest, _) = a.backup("a", &newest_data);

    // Host B joins and backs up job b: X again, deduplicated against A's
    // first snapshot's pack, and data of its own.
    let b = a.attach(&server, &[]);
    let b1_data = [&x[..], &random_bytes(105, 1 << 20)].concat();
    let (b1, b1_packs) = b.backup("b", &b1_data);
    assert!(b1["reused_chunks"].as_u64().unwrap() > 0, "{b1}");
    assert!(
        b1["stored_size"].as_u64().unwrap() < (b1_data.len() - x.len() / 2) as u64,
        "B stored X again instead of reusing A's pack: {b1}"
    );
    assert!(old1_packs.is_disjoint(&b1_packs));
    let b2_data = random_bytes(106, 1 << 20);
    let (b2, _) = b.backup("b", &b2_data);

    let f = a.json(&["--json", "forget", "--job", "a", "--keep-last", "1"], 0);
    assert_eq!(strings(&f["forgotten"]), ids([&old1, &old2]), "{f}");
    let prune = a.json(&["--json", "prune", "--grace", "0", "--max-unused", "0"], 0);
    Shared {
        server,
        a,
        b,
        newest: (id_of(&newest), newest_data),
        b_snapshots: vec![(id_of(&b1), b1_data), (id_of(&b2), b2_data)],
        old_packs: [old1_packs, old2_packs],
        prune,
    }
}

#[test]
fn a_prune_on_one_host_keeps_what_another_hosts_snapshots_need() {
    let s = a_prunes_what_b_shares();
    let (a, rep) = (&s.a, &s.prune);
    assert_eq!(rep["unreachable"], Value::Array(vec![]), "{rep}");
    // A walked B's snapshots: its own newest and B's two are kept. So the
    // pack A's first snapshot shares with B is not dead, only sparse: it
    // is repacked (X is rewritten, the rest dropped), and only the second
    // snapshot's pack is dead.
    assert_eq!(rep["snapshots"], 3, "{rep}");
    assert_eq!(rep["dead_packs"], 1, "{rep}");
    assert_eq!(strings(&rep["repacked"]["packs"]), s.old_packs[0], "{rep}");
    let new_packs = strings(&rep["repacked"]["new_packs"]);
    assert_eq!(tier(rep, "local")["deleted"], 2, "{rep}");
    let local = a.local_packs();
    for old in &s.old_packs {
        assert!(local.is_disjoint(old), "{old:?} still in {local:?}");
    }
    // The repacked X is in both tiers; so are the manifests of every kept
    // snapshot, and no other.
    let bucket = bucket_names(&s.server, "packs/");
    assert!(new_packs.is_subset(&local) && new_packs.is_subset(&bucket));
    let mut kept: BTreeSet<String> = s.b_snapshots.iter().map(|(id, _)| id.clone()).collect();
    kept.insert(s.newest.0.clone());
    assert_eq!(a.local_manifests(), kept);
    assert_eq!(bucket_names(&s.server, "snapshots/"), kept);

    // Host B, its catalog brought up to date with what A moved, restores
    // every snapshot it made byte for byte, from either tier alone, and
    // its verify is clean.
    s.b.rebuild();
    for (id, data) in &s.b_snapshots {
        s.b.assert_restores_everywhere(id, data);
    }
    s.b.verify_clean();
    a.assert_restores_everywhere(&s.newest.0, &s.newest.1);
}

#[test]
fn another_hosts_repack_leaves_this_hosts_snapshots_restorable() {
    let s = a_prunes_what_b_shares();
    // B's catalog still places X in the pack A repacked and deleted; the
    // data is in the vault, in the repack's new pack.
    for (id, data) in &s.b_snapshots {
        s.b.assert_restores_everywhere(id, data);
    }
    s.b.verify_clean();
}

#[test]
fn a_verify_without_the_identity_does_not_stop_the_catch_up() {
    let s = a_prunes_what_b_shares();
    // Without the identity B cannot index A's new pack: the packs A
    // deleted are reported missing...
    let rep = s.b.json(&["--json", "verify"], 4);
    assert!(!rep["problems"].as_array().unwrap().is_empty(), "{rep}");
    // ...and the next restore (with it) still catches up and follows X to
    // the repack's new pack.
    for (id, data) in &s.b_snapshots {
        s.b.assert_restores_everywhere(id, data);
    }
    s.b.verify_clean();
}

#[test]
fn prune_counts_each_snapshot_it_learns_once() {
    let s = a_prunes_what_b_shares();
    assert_eq!(s.prune["learned"]["snapshots"], 2, "{}", s.prune);
}

#[test]
fn one_prune_deletes_from_every_tier() {
    let s = a_prunes_what_b_shares();
    assert_eq!(tier(&s.prune, "s3")["deleted"], 2, "{}", s.prune);
    assert_eq!(bucket_names(&s.server, "packs/"), s.a.local_packs());
    // A's catalog still lists the packs S3 kept, so its verify finds
    // them missing from the local tier.
    s.a.verify_clean();
    // Nor does a second prune catch up.
    s.a.json(&["--json", "prune", "--grace", "0"], 0);
    assert_eq!(bucket_names(&s.server, "packs/"), s.a.local_packs());
}

#[test]
fn a_backup_running_on_another_host_holds_the_deletion_off() {
    let server = deleting_server();
    let a = Host::create(&server, &[]);
    let x = random_bytes(201, 1 << 20);
    let (old1, old1_packs) = a.backup("a", &x);
    let (old2, old2_packs) = a.backup("a", &random_bytes(202, 1 << 20));
    let newest_data = random_bytes(203, 1 << 20);
    let (newest, _) = a.backup("a", &newest_data);
    let f = a.json(&["--json", "forget", "--job", "a", "--keep-last", "1"], 0);
    assert_eq!(strings(&f["forgotten"]), ids([&old1, &old2]), "{f}");
    // B joins after the forget (see
    // `a_snapshot_another_host_forgot_leaves_no_backup_pending`); the
    // forgotten snapshots' packs are still there, and B knows them.
    let b = a.attach(&server, &[]);

    // Host B starts a backup from a pipe it keeps open: it holds its lock
    // in both tiers, and (having read no mark) it reuses the chunks of A's
    // forgotten first snapshot.
    let stream = [&x[..], &random_bytes(204, 1 << 20)].concat();
    let mut backup = b
        .cmd()
        .args(["--json", "backup", "--job", "b", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = backup.stdin.take().unwrap();
    let writer = std::thread::spawn({
        let stream = stream.clone();
        move || {
            pipe.write_all(&stream).unwrap();
            pipe
        }
    });
    let lock = wait_for_backup_lock(&a.local, &mut backup);
    assert!(bucket_names(&server, "locks/")
        .iter()
        .any(|k| k.starts_with(&format!("backup-{lock}-"))));

    // A prunes at once: it condemns, and deletes nothing while B runs.
    let rep = a.json(
        &["--json", "prune", "--grace", "0", "--max-unused", "100"],
        0,
    );
    for t in ["local", "s3"] {
        let t = tier(&rep, t);
        assert_eq!(t["condemned"], 2, "{rep}");
        assert_eq!(t["deleted"], 0, "{rep}");
        assert_eq!(t["waiting_for"], Value::from(vec![lock.clone()]), "{rep}");
    }
    for old in [&old1_packs, &old2_packs] {
        assert!(old.is_subset(&a.local_packs()));
        assert!(old.is_subset(&bucket_names(&server, "packs/")));
    }

    // B finishes: its snapshot references the first forgotten snapshot's
    // pack, which A's next prune recovers, and deletes the other.
    drop(writer.join().unwrap());
    let out = backup.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let streamed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        streamed["reused_chunks"].as_u64().unwrap() > 0,
        "{streamed}"
    );
    assert!(!a.local.join("locks").read_dir().unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("backup-")));
    let rep = a.json(
        &["--json", "prune", "--grace", "0", "--max-unused", "100"],
        0,
    );
    let local = tier(&rep, "local");
    assert_eq!(local["waiting_for"], Value::Array(vec![]), "{rep}");
    assert_eq!(local["recovered"], 1, "{rep}");
    assert_eq!(local["deleted"], 1, "{rep}");
    assert!(old1_packs.is_subset(&a.local_packs()));
    assert!(old1_packs.is_subset(&bucket_names(&server, "packs/")));
    assert!(a.local_packs().is_disjoint(&old2_packs));
    for h in [&a, &b] {
        h.assert_restores_everywhere(&id_of(&streamed), &stream);
    }
    a.assert_restores_everywhere(&id_of(&newest), &newest_data);
}

#[test]
fn a_snapshot_another_host_forgot_leaves_no_backup_pending() {
    let server = deleting_server();
    let a = Host::create(&server, &[]);
    let (old, _) = a.backup("a", &random_bytes(211, 100_000));
    a.backup("a", &random_bytes(212, 100_000));
    let b = a.attach(&server, &[]);
    a.json(&["--json", "forget", &id_of(&old)], 0);
    // B's catalog (rebuilt from the local tier, so it does not know which
    // manifests S3 holds) still lists the forgotten snapshot.
    b.backup("b", &random_bytes(213, 100_000));
    b.expect(&["sync"], 0);
}

/// Waits until `backup` holds a lock in the local tier at `local`;
/// returns the lock's id. Fails if the backup exits first.
fn wait_for_backup_lock(local: &Path, backup: &mut Child) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(entries) = local.join("locks").read_dir() {
            for e in entries {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                if let Some(rest) = name.strip_prefix("backup-") {
                    return rest.split('-').next().unwrap().to_string();
                }
            }
        }
        if let Some(status) = backup.try_wait().unwrap() {
            panic!("the backup exited ({status}) before taking its lock");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no backup lock within a minute"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn s3_unreachable_leaves_deletions_there_until_it_is_back() {
    let server = deleting_server();
    let a = Host::create(&server, &[]);
    let (old, old_packs) = a.backup("a", &random_bytes(301, 1 << 20));
    let newest_data = random_bytes(302, 1 << 20);
    let (newest, _) = a.backup("a", &newest_data);
    let old = id_of(&old);
    server.stop();

    // Forget while S3 is down: done locally, pending in S3, status 3.
    let o = a.expect(&["forget", &old], 3);
    let err = stderr(&o);
    assert!(
        err.contains("tier s3: 1 deletion(s) pending") && err.contains("`coffer sync`"),
        "{err}"
    );
    assert!(!a.local_manifests().contains(&old));

    // Prune while S3 is down: the local tier only, status 3.
    let o = a.expect(&["prune", "--grace", "0"], 3);
    let err = stderr(&o);
    assert!(err.contains("tier s3 is unreachable"), "{err}");
    assert!(err.contains("tier local: 1 condemned, 1 deleted"), "{err}");
    assert!(!err.contains("coffer: tier s3: "), "{err}");
    assert!(a.local_packs().is_disjoint(&old_packs));

    // Back: S3 still has it all. sync deletes the forgotten manifest, and
    // nothing else; the next prune deletes the pack.
    server.start_again();
    assert!(bucket_names(&server, "snapshots/").contains(&old));
    a.expect(&["sync"], 0);
    assert!(!bucket_names(&server, "snapshots/").contains(&old));
    let bucket = bucket_names(&server, "packs/");
    assert!(
        old_packs.is_subset(&bucket),
        "{old_packs:?} not in {bucket:?}"
    );
    let rep = a.json(&["--json", "prune", "--grace", "0"], 0);
    assert_eq!(tier(&rep, "s3")["deleted"], 1, "{rep}");
    assert_eq!(bucket_names(&server, "packs/"), a.local_packs());
    a.assert_restores_everywhere(&id_of(&newest), &newest_data);
    a.verify_clean();
}

#[test]
fn object_lock_retains_deletions_and_prune_extends_what_is_kept() {
    let server = s3::seaweedfs(true);
    let a = locked_host(&server);
    let (old, old_packs) = a.backup("a", &random_bytes(401, 1 << 20));
    let kept_data = random_bytes(402, 1 << 20);
    let (kept, kept_packs) = a.backup("a", &kept_data);
    let (old, kept) = (id_of(&old), id_of(&kept));
    let day_from_now = now() + hours(23);

    // Forget: the manifest goes from the local tier; S3 refuses, and says
    // until when. That is not a failure (status 0).
    let f = a.json(&["--json", "forget", &old], 0);
    let s3_deletions = f["deletions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["tier"] == "s3")
        .unwrap();
    let r = retained(s3_deletions);
    assert_eq!(r.len(), 1, "{f}");
    assert_eq!(r[0].0, format!("snapshots/{old}"));
    assert!(r[0].1 > day_from_now, "{f}");
    assert!(!a.local_manifests().contains(&old));
    assert!(bucket_names(&server, "snapshots/").contains(&old));

    // The kept snapshot's objects are retained for less than half the
    // period from now: prune must extend them.
    // S3 keeps whole seconds.
    let soon = jiff::Timestamp::from_second((now() + hours(1)).as_second()).unwrap();
    let mut kept_keys: Vec<String> = kept_packs.iter().map(|p| pack_key(p)).collect();
    kept_keys.push(manifest_key(&kept));
    for k in &kept_keys {
        set_retention(&server, k, soon);
        assert_eq!(retention(&server, k), soon);
    }

    let rep = a.json(&["--json", "prune", "--grace", "0"], 0);
    assert_eq!(tier(&rep, "local")["deleted"], 1, "{rep}");
    assert!(a.local_packs().is_disjoint(&old_packs));
    let s3 = tier(&rep, "s3");
    let r = retained(&s3["deletions"]);
    assert!(
        r.iter()
            .any(|(k, until)| k == &format!("snapshots/{old}") && *until > day_from_now),
        "{rep}"
    );
    assert_eq!(s3["retention_extended"], kept_keys.len(), "{rep}");
    for k in &kept_keys {
        let until = retention(&server, k);
        assert!(until > day_from_now, "{k} retained until {until} only");
    }

    // A later prune tries the pack in S3 too: retained, with its date,
    // still there; still status 0.
    let o = a.expect(&["prune", "--grace", "0"], 0);
    let err = stderr(&o);
    for p in &old_packs {
        let line = err
            .lines()
            .find(|l| {
                l.contains(&format!(
                    "packs/{}/{p} is retained by S3 Object Lock until ",
                    &p[..2]
                ))
            })
            .unwrap_or_else(|| panic!("pack {p} not reported retained: {err}"));
        let until: jiff::Timestamp = line
            .split(" until ")
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(until > day_from_now, "{line}");
    }
    let bucket = bucket_names(&server, "packs/");
    assert!(
        old_packs.is_subset(&bucket),
        "{old_packs:?} gone from {bucket:?}"
    );
    assert!(bucket_names(&server, "snapshots/").contains(&old));
    a.assert_restores_everywhere(&kept, &kept_data);
    a.verify_clean();
}

/// A vault whose S3 objects are written with one day of governance
/// retention.
fn locked_host(server: &S3Server) -> Host {
    Host::create(
        server,
        &[
            "--s3-object-lock",
            "governance",
            "--s3-object-lock-days",
            "1",
        ],
    )
}

#[test]
fn a_pin_made_on_one_host_holds_against_another_hosts_forget() {
    let server = deleting_server();
    let a = Host::create(&server, &[]);
    let (a1, _) = a.backup("a", &random_bytes(501, 200_000));
    let (a2, _) = a.backup("a", &random_bytes(502, 200_000));
    let (a3, _) = a.backup("a", &random_bytes(503, 200_000));
    let (a1, a2, a3) = (id_of(&a1), id_of(&a2), id_of(&a3));
    // B learns A's snapshots before the pin exists: its catalog has no pin.
    let b = a.attach(&server, &[]);
    let (b1, _) = b.backup("b", &random_bytes(504, 200_000));
    a.expect(&["pin", &a1, "--reason", "legal hold"], 0);
    assert!(a.local.join("pins").join(&a1).is_file());
    assert!(bucket_names(&server, "pins/").contains(&a1));

    // B names job a's policy: keep the last one. The pin (found in the
    // tiers) keeps the oldest too.
    let f = b.json(&["--json", "forget", "--job", "a", "--keep-last", "1"], 0);
    assert_eq!(
        strings(&f["forgotten"]),
        BTreeSet::from([a2.clone()]),
        "{f}"
    );
    let kept = BTreeSet::from([a1.clone(), a3, id_of(&b1)]);
    assert_eq!(a.local_manifests(), kept);
    assert_eq!(bucket_names(&server, "snapshots/"), kept);
    let snaps = b.json(&["--json", "snapshots"], 0);
    let pinned = snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == a1.as_str())
        .unwrap();
    assert!(pinned["pin"].is_string(), "{pinned}");
    // Named, the pinned snapshot is refused.
    let o = b.expect(&["forget", &a1], 2);
    assert!(stderr(&o).contains("is pinned"), "{}", stderr(&o));
    assert_eq!(bucket_names(&server, "snapshots/"), kept);
}

#[test]
fn deletions_reach_a_store_without_versioning() {
    let server = s3::s3s_fs();
    let a = Host::create(&server, &[]);
    let (old, _) = a.backup("a", &random_bytes(601, 100_000));
    a.backup("a", &random_bytes(602, 100_000));
    let old = id_of(&old);
    let f = a.json(&["--json", "forget", &old], 0);
    assert_eq!(strings(&f["forgotten"]), BTreeSet::from([old.clone()]));
    assert!(!bucket_names(&server, "snapshots/").contains(&old));
}
