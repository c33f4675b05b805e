//! Issue 13: the offsite paths under faults, against a real S3 server
//! (s3s-fs in process, SeaweedFS where a real store's behaviour matters)
//! behind the fault-injecting proxy (`support/faultproxy.rs`).

#[path = "support/cli.rs"]
mod cli_support;
#[path = "support/faultproxy.rs"]
mod faultproxy;
#[path = "support/s3.rs"]
mod s3;
#[path = "support/s3host.rs"]
mod s3host;

use std::path::PathBuf;
use std::process::Output;

use faultproxy::{Fault, FaultProxy, Rules, Scripted};
use s3::S3Server;
use s3host::Host;
use serde_json::Value;

/// A host reaching the bucket through the proxy.
fn host(server: &S3Server, proxy: &FaultProxy, prefix: &str) -> Host {
    Host::new(server, &proxy.endpoint(), prefix)
}

/// What these tests ask of a host beyond the shared helper.
trait HostExt {
    fn leftovers(&self) -> (Vec<String>, bool);
    fn backup(&self, name: &str, data: &[u8]) -> String;
    fn assert_restores(&self, id: &str, tier: &str, data: &[u8]);
}

impl HostExt for Host {
    /// Names in the host's config directory and whether its local tier has
    /// a config: what a failed init may have left.
    fn leftovers(&self) -> (Vec<String>, bool) {
        let mut names: Vec<String> = std::fs::read_dir(self.path("cfg"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        (names, self.path("vault/config").exists())
    }

    fn backup(&self, name: &str, data: &[u8]) -> String {
        let f = self.path(name);
        std::fs::write(&f, data).unwrap();
        let o = self.expect(&["backup", f.to_str().unwrap()], 0);
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    }

    #[track_caller]
    fn assert_restores(&self, id: &str, tier: &str, data: &[u8]) {
        let to = self.path(&format!("restored-{id}-{tier}"));
        let _ = std::fs::remove_file(&to);
        self.expect(
            &["restore", id, "--tier", tier, "--to", to.to_str().unwrap()],
            0,
        );
        assert!(std::fs::read(&to).unwrap() == data, "{id} from {tier}");
    }
}

fn bucket_config(server: &S3Server, prefix: &str) -> Option<Vec<u8>> {
    server.get(s3::BUCKET, &format!("{prefix}config"))
}

fn config_path(h: &Host) -> PathBuf {
    h.path("cfg/config.toml")
}

fn vault_id(o: &Output) -> String {
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["vault_id"].as_str().unwrap().to_string()
}

/// Failure 5: the bucket took the config but the reply was lost. The SDK's
/// retry finds the object there: init must see it is its own and finish.
#[test]
fn init_whose_config_reply_is_lost_completes() {
    let server = s3::s3s_fs();
    let proxy = FaultProxy::start(&server.endpoint());
    let h = host(&server, &proxy, "lost/");
    proxy.set(Rules {
        script: vec![Scripted::once("PUT", "/lost/config", Fault::LostReply)],
        ..Rules::default()
    });
    let o = h.init(&[], 0);
    assert_eq!(proxy.stats().lost_reply, 1);
    let id = vault_id(&o);
    assert!(config_path(&h).exists());
    let data = vault_format::testdata::noise(1 << 20, 5);
    let snap = h.backup("a.bin", &data);
    h.assert_restores(&snap, "s3", &data);
    // The same command again reports the same vault.
    assert_eq!(vault_id(&h.init(&[], 0)), id);
}

/// Failure 5: the bucket refuses the config (here: every attempt fails):
/// nothing is left behind, and the same command succeeds once the bucket
/// works.
#[test]
fn init_refused_by_the_bucket_leaves_nothing_and_runs_again() {
    let server = s3::s3s_fs();
    let proxy = FaultProxy::start(&server.endpoint());
    let h = host(&server, &proxy, "refused/");
    proxy.set(Rules {
        script: vec![Scripted::new("PUT", "/refused/config", Fault::Error500, 20)],
        ..Rules::default()
    });
    let o = h.init(&[], 1);
    cli_support::assert_one_error_line(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("run the same command again"), "{err}");
    assert_eq!(h.leftovers(), (vec![], false), "init left files behind");
    assert_eq!(bucket_config(&server, "refused/"), None);
    proxy.clear();
    h.init(&[], 0);
    assert!(bucket_config(&server, "refused/").is_some());
}

/// Failure 5: the config was written (reply lost) and the read that would
/// tell fails too: init cannot know, keeps what it made, says to run it
/// again; the second run finds its vault in the bucket and finishes with
/// the identity it generated.
#[test]
fn init_that_cannot_tell_is_finished_by_the_next() {
    let server = s3::s3s_fs();
    let proxy = FaultProxy::start(&server.endpoint());
    let h = host(&server, &proxy, "unsure/");
    // The existence check sees no vault (as it is); every write lands but
    // its reply is lost; every later read of the config fails.
    proxy.set(Rules {
        script: vec![
            Scripted::once("GET", "/unsure/config", Fault::NotFound),
            Scripted::new("PUT", "/unsure/config", Fault::LostReply, 20),
            Scripted::new("GET", "/unsure/config", Fault::Error500, 40),
        ],
        ..Rules::default()
    });
    let o = h.init(&[], 2);
    assert_eq!(proxy.stats().not_found, 1);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("run the same command again"), "{err}");
    let in_bucket = bucket_config(&server, "unsure/").expect("the write happened");
    proxy.clear();
    let o = h.init(&[], 0);
    let id = vault_id(&o);
    let local = std::fs::read(h.path("vault/config")).unwrap();
    assert_eq!(local, in_bucket, "the local tier holds the bucket's vault");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["attached"], false, "{v}");
    assert!(h.path("cfg/identity.txt").exists());
    assert!(!h.path("cfg/config.toml.init").exists());
    let data = vault_format::testdata::noise(1 << 20, 6);
    let snap = h.backup("a.bin", &data);
    h.assert_restores(&snap, "s3", &data);
    // The identity init generated opens it: a rebuild reads the manifests.
    let rebuilt = h.json(&["index", "rebuild", "--tier", "s3"]);
    assert_eq!(rebuilt["snapshots"], 1, "{rebuilt} {id}");
}

