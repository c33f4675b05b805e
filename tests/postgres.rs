//! `coffer backup pg`, `coffer restore --dbname` and `coffer verify
//! --restore-test` against real, throwaway PostgreSQL clusters
//! (tests/support/pg.rs), through the coffer binary as an operator runs it:
//! `--config` in a temporary directory, `HOME` set there, the PG*
//! environment pointing at the cluster.
//!
//! Restores are checked against the source's *content*, not coffer's own
//! comparison: every table's fingerprint and the large objects.

#[path = "support/pg.rs"]
mod pg;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use pg::{pg_bin, PgCluster, TENANT_SCHEMA_ROWS};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_coffer");

/// A vault in a temporary directory, driven through the coffer binary.
struct Coffer {
    tmp: tempfile::TempDir,
    config: PathBuf,
    home: PathBuf,
    work: PathBuf,
}

impl Coffer {
    fn new(cluster: &PgCluster) -> Coffer {
        let tmp = tempfile::tempdir().unwrap();
        let (home, work) = (tmp.path().join("home"), tmp.path().join("work"));
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let c = Coffer {
            config: tmp.path().join("coffer/config.toml"),
            home,
            work,
            tmp,
        };
        let vault = c.tmp.path().join("vault");
        c.ok(cluster, &["-q", "init", "--local", vault.to_str().unwrap()]);
        c
    }

    /// coffer with the cluster's PG* environment, client programs from the
    /// cluster's bin directory, and nothing inherited that could redirect it.
    fn cmd(&self, cluster: &PgCluster, args: &[&str]) -> Command {
        let mut c = cluster.command(BIN);
        c.arg("--config").arg(&self.config).args(args);
        for k in [
            "COFFER_IDENTITY",
            "COFFER_CONFIG",
            "BACKUP_DIRECTORY",
            "COFFER_PG_DUMP",
            "COFFER_PG_RESTORE",
        ] {
            c.env_remove(k);
        }
        c.env("HOME", &self.home)
            .env("COFFER_PG_BINDIR", pg_bin("pg_dump").parent().unwrap())
            .current_dir(&self.work)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, cluster: &PgCluster, args: &[&str]) -> Output {
        self.cmd(cluster, args).output().unwrap()
    }

    #[track_caller]
    fn ok(&self, cluster: &PgCluster, args: &[&str]) -> Output {
        let o = self.run(cluster, args);
        assert!(o.status.success(), "{}", describe(args, &o));
        o
    }

