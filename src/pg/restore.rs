//! Restoring a pg_dump snapshot into a database, and checking the result
//! against the facts recorded at backup time.
//!
//! The snapshot streams from the vault into `pg_restore` (into a private
//! temporary file first only when `--jobs` > 1 needs a seekable archive),
//! and its head into `pg_restore --list` with the same selection, whose
//! `TABLE DATA` entries say which recorded tables the restore should have
//! filled. Those are then counted (and checksummed where a checksum was
//! recorded and the servers are comparable) in the restored database. A
//! globals snapshot is replayed with psql instead.

use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::process::Stdio;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;
use vault_format::manifest::{kinds, Manifest};

use super::conninfo::ConnInfo;
use super::dump::RecordedFacts;
use super::facts;
use super::globals::{self, Replay};
use super::toc::{self, Toc, TocFeed};
use super::{tools, Db, PgError, KIND_DUMP, KIND_GLOBALS};
use crate::catalog::Outcome;
use crate::error::{Error, Result};
use crate::pipeline::restore::{self as pipeline, ReadContext, RestoreReport};
use crate::progress::Progress;
use crate::vault::Vault;

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Target: the database to restore into, or with `create` the one to
    /// connect to first (e.g. `postgres`).
    pub target: ConnInfo,
    /// `pg_restore --create`: create the dumped database (its recorded
    /// name) and restore into it.
    pub create: bool,
    /// `pg_restore --clean --if-exists`: drop objects before recreating.
    pub clean: bool,
    /// `pg_restore --table` (repeatable; names, not patterns).
    pub tables: Vec<String>,
    /// `pg_restore --schema` (repeatable).
    pub schemas: Vec<String>,
    /// `pg_restore --jobs` (> 1 spools the archive to a temporary file).
    pub jobs: u32,
    /// `pg_restore --no-owner`.
    pub no_owner: bool,
    /// `pg_restore --no-privileges`.
    pub no_privileges: bool,
}

impl RestoreOptions {
    fn selection_args(&self) -> Vec<String> {
        let mut a: Vec<String> = self
            .schemas
            .iter()
            .map(|s| format!("--schema={s}"))
            .collect();
        a.extend(self.tables.iter().map(|t| format!("--table={t}")));
        a
    }

    fn selective(&self) -> bool {
        !self.tables.is_empty() || !self.schemas.is_empty()
    }
}

/// One difference between the restored database and the recorded facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// `schema.table`, or `large objects`.
    pub table: String,
    /// What differs, in words.
    pub problem: String,
    /// Rows (or large objects) at backup time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_rows: Option<i64>,
    /// Rows (or large objects) found after the restore.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_rows: Option<i64>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.table, self.problem)
    }
}

/// The restored database against the recorded facts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Comparison {
    /// Tables counted.
    pub tables_compared: usize,
    /// Rows expected in them.
    pub rows_compared: i64,
    /// Tables whose content checksum was compared too.
    pub checksums_compared: usize,
    /// Large objects compared (expected, restored), when they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub large_objects: Option<(i64, i64)>,
    /// What differs (empty: the restore matches).
    pub differences: Vec<Difference>,
    /// Why some things were not compared.
    pub notes: Vec<String>,
}

/// Result of `coffer restore SNAPSHOT --dbname ...` (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct PgRestoreReport {
    /// Snapshot id.
    pub id: String,
    /// Job.
    pub job: String,
    /// Snapshot kind.
    pub kind: String,
    /// The database restored into (for globals: connected to).
    pub database: String,
    /// Bytes streamed from the vault.
    pub bytes: u64,
    /// Chunks verified.
    pub chunks: u64,
    /// Wall time, comparison included.
    pub seconds: f64,
    /// The comparison with the recorded facts (dumps with facts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
    /// What replaying globals did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub globals: Option<Replay>,
    /// Remarks (e.g. no facts recorded).
    pub notes: Vec<String>,
}

impl PgRestoreReport {
    /// Differences found (none when nothing was compared).
    pub fn differences(&self) -> &[Difference] {
        self.comparison
            .as_ref()
            .map(|c| c.differences.as_slice())
            .unwrap_or(&[])
    }
}

/// Why streaming into pg_restore failed.
pub(crate) enum StreamError {
    /// Reading the snapshot from the vault failed (or coffer could not run).
    Vault(Error),
    /// pg_restore (or pg_restore --list) failed: its message.
    PgRestore(String),
}

/// Writes into pg_restore (or its spool file) and tees into the lister.
struct Sink<W: Write> {
    main: W,
    toc: TocFeed,
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.main.write(buf)?;
        self.toc.feed(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.main.flush()
    }
}

