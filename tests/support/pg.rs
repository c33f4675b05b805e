//! Throwaway PostgreSQL clusters for integration tests.
//!
//! coffer's job is to back up and restore real PostgreSQL databases, so the
//! tests that matter need a real server: every [`PgCluster`] is a private
//! `initdb` + `postgres` living in its own temporary directory, listening on a
//! Unix socket in that directory and on a free loopback TCP port. Nothing is
//! shared with other tests or with any system cluster, so tests can run in
//! parallel and can do destructive things (drop databases, stop the server,
//! restore over the top).
//!
//! Lifecycle: [`PgCluster::start`] returns once `pg_isready` says the server
//! accepts connections; dropping the value (also while unwinding from a
//! failed assertion) fast-shuts the server down, waits for it, and then
//! removes the directory. If a test panics while a cluster is alive, the tail
//! of the server log is printed to stderr so the failure report shows what the
//! server thought.
//!
//! Root: `initdb` and `postgres` refuse to run as root. When the test runs
//! with euid 0 (as in CI containers), the cluster directory is handed to the
//! `postgres` system user and the server binaries run as that user; client
//! programs (psql, pg_dump, coffer itself) still run as the current user,
//! which works because authentication is `trust`. Otherwise everything runs as
//! the current user.
//!
//! Server binaries are taken from `$COFFER_PG_BINDIR`, else `pg_config
//! --bindir`, else the newest `/usr/lib/postgresql/*/bin` (Debian keeps
//! `postgres`/`initdb` off `PATH`).
//!
//! Include it from a test crate with
//! `#[path = "support/pg.rs"] mod pg;` and use `pg::PgCluster`.

// Each test crate uses only part of this module.
#![allow(dead_code)]

use std::ffi::{CString, OsStr};
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Database superuser created by `initdb -U`; every connection uses it.
pub const SUPERUSER: &str = "postgres";

/// How long [`PgCluster::start`] waits for the server to accept connections.
/// Start-up normally takes well under a second; the margin is for a loaded
/// 2-core CI box running several clusters at once.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Attempts to start the server when the chosen port was grabbed by someone
/// else between our probe and the server's bind (see [`free_port`]).
const START_ATTEMPTS: u32 = 3;

/// Environment variables that would silently redirect client programs away
/// from the test cluster (or change how they authenticate) if inherited from
/// the developer's shell.
const INHERITED_PG_ENV_TO_CLEAR: &[&str] = &[
    "PGHOSTADDR",
    "PGDATABASE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSSLMODE",
    "PGTARGETSESSIONATTRS",
];

/// Row counts of the tables created by `tests/fixtures/tenant_schema.sql`
/// ([`PgCluster::load_tenant_schema`]), schema-qualified as [`PgCluster::tables`]
/// spells them. Kept here so tests don't each hard-code them.
pub const TENANT_SCHEMA_ROWS: &[(&str, u64)] = &[
    ("app.audit_log", 2500),
    ("app.leases", 1500),
    ("app.payments", 6000),
    ("app.properties", 200),
    ("app.tenants", 1000),
    ("app.utility_readings", 4000),
];

/// Number of large objects the tenant fixture creates (one 64 KiB floor plan
/// referenced from `app.properties.floorplan`).
pub const TENANT_SCHEMA_LARGE_OBJECTS: u64 = 1;

/// A running, private PostgreSQL cluster. Stopped and deleted on drop.
pub struct PgCluster {
    /// The postmaster. Declared (and dropped) before `root`; `Drop` stops it
    /// before the directory is deleted underneath it.
    server: Child,
    port: u16,
    /// Socket directory and parent of `data/` and `server.log`.
    root: TempDir,
    /// uid/gid the server runs as when we are root, `None` otherwise.
    server_owner: Option<(u32, u32)>,
}

impl PgCluster {
    /// Starts a cluster with default settings (plus `fsync=off`).
    pub fn start() -> PgCluster {
        Self::start_with(&[])
    }

