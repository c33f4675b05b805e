//! Crash consistency: `coffer backup` is killed with SIGKILL at each step of
//! its commit protocol (pack sealed, pack stored, manifest stored) and while
//! its stdin is still being written. After every kill the vault must be
//! exactly as good as before: earlier snapshots listed and restorable, no
//! snapshot from the killed run unless its manifest was durable (then a
//! rebuild finds it, complete), `verify` clean, and the next backup, which
//! deduplicates against whatever the killed run left, restorable.
//!
//! The kill is triggered by the `-v` step log read from the child's stderr,
//! so there are no sleeps: the kill lands right after the logged step.

#[path = "support/cli.rs"]
mod cli_support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use cli_support::*;

const MB: usize = 1_000_000;
const SIGKILL: i32 = 9;

/// What the killed run logged before it died.
struct Killed {
    status: ExitStatus,
    log: Vec<String>,
}

impl Killed {
    /// The snapshot whose manifest the run logged as stored, if any.
    fn manifest(&self) -> Option<String> {
        self.log.iter().find_map(|l| {
            l.strip_prefix("coffer: manifest stored ")
                .map(|s| s.trim().to_string())
        })
    }
}

/// Runs `coffer -v backup --job crash PATH` and SIGKILLs it as soon as the
/// `nth` stderr line starting with `step` appears.
fn backup_killed_at(v: &Vault, input: &Path, step: &str, nth: usize) -> Killed {
    let mut cmd = v.cmd();
    cmd.args(["-v", "backup", "--job", "crash"]).arg(input);
    let (status, log) = killed_at_line(cmd, |l| l.starts_with(step), nth, step);
    Killed { status, log }
}

/// Runs `coffer -v backup --job crash -`, writes `written` to its stdin and
/// SIGKILLs it with the stream still open.
fn stdin_backup_killed_midway(v: &Vault, written: &[u8]) -> Killed {
    let mut child = v
        .cmd()
        .args(["-v", "backup", "--job", "crash", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // The step log is a few lines; drain it beside the writer anyway.
    let (status, log) = std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut text = String::new();
            stderr.read_to_string(&mut text).unwrap();
            text
        });
        stdin.write_all(written).unwrap();
        // The pipe holds at most 64 KiB: coffer has consumed nearly all of
        // `written` and is waiting for more.
        child.kill().unwrap();
        let status = child.wait().unwrap();
        drop(stdin);
        (status, reader.join().unwrap())
    });
    Killed {
        status,
        log: log.lines().map(str::to_string).collect(),
    }
}

/// Checks the vault after a killed backup whose input was `killed_input`;
/// `committed` are the snapshots known to be committed so far (updated).
fn assert_survived(
    v: &Vault,
    killed: &Killed,
    killed_input: &[u8],
    committed: &mut BTreeSet<String>,
    a: &(String, Vec<u8>),
    round: u64,
) {
    let what = format!("round {round}, log:\n{}", killed.log.join("\n"));
    // Restores go to stdout: the file target's temporary-and-rename path is
    // covered in tests/cli.rs, and this keeps the test off the disk.
    let assert_restores = |sid: &str, data: &[u8]| {
        restore_and_compare(v.cmd(), sid, RestoreTo::Stdout, &[], data)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    };
    assert!(
        !killed.log.iter().any(|l| l.contains("error")),
        "the run failed before it was killed; {what}"
    );
    match killed.manifest() {
        None => {
            assert_eq!(
                killed.status.signal(),
                Some(SIGKILL),
                "the run should have died from the kill; {what}"
            );
            // Killed before its manifest: no trace of the snapshot anywhere.
            assert_eq!(&v.snapshot_ids(), committed, "{what}");
            assert_eq!(&v.manifest_ids(), committed, "{what}");
        }
        Some(sid) => {
            // Killed after the manifest was durable (the catalog commit may
            // or may not have made it): the manifest is in the tier, and a
            // rebuild lists the snapshot, complete.
            assert!(!committed.contains(&sid));
            let mut with = committed.clone();
            with.insert(sid.clone());
            assert_eq!(v.manifest_ids(), with, "{what}");
            let listed = v.snapshot_ids();
            assert!(listed == *committed || listed == with, "{listed:?}; {what}");
            let o = v.ok(&["--json", "index", "rebuild"]);
            let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(rep["problems"], serde_json::json!([]), "{rep}; {what}");
            assert_eq!(v.snapshot_ids(), with, "{what}");
            assert_restores(&sid, killed_input);
            committed.insert(sid);
        }
    }

    // The good snapshot from before is intact.
    assert!(v.snapshot_ids().contains(&a.0));
    assert_restores(&a.0, &a.1);
    let o = v.ok(&["verify"]);
    assert!(stderr(&o).contains("no problems"), "{}", stderr(&o));

    // A fresh backup of new data, most of it deduplicated against whatever
    // the killed run left in the tier and catalog, commits and restores.
    let mut fresh = random_bytes(1000 + round, 2 * MB);
    fresh.extend_from_slice(&killed_input[..killed_input.len().min(48 * MB)]);
    let id = v.backup_stdin(&fresh, &["--job", "fresh"]);
    assert_restores(&id, &fresh);
    committed.insert(id);
    assert_eq!(&v.snapshot_ids(), committed, "{what}");
}

#[test]
fn backup_killed_at_any_step_leaves_the_vault_consistent() {
    let v = Vault::new();
    let a_path = v.work.join("a.bin");
    let a_data = write_random_file(&a_path, 1, 40 * MB);
    let a = (v.backup(&a_path, &["--job", "good"]), a_data);
    let mut committed = BTreeSet::from([a.0.clone()]);

    let steps = [
        ("coffer: pack sealed ", 1),
        ("coffer: pack stored ", 1),
        ("coffer: pack stored ", 2),
        ("coffer: manifest stored ", 1),
    ];
    for (round, (step, nth)) in steps.into_iter().enumerate() {
        let round = round as u64;
        let input = v.work.join(format!("crash-{round}.bin"));
        let data = write_random_file(&input, 100 + round, 100 * MB);
        let killed = backup_killed_at(&v, &input, step, nth);
        let logged = killed.log.iter().filter(|l| l.starts_with(step)).count();
        assert_eq!(logged, nth, "{:?}", killed.log);
        if step.contains("manifest") {
            assert!(killed.manifest().is_some());
        } else {
            assert!(killed.manifest().is_none(), "{:?}", killed.log);
        }
        assert_survived(&v, &killed, &data, &mut committed, &a, round);
        std::fs::remove_file(&input).unwrap();
    }

    // Killed while the input is still arriving on stdin.
    let round = steps.len() as u64;
    let data = random_bytes(100 + round, 100 * MB);
    let half = &data[..data.len() / 2];
    let killed = stdin_backup_killed_midway(&v, half);
    assert!(killed.manifest().is_none(), "{:?}", killed.log);
    assert_survived(&v, &killed, half, &mut committed, &a, round);

    // Finally every committed chunk still passes its keyed hash check, and
    // a catalog rebuilt from scratch knows exactly the committed snapshots.
    v.ok(&["verify", "--read-data"]);
    v.delete_catalog();
    v.ok(&["index", "rebuild"]);
    assert_eq!(v.snapshot_ids(), committed);
    v.assert_restores(&a.0, &a.1);
}
