#![allow(dead_code)]
//! Shared helpers for the CLI-level integration tests (`tests/cli.rs`,
//! `tests/crash.rs`, `tests/backward_compatibility.rs`; `tests/s3.rs` uses
//! the restore check): a throwaway vault per test, the `coffer` binary run
//! with a scrubbed environment, deterministic incompressible data, one
//! restore-and-compare check, directory trees as values, and readers for
//! the local tier's layout.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_coffer");

/// `n` bytes of deterministic, incompressible data for `seed`.
pub fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    vault_format::testdata::random(seed, n)
}

/// Writes [`random_bytes`] to `path`; returns them.
pub fn write_random_file(path: &Path, seed: u64, n: usize) -> Vec<u8> {
    let v = random_bytes(seed, n);
    std::fs::write(path, &v).unwrap();
    v
}

/// Exit status (panics if killed by a signal).
pub fn code(o: &Output) -> i32 {
    o.status
        .code()
        .unwrap_or_else(|| panic!("coffer died from a signal: {:?}", o.status))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn describe(args: &[&str], o: &Output) -> String {
    format!(
        "coffer {:?} exited {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args,
        o.status,
        // Restores to stdout can be huge; show a little.
        String::from_utf8_lossy(&o.stdout[..o.stdout.len().min(2000)]),
        stderr(o)
    )
}

/// Asserts a failed run printed exactly one `coffer: error:` line, and that
/// the line says each cause once (an error chain that puts its source both
/// in its message and in `source()` prints it twice).
pub fn assert_one_error_line(o: &Output) {
    let e = stderr(o);
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{e}");
    assert!(
        lines[0].starts_with("coffer: error: "),
        "error line should start with `coffer: error:`: {e}"
    );
    assert_no_repeated_cause(lines[0]);
}

/// Asserts no cause (a `: `-separated part of 12 or more characters)
/// appears twice in an error line.
pub fn assert_no_repeated_cause(line: &str) {
    let parts: Vec<&str> = line
        .split(": ")
        .map(str::trim)
        .filter(|p| p.len() >= 12)
        .collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(p),
            "the cause {p:?} is printed twice: {line}"
        );
    }
}

/// Is `s` a lowercase hex string of `len` characters?
pub fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A vault in a private temporary directory, with its own `HOME`.
pub struct Vault {
    /// Keeps the directory alive.
    pub tmp: tempfile::TempDir,
    /// The directory holding config, keys and catalog.
    pub dir: PathBuf,
    /// The settings file.
    pub config: PathBuf,
    /// The local tier.
    pub vault: PathBuf,
    /// `HOME` for child processes.
    pub home: PathBuf,
    /// Scratch space for inputs and restores.
    pub work: PathBuf,
}

impl Vault {
    /// Paths only; nothing initialised.
    pub fn uninit() -> Vault {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let home = root.join("home");
        let work = root.join("work");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let dir = root.join("coffer");
        Vault {
            config: dir.join("config.toml"),
            vault: root.join("vault"),
            dir,
            home,
            work,
            tmp,
        }
    }

    /// A vault with a generated identity.
    pub fn new() -> Vault {
        let v = Vault::uninit();
        v.init(&[]);
        v
    }

    /// Runs `coffer init --json` with extra arguments; returns its report.
    pub fn init(&self, extra: &[&str]) -> Value {
        let local = self.vault.to_str().unwrap().to_string();
        let mut args = vec!["--json", "init", "--local", &local];
        args.extend_from_slice(extra);
        let o = self.ok(&args);
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// `coffer --config CONFIG` with a scrubbed environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&self.config);
        for k in [
            "COFFER_IDENTITY",
            "COFFER_CONFIG",
            "BACKUP_DIRECTORY",
            "XDG_CONFIG_HOME",
            "XDG_DATA_HOME",
        ] {
            c.env_remove(k);
        }
        c.env("HOME", &self.home).current_dir(&self.work);
        c
    }

    /// Runs coffer to completion (stdin closed).
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs coffer and asserts exit 0.
    pub fn ok(&self, args: &[&str]) -> Output {
        let o = self.run(args);
        assert!(o.status.success(), "{}", describe(args, &o));
        o
    }

    /// Runs coffer and asserts the exit status.
    pub fn fails(&self, args: &[&str], status: i32) -> Output {
        let o = self.run(args);
        assert_eq!(o.status.code(), Some(status), "{}", describe(args, &o));
        o
    }