    /// Starts a cluster, appending `extra_server_args` to the `postgres`
    /// command line, e.g. `&["-c", "wal_level=replica", "-c", "archive_mode=on"]`
    /// for WAL-archiving tests. Later `-c` settings win, so these can also
    /// override the harness defaults.
    ///
    /// Panics (with the server log) if the server does not come up.
    pub fn start_with(extra_server_args: &[&str]) -> PgCluster {
        let root = Self::new_root();
        let data = root.path().join("data");
        let initdb = server_binary(root.path(), server_owner(), "initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "--auth=trust", "--encoding=UTF8"])
            .args(["--locale=C.UTF-8", "--no-sync"])
            .output()
            .expect("spawn initdb");
        assert!(
            initdb.status.success(),
            "initdb failed ({}):\n{}",
            initdb.status,
            output_text(&initdb)
        );
        Self::boot(root, extra_server_args)
    }

    /// A directory for a cluster (owned by the server user when root, mode
    /// 0700): put a data directory at `data/` in it (e.g. a restored base
    /// backup), then [`Self::boot`] it.
    pub fn new_root() -> TempDir {
        let root = tempfile::Builder::new()
            .prefix("coffer-pg-")
            .tempdir()
            .expect("create temporary directory for PostgreSQL cluster");
        prepare_server_dir(root.path(), server_owner());
        root
    }

    /// Starts the server on the data directory `root/data`; returns once it
    /// accepts connections (a recovering server with hot_standby does so
    /// while it replays).
    pub fn boot(root: TempDir, extra_server_args: &[&str]) -> PgCluster {
        let server_owner = server_owner();
        let mut attempt = 1;
        let port = free_port();
        let (server, mut log_offset) =
            spawn_server(root.path(), server_owner, port, extra_server_args);
        let mut cluster = PgCluster {
            server,
            port,
            root,
            server_owner,
        };
        loop {
            let status = match cluster.wait_until_ready() {
                Ok(()) => return cluster,
                Err(status) => status,
            };
            let this_attempt = cluster
                .log_contents()
                .get(log_offset..)
                .unwrap_or("")
                .to_owned();
            if attempt < START_ATTEMPTS && this_attempt.contains("Address already in use") {
                // Lost the race for the port (see `free_port`): pick another.
                attempt += 1;
                cluster.port = free_port();
                let (server, offset) = spawn_server(
                    cluster.root.path(),
                    server_owner,
                    cluster.port,
                    extra_server_args,
                );
                cluster.server = server;
                log_offset = offset;
                continue;
            }
            panic!(
                "PostgreSQL server exited during start-up ({status}); \
                 args {extra_server_args:?}\n--- server log ---\n{}",
                cluster.log_contents()
            );
        }
    }

    /// Polls `pg_isready` until the server accepts connections. Returns the
    /// exit status if the server dies first; panics after [`READY_TIMEOUT`].
    fn wait_until_ready(&mut self) -> Result<(), ExitStatus> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.server.try_wait().expect("poll postgres process") {
                return Err(status);
            }
            let ready = self
                .command(pg_bin("pg_isready"))
                .args(["-q", "-t", "2", "-d", "postgres"])
                .stdin(Stdio::null())
                .status()
                .expect("spawn pg_isready")
                .success();
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                // `self` is dropped while unwinding, which stops the server.
                panic!(
                    "PostgreSQL did not accept connections within {READY_TIMEOUT:?} \
                     (socket dir {}, port {})\n--- server log ---\n{}",
                    self.host().display(),
                    self.port,
                    self.log_contents()
                );
            }
            // Bounded readiness poll: the only sleep in this harness.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Unix-socket directory, i.e. the value for libpq's `host`/`PGHOST`.
    pub fn host(&self) -> &Path {
        self.root.path()
    }

