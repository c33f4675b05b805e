//! `[[jobs]]` and `coffer run`: jobs run when named or when due (judged at
//! a clock the test sets with COFFER_TEST_NOW, never by waiting), a
//! directory job leaves out its excludes, retention runs after each
//! backup, a failing job fails alone (status 1) and the others still run,
//! a job is never run twice at once, and `coffer runs` lists it all.

#[path = "support/cli.rs"]
mod cli_support;

use std::time::{Duration, SystemTime};

use cli_support::*;
use serde_json::Value;

fn at(offset: Duration) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() + offset).to_string()
}

fn run_at(v: &Vault, clock: &str, args: &[&str]) -> (i32, Value) {
    let mut a = vec!["--json", "run"];
    a.extend_from_slice(args);
    let o = v
        .cmd()
        .args(&a)
        .env("COFFER_TEST_NOW", clock)
        .output()
        .unwrap();
    let rep: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("coffer run: {}", String::from_utf8_lossy(&o.stderr)));
    (o.status.code().unwrap_or(-1), rep)
}

fn job<'a>(rep: &'a Value, name: &str) -> &'a Value {
    rep["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == name)
        .unwrap_or_else(|| panic!("no job {name} in {rep}"))
}

fn append(v: &Vault, toml: &str) {
    let mut s = std::fs::read_to_string(&v.config).unwrap();
    s.push_str(toml);
    std::fs::write(&v.config, s).unwrap();
}

#[test]
fn due_jobs_run_once_per_interval_with_excludes_retention_and_failures_isolated() {
    let v = Vault::new();
    let app = v.work.join("app");
    for d in ["src", "node_modules/left-pad", ".git"] {
        std::fs::create_dir_all(app.join(d)).unwrap();
    }
    std::fs::write(app.join("src/main.js"), b"console.log(1)\n").unwrap();
    std::fs::write(app.join("node_modules/left-pad/index.js"), b"x").unwrap();
    std::fs::write(app.join(".git/HEAD"), b"ref").unwrap();
    append(
        &v,
        &format!(
            r#"
[[jobs]]
name = "files"
directory = "{}"
exclude = ["node_modules", ".git"]
every = "24h"
tags = ["nightly"]
retention = {{ keep-last = 2 }}

[[jobs]]
name = "broken"
command = ["sh", "-c", "echo partial; exit 7"]
every = "24h"

[[jobs]]
name = "manual"
file = "{}"
"#,
            app.display(),
            app.join("src/main.js").display()
        ),
    );

    // Never run: every scheduled job is due; the failing one fails alone.
    let now = at(Duration::ZERO);
    let (code, rep) = run_at(&v, &now, &[]);
    assert_eq!(code, 1, "{rep}");
    assert_eq!(job(&rep, "files")["outcome"], "ok", "{rep}");
    assert_eq!(job(&rep, "broken")["outcome"], "failed", "{rep}");
    assert!(job(&rep, "broken")["error"]
        .as_str()
        .unwrap()
        .contains("exited with status 7"));
    // No schedule: only when named.
    assert_eq!(job(&rep, "manual")["ran"], false, "{rep}");
    let first = job(&rep, "files")["snapshot"].as_str().unwrap().to_string();

    // The excludes are left out of the tree.
    let out = v.work.join("restored");
    v.ok(&["restore", &first, "--to", out.to_str().unwrap()]);
    assert!(out.join("src/main.js").exists());
    assert!(!out.join("node_modules").exists() && !out.join(".git").exists());

    // An hour later nothing is due but the failed job (its last success is
    // still missing, so it is retried).
    let (_, rep) = run_at(&v, &at(Duration::from_secs(3600)), &[]);
    assert_eq!(job(&rep, "files")["reason"], "not due", "{rep}");
    assert_eq!(job(&rep, "files")["ran"], false);
    assert_eq!(job(&rep, "broken")["ran"], true);

    // A day later it is due again; a day after that too, and retention
    // (keep-last 2) forgets the first snapshot.
    let (_, rep) = run_at(&v, &at(Duration::from_secs(25 * 3600)), &["files"]);
    assert_eq!(job(&rep, "files")["reason"], "named");
    // Named runs do not wait for the schedule either.
    let (code, rep) = run_at(&v, &at(Duration::from_secs(26 * 3600)), &["files"]);
    assert_eq!(code, 0, "{rep}");
    assert_eq!(job(&rep, "files")["forgotten"], 1, "{rep}");
    let snaps = v.snapshots();
    let files: Vec<&Value> = snaps.iter().filter(|s| s["job"] == "files").collect();
    assert_eq!(files.len(), 2, "{snaps:?}");
    assert!(files.iter().all(|s| s["id"] != first.as_str()));

    // A job another process is running is skipped, not run twice.
    let lock = std::fs::File::create(format!(
        "{}.job-files.lock",
        v.dir.join("catalog.sqlite").display()
    ))
    .unwrap();
    lock.try_lock().unwrap();
    let (_, rep) = run_at(
        &v,
        &at(Duration::from_secs(90 * 3600)),
        &["files", "manual"],
    );
    assert_eq!(job(&rep, "files")["reason"], "running elsewhere", "{rep}");
    assert_eq!(job(&rep, "manual")["outcome"], "ok", "{rep}");
    drop(lock);

    // Unknown job: status 2, naming the ones there are.
    let o = v.fails(&["run", "nightly"], 2);
    assert!(
        stderr(&o).contains("files, broken, manual"),
        "{}",
        stderr(&o)
    );

    // `coffer runs` lists them, newest first, failures with their error.
    let o = v.ok(&["--json", "runs", "--job", "broken"]);
    let runs: Value = serde_json::from_slice(&o.stdout).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs
        .iter()
        .all(|r| r["outcome"] == "failed" && r["kind"] == "backup"));
    assert!(runs[0]["id"].as_i64() > runs[1]["id"].as_i64());
    let o = v.ok(&["runs"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("forget") && text.contains("exited with status 7"),
        "{text}"
    );
}

