//! A backup that fails — because a tier refuses a write, or because the
//! stream's producer reports failure after a clean-looking EOF — commits no
//! snapshot, and the vault stays usable.

use std::io::{Cursor, Read};
use std::sync::Arc;

use coffer::catalog::Catalog;
use coffer::pipeline::backup::{self, BackupContext, BackupRequest};
use coffer::pipeline::restore::{self, ReadContext};
use coffer::progress::Silent;
use coffer::source::Source;
use coffer::tier::fault::FaultTier;
use coffer::tier::local::LocalTier;
use coffer::tier::{keys, Tier};
use vault_format::chunker::ChunkerParams;
use vault_format::config::VaultConfig;
use vault_format::keys::{DedupKey, Identity};
use vault_format::pack::PackParams;
use vault_format::VaultId;

struct Stream {
    data: Cursor<Vec<u8>>,
    fail_at_finish: bool,
}

impl Source for Stream {
    fn kind(&self) -> &str {
        "stdin"
    }
    fn reader(&mut self) -> &mut (dyn Read + Send) {
        &mut self.data
    }
    fn finish(&mut self) -> coffer::Result<serde_json::Map<String, serde_json::Value>> {
        if self.fail_at_finish {
            return Err(coffer::Error::Source {
                what: "test producer".into(),
                detail: "exited with status 1".into(),
            });
        }
        Ok(Default::default())
    }
}

use vault_format::testdata::noise;

struct Fixture {
    _dir: tempfile::TempDir,
    tier: Arc<LocalTier>,
    config: VaultConfig,
    identity: Identity,
    key: DedupKey,
    catalog: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let identity = Identity::generate();
    let key = DedupKey::generate();
    let pack = PackParams {
        target_size: 4 << 20,
        ..PackParams::default()
    };
    let config = VaultConfig::new(
        VaultId::random(),
        "2026-11-24T00:00:00Z".into(),
        ChunkerParams::default(),
        pack,
        &identity.to_recipients(),
        &key,
    )
    .unwrap();
    let tier = Arc::new(LocalTier::create("local", &dir.path().join("vault")).unwrap());
    tier.put_bytes(keys::CONFIG, &config.encode()).unwrap();
    let catalog = dir.path().join("catalog.sqlite");
    Fixture {
        _dir: dir,
        tier,
        config,
        identity,
        key,
        catalog,
    }
}

impl Fixture {
    fn ctx(&self, tier: Arc<dyn Tier>) -> BackupContext {
        BackupContext {
            tier,
            offsite: vec![],
            catalog_path: self.catalog.clone(),
            config: self.config.clone(),
            recipients: self.identity.to_recipients(),
            dedup_key: self.key.clone(),
            threads: 2,
            offsite_retry: std::time::Duration::ZERO,
        }
    }

    fn snapshots(&self) -> usize {
        Catalog::open(&self.catalog)
            .unwrap()
            .snapshots(None)
            .unwrap()
            .len()
    }

    fn restore(&self, id: &vault_format::SnapshotId) -> Vec<u8> {
        let m = Catalog::open(&self.catalog).unwrap().manifest(id).unwrap();
        let ctx = ReadContext {
            tiers: vec![self.tier.clone()],
            catalog_path: self.catalog.clone(),
            identity: Arc::new(Identity::parse(&self.identity.to_file_text("t")).unwrap()),
            idkey: self.key.chunk_id_key(),
            threads: 2,
            fallbacks: Default::default(),
        };
        let mut out = Vec::new();
        restore::run(&ctx, &m, &mut out, &Silent).unwrap();
        out
    }
}

#[test]
fn tier_failure_mid_backup_commits_no_snapshot() {
    let f = fixture();
    let data = noise(20 << 20, 1);
    // Two packs get through, the third put fails.
    let faulty: Arc<dyn Tier> = Arc::new(FaultTier::new(f.tier.clone(), 2));
    let mut src = Stream {
        data: Cursor::new(data.clone()),
        fail_at_finish: false,
    };
    let err =
        backup::run(&f.ctx(faulty), &mut src, &BackupRequest::default(), &Silent).unwrap_err();
    assert!(err.to_string().contains("injected fault"), "{err}");
    assert_eq!(f.snapshots(), 0);
    assert!(f.tier.list(keys::SNAPSHOTS).unwrap().is_empty());
    assert_eq!(
        f.tier.list(keys::PACKS).unwrap().len(),
        2,
        "the durable packs stay"
    );

    // The next backup works, reuses the durable packs' chunks, restores exactly.
    let mut src = Stream {
        data: Cursor::new(data.clone()),
        fail_at_finish: false,
    };
    let rep = backup::run(
        &f.ctx(f.tier.clone()),
        &mut src,
        &BackupRequest::default(),
        &Silent,
    )
    .unwrap();
    assert!(
        rep.report.reused_chunks > 0,
        "chunks of the failed run's packs are reused"
    );
    assert_eq!(f.snapshots(), 1);
    assert_eq!(f.restore(&rep.report.id), data);
}

#[test]
fn producer_failure_after_eof_commits_no_snapshot() {
    let f = fixture();
    let mut src = Stream {
        data: Cursor::new(noise(3 << 20, 2)),
        fail_at_finish: true,
    };
    let err = backup::run(
        &f.ctx(f.tier.clone()),
        &mut src,
        &BackupRequest::default(),
        &Silent,
    )
    .unwrap_err();
    assert!(err.to_string().contains("exited with status 1"), "{err}");
    assert!(
        err.to_string().contains("no snapshot was committed"),
        "{err}"
    );
    assert_eq!(f.snapshots(), 0);
    assert!(f.tier.list(keys::SNAPSHOTS).unwrap().is_empty());
}

#[test]
fn empty_stream_round_trips() {
    let f = fixture();
    let mut src = Stream {
        data: Cursor::new(Vec::new()),
        fail_at_finish: false,
    };
    let rep = backup::run(
        &f.ctx(f.tier.clone()),
        &mut src,
        &BackupRequest::default(),
        &Silent,
    )
    .unwrap();
    assert_eq!(rep.report.raw_size, 0);
    assert!(f.restore(&rep.report.id).is_empty());
}

#[test]
fn full_disk_commits_nothing_and_says_what_to_do_once() {
    let f = fixture();
    let data = noise(12 << 20, 3);
    // One pack gets through, then the tier's disk is full.
    let full: Arc<dyn Tier> = Arc::new(FaultTier::disk_full(f.tier.clone(), 1));
    let mut src = Stream {
        data: Cursor::new(data),
        fail_at_finish: false,
    };
    let err = coffer::commands::backup::backup_with(
        &f.ctx(full),
        &mut src,
        &BackupRequest::default(),
        &Silent,
    )
    .unwrap_err();
    assert!(matches!(err, coffer::Error::DiskFull { .. }), "{err}");
    let msg = format!("{:#}", anyhow::Error::from(err));
    assert!(msg.contains("nothing was committed"), "{msg}");
    assert!(msg.contains("free space"), "{msg}");
    assert!(msg.contains("coffer prune"), "{msg}");
    let full_text = std::io::Error::from(std::io::ErrorKind::StorageFull).to_string();
    assert_eq!(msg.matches(&full_text).count(), 1, "cause once: {msg}");
    assert_eq!(f.snapshots(), 0);
    assert!(f.tier.list(keys::SNAPSHOTS).unwrap().is_empty());
}