/// Writes into pg_restore's stdin and tees into the lister. pg_restore
/// stops reading once it has what a selective restore needs and exits: when
/// the pipe breaks and pg_restore succeeded, the rest of the stream is still
/// read (and verified) but dropped; when it failed, the write fails and
/// stops the pipeline.
struct PipeSink<'a> {
    stdin: Option<std::process::ChildStdin>,
    child: &'a mut std::process::Child,
    toc: TocFeed,
}

impl Write for PipeSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(s) = &mut self.stdin {
            match s.write_all(buf) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    self.stdin = None;
                    match self.child.wait() {
                        Ok(st) if st.success() => {}
                        _ => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.toc.feed(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.stdin {
            Some(s) => s.flush(),
            None => Ok(()),
        }
    }
}

/// Streams the snapshot into `pg_restore ARGS --dbname=TARGET` and into
/// `pg_restore --list LIST_ARGS`; returns the pipeline's report and the
/// listing.
pub(crate) fn stream_into_pg_restore(
    ctx: &ReadContext,
    manifest: &Manifest,
    target: &ConnInfo,
    args: &[String],
    list_args: &[String],
    jobs: u32,
    progress: &dyn Progress,
) -> std::result::Result<(RestoreReport, Toc), StreamError> {
    let vault_err = |e: PgError| StreamError::Vault(e.into());
    let (feed, lister) = toc::start(list_args).map_err(vault_err)?;
    let mut cmd = tools::command("pg_restore");
    cmd.args(["--no-password", "--exit-on-error"]).args(args);
    target.apply_to(&mut cmd, "--dbname");
    let (report, status, stderr) = if jobs > 1 {
        // pg_restore --jobs needs a seekable archive: spool it, privately.
        let dir = tempfile::Builder::new()
            .prefix("coffer-restore-")
            .tempdir()
            .map_err(|e| {
                StreamError::Vault(Error::Output {
                    what: "a temporary directory for pg_restore --jobs".into(),
                    io: e,
                })
            })?;
        let path = dir.path().join("archive.dump");
        let file = std::fs::File::create(&path).map_err(|e| {
            StreamError::Vault(Error::Output {
                what: path.display().to_string(),
                io: e,
            })
        })?;
        let mut sink = Sink {
            main: BufWriter::with_capacity(1 << 20, file),
            toc: feed,
        };
        let rep = pipeline::run(ctx, manifest, &mut sink, progress).map_err(StreamError::Vault)?;
        sink.toc.close();
        drop(sink);
        cmd.arg(format!("--jobs={jobs}")).arg(&path);
        let out = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| vault_err(tools::spawn_error("pg_restore", e)))?;
        (
            Ok(rep),
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    } else {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| vault_err(tools::spawn_error("pg_restore", e)))?;
        let stderr = tools::collect(child.stderr.take().expect("piped stderr"), "pg_restore");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut sink = PipeSink {
            stdin: Some(stdin),
            child: &mut child,
            toc: feed,
        };
        let rep = pipeline::run(ctx, manifest, &mut sink, progress);
        sink.toc.close();
        drop(sink);
        let status = child.wait().map_err(|e| {
            StreamError::Vault(Error::Output {
                what: "pg_restore".into(),
                io: e,
            })
        })?;
        (rep, status, tools::join(stderr))
    };
    match report {
        // The vault's own failure is the cause even when pg_restore then
        // choked on the cut stream; a broken pipe is pg_restore's doing.
        Err(e) if !matches!(e, Error::Output { .. }) => return Err(StreamError::Vault(e)),
        Err(e) if status.success() => return Err(StreamError::Vault(e)),
        _ => {}
    }
    if !status.success() {
        return Err(StreamError::PgRestore(format!(
            "pg_restore {}",
            tools::describe_exit(status, &stderr)
        )));
    }
    let report = report.map_err(StreamError::Vault)?;
    let toc = toc::join(lister).map_err(|e| StreamError::PgRestore(e.to_string()))?;
    Ok((report, toc))
}

