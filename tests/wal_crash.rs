//! Crash safety of `coffer wal push` (issue 11): a push killed with
//! SIGKILL at any point is completed by PostgreSQL's retry, and the archive
//! has no hole.
//!
//! Real WAL segments of a real PostgreSQL cluster (archived with `cp`) are
//! pushed into a fresh vault, each push killed right after one of its steps
//! (`coffer: wal push: <step> <name>` on stderr with `-v`): after the
//! cluster marker is written (the job's first segment); after the checks
//! (the kill lands while the object is sealed); after the seal (the kill
//! lands in the tier's put: temporary file, fsync, link, directory fsync);
//! after the object is written and before its catalog row; after the row,
//! before the exit PostgreSQL waits for; and a retry killed after it found
//! the object a killed push wrote, again before the row. After every kill
//! the same push again exits 0 and `wal fetch` returns exactly the
//! segment's bytes; a push of other content under the name of an object a
//! killed push wrote still fails loudly. At the end `wal verify` sees every
//! segment and no gap, and the local tier's `wal/` holds only the objects
//! and the cluster marker (a killed put's temporary file is only ever in
//! `tmp/`).
//!
//! No sleeps: the kill is triggered by the step line. Two things pin where
//! it lands. The push's stdout is a pipe that is already full and its
//! report is asked for as `--json`, so a push can never exit on its own
//! between its last step and the kill. And where the kill must land before
//! the catalog row, the test takes the catalog's write lock as soon as the
//! push logs `checked` (its catalog is open by then, and sealing 16 MiB
//! lies ahead): the push's insert waits for the lock until it is killed.

#[path = "support/cli.rs"]
mod cli_support;
#[path = "support/pg.rs"]
mod pg;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cli_support::{all_files, stderr, stdout, Vault};
use pg::PgCluster;
use serde_json::Value;

const JOB: &str = "main";
/// Consecutive segments the test pushes.
const SEGMENTS: usize = 6;
/// A killed push whose step line never came is ended after this (a failure
/// bound only: the kill itself is triggered by the line).
const NO_LINE_LIMIT: Duration = Duration::from_secs(60);

