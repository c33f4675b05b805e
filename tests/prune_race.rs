//! The race prune exists to survive, made deterministic: a backup that
//! reuses the chunks of a pack prune is condemning, run at each step of the
//! protocol (vault-format/SPEC.md "Deletion"). The backup runs inside
//! prune's own progress callback, so "at step k" is exact, with no sleeps
//! and no threads racing. Whatever the step, the backup's snapshot must
//! restore byte for byte afterwards and `verify --read-data` be clean.

use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use coffer::commands::{self, backup, forget, init, prune, verify};
use coffer::pipeline::backup::BackupRequest;
use coffer::progress::{Event, Progress, Silent};
use coffer::source::Source;
use coffer::Vault;
use vault_format::SnapshotId;

/// A stream in memory.
struct Bytes(Cursor<Vec<u8>>);

impl Source for Bytes {
    fn kind(&self) -> &str {
        "stdin"
    }
    fn reader(&mut self) -> &mut (dyn std::io::Read + Send) {
        &mut self.0
    }
    fn finish(&mut self) -> coffer::Result<serde_json::Map<String, serde_json::Value>> {
        Ok(Default::default())
    }
}

fn data(seed: u8, n: usize) -> Vec<u8> {
    vault_format::testdata::random(u64::from(seed), n)
}

fn new_vault(dir: &Path) -> Vault {
    let settings = dir.join("coffer/config.toml");
    init::init(&init::InitOptions {
        settings_path: settings.clone(),
        local: dir.join("vault"),
        recipients: vec![],
        chunker: Default::default(),
        pack: Default::default(),
        s3: None,
        identity: None,
    })
    .unwrap();
    Vault::open(&settings).unwrap()
}

fn back_up(vault: &Vault, job: &str, bytes: &[u8]) -> SnapshotId {
    let mut src = Bytes(Cursor::new(bytes.to_vec()));
    let req = BackupRequest {
        job: job.into(),
        ..Default::default()
    };
    backup::backup(vault, &mut src, &req, &Silent).unwrap().id
}

fn restore(vault: &Vault, id: &SnapshotId) -> Vec<u8> {
    let ctx = commands::read_context(vault, None, "restore").unwrap();
    let m = vault.catalog().unwrap().manifest(id).unwrap();
    let mut out = Vec::new();
    coffer::pipeline::restore::run(&ctx, &m, &mut out, &Silent).unwrap();
    out
}

/// Runs `act` at the `at`-th prune step (counting every step and pack
/// event); records the steps seen.
struct Interleave<'a> {
    at: usize,
    seen: AtomicUsize,
    act: Mutex<Option<Box<dyn FnOnce() + Send + 'a>>>,
    steps: Mutex<Vec<String>>,
}

impl Progress for Interleave<'_> {
    fn event(&self, e: &Event) {
        let name = match e {
            Event::Step(s) => s.clone(),
            Event::PackSealed { .. } => "pack sealed".into(),
            Event::PackStored { .. } => "pack stored".into(),
            _ => return,
        };
        self.steps.lock().unwrap().push(name);
        if self.seen.fetch_add(1, Ordering::SeqCst) == self.at {
            if let Some(act) = self.act.lock().unwrap().take() {
                act();
            }
        }
    }
}

/// One run: a dead pack (the forgotten first night) and a half-dead one
/// (repacked), a backup reusing both at step `at`. Returns the steps prune
/// took, and whether the backup ran.
fn race_at(at: usize) -> (Vec<String>, bool) {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path());
    // Night 1: A (its own pack, dead after forget) and B, C in a pack that
    // night 2 half reuses.
    let a = data(1, 3 << 20);
    let night1 = [a.clone(), data(2, 2 << 20)].concat();
    let first = back_up(&vault, "db", &night1);
    let night2 = [data(2, 2 << 20), data(3, 1 << 20)].concat();
    let second = back_up(&vault, "db", &night2);
    forget::forget(
        &vault,
        &forget::ForgetOptions {
            snapshots: vec![first.to_hex()],
            ..Default::default()
        },
        &Silent,
    )
    .unwrap();
    // The racing backup reuses night 1's chunks, which prune is condemning.
    let racer: Mutex<Option<SnapshotId>> = Mutex::new(None);
    let p = Interleave {
        at,
        seen: AtomicUsize::new(0),
        act: Mutex::new(Some(Box::new(|| {
            *racer.lock().unwrap() = Some(back_up(&vault, "racer", &night1));
        }))),
        steps: Mutex::new(Vec::new()),
    };
    let opts = at_once(&vault);
    let ctx = commands::read_context(&vault, None, "prune").unwrap();
    prune::prune(&vault, &ctx, &opts, &p).unwrap();
    let steps = p.steps.into_inner().unwrap();
    let raced = racer.lock().unwrap().is_some();
    // Whatever happened, every kept snapshot restores exactly...
    if let Some(id) = *racer.lock().unwrap() {
        assert_eq!(restore(&vault, &id), night1, "step {at}: the racing backup");
    }
    assert_eq!(restore(&vault, &second), night2, "step {at}: night 2");
    // ...and the vault is whole.
    let ctx = commands::read_context(&vault, None, "verify").unwrap();
    let rep = verify::verify(&vault, Some(&ctx), &Silent).unwrap();
    assert!(rep.problems.is_empty(), "step {at}: {:?}", rep.problems);
    // A second prune completes what the race held back, and still loses nothing.
    prune::prune(&vault, &ctx, &at_once(&vault), &Silent).unwrap();
    if let Some(id) = *racer.lock().unwrap() {
        assert_eq!(
            restore(&vault, &id),
            night1,
            "step {at}: after a second prune"
        );
    }
    assert_eq!(restore(&vault, &second), night2);
    (steps, raced)
}

#[test]
fn a_backup_reusing_condemned_chunks_at_any_prune_step_restores() {
    // First, how many steps there are (a run with no racer).
    let (steps, _) = race_at(usize::MAX);
    assert!(
        steps.iter().any(|s| s.contains("repacked")) && steps.iter().any(|s| s.contains("deleted")),
        "the scenario must repack and delete: {steps:?}"
    );
    for (at, step) in steps.iter().enumerate() {
        let (_, raced) = race_at(at);
        assert!(raced, "step {at} ({step}) was not reached");
    }
}

/// Prune as a vault only this host writes runs it: grace 0, everything
/// sparse repacked, no budget.
fn at_once(vault: &coffer::vault::Vault) -> prune::PruneOptions {
    prune::options(
        vault,
        false,
        Some(std::time::Duration::ZERO),
        Some(0.0),
        Some(100.0),
    )
    .unwrap()
}