    /// `coffer --json ARGS`, asserting the exit status; the parsed report.
    #[track_caller]
    fn json(&self, cluster: &PgCluster, args: &[&str], status: i32) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let o = self.run(cluster, &a);
        assert_eq!(o.status.code(), Some(status), "{}", describe(&a, &o));
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&a, &o)))
    }

    fn catalog_path(&self) -> PathBuf {
        coffer::vault::settings::Settings::load(&self.config)
            .unwrap()
            .catalog
    }

    /// The manifest's `source` facts of a snapshot.
    fn facts(&self, id: &str) -> serde_json::Map<String, Value> {
        let c = coffer::catalog::Catalog::open(&self.catalog_path()).unwrap();
        c.manifest(&id.parse().unwrap()).unwrap().source
    }

    fn snapshots(&self, cluster: &PgCluster) -> Vec<Value> {
        match self.json(cluster, &["snapshots"], 0) {
            Value::Array(a) => a,
            other => panic!("snapshots: {other}"),
        }
    }

    /// Every run, oldest first.
    fn runs(&self) -> Vec<Run> {
        let c = rusqlite::Connection::open(self.catalog_path()).unwrap();
        let mut st = c
            .prepare(
                "SELECT kind, coalesce(job, ''), outcome, error, details FROM runs ORDER BY id",
            )
            .unwrap();
        st.query_map([], |r| {
            let d: Option<String> = r.get(4)?;
            Ok(Run {
                kind: r.get(0)?,
                job: r.get(1)?,
                outcome: r.get(2)?,
                error: r.get(3)?,
                details: d.map(|d| serde_json::from_str(&d).unwrap()),
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// A shell script in the work directory.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let p = self.work.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }
}

/// A row of the catalog's runs table.
#[derive(Debug)]
struct Run {
    kind: String,
    job: String,
    outcome: String,
    error: Option<String>,
    details: Option<Value>,
}

fn describe(args: &[&str], o: &Output) -> String {
    format!(
        "coffer {args:?} exited {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout[..o.stdout.len().min(4000)]),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every table's fingerprint, plus the large objects.
fn fingerprints(cluster: &PgCluster, db: &str) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = cluster
        .tables(db)
        .into_iter()
        .map(|t| {
            let fp = cluster.table_fingerprint(db, &t);
            (t, fp)
        })
        .collect();
    m.insert(
        "<large objects>".into(),
        cluster.large_objects_fingerprint(db),
    );
    m
}

fn table_fact<'a>(facts: &'a serde_json::Map<String, Value>, table: &str) -> &'a Value {
    facts["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            format!(
                "{}.{}",
                t["schema"].as_str().unwrap(),
                t["name"].as_str().unwrap()
            ) == table
        })
        .unwrap_or_else(|| panic!("no facts for {table}: {}", facts["tables"]))
}

fn pgbench(cluster: &PgCluster, db: &str, args: &[&str]) {
    let o = cluster
        .command(pg_bin("pgbench"))
        .args(args)
        .arg(cluster.conninfo(db))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "pgbench {args:?}: {}", stderr(&o));
}