#[test]
fn a_killed_push_is_completed_by_the_retry_and_leaves_no_hole() {
    let started = Instant::now();
    let (_segdir, segs) = segments_from_a_cluster(SEGMENTS);
    let v = Vault::new();
    // No prefetcher processes outliving the fetches below.
    let mut settings = std::fs::read_to_string(&v.config).unwrap();
    settings.push_str("\n[wal]\nprefetch = 0\n");
    std::fs::write(&v.config, settings).unwrap();
    let name = |i: usize| seg_name(&segs[i]).to_string();

    // 0: the job's first segment, killed once its cluster marker is
    // written (before or while the catalog learns the job's cluster).
    killed_after(&v, &segs[0], "cluster marker written", Free);
    assert_eq!(markers(&v).len(), 1, "{:?}", markers(&v));
    retry(&v, &segs[0]);
    assert_fetches(&v, &segs[0]);

    // 1: killed after the checks, while the object is sealed.
    killed_after(&v, &segs[1], "checked", Free);
    retry(&v, &segs[1]);
    assert_fetches(&v, &segs[1]);

    // 2: killed after the seal, while the tier puts the object.
    killed_after(&v, &segs[2], "sealed", Free);
    retry(&v, &segs[2]);
    assert_fetches(&v, &segs[2]);
    assert_eq!(verify(&v)["files"], 3);

    // 3: killed once the object is written, before its catalog row. Other
    // content under its name is refused, loudly. The retry is killed too,
    // once it found (and fsynced) that object, again before the row; the
    // second retry records it.
    killed_after(&v, &segs[3], "object written", HeldFromChecked);
    assert!(object_path(&v, &name(3)).is_file());
    assert_eq!(verify(&v)["files"], 3, "the row was written");
    let other = v.fresh_path("other");
    std::fs::create_dir(&other).unwrap();
    let mut changed = std::fs::read(&segs[3]).unwrap();
    changed[100_000] ^= 0xff;
    let impostor = other.join(name(3));
    std::fs::write(&impostor, &changed).unwrap();
    let o = v.fails(
        &["wal", "push", "--job", JOB, impostor.to_str().unwrap()],
        1,
    );
    assert!(
        stderr(&o).contains("different content"),
        "the other content was not refused as such:\n{}",
        stderr(&o)
    );
    killed_after(&v, &segs[3], "object found", HeldFromChecked);
    assert_eq!(verify(&v)["files"], 3, "the row was written");
    assert!(!retry(&v, &segs[3]), "the object was there already");
    assert_fetches(&v, &segs[3]);

    // 4: killed after the catalog row, before the exit PostgreSQL waits
    // for: it pushes again and is told the file is archived.
    killed_after(&v, &segs[4], "recorded", Free);
    assert_eq!(verify(&v)["files"], 5);
    assert!(!retry(&v, &segs[4]), "the object was there already");
    assert_fetches(&v, &segs[4]);

    // 5: a push nobody kills reports its steps in order.
    let seg5 = segs[5].to_str().unwrap();
    let o = v.ok(&["-v", "wal", "push", "--job", JOB, seg5]);
    let steps: Vec<String> = stderr(&o)
        .lines()
        .filter(|l| l.starts_with("coffer: wal push: "))
        .map(str::to_string)
        .collect();
    let n5 = name(5);
    assert_eq!(
        steps,
        ["checked", "sealed", "object written", "recorded"]
            .map(|s| format!("coffer: wal push: {s} {n5}")),
        "{}",
        stderr(&o)
    );
    assert_fetches(&v, &segs[5]);

    // No hole: every segment is recorded, from the first to the last.
    let r = verify(&v);
    assert_eq!(r["files"], SEGMENTS, "{r}");
    let tls = r["timelines"].as_array().unwrap();
    assert_eq!(tls.len(), 1, "{r}");
    assert_eq!(tls[0]["first"], name(0), "{r}");
    assert_eq!(tls[0]["last"], name(SEGMENTS - 1), "{r}");
    assert_eq!(tls[0]["segments"], SEGMENTS, "{r}");
    assert_eq!(tls[0]["gaps"].as_array().unwrap().len(), 0, "{r}");

    // The tier's wal/ holds the objects and the one cluster marker, nothing
    // else (no temporary file, nothing half written); a killed put's
    // temporary file can only be in tmp/, where the tier's puts make them.
    let wal_dir = v.vault.join("wal");
    let mut objects: Vec<String> = all_files(&wal_dir)
        .iter()
        .filter(|p| p.parent().unwrap().file_name().unwrap() != "system")
        .map(|p| {
            assert_eq!(
                p.parent().unwrap().parent().unwrap(),
                wal_dir,
                "{} is not a WAL object",
                p.display()
            );
            p.file_name().unwrap().to_str().unwrap().to_string()
        })
        .collect();
    objects.sort();
    let names: Vec<String> = (0..SEGMENTS).map(name).collect();
    assert_eq!(objects, names);
    assert_eq!(markers(&v).len(), 1, "{:?}", markers(&v));
    for e in std::fs::read_dir(v.vault.join("tmp")).unwrap() {
        let f = e.unwrap().file_name();
        assert!(
            f.to_string_lossy().starts_with("put-"),
            "tmp/{f:?} is not a tier put's temporary file"
        );
    }
    eprintln!("wal_crash took {:?}", started.elapsed());
}

/// Whether the test holds the catalog while a push runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Catalog {
    /// Never.
    Free,
    /// Its write lock, from the push's `checked` line until the push is
    /// dead: the push's catalog row waits, so a later kill lands before it.
    HeldFromChecked,
}
use Catalog::*;

/// `coffer -v --json wal push --job main SEG`, SIGKILLed right after its
/// `coffer: wal push: STEP NAME` line; asserts it died of the kill, having
/// logged no error. Returns the lines it logged.
fn killed_after(v: &Vault, seg: &Path, step: &str, catalog: Catalog) -> Vec<String> {
    let name = seg_name(seg);
    let line = format!("coffer: wal push: {step} {name}");
    let checked = format!("coffer: wal push: checked {name}");
    let (_full, out) = full_pipe();
    let mut child = v
        .cmd()
        .args(["-v", "--json", "wal", "push", "--job", JOB])
        .arg(seg)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Ends a push stuck on its full stdout (or on the held catalog) when
    // the line never comes, so the test fails instead of hanging.
    let pid = child.id();
    let (done, wait) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let late = wait.recv_timeout(NO_LINE_LIMIT) == Err(mpsc::RecvTimeoutError::Timeout);
        if late {
            // SAFETY: kill(2) has no memory-safety preconditions; the child
            // is not reaped before this thread is joined.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        late
    });
    let mut held = None;
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut log = Vec::new();
    let seen = loop {
        let mut l = String::new();
        if err.read_line(&mut l).unwrap() == 0 {
            break false;
        }
        let l = l.trim_end().to_string();
        if catalog == HeldFromChecked && l == checked {
            held = Some(hold_catalog(v));
        }
        let hit = l == line;
        log.push(l);
        if hit {
            break true;
        }
    };
    if seen {
        let _ = child.kill();
    }
    drop(done);
    let late = watchdog.join().unwrap();
    let status = child.wait().unwrap();
    if let Some(c) = held {
        c.execute_batch("ROLLBACK").unwrap();
    }
    assert!(
        seen,
        "the push ended ({status:?}{}) before `{line}`:\n{}",
        if late {
            ", killed after the time limit"
        } else {
            ""
        },
        log.join("\n")
    );
    assert!(
        catalog == Free || log.contains(&checked),
        "the catalog was never held"
    );
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the push was not killed: {status:?}\n{}",
        log.join("\n")
    );
    assert!(
        !log.iter().any(|l| l.contains("error")),
        "the push failed before it was killed:\n{}",
        log.join("\n")
    );
    log
}