/// Compares the database `db` is connected to with the recorded facts, for
/// the tables whose data `toc` (the restore's own listing) holds.
/// `fresh` says the database held nothing before (then large objects are
/// compared too); `everything` says the restore was not selective (then
/// every recorded table must be in the archive).
pub(crate) fn compare(
    db: &Db,
    recorded: &RecordedFacts,
    toc: &Toc,
    fresh: bool,
    everything: bool,
) -> std::result::Result<Comparison, PgError> {
    let tables = recorded.tables.clone().unwrap_or_default();
    let in_archive = toc.table_data_oids();
    let mut c = Comparison::default();
    let (major, encoding) = db.run(async {
        let r = db
            .client()
            .query_one(
                "SELECT current_setting('server_version_num')::int4, pg_encoding_to_char(encoding)::text \
                   FROM pg_database WHERE datname = current_database()",
                &[],
            )
            .await
            .map_err(|e| PgError::Query {
                what: "reading the restored database's settings".into(),
                detail: super::db_error(&e),
            })?;
        Ok::<_, PgError>((r.get::<_, i32>(0) / 10000, r.get::<_, String>(1)))
    })?;
    let mut checksums = recorded.checksum_comparable();
    if checksums && tables.iter().any(|t| t.md5.is_some()) {
        if let Some(src) = recorded.server_version_num.map(|v| v / 10000) {
            if src != major {
                checksums = false;
                c.notes.push(format!(
                    "content checksums not compared: the backup is from PostgreSQL {src}, the restore on {major} (value text may differ between major versions)"
                ));
            }
        }
        if let Some(enc) = &recorded.encoding {
            if *enc != encoding {
                checksums = false;
                c.notes.push(format!(
                    "content checksums not compared: the backup's encoding is {enc}, the restored database's {encoding}"
                ));
            }
        }
    }
    let expected: Vec<_> = tables
        .iter()
        .filter(|t| in_archive.contains(&t.oid))
        .collect();
    if everything {
        let recorded_oids: BTreeSet<u32> = tables.iter().map(|t| t.oid).collect();
        for t in tables.iter().filter(|t| !in_archive.contains(&t.oid)) {
            c.differences.push(Difference {
                table: t.display(),
                problem: format!(
                    "{} rows at backup time, but the archive holds no data for it",
                    t.rows
                ),
                expected_rows: Some(t.rows),
                restored_rows: None,
            });
        }
        let unrecorded = in_archive.difference(&recorded_oids).count();
        if unrecorded > 0 {
            c.notes.push(format!(
                "{unrecorded} table(s) in the archive have no recorded facts"
            ));
        }
    }
    db.run(facts::pin_session(db.client()))?;
    for t in expected {
        let want_md5 = checksums && t.md5.is_some();
        let found = db.run(facts::measure_if_exists(
            db.client(),
            &t.schema,
            &t.name,
            want_md5,
        ))?;
        c.tables_compared += 1;
        c.rows_compared += t.rows;
        match found {
            None => c.differences.push(Difference {
                table: t.display(),
                problem: format!(
                    "missing from the restored database ({} rows at backup time)",
                    t.rows
                ),
                expected_rows: Some(t.rows),
                restored_rows: None,
            }),
            Some((rows, _)) if rows != t.rows => c.differences.push(Difference {
                table: t.display(),
                problem: format!("{} rows at backup time, {rows} restored", t.rows),
                expected_rows: Some(t.rows),
                restored_rows: Some(rows),
            }),
            Some((rows, md5)) => {
                if want_md5 {
                    c.checksums_compared += 1;
                    if md5 != t.md5 {
                        c.differences.push(Difference {
                            table: t.display(),
                            problem: format!(
                                "content differs: same row count ({rows}), but the content checksum does not match the one recorded at backup time"
                            ),
                            expected_rows: Some(t.rows),
                            restored_rows: Some(rows),
                        });
                    }
                }
            }
        }
    }
    if fresh && toc.has_large_objects() {
        if let Some(expected) = recorded.large_objects {
            let found = db.run(facts::large_objects(db.client()))?;
            c.large_objects = Some((expected, found));
            if found != expected {
                c.differences.push(Difference {
                    table: "large objects".into(),
                    problem: format!("{expected} at backup time, {found} restored"),
                    expected_rows: Some(expected),
                    restored_rows: Some(found),
                });
            }
        }
    }
    Ok(c)
}