/// Backup, restore into a new database with every table's content and the
/// large objects compared; `--to FILE` still gives the archive; a second
/// night after changes dedups against the first and restores with --jobs.
#[test]
fn backup_restore_roundtrip_and_second_night_dedups() {
    let cluster = PgCluster::start();
    cluster.createdb("shop");
    cluster.load_tenant_schema("shop");
    cluster.pgbench_init("shop", 1);
    let coffer = Coffer::new(&cluster);
    let src = cluster.conninfo("shop");

    let night1 = coffer.json(
        &cluster,
        &["backup", "pg", "--job", "shop", "--dbname", &src],
        0,
    );
    let id1 = night1["id"].as_str().unwrap().to_string();
    assert_eq!(night1["kind"], "pg_dump");
    assert_eq!(night1["database"], "shop");
    assert_eq!(night1["tables"], 10, "{night1}");
    assert_eq!(night1["globals"]["kind"], "pg_globals");
    assert_eq!(night1["globals"]["job"], "shop-globals");
    assert_eq!(night1["role_passwords"], true);

    // The facts, from the dump's own snapshot.
    let facts = coffer.facts(&id1);
    for key in ["server_version", "pg_dump_version", "snapshot", "encoding"] {
        assert!(
            facts[key].as_str().is_some_and(|s| !s.is_empty()),
            "{key}: {facts:?}"
        );
    }
    assert!(facts["pg_dump_version"]
        .as_str()
        .unwrap()
        .starts_with("pg_dump (PostgreSQL)"));
    assert_eq!(facts["database"], "shop");
    assert!(facts["database_size"].as_i64().unwrap() > 10 << 20);
    assert_eq!(facts["large_objects"], 1);
    for (table, rows) in TENANT_SCHEMA_ROWS {
        let t = table_fact(&facts, table);
        assert_eq!(t["rows"], *rows, "{table}");
        assert_eq!(
            t["md5"].as_str().map(str::len),
            Some(32),
            "{table} is small: checksummed"
        );
    }
    let accounts = table_fact(&facts, "public.pgbench_accounts");
    assert_eq!(accounts["rows"], 100_000);
    assert!(
        accounts.get("md5").is_none(),
        "100 000 rows is over the checksum threshold"
    );
    let before = fingerprints(&cluster, "shop");

    // Restore into a new database: coffer's comparison, and the content.
    cluster.createdb("restored");
    let r = coffer.json(
        &cluster,
        &["restore", &id1, "--dbname", &cluster.conninfo("restored")],
        0,
    );
    assert_eq!(r["comparison"]["tables_compared"], 10, "{r}");
    assert_eq!(r["comparison"]["checksums_compared"], 9, "{r}");
    assert_eq!(r["comparison"]["differences"], Value::Array(vec![]));
    assert_eq!(fingerprints(&cluster, "restored"), before);

    // --to FILE still yields the plain custom-format archive.
    let file = coffer.work.join("shop.dump");
    coffer.ok(&cluster, &["restore", &id1, "--to", file.to_str().unwrap()]);
    assert!(std::fs::read(&file).unwrap().starts_with(b"PGDMP"));
    let list = cluster
        .command(pg_bin("pg_restore"))
        .arg("--list")
        .arg(&file)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("TABLE DATA public pgbench_accounts"));

    // Night two: a day of traffic.
    pgbench(&cluster, "shop", &["-n", "-t", "50"]);
    cluster.psql(
        "shop",
        "update app.tenants set notes = 'moved out' where id % 97 = 0; \
         delete from app.audit_log where id > 2450; \
         insert into app.audit_log (occurred_at, actor, action, entity, entity_id, diff) \
           select timestamptz '2026-11-25 03:00+00' + g * interval '1 minute', 'night-2', 'update', 'tenant', g, '{}' \
             from generate_series(1, 40) g",
    );
    let night2 = coffer.json(
        &cluster,
        &["backup", "pg", "--job", "shop", "--dbname", &src],
        0,
    );
    let (stored1, stored2) = (
        night1["stored_size"].as_u64().unwrap(),
        night2["stored_size"].as_u64().unwrap(),
    );
    let (new2, reused2) = (
        night2["new_chunks"].as_u64().unwrap(),
        night2["reused_chunks"].as_u64().unwrap(),
    );
    eprintln!(
        "night 1 stored {stored1} B; night 2 stored {stored2} B ({new2} new chunks, {reused2} reused)"
    );
    // 50 scattered updates and a few dozen rows elsewhere: most chunks are
    // reused and far fewer bytes stored (measured: ~15% of night one).
    assert!(reused2 > 3 * new2, "{new2} new, {reused2} reused");
    assert!(
        stored2 * 4 < stored1,
        "night 2 stored {stored2} B, night 1 {stored1} B"
    );
    let facts2 = coffer.facts(night2["id"].as_str().unwrap());
    let history = table_fact(&facts2, "public.pgbench_history");
    assert_eq!(history["rows"], 50);

    // Restore night two with parallel jobs; it matches the source now.
    let after = fingerprints(&cluster, "shop");
    assert_ne!(after, before);
    cluster.createdb("restored2");
    let r = coffer.json(
        &cluster,
        &[
            "restore",
            night2["id"].as_str().unwrap(),
            "--dbname",
            &cluster.conninfo("restored2"),
            "--jobs",
            "2",
        ],
        0,
    );
    assert_eq!(r["comparison"]["differences"], Value::Array(vec![]));
    assert_eq!(fingerprints(&cluster, "restored2"), after);

    // Every run is in the catalog.
    let runs = coffer.runs();
    let kinds: Vec<(&str, &str, &str)> = runs
        .iter()
        .map(|r| (r.kind.as_str(), r.job.as_str(), r.outcome.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("backup", "shop", "ok"),
            ("backup", "shop-globals", "ok"),
            ("restore", "shop", "ok"),
            ("restore", "shop", "ok"),
            ("backup", "shop", "ok"),
            ("backup", "shop-globals", "ok"),
            ("restore", "shop", "ok"),
        ]
    );
}