    /// Runs coffer with `input` on stdin.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let output = std::thread::scope(|s| {
            s.spawn(move || {
                stdin.write_all(input).unwrap();
            });
            child.wait_with_output().unwrap()
        });
        output
    }

    /// `coffer --json backup ARGS...`; asserts success, returns the report.
    pub fn backup_json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json", "backup"];
        a.extend_from_slice(args);
        let o = self.ok(&a);
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)))
    }

    /// Backs up `path`; returns the snapshot id.
    pub fn backup(&self, path: &Path, extra: &[&str]) -> String {
        let mut a = vec!["backup"];
        a.extend_from_slice(extra);
        a.push(path.to_str().unwrap());
        let o = self.ok(&a);
        let id = stdout(&o).trim().to_string();
        assert!(is_hex(&id, 32), "backup printed {id:?}, not a snapshot id");
        id
    }

    /// Backs up `path` with `-v`; returns the snapshot id and the packs
    /// logged as stored.
    pub fn backup_verbose(&self, path: &Path, extra: &[&str]) -> (String, Vec<String>) {
        let mut a = vec!["-v", "backup"];
        a.extend_from_slice(extra);
        a.push(path.to_str().unwrap());
        let o = self.ok(&a);
        let id = stdout(&o).trim().to_string();
        let packs = stderr(&o)
            .lines()
            .filter_map(|l| l.strip_prefix("coffer: pack stored "))
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect();
        (id, packs)
    }

    /// Backs up `data` through stdin; returns the snapshot id.
    pub fn backup_stdin(&self, data: &[u8], extra: &[&str]) -> String {
        let mut a = vec!["backup"];
        a.extend_from_slice(extra);
        a.push("-");
        let o = self.run_stdin(&a, data);
        assert!(o.status.success(), "{}", describe(&a, &o));
        let id = stdout(&o).trim().to_string();
        assert!(is_hex(&id, 32), "backup printed {id:?}, not a snapshot id");
        id
    }

    /// `coffer snapshots --json`.
    pub fn snapshots(&self) -> Vec<Value> {
        let o = self.ok(&["--json", "snapshots"]);
        serde_json::from_slice::<Value>(&o.stdout)
            .unwrap()
            .as_array()
            .expect("snapshots --json is an array")
            .clone()
    }

    /// Snapshot ids from the catalog, as a set.
    pub fn snapshot_ids(&self) -> BTreeSet<String> {
        self.snapshots()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Restores `sel` to `to`.
    pub fn restore_to(&self, sel: &str, to: &Path, extra: &[&str]) -> Output {
        let mut a = vec!["restore", sel, "--to", to.to_str().unwrap()];
        a.extend_from_slice(extra);
        self.run(&a)
    }

    /// Asserts that restoring `sel` to a new file yields exactly `expected`
    /// (the file is removed afterwards).
    #[track_caller]
    pub fn assert_restores(&self, sel: &str, expected: &[u8]) {
        let to = self.fresh_path("restored");
        assert_restores_with(self.cmd(), sel, RestoreTo::File(&to), &[], expected);
        std::fs::remove_file(&to).unwrap();
    }

    /// Asserts that restoring `sel` (with `extra` arguments) to stdout
    /// yields exactly `expected`.
    #[track_caller]
    pub fn assert_restores_stdout(&self, sel: &str, extra: &[&str], expected: &[u8]) {
        assert_restores_with(self.cmd(), sel, RestoreTo::Stdout, extra, expected);
    }

    /// A path under `work` that does not exist yet.
    pub fn fresh_path(&self, stem: &str) -> PathBuf {
        for i in 0.. {
            let p = self.work.join(format!("{stem}-{i}"));
            if !p.exists() {
                return p;
            }
        }
        unreachable!()
    }

    /// The identity file init wrote.
    pub fn identity(&self) -> PathBuf {
        self.dir.join("identity.txt")
    }

    /// Pack object paths in the local tier, sorted.
    pub fn pack_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let packs = self.vault.join("packs");
        for fan in std::fs::read_dir(&packs).unwrap() {
            let fan = fan.unwrap().path();
            for p in std::fs::read_dir(&fan).unwrap() {
                out.push(p.unwrap().path());
            }
        }
        out.sort();
        out
    }

    /// Path of pack `id` in the local tier.
    pub fn pack_path(&self, id: &str) -> PathBuf {
        self.vault.join("packs").join(&id[..2]).join(id)
    }

    /// Snapshot ids with a manifest object in the local tier.
    pub fn manifest_ids(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.vault.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Removes the catalog and its SQLite side files.
    pub fn delete_catalog(&self) {
        for name in ["catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"] {
            match std::fs::remove_file(self.dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("removing {name}: {e}"),
            }
        }
        assert!(!self.dir.join("catalog.sqlite").exists());
    }
}

/// Where [`restore_and_compare`] has coffer write a snapshot.
#[derive(Debug, Clone, Copy)]
pub enum RestoreTo<'a> {
    /// `--to -`: the stream on stdout (the in-order pipeline).
    Stdout,
    /// `--to FILE`: a new file (the out-of-order file restore).
    File(&'a Path),
}