    /// Server port (also used for the Unix socket's name).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `PGDATA` of the cluster: for tests that inspect WAL, take base backups
    /// or corrupt files on purpose. Owned by the server user when run as root.
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// libpq key=value connection string for `db` over the Unix socket, for
    /// code that takes a conninfo (tokio-postgres accepts a socket dir as
    /// `host`, as does every libpq client).
    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host={} port={} user={} dbname={}",
            conninfo_quote(&self.host_str()),
            self.port,
            SUPERUSER,
            conninfo_quote(db)
        )
    }

    /// `postgresql://postgres@127.0.0.1:PORT/db` over loopback TCP, for code
    /// paths that only take URLs or that must not depend on Unix sockets.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}@127.0.0.1:{}/{}",
            self.port,
            percent_encode(db)
        )
    }

    /// `PGHOST`/`PGPORT`/`PGUSER` pointing at this cluster, for child
    /// processes that are spawned some other way than [`Self::command`] (e.g.
    /// `assert_cmd`). Note [`Self::command`] additionally clears inherited PG*
    /// variables that could redirect libpq.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("PGHOST".to_owned(), self.host_str()),
            ("PGPORT".to_owned(), self.port.to_string()),
            ("PGUSER".to_owned(), SUPERUSER.to_owned()),
        ]
    }

    /// A [`Command`] for `program` whose libpq environment points at this
    /// cluster: [`Self::env`] applied, and inherited PG* variables that would
    /// override it (`PGHOSTADDR`, `PGSERVICE`, `PGDATABASE`, ...) removed. Use
    /// it for pg_dump/pg_restore/psql and for the coffer binary alike.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        for var in INHERITED_PG_ENV_TO_CLEAR {
            cmd.env_remove(var);
        }
        cmd.envs(self.env());
        cmd
    }

    /// Runs `sql` in `db` with `psql -X -q -A -t -v ON_ERROR_STOP=1 -c` and
    /// returns stdout, trimmed: one line per row, columns separated by `|`,
    /// no headers or command tags. Several `;`-separated statements run as one
    /// implicit transaction. Panics with psql's stderr if anything fails, so
    /// setup mistakes surface at the line that caused them.
    #[track_caller]
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .command(pg_bin("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.conninfo(db))
            .arg("-c")
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .expect("spawn psql");
        checked_stdout(out, &format!("psql -d {db:?} -c {sql:?}"))
    }

    /// Runs an SQL script with `psql -X -q -v ON_ERROR_STOP=1 -f` in `db`;
    /// returns its trimmed stdout and panics with stderr on the first error.
    #[track_caller]
    pub fn psql_file(&self, db: &str, path: impl AsRef<Path>) -> String {
        let path = path.as_ref();
        let out = self
            .command(pg_bin("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.conninfo(db))
            .arg("-f")
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .expect("spawn psql");
        checked_stdout(out, &format!("psql -d {db:?} -f {}", path.display()))
    }

    /// Creates database `name` (quoted, so any name works).
    #[track_caller]
    pub fn createdb(&self, name: &str) {
        self.psql(
            "postgres",
            &format!("create database {}", quote_ident(name)),
        );
    }

    /// `pgbench -i -s scale` in `db`: four `public.pgbench_*` tables,
    /// 100 000 × scale rows in `pgbench_accounts`. A quick source of bulk,
    /// low-entropy data for dedup/compression paths.
    #[track_caller]
    pub fn pgbench_init(&self, db: &str, scale: u32) {
        let out = self
            .command(pg_bin("pgbench"))
            .args(["-i", "-q", "-s", &scale.to_string()])
            .arg(self.conninfo(db))
            .stdin(Stdio::null())
            .output()
            .expect("spawn pgbench");
        checked_stdout(out, &format!("pgbench -i -s {scale} {db:?}"));
    }

    /// Path of `tests/fixtures/tenant_schema.sql`.
    pub fn tenant_schema_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tenant_schema.sql")
    }

    /// Loads the tenant-management fixture (schema `app`, see
    /// [`TENANT_SCHEMA_ROWS`]) into the existing database `db`. Deterministic:
    /// two loads produce identical table fingerprints.
    #[track_caller]
    pub fn load_tenant_schema(&self, db: &str) {
        self.psql_file(db, Self::tenant_schema_path());
    }

    /// User tables of `db` (ordinary tables, including partitions, outside
    /// the system schemas), schema-qualified and quoted with `quote_ident`, so
    /// each entry can be pasted into SQL and fed to
    /// [`Self::table_fingerprint`]. Sorted, so two databases can be compared
    /// as lists.
    #[track_caller]
    pub fn tables(&self, db: &str) -> Vec<String> {
        let sql = "select name from ( \
                   select quote_ident(n.nspname) || '.' || quote_ident(c.relname) as name \
                     from pg_class c join pg_namespace n on n.oid = c.relnamespace \
                    where c.relkind = 'r' \
                      and n.nspname not in ('pg_catalog', 'information_schema') \
                      and n.nspname not like 'pg\\_toast%' \
                      and n.nspname not like 'pg\\_temp\\_%') as user_tables \
                    order by name collate \"C\"";
        lines(&self.psql(db, sql))
    }

    /// Content digest of `table` as `"<rows>:<md5>"`, independent of physical
    /// row order, so a table restored by coffer can be compared with the
    /// original even though its tuples sit elsewhere. The session pins
    /// TimeZone, DateStyle, bytea and float output and sorts with the "C"
    /// collation, so digests are comparable across databases and clusters.
    ///
    /// `table` is pasted into SQL verbatim: pass names from [`Self::tables`]
    /// (or otherwise trusted, already-quoted names).
    #[track_caller]
    pub fn table_fingerprint(&self, db: &str, table: &str) -> String {
        // `(t.*)::text` rather than `t::text`: a column named `t` would win
        // over the whole-row reference.
        let sql = format!(
            "{PINNED_OUTPUT_SETTINGS} \
             select count(*) || ':' || md5(coalesce(string_agg((t.*)::text, '|' \
                    order by (t.*)::text collate \"C\"), '')) \
               from {table} as t"
        );
        self.psql(db, &sql)
    }

    /// Digest of all large objects in `db` (OIDs and contents) as
    /// `"<count>:<md5>"`. Large objects live in `pg_largeobject`, a catalog
    /// that [`Self::tables`] deliberately skips, so round-trip tests need this
    /// to notice lost or damaged large objects.
    #[track_caller]
    pub fn large_objects_fingerprint(&self, db: &str) -> String {
        self.psql(
            db,
            "select count(*) || ':' || md5(coalesce(string_agg( \
                    m.oid::text || '=' || md5(lo_get(m.oid)), '|' order by m.oid), '')) \
               from pg_largeobject_metadata m",
        )
    }

    /// Everything the server has logged so far (start-up, errors, archiver
    /// output). Useful in assertion messages.
    pub fn log_contents(&self) -> String {
        match fs::read(self.log_path()) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("<could not read server log: {e}>"),
        }
    }

    /// Creates `name` inside the cluster directory, writable by the server
    /// (owned by the server user when running as root), e.g. as a WAL archive
    /// target for `archive_command`, which runs as the server user. The
    /// directory is removed with the cluster.
    #[track_caller]
    pub fn server_writable_dir(&self, name: &str) -> PathBuf {
        let dir = self.root.path().join(name);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        prepare_server_dir(&dir, self.server_owner);
        dir
    }

    /// Polls `ok` until it holds; panics with the server log after a
    /// minute. For what the server does on its own time (archiving,
    /// recovery).
    pub fn wait_until(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting until {what}\n{}",
                self.log_contents()
            );
            // Bounded poll of the server's own progress report.
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Switches to a new WAL segment and waits (bounded) until the server
    /// reports the old one archived; returns its name.
    pub fn switch_and_wait_archived(&self) -> String {
        let seg = self.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
        self.wait_until(&format!("archived {seg}"), || {
            let last = self.psql(
                "postgres",
                "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
            );
            last.as_str() >= seg.as_str()
        });
        seg
    }

    /// Archives with `cp` into a directory of its own, writes and switches
    /// WAL `rounds` times; returns the directory and the segment files in
    /// it, sorted (the files as PostgreSQL hands them to archive_command).
    /// The cluster must run with `archive_mode=on`.
    pub fn archive_with_cp(&self, rounds: usize) -> (PathBuf, Vec<PathBuf>) {
        let dir = self.server_writable_dir("archive");
        self.psql(
            "postgres",
            &format!(
                "ALTER SYSTEM SET archive_command = 'cp %p {}/%f'",
                dir.display()
            ),
        );
        self.psql("postgres", "SELECT pg_reload_conf()");
        self.psql(
            "postgres",
            "CREATE TABLE t AS SELECT generate_series(1, 20000) AS a",
        );
        for _ in 0..rounds {
            self.psql("postgres", "INSERT INTO t SELECT generate_series(1, 1000)");
            self.switch_and_wait_archived();
        }
        let mut segs: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().len() == 24)
            .collect();
        segs.sort();
        assert!(segs.len() >= rounds, "{segs:?}");
        (dir, segs)
    }

    /// Uid and gid the server runs as (root only), for running other
    /// programs as the server user.
    pub fn server_owner(&self) -> Option<(u32, u32)> {
        self.server_owner
    }

    /// PID of the postmaster.
    pub fn server_pid(&self) -> u32 {
        self.server.id()
    }

    fn log_path(&self) -> PathBuf {
        self.root.path().join("server.log")
    }

    fn host_str(&self) -> String {
        self.host()
            .to_str()
            .expect("temporary directory path is UTF-8")
            .to_owned()
    }
}

