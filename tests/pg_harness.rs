//! Proves the throwaway-PostgreSQL harness (tests/support/pg.rs) works before
//! the backup/restore tests rely on it: clusters start and accept connections
//! on both socket and TCP, the fixtures load with the expected shape,
//! fingerprints detect content changes but not physical reordering, and
//! clusters never outlive their `PgCluster`, even when a test panics.

#[path = "support/pg.rs"]
mod pg;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use pg::{PgCluster, TENANT_SCHEMA_LARGE_OBJECTS, TENANT_SCHEMA_ROWS};

fn count(cluster: &PgCluster, db: &str, table: &str) -> u64 {
    let out = cluster.psql(db, &format!("select count(*) from {table}"));
    out.parse()
        .unwrap_or_else(|e| panic!("count of {table}: {out:?}: {e}"))
}

/// PIDs of processes whose command line mentions `needle` (the postmaster is
/// started with `-D <data dir>`).
fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.to_str().expect("UTF-8 path");
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(needle).then_some(pid)
        })
        .collect()
}

fn assert_gone(cluster_dir: &Path, data_dir: &Path, pid: u32) {
    assert!(
        processes_mentioning(data_dir).is_empty(),
        "postgres processes for {} survive their PgCluster",
        data_dir.display()
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "postmaster {pid} still exists"
    );
    assert!(
        !cluster_dir.exists(),
        "cluster directory {} was not removed",
        cluster_dir.display()
    );
}

#[test]
fn fixtures_load_and_fingerprints_track_content() {
    let cluster = PgCluster::start();
    // A name that needs quoting in SQL, conninfo and URLs alike.
    let db = "tenant fixture's db";
    cluster.createdb(db);
    cluster.load_tenant_schema(db);
    cluster.pgbench_init(db, 1);

    // Fixture shape.
    let mut expected: Vec<String> = TENANT_SCHEMA_ROWS
        .iter()
        .map(|(t, _)| t.to_string())
        .collect();
    expected.extend(
        ["accounts", "branches", "history", "tellers"].map(|t| format!("public.pgbench_{t}")),
    );
    expected.sort();
    assert_eq!(cluster.tables(db), expected);
    for (table, rows) in TENANT_SCHEMA_ROWS {
        assert_eq!(count(&cluster, db, table), *rows, "rows in {table}");
    }
    assert_eq!(count(&cluster, db, "pgbench_accounts"), 100_000);
    assert_eq!(count(&cluster, db, "pgbench_branches"), 1);
    assert_eq!(count(&cluster, db, "pgbench_tellers"), 10);
    assert_eq!(count(&cluster, db, "pgbench_history"), 0);
    assert_eq!(count(&cluster, db, "app.active_leases"), 750);
    assert_eq!(
        cluster.psql(
            db,
            "select length(lo_get(floorplan)) from app.properties where floorplan is not null"
        ),
        "65536"
    );
    let lo = cluster.large_objects_fingerprint(db);
    assert!(
        lo.starts_with(&format!("{TENANT_SCHEMA_LARGE_OBJECTS}:")),
        "large objects: {lo}"
    );

    // Fingerprints: stable, order-independent, content-sensitive.
    let fingerprints = |db: &str| -> BTreeMap<String, String> {
        cluster
            .tables(db)
            .into_iter()
            .map(|t| {
                let fp = cluster.table_fingerprint(db, &t);
                (t, fp)
            })
            .collect()
    };
    let before = fingerprints(db);
    assert_eq!(before, fingerprints(db), "fingerprints must be stable");
    assert!(
        before["app.audit_log"].starts_with("2500:"),
        "fingerprint format: {}",
        before["app.audit_log"]
    );
    let fp_empty = &before["public.pgbench_history"];
    assert!(fp_empty.starts_with("0:"), "empty table: {fp_empty}");

    // A no-op update moves the tuple to a new physical position.
    let ctid_before = cluster.psql(db, "select ctid from app.payments where id = 1");
    cluster.psql(db, "update app.payments set memo = memo where id = 1");
    assert_ne!(
        ctid_before,
        cluster.psql(db, "select ctid from app.payments where id = 1")
    );
    let payments = cluster.table_fingerprint(db, "app.payments");
    assert_eq!(
        payments, before["app.payments"],
        "physical order must not matter"
    );

    cluster.psql(
        db,
        "update app.payments set amount = amount + 0.01 where id = 1",
    );
    let changed = cluster.table_fingerprint(db, "app.payments");
    assert_ne!(changed, payments, "content change must change the digest");
    assert!(changed.starts_with("6000:"), "{changed}");

    // A second load into a fresh database is identical (determinism), which
    // restore tests rely on when comparing against a reference load.
    cluster.createdb("second");
    cluster.load_tenant_schema("second");
    let mut second = fingerprints("second");
    let mut reference = before.clone();
    reference.retain(|t, _| t.starts_with("app.") && t != "app.payments"); // payments modified above
    second.retain(|t, _| reference.contains_key(t));
    assert_eq!(second, reference, "two loads of the fixture differ");
    assert_eq!(cluster.large_objects_fingerprint("second"), lo);
}