/// The catalog's write lock (a transaction that writes nothing).
fn hold_catalog(v: &Vault) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(v.dir.join("catalog.sqlite")).unwrap();
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    c.execute_batch("BEGIN IMMEDIATE").unwrap();
    c
}

/// A pipe already full: a process writing to its write end blocks until
/// the read end (returned first, to be kept open) is read, which it never is.
fn full_pipe() -> (std::io::PipeReader, std::io::PipeWriter) {
    let (r, mut w) = std::io::pipe().unwrap();
    let fd = w.as_raw_fd();
    // SAFETY: fcntl on a file descriptor we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(flags >= 0);
    // SAFETY: as above.
    assert!(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } >= 0);
    for chunk in [4096, 1] {
        let buf = vec![b' '; chunk];
        loop {
            match w.write(&buf) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling a pipe: {e}"),
            }
        }
    }
    // Blocking again, for the child that inherits it.
    // SAFETY: as above.
    assert!(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } >= 0);
    (r, w)
}

/// PostgreSQL's retry: the same push again, which must exit 0. Returns
/// whether it stored the object (false: it was there already).
#[track_caller]
fn retry(v: &Vault, seg: &Path) -> bool {
    let o = v.ok(&["--json", "wal", "push", "--job", JOB, seg.to_str().unwrap()]);
    let r: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    assert_eq!(r["name"], seg_name(seg), "{r}");
    r["stored"].as_bool().unwrap()
}

/// `wal fetch` returns exactly the segment's bytes.
#[track_caller]
fn assert_fetches(v: &Vault, seg: &Path) {
    let dest = v.fresh_path("RECOVERYXLOG");
    let identity = v.identity();
    v.ok(&[
        "wal",
        "fetch",
        "--job",
        JOB,
        "--identity",
        identity.to_str().unwrap(),
        seg_name(seg),
        dest.to_str().unwrap(),
    ]);
    let (got, want) = (std::fs::read(&dest).unwrap(), std::fs::read(seg).unwrap());
    assert!(
        got == want,
        "wal fetch {} returned {} bytes that are not the segment's {}",
        seg_name(seg),
        got.len(),
        want.len()
    );
    std::fs::remove_file(&dest).unwrap();
}

/// The job's report from `coffer --json wal verify --job main` (exit 0).
fn verify(v: &Vault) -> Value {
    let o = v.ok(&["--json", "wal", "verify", "--job", JOB]);
    let all: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    all[0].clone()
}

/// The job's one directory in the local tier: `wal/<job tag>/`.
fn job_dir(v: &Vault) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(v.vault.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

fn object_path(v: &Vault, name: &str) -> PathBuf {
    job_dir(v).join(name)
}

/// Cluster markers of the job.
fn markers(v: &Vault) -> Vec<PathBuf> {
    all_files(&job_dir(v).join("system"))
}

fn seg_name(seg: &Path) -> &str {
    seg.file_name().unwrap().to_str().unwrap()
}

/// `n` consecutive WAL segments a PostgreSQL cluster archived with `cp`,
/// copied into a directory of the test's own (the cluster is gone).
fn segments_from_a_cluster(n: usize) -> (tempfile::TempDir, Vec<PathBuf>) {
    let pg = PgCluster::start_with(&["-c", "wal_level=replica", "-c", "archive_mode=on"]);
    let (_, archived) = pg.archive_with_cp(n);
    let own = tempfile::tempdir().unwrap();
    let segs: Vec<PathBuf> = archived[..n]
        .iter()
        .map(|p| {
            let to = own.path().join(p.file_name().unwrap());
            std::fs::copy(p, &to).unwrap();
            to
        })
        .collect();
    // Consecutive (16 MiB segments: 256 a log id), so that a hole in the
    // archive would be one `wal verify` reports.
    let number = |p: &PathBuf| {
        let s = seg_name(p);
        u64::from_str_radix(&s[8..16], 16).unwrap() * 256
            + u64::from_str_radix(&s[16..24], 16).unwrap()
    };
    for w in segs.windows(2) {
        assert_eq!(number(&w[1]), number(&w[0]) + 1, "{segs:?}");
    }
    drop(pg);
    (own, segs)
}
