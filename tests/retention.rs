//! Retention through the binary: `forget` with policies from the command
//! line, the settings and `BACKUP_RETENTION`; pins; bad input. Snapshot
//! ages come from `COFFER_TEST_NOW` (the creation time a backup records),
//! never from waiting.

#[path = "support/cli.rs"]
mod cli_support;

use std::collections::BTreeSet;
use std::process::Output;

use cli_support::*;
use serde_json::Value;

/// Backs up `data` as job `job`, as if at `at` (RFC 3339); returns the id.
fn backup_at(v: &Vault, job: &str, at: &str, data: &[u8]) -> String {
    let path = v.fresh_path("in");
    std::fs::write(&path, data).unwrap();
    let o = v
        .cmd()
        .env("COFFER_TEST_NOW", at)
        .args(["-q", "backup", "--job", job])
        .arg(&path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).trim().to_string()
}

/// Runs coffer with `BACKUP_RETENTION` set (or unset, when `None`).
fn run_env(v: &Vault, retention: Option<&str>, args: &[&str]) -> Output {
    let mut c = v.cmd();
    match retention {
        Some(r) => c.env("BACKUP_RETENTION", r),
        None => c.env_remove("BACKUP_RETENTION"),
    };
    c.args(args).output().unwrap()
}

fn ids(v: &Vault) -> BTreeSet<String> {
    v.snapshot_ids()
}

/// Days before 2026-06-30T12:00:00Z, as RFC 3339.
fn days_ago(d: u32) -> String {
    let base: jiff::Timestamp = "2026-06-30T12:00:00Z".parse().unwrap();
    base.checked_sub(jiff::SignedDuration::from_hours(24 * i64::from(d)))
        .unwrap()
        .to_string()
}