#[test]
fn connection_helpers_reach_the_cluster() {
    let cluster = PgCluster::start();
    let port = cluster.port().to_string();

    // env() via command(): psql without any connection options.
    let out = cluster
        .command("psql")
        .args(["-X", "-A", "-t", "-d", "postgres", "-c"])
        .arg("select current_setting('port'), current_user, inet_server_addr() is null")
        .output()
        .expect("spawn psql");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{port}|postgres|t"),
        "env() should connect over the Unix socket"
    );

    // url(): loopback TCP.
    let out = cluster
        .command("psql")
        .args(["-X", "-A", "-t", "-c", "select host(inet_server_addr())"])
        .arg(cluster.url("postgres"))
        .output()
        .expect("spawn psql");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "127.0.0.1");

    // conninfo() is what psql() uses; check it names the socket dir.
    assert!(cluster
        .conninfo("x")
        .contains(&cluster.host().display().to_string()));
    assert_eq!(
        cluster.psql(
            "postgres",
            "select setting from pg_settings where name = 'fsync'"
        ),
        "off"
    );
    assert!(cluster.data_dir().join("PG_VERSION").exists());
    assert!(
        cluster
            .log_contents()
            .contains("ready to accept connections"),
        "{}",
        cluster.log_contents()
    );
}

#[test]
fn extra_server_args_are_applied() {
    let cluster = PgCluster::start_with(&[
        "-c",
        "wal_level=replica",
        "-c",
        "archive_mode=on",
        "-c",
        "archive_command=/bin/true",
    ]);
    assert_eq!(
        cluster.psql("postgres", "select current_setting('wal_level')"),
        "replica"
    );
    assert_eq!(
        cluster.psql("postgres", "select current_setting('archive_mode')"),
        "on"
    );
    let archive = cluster.server_writable_dir("archive");
    cluster.psql(
        "postgres",
        &format!(
            "alter system set archive_command = 'cp %p {}/%f'",
            archive.display()
        ),
    );
    cluster.psql("postgres", "select pg_reload_conf()");
    assert!(archive.is_dir());
}

#[test]
fn psql_errors_panic_with_the_server_message() {
    let cluster = PgCluster::start();
    let err = catch_unwind(AssertUnwindSafe(|| {
        cluster.psql("postgres", "select no_such_column from pg_class")
    }))
    .expect_err("a failing statement must panic");
    let msg = err
        .downcast_ref::<String>()
        .expect("panic message is a String");
    assert!(
        msg.contains("column \"no_such_column\" does not exist"),
        "{msg}"
    );
}

#[test]
fn dropped_cluster_leaves_no_server_behind() {
    let cluster = PgCluster::start();
    let (root, data, pid) = (
        cluster.host().to_path_buf(),
        cluster.data_dir(),
        cluster.server_pid(),
    );
    assert_eq!(processes_mentioning(&data), vec![pid]);
    let host = root.to_str().unwrap().to_owned();
    let port = cluster.port().to_string();
    drop(cluster);
    assert_gone(&root, &data, pid);
    let status = std::process::Command::new(pg::pg_bin("pg_isready"))
        .args(["-q", "-h", &host, "-p", &port])
        .status()
        .expect("spawn pg_isready");
    assert!(!status.success(), "server still answers after drop");

    // And while unwinding from a failed test.
    let mut seen: Option<(PathBuf, PathBuf, u32)> = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let cluster = PgCluster::start();
        seen = Some((
            cluster.host().to_path_buf(),
            cluster.data_dir(),
            cluster.server_pid(),
        ));
        panic!("simulated test failure");
    }));
    assert!(result.is_err());
    let (root, data, pid) = seen.expect("cluster started before the panic");
    assert_gone(&root, &data, pid);
}