/// Failed authentication, a missing database or role, a pg_dump killed
/// mid-stream and a pg_dump refused by the server each exit non-zero with
/// the real reason, commit no snapshot and record the failed run. A
/// password in a URL reaches pg_dump through PGPASSWORD, not argv.
#[test]
fn failures_commit_nothing_and_passwords_stay_off_argv() {
    let cluster = PgCluster::start();
    cluster.createdb("db");
    cluster.load_tenant_schema("db");
    let coffer = Coffer::new(&cluster);
    let real = pg_bin("pg_dump");
    let real = real.to_str().unwrap();

    // A role that must authenticate with a password (the harness trusts
    // everyone else): pg_hba.conf is first-match, so prepend its lines.
    cluster.psql(
        "postgres",
        "create role pw_user login password 'Corr3ct-h0rse'; grant pg_read_all_data to pw_user",
    );
    let hba = cluster.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!(
            "local all pw_user scram-sha-256\nhost all pw_user 127.0.0.1/32 scram-sha-256\n{old}"
        ),
    )
    .unwrap();
    cluster.psql("postgres", "select pg_reload_conf()");
    let url = |pw: &str, db: &str| {
        format!(
            "postgresql://pw_user:{pw}@127.0.0.1:{}/{db}",
            cluster.port()
        )
    };

    let expect_failure = |args: &[&str], env: &[(&str, &Path)], reason: &str| {
        let mut c = coffer.cmd(&cluster, args);
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", describe(args, &o));
        let e = stderr(&o);
        assert!(e.contains(reason), "expected {reason:?} in: {e}");
        assert!(e.contains("no snapshot was committed"), "{e}");
        assert_eq!(e.lines().count(), 1, "one error line: {e}");
        e
    };

    // Wrong password.
    let e = expect_failure(
        &[
            "backup",
            "pg",
            "--job",
            "pw",
            "--dbname",
            &url("Tr0ub4dor-wr0ng", "db"),
        ],
        &[],
        "password authentication failed for user \"pw_user\"",
    );
    assert!(!e.contains("Tr0ub4dor"), "the password was printed: {e}");
    // A database and a role that do not exist.
    expect_failure(
        &[
            "backup",
            "pg",
            "--job",
            "missing",
            "--dbname",
            "dbname=nosuchdb",
        ],
        &[],
        "database \"nosuchdb\" does not exist",
    );
    expect_failure(
        &[
            "backup",
            "pg",
            "--job",
            "ghost",
            "--dbname",
            "user=ghost dbname=db",
        ],
        &[],
        "role \"ghost\" does not exist",
    );
    // pg_dump dies mid-stream: a wrapper passes ~200 KB, then is killed.
    let killed = coffer.script(
        "pg_dump_killed.sh",
        &format!(
            "for a in \"$@\"; do [ \"$a\" = --version ] && exec {real} --version; done\n\
             {real} \"$@\" | head -c 200000\nkill -9 $$\n"
        ),
    );
    expect_failure(
        &["backup", "pg", "--job", "killed", "--dbname", "dbname=db"],
        &[("COFFER_PG_DUMP", &killed)],
        "pg_dump was killed by signal 9",
    );
    // A pg_dump older than the server refuses to run (only one major
    // version is installed here, so a wrapper answers as an old one does).
    let old = coffer.script(
        "pg_dump_old.sh",
        &format!(
            "for a in \"$@\"; do [ \"$a\" = --version ] && exec {real} --version; done\n\
             echo 'pg_dump: error: aborting because of server version mismatch' >&2\n\
             echo 'pg_dump: detail: server version: 17.2; pg_dump version: 15.18' >&2\n\
             exit 1\n"
        ),
    );
    expect_failure(
        &["backup", "pg", "--job", "mismatch", "--dbname", "dbname=db"],
        &[("COFFER_PG_DUMP", &old)],
        "pg_dump exited with status 1: pg_dump: error: aborting because of server version mismatch; pg_dump: detail: server version: 17.2",
    );
    // pg_dump itself fails (a role without privileges): its own message.
    cluster.psql("postgres", "create role nobody login");
    expect_failure(
        &["backup", "pg", "--job", "denied", "--dbname", "user=nobody dbname=db"],
        &[],
        "pg_dump exited with status 1: pg_dump: error: query failed: ERROR:  permission denied for schema app",
    );
    assert_eq!(coffer.snapshots(&cluster), Vec::<Value>::new());
    let runs = coffer.runs();
    assert_eq!(runs.len(), 6, "{runs:?}");
    for (r, want_job) in runs
        .iter()
        .zip(["pw", "missing", "ghost", "killed", "mismatch", "denied"])
    {
        assert_eq!(
            (r.kind.as_str(), r.job.as_str(), r.outcome.as_str()),
            ("backup", want_job, "failed")
        );
        assert!(r.error.as_deref().is_some_and(|e| !e.is_empty()));
    }

    // The right password works, and pg_dump never sees it in argv.
    cluster.createdb("small");
    cluster.psql(
        "small",
        "create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 500) g",
    );
    let log = coffer.work.join("pg_dump.log");
    let logging = coffer.script(
        "pg_dump_logging.sh",
        &format!(
            "for a in \"$@\"; do [ \"$a\" = --version ] && exec {real} --version; done\n\
             printf '%s\\n' \"$@\" > {log}\n\
             [ -n \"$PGPASSWORD\" ] && echo PGPASSWORD-set >> {log}\n\
             exec {real} \"$@\"\n",
            log = log.display()
        ),
    );
    let pw_url = url("Corr3ct-h0rse", "small");
    let mut c = coffer.cmd(
        &cluster,
        &["--json", "backup", "pg", "--job", "pw", "--dbname", &pw_url],
    );
    c.env("COFFER_PG_DUMP", &logging);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", describe(&[], &o));
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    // Not a superuser: globals without passwords, and said so.
    assert_eq!(rep["role_passwords"], false, "{rep}");
    let argv = std::fs::read_to_string(&log).unwrap();
    assert!(
        !argv.contains("Corr3ct"),
        "password in pg_dump's argv: {argv}"
    );
    assert!(argv.contains("PGPASSWORD-set"), "{argv}");
    assert!(argv.contains("user='pw_user'"), "{argv}");
    assert!(argv.lines().any(|l| l.starts_with("--snapshot=")), "{argv}");
    assert!(!String::from_utf8_lossy(&o.stderr).contains("Corr3ct"));
    let facts = coffer.facts(rep["id"].as_str().unwrap());
    assert!(!serde_json::to_string(&facts).unwrap().contains("Corr3ct"));
    assert_eq!(table_fact(&facts, "public.t")["rows"], 500);
}