impl Drop for PgCluster {
    /// Fast shutdown (SIGINT: disconnect clients, checkpoint, exit) and wait,
    /// so no server outlives the test even when it panicked; `root` is
    /// deleted afterwards by its own drop.
    fn drop(&mut self) {
        if std::thread::panicking() {
            // eprintln!, not io::stderr(): the test harness captures it and
            // shows it only for tests that actually fail.
            let log = self.log_contents();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- PostgreSQL server log (last {} lines, {}) ---",
                tail.len(),
                self.log_path().display()
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        if let Ok(None) = self.server.try_wait() {
            // SAFETY: kill(2) has no memory-safety preconditions. The child is
            // not yet reaped, so its PID cannot have been reused.
            unsafe {
                libc::kill(self.server.id() as libc::pid_t, libc::SIGINT);
            }
        }
        let _ = self.server.wait();
    }
}

/// Path of a PostgreSQL program in the server's bin directory. Prefer this to
/// a bare name so clients match the server's major version.
pub fn pg_bin(program: &str) -> PathBuf {
    static BIN_DIR: OnceLock<PathBuf> = OnceLock::new();
    BIN_DIR.get_or_init(find_bin_dir).join(program)
}

fn find_bin_dir() -> PathBuf {
    let has_server = |dir: &Path| dir.join("postgres").is_file() && dir.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("COFFER_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        assert!(
            has_server(&dir),
            "COFFER_PG_BINDIR={} has no postgres/initdb",
            dir.display()
        );
        return dir;
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&dir) {
            return dir;
        }
    }
    // Debian/Ubuntu layout; pick the newest major version installed.
    let mut candidates: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let dir = entry.path().join("bin");
            has_server(&dir).then_some((version, dir))
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, dir)| dir).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries found: set COFFER_PG_BINDIR, put pg_config \
             on PATH, or install postgresql (Debian: /usr/lib/postgresql/N/bin)"
        )
    })
}