#[test]
fn a_wrong_job_is_refused_with_its_line() {
    let v = Vault::new();
    append(
        &v,
        "\n[[jobs]]\nname = \"x\"\nfile = \"/a\"\ndirectory = \"/b\"\n",
    );
    let o = v.fails(&["run"], 2);
    let err = stderr(&o);
    assert!(err.contains("line") && err.contains("one of"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn backup_of_a_directory_leaves_out_its_excludes() {
    let v = Vault::new();
    let app = v.work.join("app");
    for d in ["a/node_modules/x", "a/cache", "b"] {
        std::fs::create_dir_all(app.join(d)).unwrap();
    }
    for f in [
        "a/node_modules/x/i.js",
        "a/cache/c.bin",
        "a/keep.txt",
        "b/debug.log",
        "b/keep.txt",
    ] {
        std::fs::write(app.join(f), f.as_bytes()).unwrap();
    }
    let dir = app.to_str().unwrap();
    let o = v.ok(&[
        "backup",
        dir,
        "--exclude",
        "node_modules",
        "--exclude",
        "a/cache",
        "--exclude",
        "*.log",
    ]);
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let out = v.work.join("out");
    v.ok(&["restore", &id, "--to", out.to_str().unwrap()]);
    assert!(out.join("a/keep.txt").exists() && out.join("b/keep.txt").exists());
    for gone in ["a/node_modules", "a/cache", "b/debug.log"] {
        assert!(!out.join(gone).exists(), "{gone} was backed up");
    }
    let o = v.fails(
        &[
            "backup",
            app.join("a/keep.txt").to_str().unwrap(),
            "--exclude",
            "x",
        ],
        2,
    );
    assert!(
        stderr(&o).contains("applies to a directory"),
        "{}",
        stderr(&o)
    );
}

fn health_at(v: &Vault, clock: &str) -> (i32, Value, String) {
    let o = v
        .cmd()
        .args(["--json", "health"])
        .env("COFFER_TEST_NOW", clock)
        .output()
        .unwrap();
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    let text = v
        .cmd()
        .arg("health")
        .env("COFFER_TEST_NOW", clock)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        rep,
        String::from_utf8_lossy(&text.stdout).into_owned(),
    )
}

fn checks(rep: &Value) -> Vec<(String, String)> {
    rep["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["severity"].as_str().unwrap().to_string(),
                p["check"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn health_goes_from_ok_to_critical_as_the_clock_moves_and_names_each_problem() {
    let v = Vault::new();
    let data = v.work.join("data.txt");
    std::fs::write(&data, b"state\n").unwrap();
    append(
        &v,
        &format!(
            "\n[[jobs]]\nname = \"nightly\"\nfile = \"{}\"\nevery = \"24h\"\n{}",
            data.display(),
            // The host's own free space must not decide this test (CI's
            // disks run fuller than ours): no free-space limit until the
            // test sets one below.
            "\n[health]\nfree-space-warning = 0\nfree-space-critical = 0\n",
        ),
    );
    // Never backed up: critical.
    let (code, rep, _) = health_at(&v, &at(Duration::ZERO));
    assert_eq!(code, 2, "{rep}");
    assert_eq!(checks(&rep), [("critical".into(), "job-age".into())]);

    v.ok(&["run"]);
    let (code, rep, text) = health_at(&v, &at(Duration::from_secs(3600)));
    assert_eq!(code, 0, "{rep}");
    assert!(text.starts_with("COFFER OK"), "{text}");
    // 24h period + 1h grace: fine at 24.5h, critical at 26h.
    let (code, _, _) = health_at(&v, &at(Duration::from_secs(24 * 3600 + 1800)));
    assert_eq!(code, 0);
    let (code, rep, text) = health_at(&v, &at(Duration::from_secs(26 * 3600)));
    assert_eq!(code, 2, "{rep}");
    assert_eq!(checks(&rep), [("critical".into(), "job-age".into())]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("COFFER CRITICAL - 1 critical, 0 warning"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("CRITICAL: job nightly: newest snapshot is 1day 2h"),
        "{text}"
    );

    // An ad hoc backup that failed, and limits that make warnings.
    v.fails(&["backup", "--job", "adhoc", "--exec", "--", "false"], 1);
    let settings = std::fs::read_to_string(&v.config).unwrap().replace(
        "free-space-warning = 0\n",
        "free-space-warning = 100\nverify-max-age = \"10m\"\n",
    );
    std::fs::write(&v.config, settings).unwrap();
    let (code, rep, _) = health_at(&v, &at(Duration::from_secs(3600)));
    assert_eq!(code, 2, "{rep}");
    let mut got = checks(&rep);
    got.sort();
    assert_eq!(
        got,
        [
            ("critical".to_string(), "backup-failed".to_string()),
            ("warning".to_string(), "free-space".to_string()),
            ("warning".to_string(), "verify-coverage".to_string()),
        ],
        "{rep}"
    );
    // Verifying covers the packs again.
    let o = v
        .cmd()
        .arg("verify")
        .env("COFFER_TEST_NOW", at(Duration::from_secs(3600)))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, rep, _) = health_at(&v, &at(Duration::from_secs(3600)));
    assert!(
        !checks(&rep).iter().any(|(_, c)| c == "verify-coverage"),
        "{rep}"
    );

    // Settings health cannot read: UNKNOWN (3).
    append(&v, "\n[health]\n");
    let (code, rep, _) = health_at(&v, &at(Duration::ZERO));
    assert_eq!(code, 3, "{rep}");
    assert_eq!(rep["status"], "unknown");
}

#[test]
fn metrics_pass_promtool_and_say_what_ran() {
    let v = Vault::new();
    let data = v.work.join("data.txt");
    std::fs::write(&data, vec![7u8; 100_000]).unwrap();
    append(
        &v,
        &format!(
            "\n[[jobs]]\nname = \"files\"\nfile = \"{}\"\nevery = \"1h\"\n",
            data.display()
        ),
    );
    v.ok(&["run"]);
    v.fails(&["backup", "--job", "adhoc", "--exec", "--", "false"], 1);
    let text = String::from_utf8(v.ok(&["metrics"]).stdout).unwrap();

    // promtool (Debian's prometheus package; scripts/test installs it).
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is needed: apt-get install prometheus (scripts/test installs it)");
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let o = check.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    let sample = |name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(
        sample("coffer_last_backup_success{job=\"files\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample("coffer_last_backup_success{job=\"adhoc\"}"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample("coffer_last_backup_bytes{job=\"files\"}"),
        Some(100_000.0),
        "{text}"
    );
    assert_eq!(
        sample("coffer_snapshots{job=\"files\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample("coffer_snapshots{job=\"adhoc\"}").is_none(),
        "{text}"
    );
    let t = sample("coffer_last_success_timestamp_seconds{job=\"files\"}").unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - t).abs() < 600.0, "{t} vs {now}");
    assert_eq!(
        sample("coffer_pack_copies{tier=\"local\",state=\"corrupt\"}"),
        Some(0.0),
        "{text}"
    );
    // The failed ad hoc backup makes health CRITICAL.
    assert_eq!(sample("coffer_health_status"), Some(2.0), "{text}");

    // --textfile: the same text, written whole, nothing left beside it.
    let dir = v.work.join("textfile");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("coffer.prom");
    v.ok(&["metrics", "--textfile", path.to_str().unwrap()]);
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        written.lines().filter(|l| !l.contains("timestamp")).count(),
        text.lines().filter(|l| !l.contains("timestamp")).count()
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

#[test]
fn verify_with_a_budget_reads_the_oldest_checked_packs_first_and_covers_all() {
    let v = Vault::new();
    // Four snapshots of incompressible data in four packs.
    for i in 0..4u64 {
        let p = v.work.join(format!("in{i}"));
        std::fs::write(&p, random_bytes(100 + i, 300_000)).unwrap();
        v.ok(&["backup", "--job", "b", p.to_str().unwrap()]);
    }
    let status = |clock: &str| -> Value {
        let o = v
            .cmd()
            .args(["--json", "status"])
            .env("COFFER_TEST_NOW", clock)
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout).unwrap()
    };
    // One pack per run (a budget of 1 byte still checks one), each run an
    // hour later: after three runs the oldest check is still a write (before
    // the first run's clock); after four, every copy has been verified (at
    // or after it). The writes may straddle a second: compare with the
    // clocks, not with the first write's time.
    let first_run = at(Duration::from_secs(3600));
    for k in 1..=4u64 {
        let clock = at(Duration::from_secs(k * 3600));
        let o = v
            .cmd()
            .args(["--json", "verify", "--budget", "1B"])
            .env("COFFER_TEST_NOW", &clock)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(rep["packs_checked"], 1, "{rep}");
        assert_eq!(rep["packs_left"], 3, "{rep}");
        let oldest = status(&clock)[0]["oldest_check"]
            .as_str()
            .unwrap()
            .to_string();
        if k < 4 {
            assert!(oldest < first_run, "run {k}: {oldest} vs {first_run}");
        } else {
            assert!(oldest >= first_run, "{oldest} vs {first_run}");
        }
    }
    // A share and a time parse; nonsense is refused by the parser (2).
    v.ok(&["verify", "--budget", "50%"]);
    v.ok(&["verify", "--budget", "10m", "--tier", "local"]);
    let o = v.fails(&["verify", "--budget", "lots"], 2);
    assert!(stderr(&o).contains("not a budget"), "{}", stderr(&o));
    // `20M` would be 20 months to humantime: refused as ambiguous.
    let o = v.fails(&["verify", "--budget", "20M"], 2);
    assert!(stderr(&o).contains("ambiguous"), "{}", stderr(&o));
}

#[test]
fn without_jobs_the_seed_variables_describe_a_nightly_dump() {
    let v = Vault::new();
    let seed = |extra: &[(&str, &str)], args: &[&str]| {
        let mut c = v.cmd();
        for k in [
            "PGHOST",
            "PGPORT",
            "PGDATABASE",
            "PGUSER",
            "BACKUP_ENABLED",
            "BACKUP_INTERVAL",
        ] {
            c.env_remove(k);
        }
        c.envs([
            ("PGHOST", "127.0.0.1"),
            ("PGPORT", "1"),
            ("PGDATABASE", "app"),
        ]);
        c.envs(extra.iter().copied());
        c.args(args).output().unwrap()
    };
    // PG* name the database: job `db`, due (never ran), fails on the
    // unreachable server with one line.
    let o = seed(&[("BACKUP_INTERVAL", "6")], &["--json", "run"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["jobs"][0]["job"], "db", "{rep}");
    assert_eq!(rep["jobs"][0]["reason"], "due", "{rep}");
    assert!(
        rep["jobs"][0]["error"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:1"),
        "{rep}"
    );
    // BACKUP_ENABLED=false: nothing to run.
    let o = seed(&[("BACKUP_ENABLED", "false")], &["run"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no jobs are configured"));
    // A bad value is one clear line.
    let o = seed(&[("BACKUP_INTERVAL", "daily")], &["run"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("BACKUP_INTERVAL=\"daily\"") && err.trim().lines().count() == 1,
        "{err}"
    );
}
