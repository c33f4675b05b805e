//! Issue 13: the soak test. Backups, syncs and restores run through the
//! fault-injecting proxy (`support/faultproxy.rs`) at 10% mixed faults
//! (resets, 503s, 500s, lost replies, truncated bodies) against s3s-fs; at
//! the end, with the faults gone and one sync, every snapshot restores byte
//! for byte from each tier and the bucket holds exactly the local tier.
//!
//! Deterministic for a seed: the data, the order of operations and the
//! proxy's draws all come from it (requests coffer sends concurrently take
//! their draws in arrival order, so a run is reproducible only roughly).
//! `COFFER_SOAK_SEED=N cargo test --test offsite_soak` runs another seed.

#[path = "support/cli.rs"]
mod cli_support;
#[path = "support/faultproxy.rs"]
mod faultproxy;
#[path = "support/s3.rs"]
mod s3;
#[path = "support/s3host.rs"]
mod s3host;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cli_support::{assert_restores_with, tree, RestoreTo};
use faultproxy::{FaultProxy, Rules};
use s3::S3Server;
use s3host::Host;
use serde_json::Value;
use vault_format::testdata::Xorshift64;

/// The bucket prefix of the vault.
const PREFIX: &str = "soak/";
/// The share of the requests each fault takes: 2% each for resets, 503s,
/// 500s and lost replies. A cut body needs a GET answered with one, under
/// half the requests, so truncation is drawn more often (5%) to be carried
/// out about as often as the others: about 10% of the requests fail.
const FAULT_RATE: f64 = 0.02;
const TRUNCATE_RATE: f64 = 0.05;
/// Backups in the faulted phase (one of them a directory).
const BACKUPS: usize = 12;
/// The one that backs up a directory.
const DIR_BACKUP: usize = 4;
/// The one run while the store is down: the offsite copy stays pending
/// (the faults alone never outlast the retries), for sync to finish.
const OUTAGE_BACKUP: usize = 7;
/// Exit status: committed locally, offsite copy pending (docs/cli.md).
const PENDING: i32 = 3;

/// The s3 tier's line of `coffer status`.
fn s3_status(h: &Host) -> Value {
    let v = h.json(&["status"]);
    v.as_array()
        .unwrap()
        .iter()
        .find(|t| t["tier"] == "s3")
        .unwrap_or_else(|| panic!("no s3 tier in {v}"))
        .clone()
}

/// What a snapshot must restore to.
enum Content {
    File(Vec<u8>),
    /// The directory backed up (left in place, unchanged, to compare with).
    Dir(PathBuf),
}

struct Snap {
    id: String,
    content: Content,
}

/// Restores `snap` from `tier` to a new path and compares it with what was
/// backed up. `n` makes the path unique.
#[track_caller]
fn assert_restores(h: &Host, snap: &Snap, tier: &str, n: usize) {
    let to = h.path(&format!("restored/{}-{tier}-{n}", snap.id));
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    match &snap.content {
        Content::File(data) => {
            assert_restores_with(
                h.cmd(),
                &snap.id,
                RestoreTo::File(&to),
                &["--tier", tier],
                data,
            );
        }
        Content::Dir(src) => {
            let to_s = to.to_str().unwrap();
            h.expect_one_of(&["restore", &snap.id, "--tier", tier, "--to", to_s], &[0]);
            assert!(
                tree(&to) == tree(src),
                "directory snapshot {} from tier {tier} differs from {}",
                snap.id,
                src.display()
            );
        }
    }
    // Restored copies add up; only the comparison mattered.
    if to.is_dir() {
        std::fs::remove_dir_all(&to).unwrap();
    } else {
        std::fs::remove_file(&to).unwrap();
    }
}

/// A file of 1–4 MiB cut from `base` with a few 64 KiB stretches rewritten:
/// most of its chunks are already in the vault (dedup across backups), some
/// are new (new packs to upload).
fn next_file(rng: &mut Xorshift64, base: &[u8]) -> Vec<u8> {
    let len = (1 << 20) + (rng.next_u64() as usize % (3 << 20));
    let mut data = base[..len].to_vec();
    for _ in 0..1 + rng.next_u64() % 4 {
        let at = rng.next_u64() as usize % (len - (64 << 10));
        data[at..at + (64 << 10)].copy_from_slice(&rng.bytes(64 << 10));
    }
    data
}

/// A small volume: a few files, one of them shared with the file backups.
fn make_dir(root: &Path, rng: &mut Xorshift64, base: &[u8]) {
    std::fs::create_dir_all(root.join("data/sub")).unwrap();
    std::fs::write(root.join("data/shared.bin"), &base[..1 << 20]).unwrap();
    std::fs::write(root.join("data/sub/new.bin"), rng.bytes(512 << 10)).unwrap();
    std::fs::write(root.join("notes.txt"), b"soak test volume\n").unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
}