/// When running as root, the uid/gid of the `postgres` system user, which the
/// server binaries must run as (they refuse root). Looked up at run time
/// rather than hard-coded because distributions assign different ids.
fn server_owner() -> Option<(u32, u32)> {
    // SAFETY: geteuid cannot fail and has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = CString::new(SUPERUSER).expect("no NUL in user name");
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero passwd (null pointers, zero ids) is a valid value
    // to be overwritten by getpwnam_r.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // getpwnam_r, not getpwnam: tests start clusters from parallel threads and
    // getpwnam returns a pointer to shared static storage.
    // SAFETY: all pointers are valid for the duration of the call and `buf`'s
    // length is passed correctly; `pwd`'s string fields point into `buf`, but
    // only the integer ids are read.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    assert!(
        rc == 0 && !result.is_null(),
        "running as root, but the `{SUPERUSER}` system user to run initdb/postgres as \
         could not be looked up (getpwnam_r returned {rc}); install postgresql or run \
         the tests as an unprivileged user"
    );
    Some((pwd.pw_uid, pwd.pw_gid))
}

/// Gives `dir` to the server user (when root) with mode 0700, which
/// `initdb` requires of data directories and which keeps the socket private.
fn prepare_server_dir(dir: &Path, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {} to {uid}:{gid}: {e}", dir.display()));
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .unwrap_or_else(|e| panic!("chmod 0700 {}: {e}", dir.display()));
}

