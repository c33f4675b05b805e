//! WAL archiving and point-in-time recovery against a real PostgreSQL 15:
//! `archive_command` is `coffer wal push`, base backups are `coffer backup
//! pg --physical`, and recovered clusters are started from what `coffer
//! restore pitr` wrote, with `restore_command` = `coffer wal fetch`.
//!
//! The server runs as the `postgres` user when the tests run as root, and
//! so do its archive and restore commands: every coffer call here runs as
//! that user too, on a vault in a directory it owns.

#[path = "support/pg.rs"]
mod pg;
#[path = "support/s3.rs"]
mod s3;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use pg::PgCluster;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_coffer");

/// A vault owned by the server user, and coffer run as that user.
struct WalVault {
    dir: PathBuf,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    env: Vec<(String, String)>,
}

impl WalVault {
    /// `coffer init` in `dir` (server-writable); the binary is copied there
    /// so the server user can run it whatever the checkout's permissions.
    fn new(
        dir: PathBuf,
        owner: Option<(u32, u32)>,
        init: &[&str],
        env: Vec<(String, String)>,
    ) -> WalVault {
        let bin = dir.join("coffer");
        std::fs::copy(BIN, &bin).unwrap();
        let v = WalVault {
            dir,
            bin,
            owner,
            env,
        };
        let local = v.dir.join("vault");
        let mut args = vec!["init", "--local", local.to_str().unwrap()];
        args.extend_from_slice(init);
        v.ok(&args);
        v
    }

    fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--config").arg(self.config());
        c.env_remove("COFFER_IDENTITY").env_remove("COFFER_CONFIG");
        c.env("HOME", &self.dir).current_dir(&self.dir);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid);
        }
        c.stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> Output {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "coffer {args:?}: {}\n{}",
            o.status,
            text(&o)
        );
        o
    }

    #[track_caller]
    fn fails(&self, args: &[&str], code: i32) -> Output {
        let o = self.run(args);
        assert_eq!(
            o.status.code(),
            Some(code),
            "coffer {args:?}:\n{}",
            text(&o)
        );
        o
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_slice(&self.ok(&a).stdout).unwrap()
    }

    /// `archive_command` and friends for a cluster archiving into `job`.
    fn archiving(&self, job: &str) -> Vec<String> {
        vec![
            "-c".into(),
            "wal_level=replica".into(),
            "-c".into(),
            "archive_mode=on".into(),
            "-c".into(),
            format!(
                "archive_command={} --config {} --quiet wal push --job {job} %p",
                self.bin.display(),
                self.config().display()
            ),
        ]
    }

    fn append_settings(&self, toml: &str) {
        let mut s = std::fs::read_to_string(self.config()).unwrap();
        s.push_str(toml);
        std::fs::write(self.config(), s).unwrap();
    }
}