/// Every object of the vault in the bucket, key (without the prefix) to
/// bytes: read with the SDK straight from the server, not through the
/// proxy.
fn bucket_objects(server: &S3Server) -> BTreeMap<String, Vec<u8>> {
    let keys = s3::keys_under(server, PREFIX);
    let client = server.client();
    s3::run_async(async move {
        let mut out = BTreeMap::new();
        for key in keys {
            let o = client
                .get_object()
                .bucket(s3::BUCKET)
                .key(&key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("get {key}: {}", s3::error_text(&e)));
            let bytes = o.body.collect().await.unwrap().into_bytes().to_vec();
            out.insert(key.strip_prefix(PREFIX).unwrap().to_string(), bytes);
        }
        out
    })
}

/// Every file of the local tier at `root`, relative path (which is the
/// object's key in the bucket) to bytes; but `tmp/`, the local tier's spool,
/// which is no object.
fn local_objects(root: &Path) -> BTreeMap<String, Vec<u8>> {
    cli_support::all_files(root)
        .into_iter()
        .map(|p| {
            let key = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            (key, p)
        })
        .filter(|(key, _)| !key.starts_with("tmp/"))
        .map(|(key, p)| (key, std::fs::read(&p).unwrap()))
        .collect()
}

/// Whether the bucket holds `id`'s manifest. A snapshot whose manifest is
/// in a tier has all its packs there (docs/offsite.md), whatever the
/// catalog knows: a lost reply leaves a manifest there that coffer still
/// counts as pending.
fn manifest_in_bucket(server: &S3Server, id: &str) -> bool {
    let key = format!("{PREFIX}snapshots/{id}");
    s3::keys_under(server, &key).contains(&key)
}

/// Runs init until it succeeds: through faults it either completes or says
/// to run the same command again, and the same command then completes (a
/// few tries: each one can meet faults of its own). Returns its report.
fn init_until_done(h: &Host) -> Value {
    let init = h.init_args(&[]);
    let init: Vec<&str> = init.iter().map(String::as_str).collect();
    for tries in 1.. {
        let o = h.run(&init);
        if o.status.success() {
            return serde_json::from_slice(&o.stdout).unwrap();
        }
        let err = String::from_utf8_lossy(&o.stderr);
        eprintln!("offsite_soak: init, try {tries}: {err}");
        assert!(
            tries < 4 && err.contains("run the same command again"),
            "init, try {tries}, exited {:?}: {err}",
            o.status.code()
        );
    }
    unreachable!()
}

fn seed() -> u64 {
    match std::env::var("COFFER_SOAK_SEED") {
        Ok(s) => s.parse().expect("COFFER_SOAK_SEED: a number"),
        Err(_) => 1313,
    }
}