/// Runs `restore SEL --to TO EXTRA...` with `cmd` (a `coffer` command with
/// its `--config` and environment set up by the test's own runner) and
/// checks that it exits 0 having written exactly `expected`. Returns the
/// run's output (its stderr says which tier served what), or a message
/// with the command, the sizes and the first differing byte; the data
/// itself only when both sides are short.
pub fn restore_and_compare(
    mut cmd: Command,
    sel: &str,
    to: RestoreTo,
    extra: &[&str],
    expected: &[u8],
) -> Result<Output, String> {
    let mut args = vec!["restore", sel, "--to"];
    args.push(match to {
        RestoreTo::Stdout => "-",
        RestoreTo::File(p) => p.to_str().unwrap(),
    });
    args.extend_from_slice(extra);
    let o = cmd.args(&args).stdin(Stdio::null()).output().unwrap();
    if !o.status.success() {
        return Err(describe(&args, &o));
    }
    let got = match to {
        RestoreTo::Stdout => o.stdout.clone(),
        RestoreTo::File(p) => std::fs::read(p).map_err(|e| {
            format!(
                "coffer {args:?} succeeded but {} cannot be read: {e}",
                p.display()
            )
        })?,
    };
    if got != expected {
        return Err(format!(
            "coffer {args:?} restored {} bytes that differ from the {} expected: {}",
            got.len(),
            expected.len(),
            difference(&got, expected)
        ));
    }
    Ok(o)
}

/// [`restore_and_compare`], panicking with its message on a mismatch.
#[track_caller]
pub fn assert_restores_with(
    cmd: Command,
    sel: &str,
    to: RestoreTo,
    extra: &[&str],
    expected: &[u8],
) -> Output {
    match restore_and_compare(cmd, sel, to, extra, expected) {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    }
}

/// Where `got` first differs from `want`, and both when they are short.
fn difference(got: &[u8], want: &[u8]) -> String {
    let at = got.iter().zip(want).position(|(g, w)| g != w);
    let mut s = match at {
        Some(i) => format!("first difference at byte {i}"),
        None => format!(
            "one is a prefix of the other ({} bytes shared)",
            got.len().min(want.len())
        ),
    };
    if got.len() <= 64 && want.len() <= 64 {
        s.push_str(&format!(
            "; got {:?}, expected {:?}",
            String::from_utf8_lossy(got),
            String::from_utf8_lossy(want)
        ));
    }
    s
}

/// One entry of a directory tree, as a restore must reproduce it.
#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        mtime: i64,
        data: Vec<u8>,
    },
    Link {
        target: PathBuf,
    },
    /// A FIFO or device node: full mode (type bits included) and mtime.
    Special {
        mode: u32,
        mtime: i64,
    },
}

/// Everything under `root` (not `root` itself), by relative path.
pub fn tree(root: &Path) -> BTreeMap<String, Node> {
    use std::os::unix::fs::MetadataExt;
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<String, Node>) {
        for e in std::fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            let rel = rel.join(e.file_name());
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let key = rel.to_string_lossy().into_owned();
            if m.file_type().is_symlink() {
                let target = std::fs::read_link(e.path()).unwrap();
                out.insert(key, Node::Link { target });
            } else if m.is_dir() {
                out.insert(
                    key,
                    Node::Dir {
                        mode: m.mode() & 0o7777,
                    },
                );
                walk(root, &rel, out);
            } else if !m.is_file() {
                // FIFOs and devices: reading one would block or never end.
                out.insert(
                    key,
                    Node::Special {
                        mode: m.mode(),
                        mtime: m.mtime(),
                    },
                );
            } else {
                out.insert(
                    key,
                    Node::File {
                        mode: m.mode() & 0o7777,
                        mtime: m.mtime(),
                        data: std::fs::read(e.path()).unwrap(),
                    },
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

/// Every file under `dir` (recursively), skipping nothing.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Does the ASCII string `needle` occur in `hay`? (Via std's optimised
/// substring search; a lossy UTF-8 view never hides or invents ASCII runs.)
pub fn contains_ascii(hay: &[u8], needle: &str) -> bool {
    assert!(needle.is_ascii() && !needle.is_empty());
    String::from_utf8_lossy(hay).contains(needle)
}

/// Makes a fresh age key pair with `age-keygen`; returns the identity file
/// and its recipient.
pub fn age_keygen(path: &Path) -> String {
    let o = Command::new("age-keygen")
        .arg("-o")
        .arg(path)
        .output()
        .expect("age-keygen (install the `age` package)");
    assert!(o.status.success(), "age-keygen: {}", stderr(&o));
    let o = Command::new("age-keygen")
        .arg("-y")
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "age-keygen -y: {}", stderr(&o));
    let r = stdout(&o).trim().to_string();
    assert!(r.starts_with("age1"), "recipient {r:?}");
    r
}

/// Runs `cmd` (a `coffer -v …` command, stdin and stdout closed) and
/// SIGKILLs it as soon as the `nth` stderr line that `hit`s appears: the
/// step log is the trigger, so no sleeps. Panics if the run ends before
/// that line. Returns how it ended and the lines read.
pub fn killed_at_line(
    mut cmd: Command,
    hit: impl Fn(&str) -> bool,
    nth: usize,
    step: &str,
) -> (ExitStatus, Vec<String>) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = Vec::new();
    let mut seen = 0;
    while seen < nth {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let status = child.wait().unwrap();
            panic!(
                "the run ended ({status:?}) before its {nth}. `{step}` line:\n{}",
                log.join("\n")
            );
        }
        let line = line.trim_end().to_string();
        seen += usize::from(hit(&line));
        log.push(line);
    }
    child.kill().unwrap();
    (child.wait().unwrap(), log)
}