/// A drill of an ordinary backup passes; a drill of a database whose
/// restore genuinely comes out different is caught.
///
/// The difference is a real pg_dump pitfall, not a doctored fact: the
/// application's database sets `timezone` with ALTER DATABASE, and a table
/// has a stored generated column computed by a function declared
/// IMMUTABLE that in fact depends on the session's time zone. pg_dump does
/// not dump stored generated columns (they are recomputed on restore), and
/// the database-level setting is only restored with --create; restored
/// anywhere else (a drill's scratch database, a pre-created database), the
/// column is recomputed in the server's default time zone. Same row count,
/// different content: only the checksum sees it.
#[test]
fn restore_drill_passes_and_catches_a_restore_that_differs() {
    let cluster = PgCluster::start();
    cluster.createdb("app");
    cluster.load_tenant_schema("app");
    let coffer = Coffer::new(&cluster);
    let src = cluster.conninfo("app");
    let drill_dbs = || {
        cluster.psql(
            "postgres",
            "select count(*) from pg_database where datname like 'coffer_drill_%'",
        )
    };

    let good = coffer.json(
        &cluster,
        &["backup", "pg", "--job", "app", "--dbname", &src],
        0,
    );
    let d = coffer.json(
        &cluster,
        &["verify", "--restore-test", good["id"].as_str().unwrap()],
        0,
    );
    assert_eq!(d["passed"], true, "{d}");
    assert_eq!(d["comparison"]["tables_compared"], 6);
    assert_eq!(d["comparison"]["checksums_compared"], 6);
    assert_eq!(d["comparison"]["large_objects"], serde_json::json!([1, 1]));
    assert!(d["toc_entries"].as_u64().unwrap() > 30, "{d}");
    assert_eq!(d["table_data_entries"], 6);
    assert_eq!(drill_dbs(), "0", "the scratch database is dropped");

    assert_ne!(
        cluster.psql("postgres", "show timezone"),
        "Pacific/Auckland"
    );
    cluster.psql(
        "postgres",
        "alter database app set timezone = 'Pacific/Auckland'",
    );
    cluster.psql(
        "app",
        "create function app.local_day(ts timestamptz) returns text immutable language sql \
           as $$ select to_char(ts, 'YYYY-MM-DD') $$; \
         create table app.bookings (id int primary key, starts_at timestamptz not null, \
           local_day text generated always as (app.local_day(starts_at)) stored); \
         insert into app.bookings (id, starts_at) \
           select g, timestamptz '2026-01-01 00:00+00' + g * interval '97 minutes' \
             from generate_series(1, 48) g",
    );
    let bad = coffer.json(
        &cluster,
        &["backup", "pg", "--job", "app", "--dbname", &src],
        0,
    );
    let bad_id = bad["id"].as_str().unwrap();
    let o = coffer.run(
        &cluster,
        &["verify", "--restore-test", "latest", "--job", "app"],
    );
    assert_eq!(o.status.code(), Some(4), "{}", describe(&[], &o));
    let e = stderr(&o);
    assert!(
        e.contains("DIFFERENCE: app.bookings: content differs: same row count (48)"),
        "{e}"
    );
    assert!(e.contains("FAILED with 1 difference(s)"), "{e}");
    assert_eq!(drill_dbs(), "0");

    // The audit: both drills in the catalog, with the differences.
    let drills: Vec<_> = coffer
        .runs()
        .into_iter()
        .filter(|r| r.kind == "restore-test")
        .collect();
    assert_eq!(drills.len(), 2);
    assert_eq!(
        (drills[0].job.as_str(), drills[0].outcome.as_str()),
        ("app", "ok")
    );
    assert_eq!(drills[1].outcome, "partial");
    let details = drills[1].details.as_ref().unwrap();
    assert_eq!(details["snapshot"], bad_id);
    assert_eq!(
        details["comparison"]["differences"][0]["table"],
        "app.bookings"
    );
    assert!(details["seconds"].as_f64().unwrap() > 0.0);

    // `restore --dbname` into a pre-created database makes the same
    // comparison: status 4, the difference named, the run `partial`.
    cluster.createdb("copy");
    let o = coffer.run(
        &cluster,
        &["restore", bad_id, "--dbname", &cluster.conninfo("copy")],
    );
    assert_eq!(o.status.code(), Some(4), "{}", describe(&[], &o));
    assert!(
        stderr(&o).contains("DIFFERENCE: app.bookings: content differs"),
        "{}",
        stderr(&o)
    );
    let last = coffer.runs().pop().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.outcome.as_str()),
        ("restore", "partial")
    );
    assert_eq!(
        last.details.unwrap()["differences"][0]["table"],
        "app.bookings"
    );

    // The remedy confirms the diagnosis: restored with --create, the
    // database setting comes along and the restore matches.
    let source = fingerprints(&cluster, "app");
    cluster.psql("postgres", "drop database app");
    let r = coffer.json(
        &cluster,
        &[
            "restore",
            bad_id,
            "--dbname",
            &cluster.conninfo("postgres"),
            "--create",
        ],
        0,
    );
    assert_eq!(r["database"], "app");
    assert_eq!(r["comparison"]["differences"], Value::Array(vec![]), "{r}");
    assert_eq!(r["comparison"]["checksums_compared"], 7, "{r}");
    assert_eq!(fingerprints(&cluster, "app"), source);
}