fn text(o: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Fetches the WAL file `seg` holds (by its name, job `db`) into `dest`,
/// checks the bytes, and returns coffer's stderr (which says from where).
#[track_caller]
fn fetch_same(v: &WalVault, seg: &std::path::Path, dest: &std::path::Path) -> String {
    let name = seg.file_name().unwrap().to_str().unwrap();
    let o = v.ok(&["wal", "fetch", "--job", "db", name, dest.to_str().unwrap()]);
    assert_eq!(std::fs::read(dest).unwrap(), std::fs::read(seg).unwrap());
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Pushes `path` into job `db`, expects status 1 and `why` on stderr.
#[track_caller]
fn push_refused(v: &WalVault, path: &std::path::Path, why: &str) {
    let o = v.fails(&["wal", "push", "--job", "db", path.to_str().unwrap()], 1);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(why),
        "{}",
        text(&o)
    );
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The content checksum of every pgbench table.
fn fingerprints(pg: &PgCluster) -> Vec<String> {
    [
        "pgbench_accounts",
        "pgbench_branches",
        "pgbench_tellers",
        "pgbench_history",
    ]
    .iter()
    .map(|t| pg.table_fingerprint("postgres", t))
    .collect()
}

fn pgbench(pg: &PgCluster, transactions: &str) {
    let o = pg
        .command(pg::pg_bin("pgbench"))
        .args(["-n", "-c", "2", "-t", transactions, "postgres"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "pgbench: {}", text(&o));
}

#[test]
fn recovers_to_a_time_before_a_dropped_table_and_archives_the_new_timeline() {
    let (_home, vdir, v) = archiving_vault();
    let pg = PgCluster::start_with(&strs(&v.archiving("main")));
    pg.pgbench_init("postgres", 2);

    base_backup(&v, &pg);
    pgbench(&pg, "300");
    pg.switch_and_wait_archived();
    let at_target = fingerprints(&pg);
    let target = pg.psql("postgres", "SELECT now()");
    // Load after the target, then the accident.
    pgbench(&pg, "300");
    // Just before the accident: a point on timeline 1 after the point the
    // first recovery branches off at (a third recovery goes back to it).
    let before_drop = fingerprints(&pg);
    let target_old_tli = pg.psql("postgres", "SELECT now()");
    pg.psql("postgres", "CREATE TABLE marker AS SELECT 1 AS m");
    pg.psql("postgres", "DROP TABLE pgbench_accounts");
    assert_ne!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'pgbench_accounts'"
        ),
        "1"
    );
    pg.switch_and_wait_archived();

    let verify = v.json(&["wal", "verify", "--job", "main"]);
    let r = &verify[0];
    assert_eq!(r["base_backups"][0]["complete"], true, "{verify}");
    assert_eq!(
        r["timelines"][0]["gaps"].as_array().unwrap().len(),
        0,
        "{verify}"
    );

    // A target after the newest archived WAL is refused, naming the window.
    let refusal = pitr_refused(&v, &["--target-time", "2999-01-01 00:00:00+00"]);
    assert!(refusal.contains("after the archived window"), "{refusal}");

    let to = PgCluster::new_root();
    let data = to.path().join("data");

    restore_pitr(&v, &to, &["--target-time", &target]);
    assert!(data.join("recovery.signal").exists());
    let auto = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains("restore_command") && auto.contains("wal fetch --job main"),
        "{auto}"
    );
    drop(pg);

    // The recovered server archives its new timeline into the same job.
    let rec = boot_promoted(&v, to);
    assert_eq!(
        fingerprints(&rec),
        at_target,
        "the recovered tables differ from the target state"
    );
    assert!(
        rec.log_contents().contains("recovery stopping before"),
        "{}",
        rec.log_contents()
    );
    rec.switch_and_wait_archived();
    let verify = v.json(&["wal", "verify", "--job", "main"]);
    let tlis: Vec<u64> = verify[0]["timelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["timeline"].as_u64().unwrap())
        .collect();
    assert_eq!(tlis, vec![1, 2], "{verify}");

    // A second recovery, to a time on the new timeline: the base backup of
    // timeline 1, then timeline 2's history and WAL.
    rec.psql(
        "postgres",
        "CREATE TABLE after_promotion AS SELECT 42 AS answer",
    );
    let on_tli2 = fingerprints(&rec);
    let target2 = rec.psql("postgres", "SELECT now()");
    rec.psql("postgres", "DROP TABLE pgbench_branches");
    rec.switch_and_wait_archived();
    drop(rec);
    let to2 = PgCluster::new_root();
    restore_pitr(&v, &to2, &["--target-time", &target2]);
    let rec2 = boot_promoted(&v, to2);
    assert_eq!(fingerprints(&rec2), on_tli2);
    assert_eq!(
        rec2.psql("postgres", "SELECT answer FROM after_promotion"),
        "42"
    );
    drop(rec2);

    // A third recovery goes back along the old timeline 1, past the point
    // where timelines 2 and 3 branched off.
    let to3 = PgCluster::new_root();
    restore_pitr(
        &v,
        &to3,
        &["--target-time", &target_old_tli, "--timeline", "1"],
    );
    let rec3 = boot_promoted(&v, to3);
    assert_eq!(fingerprints(&rec3), before_drop);
    assert_eq!(
        rec3.psql(
            "postgres",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'marker'"
        ),
        "0"
    );
    drop(rec3);
    let verify = v.json(&["wal", "verify", "--job", "main"]);

    // Retention: WAL from before the only base backup goes, the rest stays
    // and the base backup stays restorable.
    let before = verify[0]["files"].as_u64().unwrap();
    let first = verify[0]["timelines"][0]["first"]
        .as_str()
        .unwrap()
        .to_string();
    let pruned = v.json(&["prune", "--grace", "0s"]);
    let gone = pruned["wal"][0]["delete"].as_array().unwrap().clone();
    assert!(!gone.is_empty(), "{pruned}");
    assert!(
        gone.iter().all(|n| n.as_str().unwrap() < first.as_str()),
        "{pruned}"
    );
    let after = v.json(&["wal", "verify", "--job", "main"]);
    assert_eq!(
        after[0]["files"].as_u64().unwrap(),
        before - gone.len() as u64,
        "{after}"
    );
    assert_eq!(after[0]["base_backups"][0]["complete"], true, "{after}");
    let wal_dir = std::fs::read_dir(vdir.join("vault/wal"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for n in &gone {
        assert!(
            !wal_dir.join(n.as_str().unwrap()).exists(),
            "{n} is still stored"
        );
    }
}

#[test]
fn recovers_a_cluster_with_a_tablespace_to_a_restore_point_an_lsn_and_immediate() {
    let (_home, _vdir, v) = archiving_vault();
    let pg = PgCluster::start_with(&strs(&v.archiving("main")));
    let ts = pg.server_writable_dir("ts1");
    pg.psql(
        "postgres",
        &format!("CREATE TABLESPACE ts1 LOCATION '{}'", ts.display()),
    );
    pg.psql("postgres", "CREATE TABLE t (i int, v text) TABLESPACE ts1");
    pg.psql(
        "postgres",
        "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g",
    );
    // pg_basebackup cannot stream this cluster (two archives): coffer
    // speaks BASE_BACKUP itself.
    base_backup(&v, &pg);
    let at_backup = pg.table_fingerprint("postgres", "t");
    pg.psql(
        "postgres",
        "INSERT INTO t SELECT g, 'a' FROM generate_series(20001, 25000) g",
    );
    pg.psql(
        "postgres",
        "SELECT pg_create_restore_point('before_update')",
    );
    let at_name = pg.table_fingerprint("postgres", "t");
    pg.psql("postgres", "UPDATE t SET v = 'b' WHERE i % 3 = 0");
    let lsn = pg.psql("postgres", "SELECT pg_current_wal_insert_lsn()");
    let at_lsn = pg.table_fingerprint("postgres", "t");
    pg.psql("postgres", "DELETE FROM t WHERE i % 2 = 0");
    pg.switch_and_wait_archived();
    assert_ne!(pg.table_fingerprint("postgres", "t"), at_lsn);

    // The tablespace's own directory is in use: refused, with the way out,
    // and nothing is left behind.
    let refusal = pitr_refused(&v, &["--target", "immediate"]);
    assert!(refusal.contains("--tablespace-mapping"), "{refusal}");

    let mapping = |new: &std::path::Path| format!("{}={}", ts.display(), new.display());
    for (target, expected) in [
        (vec!["--target-name", "before_update"], &at_name),
        (vec!["--target-lsn", lsn.as_str()], &at_lsn),
        (vec!["--target", "immediate"], &at_backup),
    ] {
        let to = PgCluster::new_root();
        let new_ts = to.path().join("ts1-restored");
        let mut args = target.clone();
        let m = mapping(&new_ts);
        args.extend_from_slice(&["--tablespace-mapping", &m, "--timeline", "1"]);
        restore_pitr(&v, &to, &args);
        assert!(
            std::fs::read_dir(&new_ts).unwrap().next().is_some(),
            "{target:?}: the tablespace's files are not in {}",
            new_ts.display()
        );
        let rec = PgCluster::boot(to, &[]);
        rec.wait_until("recovery promoted", || {
            rec.psql("postgres", "SELECT pg_is_in_recovery()") == "f"
        });
        assert_eq!(
            &rec.table_fingerprint("postgres", "t"),
            expected,
            "{target:?}: the recovered table differs"
        );
        assert_eq!(
            rec.psql(
                "postgres",
                "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'"
            ),
            new_ts.display().to_string()
        );
    }
}

/// `coffer backup pg --physical --job main` of `pg`.
fn base_backup(v: &WalVault, pg: &PgCluster) {
    v.ok(&[
        "backup",
        "pg",
        "--physical",
        "--job",
        "main",
        "--dbname",
        &pg.conninfo("postgres"),
    ]);
}

/// `coffer restore pitr --job main --target-action promote` into `root`'s
/// `data/`, with the target in `extra`.
#[track_caller]
fn restore_pitr(v: &WalVault, root: &tempfile::TempDir, extra: &[&str]) {
    let mut more = vec!["--target-action", "promote"];
    more.extend_from_slice(extra);
    let owned = pitr_args(root, &more);
    v.ok(&owned.iter().map(String::as_str).collect::<Vec<_>>());
}

/// `restore pitr --job main --to ROOT/data` and `extra`.
fn pitr_args<'a>(root: &'a tempfile::TempDir, extra: &[&'a str]) -> Vec<String> {
    let data = root.path().join("data");
    let mut args: Vec<String> = ["restore", "pitr", "--job", "main", "--to"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(data.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// `coffer restore pitr --job main` with `extra`, which must be refused
/// with status 2 and write nothing; returns what it printed.
#[track_caller]
fn pitr_refused(v: &WalVault, extra: &[&str]) -> String {
    let to = PgCluster::new_root();
    let data = to.path().join("data");
    let owned = pitr_args(&to, extra);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let o = v.fails(&args, 2);
    assert!(!data.exists(), "{args:?} wrote {}", data.display());
    text(&o)
}

/// Starts the server on a restored `root` (archiving into job `main`) and
/// waits until its recovery has promoted it.
fn boot_promoted(v: &WalVault, root: tempfile::TempDir) -> PgCluster {
    let pg = PgCluster::boot(root, &strs(&v.archiving("main")));
    pg.wait_until("recovery promoted", || {
        pg.psql("postgres", "SELECT pg_is_in_recovery()") == "f"
    });
    pg
}

/// A vault in a directory of its own that the server user owns (the
/// server runs `coffer wal push` as that user), and its home.
fn archiving_vault() -> (tempfile::TempDir, PathBuf, WalVault) {
    let home = tempfile::tempdir().unwrap();
    let vdir = home.path().join("v");
    std::fs::create_dir(&vdir).unwrap();
    let server_user = server_user();
    if let Some((uid, gid)) = server_user {
        std::os::unix::fs::chown(home.path(), Some(uid), Some(gid)).unwrap();
        std::os::unix::fs::chown(&vdir, Some(uid), Some(gid)).unwrap();
    }
    let v = WalVault::new(vdir.clone(), server_user, &[], vec![]);
    (home, vdir, v)
}

/// The user the harness runs the server as (`postgres` when we are root),
/// read from the owner of a fresh cluster directory.
fn server_user() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let root = PgCluster::new_root();
    let theirs = std::fs::metadata(root.path()).unwrap();
    let ours = std::fs::metadata(tempfile::tempdir().unwrap().path()).unwrap();
    (theirs.uid() != ours.uid()).then_some((theirs.uid(), theirs.gid()))
}

/// WAL segments a cluster archived with `cp` (the files as PostgreSQL
/// hands them to archive_command), and the cluster, still running.
fn segments_from_a_cluster() -> (PgCluster, PathBuf, Vec<PathBuf>) {
    let pg = PgCluster::start_with(&["-c", "wal_level=replica", "-c", "archive_mode=on"]);
    let (dir, segs) = pg.archive_with_cp(3);
    (pg, dir, segs)
}

#[test]
fn push_and_fetch_keep_postgres_archive_rules() {
    let (pg, dir, segs) = segments_from_a_cluster();
    let work = tempfile::tempdir().unwrap();
    let v = WalVault::new(work.path().to_path_buf(), None, &[], vec![]);
    let seg = segs[1].to_str().unwrap();
    let name = segs[1].file_name().unwrap().to_str().unwrap();
    let o = v.ok(&["wal", "push", "--job", "db", seg]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("archived"),
        "{}",
        text(&o)
    );
    // Same content again: success (PostgreSQL retries pushes it did not see succeed).
    let o = v.ok(&["wal", "push", "--job", "db", seg]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("same content"),
        "{}",
        text(&o)
    );

    // A push killed after its object was stored and before the catalog
    // recorded it (here: the catalog is gone) is completed by the retry.
    for f in ["catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"] {
        let _ = std::fs::remove_file(work.path().join(f));
    }
    let o = v.ok(&["wal", "push", "--job", "db", seg]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("same content"),
        "{}",
        text(&o)
    );
    let verify = v.json(&["wal", "verify", "--job", "db"]);
    assert_eq!(verify[0]["files"], 1, "{verify}");

    // Different content under the same name: loud failure.
    let mut bytes = std::fs::read(seg).unwrap();
    let other = work.path().join("other");
    std::fs::create_dir(&other).unwrap();
    bytes[100_000] ^= 0xff;
    std::fs::write(other.join(name), &bytes).unwrap();
    push_refused(&v, &other.join(name), "different content");

    // A segment of another cluster (its header's system identifier) is refused.
    let mut foreign = std::fs::read(&segs[2]).unwrap();
    foreign[24] ^= 0x01;
    let fname = segs[2].file_name().unwrap();
    std::fs::write(other.join(fname), &foreign).unwrap();
    push_refused(&v, &other.join(fname), "system identifier");

    // A file that is not what its name says is refused.
    let renamed = other.join("000000010000000000000099");
    std::fs::copy(seg, &renamed).unwrap();
    push_refused(&v, &renamed, "not a WAL segment of its name");

    // Fetch returns the exact bytes; the next segment is decrypted ahead
    // into the spool by a background process; a missing file exits 1 quietly.
    v.ok(&["wal", "push", "--job", "db", segs[2].to_str().unwrap()]);
    let pgwal = work.path().join("pg_wal");
    std::fs::create_dir(&pgwal).unwrap();
    let dest = pgwal.join("RECOVERYXLOG");
    assert!(fetch_same(&v, &segs[1], &dest).contains("from local"));
    let spooled = pgwal
        .join(".coffer-spool")
        .join(segs[2].file_name().unwrap());
    pg.wait_until("the next segment is prefetched", || spooled.exists());
    assert!(fetch_same(&v, &segs[2], &dest).contains("from spool"));
    let o = v.fails(
        &[
            "wal",
            "fetch",
            "--job",
            "db",
            "00000002.history",
            dest.to_str().unwrap(),
        ],
        1,
    );
    assert!(o.stderr.is_empty(), "{}", text(&o));

    // A damaged object with no other copy: exit 128, naming the file.
    let obj = std::fs::read_dir(work.path().join("vault/wal"))
        .unwrap()
        .map(|e| e.unwrap().path().join(name))
        .find(|p| p.exists())
        .unwrap();
    let mut b = std::fs::read(&obj).unwrap();
    let n = b.len();
    b[n - 20] ^= 0x55;
    std::fs::write(&obj, &b).unwrap();
    let o = v.fails(
        &["wal", "fetch", "--job", "db", name, dest.to_str().unwrap()],
        128,
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(name),
        "{}",
        text(&o)
    );
    drop((pg, dir));
}

#[test]
fn wal_reaches_s3_in_batches_and_is_fetched_from_s3_alone() {
    let (pg, _dir, segs) = segments_from_a_cluster();
    let s3 = s3::s3s_fs();
    let work = tempfile::tempdir().unwrap();
    let url = format!("s3://{}/pitr", s3.bucket());
    let v = WalVault::new(
        work.path().to_path_buf(),
        None,
        &[
            "--s3",
            &url,
            "--s3-endpoint",
            &s3.endpoint(),
            "--s3-region",
            s3.region(),
        ],
        s3.env(),
    );
    v.append_settings("\n[wal]\nbatch-files = 2\nbackground-upload = false\n");
    let (last, uploaded) = segs.split_last().unwrap();
    for s in uploaded {
        v.ok(&["wal", "push", "--job", "db", s.to_str().unwrap()]);
    }
    let before = v.json(&["wal", "verify", "--job", "db"]);
    assert_eq!(before[0]["offsite_pending"], uploaded.len(), "{before}");
    v.ok(&["sync"]);
    let after = v.json(&["wal", "verify", "--job", "db"]);
    assert_eq!(after[0]["offsite_pending"], 0, "{after}");

    // A rebuilt catalog knows the WAL again, from the local objects and the
    // S3 batches: what is uploaded and what still waits (the last file).
    v.ok(&["wal", "push", "--job", "db", last.to_str().unwrap()]);
    // No snapshot names job `db`: its archive is found but not recreated,
    // and the rebuild says so (status 4, as for anything it could not read).
    let o = v.fails(&["index", "rebuild"], 4);
    assert!(text(&o).contains("[[jobs]]"), "{}", text(&o));
    assert_eq!(v.json(&["wal", "verify", "--job", "db"])[0]["files"], 0);
    v.append_settings("\n[[jobs]]\nname = \"db\"\n");
    let rebuilt = v.json(&["index", "rebuild"]);
    assert_eq!(rebuilt["wal_files"], segs.len(), "{rebuilt}");
    let r = v.json(&["wal", "verify", "--job", "db"]);
    assert_eq!(r[0]["files"], segs.len(), "{r}");
    assert_eq!(r[0]["offsite_pending"], 1, "{r}");
    assert_eq!(
        r[0]["timelines"][0]["gaps"].as_array().unwrap().len(),
        0,
        "{r}"
    );
    v.ok(&["sync"]);
    let r = v.json(&["wal", "verify", "--job", "db"]);
    assert_eq!(r[0]["offsite_pending"], 0, "{r}");

    // The local tier loses its WAL: fetch reads the S3 batch, and spools the
    // batch's other file for the next fetch.
    std::fs::remove_dir_all(work.path().join("vault/wal")).unwrap();
    let pgwal = work.path().join("pg_wal");
    std::fs::create_dir(&pgwal).unwrap();
    let dest = pgwal.join("RECOVERYXLOG");
    assert!(fetch_same(&v, &segs[0], &dest).contains("from s3"));
    let second = segs[1].file_name().unwrap().to_str().unwrap();
    let sealed = pgwal.join(".coffer-spool").join(format!("{second}.sealed"));
    assert!(sealed.exists());
    s3.stop();
    assert!(fetch_same(&v, &segs[1], &dest).contains("from spool"));
    // With S3 down, a file no tier could confirm missing stops recovery.
    let third = segs[2].file_name().unwrap().to_str().unwrap();
    v.fails(
        &["wal", "fetch", "--job", "db", third, dest.to_str().unwrap()],
        128,
    );
    drop(pg);
}