#[test]
fn backup_retention_30_forgets_the_31_day_old_snapshot_and_keeps_the_rest() {
    let v = Vault::new();
    let old = backup_at(&v, "db", &days_ago(31), &random_bytes(1, 50_000));
    let mut kept = BTreeSet::new();
    for (i, d) in [29, 10, 1, 0].into_iter().enumerate() {
        kept.insert(backup_at(
            &v,
            "db",
            &days_ago(d),
            &random_bytes(2 + i as u64, 50_000),
        ));
    }
    let o = run_env(&v, Some("30"), &["--json", "forget"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["forgotten"], Value::from(vec![old.clone()]));
    assert_eq!(ids(&v), kept);
    // Its manifest is gone from the tier, the others are there.
    assert_eq!(v.manifest_ids(), kept);
    // The decision is recorded as a run, for audits.
    let c = rusqlite::Connection::open(v.dir.join("catalog.sqlite")).unwrap();
    let (outcome, details): (String, String) = c
        .query_row(
            "SELECT outcome, details FROM runs WHERE kind = 'forget' ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(outcome, "ok");
    let details: Value = serde_json::from_str(&details).unwrap();
    assert_eq!(details["forgotten"], Value::from(vec![old]));
}

#[test]
fn dry_run_shows_keep_and_forget_with_reasons_and_deletes_nothing() {
    let v = Vault::new();
    let mut all = BTreeSet::new();
    for (i, d) in [9, 8, 7, 1, 0].into_iter().enumerate() {
        all.insert(backup_at(
            &v,
            "db",
            &days_ago(d),
            &random_bytes(10 + i as u64, 20_000),
        ));
    }
    let o = run_env(
        &v,
        None,
        &["--json", "forget", "--keep-last", "2", "--dry-run"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["dry_run"], true);
    assert_eq!(rep["forgotten"].as_array().unwrap().len(), 3);
    let verdicts = rep["groups"][0]["snapshots"].as_array().unwrap();
    assert_eq!(verdicts.len(), 5);
    // Newest first; the newest is kept as "last" and as "newest".
    assert_eq!(verdicts[0]["keep"], true);
    let reasons: Vec<String> = verdicts[0]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert!(reasons.iter().any(|r| r.contains("last")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("newest")), "{reasons:?}");
    assert_eq!(ids(&v), all, "a dry run forgets nothing");
    assert_eq!(v.manifest_ids(), all);
    // The text table says it too.
    let o = run_env(&v, None, &["forget", "--keep-last", "2", "--dry-run"]);
    let out = stdout(&o);
    assert_eq!(out.matches(" forget ").count(), 3, "{out}");
    assert!(stderr(&o).contains("would forget 3"), "{}", stderr(&o));
}

#[test]
fn a_pin_always_wins_and_unpin_lets_the_policy_forget() {
    let v = Vault::new();
    let first = backup_at(&v, "db", &days_ago(3), &random_bytes(20, 20_000));
    let second = backup_at(&v, "db", &days_ago(2), &random_bytes(21, 20_000));
    let newest = backup_at(&v, "db", &days_ago(1), &random_bytes(22, 20_000));
    v.ok(&["pin", &first[..8], "--reason", "legal hold"]);
    let o = run_env(&v, None, &["--json", "forget", "--keep-last", "1"]);
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["forgotten"], Value::from(vec![second]));
    let snaps = v.snapshots();
    let pinned = snaps.iter().find(|s| s["id"] == first.as_str()).unwrap();
    assert_eq!(pinned["pin"], "legal hold");
    // The pin lives in the tier: a host whose catalog is rebuilt sees it.
    assert!(v.vault.join("pins").join(&first).is_file());
    v.ok(&["unpin", &first[..8]]);
    let o = run_env(&v, None, &["--json", "forget", "--keep-last", "1"]);
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["forgotten"], Value::from(vec![first]));
    assert_eq!(ids(&v), BTreeSet::from([newest]));
}

#[test]
fn the_newest_of_each_job_is_kept_unless_named() {
    let v = Vault::new();
    let a_old = backup_at(&v, "a", &days_ago(100), &random_bytes(30, 10_000));
    let b_only = backup_at(&v, "b", &days_ago(90), &random_bytes(31, 10_000));
    let a_new = backup_at(&v, "a", &days_ago(80), &random_bytes(32, 10_000));
    // keep-within 1d of each job's newest: a's older one goes; b's only
    // snapshot is its newest and stays.
    let o = run_env(&v, None, &["--json", "forget", "--keep-within", "1d"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ids(&v), BTreeSet::from([a_new.clone(), b_only.clone()]));
    let _ = a_old;
    // Named explicitly, the newest goes.
    v.ok(&["forget", &b_only]);
    assert_eq!(ids(&v), BTreeSet::from([a_new]));
}

#[test]
fn job_policies_in_the_settings_win_over_the_default_and_backup_retention() {
    let v = Vault::new();
    let mut settings = std::fs::read_to_string(&v.config).unwrap();
    settings.push_str(
        "\n[retention]\nkeep-last = 1\n\n[[jobs]]\nname = \"keep3\"\nretention = { keep-last = 3 }\n",
    );
    std::fs::write(&v.config, settings).unwrap();
    for i in 0..4u32 {
        backup_at(
            &v,
            "keep3",
            &days_ago(10 - i),
            &random_bytes(40 + u64::from(i), 5_000),
        );
        backup_at(
            &v,
            "other",
            &days_ago(10 - i),
            &random_bytes(50 + u64::from(i), 5_000),
        );
    }
    // BACKUP_RETENTION would keep everything (within 365 days): the
    // settings' policies come first.
    let o = run_env(&v, Some("365"), &["--json", "forget"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let jobs: Vec<String> = v
        .snapshots()
        .iter()
        .map(|s| s["job"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(jobs.iter().filter(|j| *j == "keep3").count(), 3);
    assert_eq!(jobs.iter().filter(|j| *j == "other").count(), 1);
}

#[test]
fn bad_retention_input_is_one_line_exit_2_and_nothing_forgotten() {
    let v = Vault::new();
    backup_at(&v, "db", &days_ago(5), &random_bytes(60, 5_000));
    backup_at(&v, "db", &days_ago(4), &random_bytes(61, 5_000));
    let before = ids(&v);
    let cases: Vec<(Option<&str>, Vec<&str>, &str)> = vec![
        (
            None,
            vec!["forget", "--keep-within", "soon"],
            "not a duration",
        ),
        (None, vec!["forget", "--keep-last", "0"], "keeps nothing"),
        (Some("thirty"), vec!["forget"], "BACKUP_RETENTION"),
        (Some("0"), vec!["forget"], "BACKUP_RETENTION"),
        (None, vec!["forget", "--job", "db"], "no retention policy"),
        (
            None,
            vec!["forget", "--job", "nope", "--keep-last", "1"],
            "has no snapshots",
        ),
        (
            None,
            vec!["pin", "abcdef12", "--reason", "x"],
            "no snapshot matches",
        ),
        (
            None,
            vec!["pin", "latest", "--reason", " "],
            "needs a reason",
        ),
    ];
    for (env, args, says) in cases {
        let o = run_env(&v, env, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
        if !stderr(&o).starts_with("error: invalid value") {
            assert_one_error_line(&o);
        }
    }
    // A negative count is refused by the parser.
    let o = run_env(&v, None, &["forget", "--keep-last=-1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(ids(&v), before);
    assert_eq!(v.manifest_ids(), before);
}