/// Globals restore: a role created before the backup exists after its
/// globals snapshot is restored into a fresh cluster, and the dump then
/// restores there with its ownership. Selection options are passed to
/// pg_dump and recorded.
#[test]
fn globals_restore_into_a_fresh_cluster_and_selection_options() {
    let a = PgCluster::start();
    a.psql(
        "postgres",
        "create role app_owner login password 'owner-pw'; create role auditor nologin",
    );
    a.createdb("shop");
    a.load_tenant_schema("shop");
    a.psql(
        "shop",
        "alter table app.tenants owner to app_owner; grant select on app.payments to auditor",
    );
    let coffer = Coffer::new(&a);
    let dump = coffer.json(
        &a,
        &[
            "backup",
            "pg",
            "--job",
            "shop",
            "--dbname",
            &a.conninfo("shop"),
        ],
        0,
    );
    let globals_id = dump["globals"]["id"].as_str().unwrap().to_string();
    let gfacts = coffer.facts(&globals_id);
    assert_eq!(gfacts["dump_snapshot"], dump["id"]);
    assert_eq!(gfacts["role_passwords"], true);

    // Selection options: passed to pg_dump, recorded, and the facts cover
    // exactly the tables dumped.
    let part = coffer.json(
        &a,
        &[
            "backup",
            "pg",
            "--job",
            "part",
            "--no-globals",
            "--dbname",
            &a.conninfo("shop"),
            "--schema",
            "app",
            "--exclude-table",
            "app.audit_log",
        ],
        0,
    );
    assert!(part["globals"].is_null());
    let pf = coffer.facts(part["id"].as_str().unwrap());
    assert_eq!(pf["selection"]["schemas"], serde_json::json!(["app"]));
    assert_eq!(
        pf["selection"]["exclude_tables"],
        serde_json::json!(["app.audit_log"])
    );
    let names: Vec<String> = pf["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "leases",
            "payments",
            "properties",
            "tenants",
            "utility_readings"
        ]
    );
    let schema_only = coffer.json(
        &a,
        &[
            "backup",
            "pg",
            "--job",
            "ddl",
            "--no-globals",
            "--schema-only",
            "--dbname",
            &a.conninfo("shop"),
        ],
        0,
    );
    assert_eq!(schema_only["tables"], 0);
    assert_eq!(
        coffer.facts(schema_only["id"].as_str().unwrap())["selection"]["schema_only"],
        true
    );
    // Restore a selection of the partial dump: only that table is compared.
    a.createdb("part");
    a.psql("part", "create schema app");
    let r = coffer.json(
        &a,
        &[
            "restore",
            part["id"].as_str().unwrap(),
            "--dbname",
            &a.conninfo("part"),
            "--table",
            "properties",
            "--no-owner",
        ],
        0,
    );
    assert_eq!(r["comparison"]["tables_compared"], 1, "{r}");
    assert_eq!(a.tables("part"), ["app.properties"]);
    assert_eq!(
        a.table_fingerprint("part", "app.properties"),
        a.table_fingerprint("shop", "app.properties")
    );

    // A new machine: a fresh cluster without the roles.
    let b = PgCluster::start();
    let has_role = |c: &PgCluster, r: &str| {
        c.psql(
            "postgres",
            &format!("select count(*) from pg_roles where rolname = '{r}'"),
        ) == "1"
    };
    assert!(!has_role(&b, "app_owner"));
    // Without the roles the dump does not restore, and says why.
    let o = coffer.run(
        &b,
        &[
            "restore",
            dump["id"].as_str().unwrap(),
            "--dbname",
            &b.conninfo("postgres"),
            "--create",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", describe(&[], &o));
    assert!(
        stderr(&o).contains("role \"app_owner\" does not exist"),
        "{}",
        stderr(&o)
    );
    let runs = coffer.runs();
    let last = runs.last().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.outcome.as_str()),
        ("restore", "failed")
    );
    b.psql("postgres", "drop database if exists shop");

    let g = coffer.json(
        &b,
        &[
            "restore",
            "latest",
            "--job",
            "shop-globals",
            "--dbname",
            &b.conninfo("postgres"),
        ],
        0,
    );
    assert!(
        g["globals"]["already_existed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l
                .as_str()
                .unwrap()
                .contains("role \"postgres\" already exists")),
        "{g}"
    );
    assert!(has_role(&b, "app_owner"));
    assert!(has_role(&b, "auditor"));
    assert_eq!(
        b.psql("postgres", "select rolcanlogin, rolpassword is not null from pg_authid where rolname = 'app_owner'"),
        "t|t"
    );
    let r = coffer.json(
        &b,
        &[
            "restore",
            dump["id"].as_str().unwrap(),
            "--dbname",
            &b.conninfo("postgres"),
            "--create",
        ],
        0,
    );
    assert_eq!(r["comparison"]["differences"], Value::Array(vec![]), "{r}");
    assert_eq!(
        b.psql(
            "shop",
            "select tableowner from pg_tables where schemaname = 'app' and tablename = 'tenants'"
        ),
        "app_owner"
    );
    assert_eq!(
        b.psql(
            "shop",
            "select has_table_privilege('auditor', 'app.payments', 'select')"
        ),
        "t"
    );
    assert_eq!(fingerprints(&b, "shop"), fingerprints(&a, "shop"));
}