/// A command for a server-side binary, run as the server user when we are
/// root. The working directory is the cluster directory because the server
/// user may not be allowed into the caller's.
fn server_binary(root: &Path, owner: Option<(u32, u32)>, program: &str) -> Command {
    let mut cmd = Command::new(pg_bin(program));
    cmd.current_dir(root).stdin(Stdio::null());
    if let Some((uid, gid)) = owner {
        // std drops supplementary groups (setgroups(0)) when changing uid as root.
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// Starts the postmaster with output appended to `server.log`. Returns the
/// child and the log length before this start, so a retry can tell its own
/// errors from an earlier attempt's.
fn spawn_server(
    root: &Path,
    owner: Option<(u32, u32)>,
    port: u16,
    extra_server_args: &[&str],
) -> (Child, usize) {
    let log_path = root.join("server.log");
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap_or_else(|e| panic!("open {}: {e}", log_path.display()));
    let offset = log.metadata().map(|m| m.len() as usize).unwrap_or(0);
    let child = server_binary(root, owner, "postgres")
        .arg("-D")
        .arg(root.join("data"))
        .arg("-p")
        .arg(port.to_string())
        .arg("-c")
        .arg(format!("unix_socket_directories={}", root.display()))
        .args(["-c", "listen_addresses=127.0.0.1"])
        // Test data is disposable; skip the flushes.
        .args(["-c", "fsync=off"])
        .args(extra_server_args)
        .stdout(log.try_clone().expect("dup server log handle"))
        .stderr(log)
        .spawn()
        .expect("spawn postgres");
    (child, offset)
}

/// A loopback port that was free a moment ago. Racy by nature (another
/// process can take it before the server binds), hence the retry in
/// [`PgCluster::start_with`].
fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
        .port()
}

/// Settings that make text output of values independent of session defaults,
/// so fingerprints compare across databases and clusters.
const PINNED_OUTPUT_SETTINGS: &str = "set timezone = 'UTC'; set datestyle = 'ISO, YMD'; \
     set intervalstyle = 'postgres'; set bytea_output = 'hex'; set extra_float_digits = 1;";

#[track_caller]
fn checked_stdout(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn output_text(out: &Output) -> String {
    format!(
        "--- stderr ---\n{}--- stdout ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// SQL identifier quoting, as `quote_ident` would (always quoted).
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// libpq conninfo value quoting: single quotes, with `\` and `'` escaped.
fn conninfo_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