/// Restores a snapshot into a database (`coffer restore SNAPSHOT --dbname`):
/// a dump with pg_restore and a comparison with its facts, or globals with
/// psql. The run is recorded in the catalog (outcome `partial` when the
/// comparison found differences).
///
/// # Errors
/// [`Error::Config`] for a snapshot that is not a dump or globals, or
/// options that do not apply; [`Error::Integrity`] when the vault's data is
/// damaged; [`Error::Output`] with pg_restore's (or psql's) message when it
/// failed.
pub fn restore(
    vault: &Vault,
    ctx: &ReadContext,
    manifest: &Manifest,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<PgRestoreReport> {
    let kind = manifest.kind.as_str();
    if ![KIND_DUMP, KIND_GLOBALS, kinds::FILE, kinds::STDIN].contains(&kind) {
        return Err(Error::Config(format!(
            "snapshot {} is a {kind} snapshot, not a PostgreSQL dump; restore it with --to PATH",
            manifest.id
        )));
    }
    if kind == KIND_GLOBALS
        && (opts.create
            || opts.clean
            || opts.selective()
            || opts.jobs > 1
            || opts.no_owner
            || opts.no_privileges)
    {
        return Err(Error::Config(
            "--create, --clean, --table, --schema, --jobs, --no-owner and --no-privileges apply to dumps, not to a globals snapshot (it is replayed with psql)".into(),
        ));
    }
    let catalog = vault.catalog()?;
    let run = catalog.start_run("restore", Some(&manifest.job))?;
    let r = if kind == KIND_GLOBALS {
        restore_globals(ctx, manifest, opts, progress)
    } else {
        restore_dump(ctx, manifest, opts, progress)
    };
    match &r {
        Ok(rep) => catalog.finish_run(
            run,
            if rep.differences().is_empty() {
                Outcome::Ok
            } else {
                Outcome::Partial
            },
            rep.bytes,
            None,
            Some(&manifest.id),
            Some(&json!({
                "database": rep.database,
                "differences": rep.differences(),
                "comparison": rep.comparison,
            })),
        )?,
        Err(e) => catalog.finish_run(
            run,
            Outcome::Failed,
            0,
            Some(&e.to_string()),
            Some(&manifest.id),
            Some(&json!({ "database": opts.target.database() })),
        )?,
    }
    r
}

fn restore_globals(
    ctx: &ReadContext,
    manifest: &Manifest,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<PgRestoreReport> {
    let started = Instant::now();
    let (rep, replay) =
        globals::replay(&opts.target, |w| pipeline::run(ctx, manifest, w, progress))?;
    Ok(PgRestoreReport {
        id: manifest.id.to_hex(),
        job: manifest.job.clone(),
        kind: manifest.kind.clone(),
        database: opts.target.database(),
        bytes: rep.bytes,
        chunks: rep.chunks,
        seconds: started.elapsed().as_secs_f64(),
        comparison: None,
        globals: Some(replay),
        notes: Vec::new(),
    })
}

fn restore_dump(
    ctx: &ReadContext,
    manifest: &Manifest,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<PgRestoreReport> {
    let started = Instant::now();
    let recorded = RecordedFacts::of(&manifest.source);
    let mut notes = Vec::new();
    let mut args = Vec::new();
    if opts.create {
        args.push("--create".to_string());
    }
    if opts.clean {
        args.extend(["--clean".to_string(), "--if-exists".to_string()]);
    }
    if opts.no_owner {
        args.push("--no-owner".into());
    }
    if opts.no_privileges {
        args.push("--no-privileges".into());
    }
    // All or nothing where pg_restore allows it (not with --create, which
    // cannot run CREATE DATABASE in a transaction, nor with --jobs).
    if !opts.create && opts.jobs <= 1 {
        args.push("--single-transaction".into());
    }
    args.extend(opts.selection_args());
    let database = if opts.create {
        match &recorded.database {
            Some(d) => d.clone(),
            None => {
                notes.push(
                    "the dumped database's name was not recorded: the restore is not compared"
                        .into(),
                );
                String::new()
            }
        }
    } else {
        opts.target.database()
    };
    let (rep, toc) = match stream_into_pg_restore(
        ctx,
        manifest,
        &opts.target,
        &args,
        &opts.selection_args(),
        opts.jobs,
        progress,
    ) {
        Ok(x) => x,
        Err(StreamError::Vault(e)) => return Err(e),
        Err(StreamError::PgRestore(msg)) => {
            let partial = if opts.create || opts.jobs > 1 {
                "; the database may hold a partial restore"
            } else {
                "; nothing was restored (single transaction)"
            };
            return Err(Error::Output {
                what: format!("snapshot {} into database {:?}", manifest.id, database),
                io: std::io::Error::other(format!("{msg}{partial}")),
            });
        }
    };
    let comparison = if recorded.tables.is_none() {
        notes.push(format!(
            "snapshot {} has no recorded table facts (it was not made by `coffer backup pg`): the restore is not compared",
            manifest.id
        ));
        None
    } else if database.is_empty() {
        None
    } else {
        let mut conn = opts.target.clone();
        conn.set("dbname", &database);
        let db = Db::connect(&conn).map_err(target_err)?;
        Some(compare(&db, &recorded, &toc, opts.create, !opts.selective()).map_err(target_err)?)
    };
    Ok(PgRestoreReport {
        id: manifest.id.to_hex(),
        job: manifest.job.clone(),
        kind: manifest.kind.clone(),
        database,
        bytes: rep.bytes,
        chunks: rep.chunks,
        seconds: started.elapsed().as_secs_f64(),
        comparison,
        globals: None,
        notes,
    })
}

/// A failure on the restore target's side.
pub(crate) fn target_err(e: PgError) -> Error {
    match e {
        PgError::Connect { .. } => Error::Config(e.to_string()),
        PgError::Conninfo(_) | PgError::Missing { .. } => e.into(),
        other => Error::Output {
            what: "the restored database".into(),
            io: std::io::Error::other(other.to_string()),
        },
    }
}