/// The soak: 10% mixed faults on every request, then one clean sync
/// leaves two identical tiers that restore everything.
#[test]
fn soak_under_mixed_faults_ends_with_identical_tiers() {
    let seed = seed();
    eprintln!("offsite_soak: seed {seed} (COFFER_SOAK_SEED to change)");
    let mut rng = Xorshift64::new(seed);
    let started = std::time::Instant::now();
    let server = s3::s3s_fs();
    let proxy = FaultProxy::start(&server.endpoint());
    let h = Host::new(&server, &proxy.endpoint(), PREFIX);
    // Set again after the outage with another seed, so the draws after it
    // are not those of the start.
    let faults = |seed: u64| Rules {
        seed,
        reset: FAULT_RATE,
        error_503: FAULT_RATE,
        error_500: FAULT_RATE,
        lost_reply: FAULT_RATE,
        truncate: TRUNCATE_RATE,
        ..Rules::default()
    };
    proxy.set(faults(seed));

    // Init through the faults.
    let vault_id = init_until_done(&h)["vault_id"].clone();
    // A backup must not sit out the default two-minute retry window.
    h.set_s3("retry_uploads_for", "\"5s\"");

    let base = vault_format::testdata::noise(4 << 20, seed);
    let mut snaps: Vec<Snap> = Vec::new();
    let mut s3_restores = 0;
    let mut outage_resets = 0;
    for i in 0..BACKUPS {
        let content = if i == DIR_BACKUP {
            let d = h.path(&format!("in/dir-{i}"));
            make_dir(&d, &mut rng, &base);
            Content::Dir(d)
        } else {
            let data = next_file(&mut rng, &base);
            std::fs::write(h.path(&format!("in-{i}.bin")), &data).unwrap();
            Content::File(data)
        };
        let input = match &content {
            Content::Dir(d) => d.clone(),
            Content::File(_) => h.path(&format!("in-{i}.bin")),
        };
        // Committed locally in any case; the offsite copy may be pending.
        let args = ["--json", "backup", input.to_str().unwrap()];
        let o = if i == OUTAGE_BACKUP {
            let before = proxy.stats().reset;
            proxy.set(Rules {
                down: true,
                ..Rules::default()
            });
            let o = h.expect_one_of(&args, &[PENDING]);
            outage_resets = proxy.stats().reset - before;
            proxy.set(faults(seed + 1));
            o
        } else {
            h.expect_one_of(&args, &[0, PENDING])
        };
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let id = v["id"].as_str().unwrap().to_string();
        let offsite = &v["offsite"][0];
        eprintln!(
            "offsite_soak: backup {i} {id}: exit {:?}, offsite {offsite}",
            o.status.code()
        );
        assert_eq!(
            offsite["complete"],
            o.status.code() == Some(0),
            "exit status {:?} and the report disagree: {v}",
            o.status.code()
        );
        if offsite["complete"] == true {
            assert!(
                manifest_in_bucket(&server, &id),
                "backup {id} says complete offsite, its manifest is not in the bucket: {v}"
            );
        }
        if i == OUTAGE_BACKUP {
            assert!(!manifest_in_bucket(&server, &id), "{v}");
        }
        // Every input shares most of its bytes with an earlier one.
        if i > 0 {
            assert!(v["reused_chunks"].as_u64().unwrap() > 0, "no dedup: {v}");
        }
        snaps.push(Snap { id, content });

        // Sometimes sync: it may leave copies pending (status 3), never fail.
        if rng.next_u64().is_multiple_of(3) {
            let o = h.expect_one_of(&["sync"], &[0, PENDING]);
            eprintln!("offsite_soak: sync: exit {:?}", o.status.code());
        }
        // Restore earlier snapshots from S3 when they are there: reads are
        // retried and resumed, so the faults must not show.
        for _ in 0..3 {
            let s = &snaps[rng.next_u64() as usize % snaps.len()];
            if manifest_in_bucket(&server, &s.id) {
                s3_restores += 1;
                assert_restores(&h, s, "s3", s3_restores);
            }
        }
        // Verify reads every pack copy the catalog places in S3 (the bulk of
        // the GETs, so of the truncated bodies): a fault is not damage.
        // Only when nothing is pending there: a pack still waiting for
        // its upload is rightly reported missing.
        if i % 3 == 2 && s3_status(&h)["packs_pending"] == 0 {
            let v = h.json(&["verify", "--read-data", "--tier", "s3"]);
            assert_eq!(v["problems"], serde_json::json!([]), "{v}");
        }
        // The catalog's view stays readable whatever happened.
        let st = s3_status(&h);
        assert_eq!(st["snapshots"], snaps.len(), "{st}");
        let absent: Vec<&str> = snaps
            .iter()
            .filter(|s| !manifest_in_bucket(&server, &s.id))
            .map(|s| s.id.as_str())
            .collect();
        // The catalog never counts complete in S3 more than the bucket holds.
        let complete = st["snapshots_complete"].as_u64().unwrap() as usize;
        assert!(complete <= snaps.len() - absent.len(), "{st} {absent:?}");
        eprintln!(
            "offsite_soak: {:.1}s: s3 complete {} of {}, packs pending {}, absent {absent:?}",
            started.elapsed().as_secs_f64(),
            st["snapshots_complete"],
            st["snapshots"],
            st["packs_pending"],
        );
    }
    // Init run again (still through the faults) reports the same vault and
    // changes nothing: the settings keep what was set after it.
    assert_eq!(init_until_done(&h)["vault_id"], vault_id);
    let settings = std::fs::read_to_string(h.path("cfg/config.toml")).unwrap();
    assert!(
        settings.contains("retry_uploads_for = \"5s\""),
        "{settings}"
    );

    // The outage's resets are not the mixed faults'.
    let mut stats = proxy.stats();
    stats.reset -= outage_resets;
    eprintln!(
        "offsite_soak: {s3_restores} restores from s3 under faults; {stats:?} \
         (and {outage_resets} resets in the outage)"
    );

    // The faults stop: one sync (a few if one is interrupted) brings the
    // bucket up to date.
    proxy.clear();
    let mut synced = false;
    for _ in 0..3 {
        if h.expect_one_of(&["sync"], &[0, PENDING]).status.success() {
            synced = true;
            break;
        }
    }
    assert!(synced, "sync without faults still leaves copies pending");
    let st = s3_status(&h);
    assert_eq!(st["snapshots_complete"], snaps.len(), "{st}");
    assert_eq!(st["packs_pending"], 0, "{st}");

    for (n, s) in snaps.iter().enumerate() {
        assert_restores(&h, s, "local", n);
        assert_restores(&h, s, "s3", n);
    }
    let v = h.json(&["verify", "--read-data"]);
    assert_eq!(v["problems"], serde_json::json!([]), "{v}");

    // The bucket is the local tier, object for object, byte for byte:
    // config, packs, manifests, and no lock left behind in either.
    let bucket = bucket_objects(&server);
    let local = local_objects(&h.path("vault"));
    assert_eq!(
        bucket.keys().collect::<Vec<_>>(),
        local.keys().collect::<Vec<_>>(),
        "the keys in the bucket and the files of the local tier"
    );
    for (k, b) in &bucket {
        assert!(
            b == &local[k],
            "{k} differs between the bucket and the local tier"
        );
    }
    let manifests = local.keys().filter(|k| k.starts_with("snapshots/"));
    assert_eq!(manifests.count(), snaps.len());

    // Enough of every fault happened for the run to mean something.
    assert!(
        stats.reset >= 3
            && stats.error_503 >= 3
            && stats.error_500 >= 3
            && stats.lost_reply >= 3
            && stats.truncate >= 3,
        "too few faults of some kind: {stats:?}"
    );
}