/// `[[jobs]]` with PostgreSQL: a dump job, a drill job of its newest
/// snapshot (the identity is on this host), and a job whose database is
/// unreachable at run time: it fails alone, with one clear line, stays due
/// for the next run, and health names it.
#[test]
fn jobs_dump_drill_and_report_an_unreachable_database() {
    let cluster = PgCluster::start();
    cluster.createdb("app");
    cluster.psql(
        "app",
        "create table t as select g as id, md5(g::text) as v from generate_series(1, 500) g",
    );
    let coffer = Coffer::new(&cluster);
    let mut settings = std::fs::read_to_string(&coffer.config).unwrap();
    settings.push_str(&format!(
        r#"
[[jobs]]
name = "app"
pg-dump = "{app}"
every = "1h"

[[jobs]]
name = "app-drill"
drill = "app"
scratch = "{postgres}"
every = "7d"

[[jobs]]
name = "gone"
pg-dump = "host=127.0.0.1 port=1 dbname=nothing connect_timeout=2"
every = "1h"
"#,
        app = cluster.conninfo("app"),
        postgres = cluster.conninfo("postgres"),
    ));
    std::fs::write(&coffer.config, settings).unwrap();

    let rep = coffer.json(&cluster, &["run"], 1);
    let job = |name: &str| -> Value {
        rep["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["job"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(job("app")["outcome"], "ok", "{rep}");
    assert_eq!(job("app-drill")["outcome"], "ok", "{rep}");
    assert_eq!(
        job("app-drill")["snapshot"],
        job("app")["snapshot"],
        "{rep}"
    );
    let gone = job("gone");
    assert_eq!(gone["outcome"], "failed", "{rep}");
    let err = gone["error"].as_str().unwrap();
    assert!(
        err.contains("127.0.0.1:1")
            && err.contains("Connection refused")
            && err.contains("no snapshot was committed"),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
    let drills: Vec<_> = coffer
        .runs()
        .into_iter()
        .filter(|r| r.kind == "restore-test")
        .collect();
    assert_eq!(drills.len(), 1);
    assert_eq!(
        (drills[0].job.as_str(), drills[0].outcome.as_str()),
        ("app", "ok")
    );

    // The next run retries only the failed job.
    let rep = coffer.json(&cluster, &["run"], 1);
    let ran: Vec<&str> = rep["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["ran"] == true)
        .map(|j| j["job"].as_str().unwrap())
        .collect();
    assert_eq!(ran, ["gone"], "{rep}");

    let health = coffer.json(&cluster, &["health"], 2);
    let problems: Vec<(&str, &str)> = health["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["check"].as_str().unwrap(),
                p["subject"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(problems.contains(&("backup-failed", "gone")), "{health}");
    assert!(problems.contains(&("job-age", "gone")), "{health}");
    assert!(
        !problems
            .iter()
            .any(|(_, s)| *s == "app" || *s == "app-drill"),
        "{health}"
    );
}