/// Failure 5: two hosts init the same prefix at once; the one that loses
/// the race (its check saw no vault, then its write found one) keeps
/// nothing, names the bucket, and attaches when run again with the
/// winner's identity.
#[test]
fn init_that_loses_a_race_keeps_nothing_and_attaches_when_told() {
    let server = s3::s3s_fs();
    let proxy = FaultProxy::start(&server.endpoint());
    let winner = host(&server, &proxy, "race/");
    let loser = host(&server, &proxy, "race/");
    winner.init(&[], 0);
    // The loser's existence check ran before the winner's write.
    proxy.set(Rules {
        script: vec![Scripted::once("GET", "/race/config", Fault::NotFound)],
        ..Rules::default()
    });
    let o = loser.init(&[], 2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("another host created a vault at s3://") && err.contains("--identity"),
        "{err}"
    );
    assert_eq!(loser.leftovers(), (vec![], false));
    let identity = winner.path("cfg/identity.txt");
    let o = loser.init(&["--identity", identity.to_str().unwrap()], 0);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["attached"], true, "{v}");
}

/// Failure 3: downloads cut off mid-transfer are resumed; only wrong bytes
/// are damage. Restores, `verify --read-data` and `index rebuild` through a
/// proxy that truncates a third of the S3 GET bodies.
#[test]
fn truncated_downloads_are_resumed_by_restore_verify_and_rebuild() {
    let server = s3::s3s_fs();
    let proxy = FaultProxy::start(&server.endpoint());
    let h = host(&server, &proxy, "cut/");
    h.init(&[], 0);
    let a = vault_format::testdata::noise(24 << 20, 7);
    let b = vault_format::testdata::noise(3 << 20, 8);
    let sa = h.backup("a.bin", &a);
    let sb = h.backup("b.bin", &b);
    proxy.set(Rules {
        seed: 13,
        // A quarter of the bodies: often enough to matter, rarely enough
        // that a read breaking on all of its 7 tries (0.25^7) never shows.
        truncate: 0.25,
        only: Some(("GET".into(), "/cut/".into())),
        ..Rules::default()
    });
    for _ in 0..2 {
        h.assert_restores(&sa, "s3", &a);
        h.assert_restores(&sb, "s3", &b);
    }
    let v = h.json(&["verify", "--read-data", "--tier", "s3"]);
    assert!(!v.to_string().contains("unreadable"), "{v}");
    let rebuilt = h.json(&["index", "rebuild", "--tier", "s3"]);
    assert_eq!(rebuilt["snapshots"], 2, "{rebuilt}");
    assert!(
        proxy.stats().truncate >= 3,
        "too few faults to mean anything: {:?}",
        proxy.stats()
    );
}

/// Failure 5: Object Lock asked for on a bucket created without it. The
/// bucket refuses the locked write: init keeps nothing and says to check
/// the bucket's Object Lock (run again without the lock options, it
/// works). Against SeaweedFS, which enforces Object Lock.
#[test]
fn init_with_object_lock_on_a_bucket_without_it_keeps_nothing() {
    let server = s3::seaweedfs(false);
    let proxy = FaultProxy::start(&server.endpoint());
    let h = host(&server, &proxy, "nolock/");
    let o = h.init(
        &[
            "--s3-object-lock",
            "governance",
            "--s3-object-lock-days",
            "1",
        ],
        2,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Object Lock enabled") && err.contains("init kept nothing"),
        "{err}"
    );
    assert_eq!(h.leftovers(), (vec![], false), "{err}");
    h.init(&[], 0);
}
