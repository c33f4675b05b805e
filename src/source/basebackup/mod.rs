//! The physical base backup source: `pg_basebackup -D - -Ft -X none`
//! streamed straight into the pipeline (no temporary directory), or, for a
//! cluster with tablespaces, `BASE_BACKUP` spoken by coffer itself.
//!
//! ```text
//!  facts (tokio-postgres): system identifier, version, segment size, archiving on?
//!  pg_basebackup ──tar on stdout──────────────▶ TarWatch ──▶ pipeline (FastCDC: unchanged pages dedup)
//!  or BASE_BACKUP ──archives──▶ TarMerge ──tar──┘  └─ keeps backup_label and backup_manifest
//! ```
//!
//! `-X none`: the WAL comes from the archive (`coffer wal push`), and the
//! server's `pg_backup_stop` waits until the backup's last segment is
//! archived before the backup ends, so a backup whose archiving works
//! is complete when it commits. With `-D -` PostgreSQL puts
//! `backup_manifest` at the end of the tar (the merge does the same),
//! where [`TarWatch`] reads the stop LSN from it. [`Source::finish`] fails
//! the backup (nothing is committed) when the producer failed or either
//! file is missing.
//!
//! `pg_basebackup` writes only one archive to stdout, so a cluster with
//! tablespaces (PostgreSQL 15 or later) is read over the replication
//! protocol ([`crate::pg::replication`]) and its archives merged into one
//! tar ([`merge`]): a tablespace's files under `pg_tblspc/<oid>/`.

mod merge;
mod tar_watch;

use std::io::{BufWriter, Read, Write};
use std::process::{Child, Stdio};
use std::thread::JoinHandle;

use serde_json::{Map, Value};
use vault_format::wal::{Lsn, SegmentName};

use super::Source;
use crate::error::{Error, Result};
use crate::pg::basebackup::{parse_label, parse_manifest_end, BaseFacts, Tablespace, KIND_BASE};
use crate::pg::conninfo::ConnInfo;
use crate::pg::replication::{BackupEvent, Closer, ListedTablespace, Replication};
use crate::pg::{db_error, tools, Db, PgError};
use crate::util::now_rfc3339;
pub use merge::tablespace_prefix;
use merge::TarMerge;
pub use tar_watch::TarWatch;

/// The first PostgreSQL whose `BASE_BACKUP` streams every archive in one
/// COPY (the protocol [`Replication::base_backup`] speaks).
const STREAMED_ARCHIVES: i32 = 150_000;

/// What to back up.
#[derive(Debug, Clone)]
pub struct BaseOptions {
    /// How to connect (needs the REPLICATION privilege).
    pub conn: ConnInfo,
    /// `fast` (an immediate checkpoint) or `spread`.
    pub checkpoint: String,
    /// The backup label PostgreSQL records.
    pub label: String,
}

/// What the server said before the backup started.
#[derive(Debug, Clone)]
struct Server {
    system_identifier: u64,
    version_num: i32,
    segment_size: u64,
    tablespaces: i64,
}

/// What writes the tar stream.
enum Producer {
    /// `pg_basebackup` and its stderr.
    Tool {
        child: Child,
        stderr: Option<JoinHandle<String>>,
    },
    /// coffer's replication connection, on a thread writing into a pipe;
    /// it returns the tablespaces the server listed. The closer ends the
    /// connection when the backup stops early.
    Protocol(
        Option<JoinHandle<Result<Vec<ListedTablespace>, PgError>>>,
        Option<Closer>,
    ),
}

/// A running base backup.
pub struct BaseBackupSource {
    producer: Producer,
    watch: TarWatch<Box<dyn Read + Send>>,
    server: Server,
    target: String,
}

impl BaseBackupSource {
    /// Checks the server and starts the backup.
    ///
    /// # Errors
    /// [`Error::Source`] when the server cannot be reached, does not
    /// archive WAL, or has tablespaces and is older than PostgreSQL 15.
    pub fn start(opts: &BaseOptions) -> Result<Self> {
        let target = opts.conn.describe();
        let fail = |detail: String| Error::Source {
            what: target.clone(),
            detail,
        };
        let server = server_facts(&opts.conn).map_err(|e| fail(e.to_string()))?;
        let (producer, stream) = if server.tablespaces > 0 {
            let repl = Replication::connect(&opts.conn).map_err(|e| fail(e.to_string()))?;
            let closer = repl.closer().ok();
            let (reader, writer) = std::io::pipe()
                .map_err(|e| fail(format!("cannot make a pipe for the backup stream: {e}")))?;
            let (label, checkpoint) = (opts.label.clone(), opts.checkpoint.clone());
            let thread =
                std::thread::spawn(move || stream_archives(repl, &label, &checkpoint, writer));
            (
                Producer::Protocol(Some(thread), closer),
                Box::new(reader) as Box<dyn Read + Send>,
            )
        } else {
            let (child, out, err) = spawn_pg_basebackup(opts).map_err(fail)?;
            (
                Producer::Tool {
                    child,
                    stderr: Some(tools::collect(err, "pg_basebackup")),
                },
                Box::new(out) as Box<dyn Read + Send>,
            )
        };
        Ok(BaseBackupSource {
            producer,
            watch: TarWatch::new(stream),
            server,
            target,
        })
    }
}

fn spawn_pg_basebackup(
    opts: &BaseOptions,
) -> std::result::Result<(Child, std::process::ChildStdout, std::process::ChildStderr), String> {
    let mut cmd = tools::command("pg_basebackup");
    cmd.args(["-D", "-", "-F", "tar", "-X", "none", "--no-password"])
        .arg(format!("--checkpoint={}", opts.checkpoint))
        .arg(format!("--label={}", opts.label));
    opts.conn.apply_to(&mut cmd, "--dbname");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| tools::spawn_error("pg_basebackup", e).to_string())?;
    match (child.stdout.take(), child.stderr.take()) {
        (Some(out), Some(err)) => Ok((child, out, err)),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            Err("pg_basebackup started without its output pipes".into())
        }
    }
}

/// The replication connection's side: `BASE_BACKUP`, merged into one tar
/// on `writer`. The end-of-archive marker is written only after the
/// server said the backup ended.
fn stream_archives(
    repl: Replication,
    label: &str,
    checkpoint: &str,
    writer: std::io::PipeWriter,
) -> Result<Vec<ListedTablespace>, PgError> {
    let mut out = BufWriter::with_capacity(1 << 20, writer);
    let mut merge = TarMerge::default();
    let mut listed = Vec::new();
    let mut manifest = None;
    repl.base_backup(label, checkpoint, &mut |event| match event {
        BackupEvent::Started(t) => {
            listed = t;
            Ok(())
        }
        BackupEvent::Archive { tablespace } => {
            merge.begin(tablespace);
            Ok(())
        }
        BackupEvent::Data(d) => merge.write(&mut out, d),
        BackupEvent::Manifest(m) => {
            manifest = Some(m);
            Ok(())
        }
        BackupEvent::Ended(_) => {
            merge.finish(&mut out, manifest.as_deref())?;
            out.flush()
        }
    })?;
    Ok(listed)
}

/// Connects once for what `pg_basebackup`'s stream does not say, and
/// refuses what coffer cannot restore.
fn server_facts(conn: &ConnInfo) -> Result<Server, PgError> {
    let db = Db::connect(conn)?;
    let q = |detail: tokio_postgres::Error| PgError::Tool {
        program: "the server facts query".into(),
        detail: db_error(&detail),
    };
    let row = db
        .run(db.client().query_one(
            "SELECT (SELECT system_identifier::text FROM pg_control_system()),
                    current_setting('server_version_num')::int,
                    (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),
                    current_setting('archive_mode'),
                    (SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global'))",
            &[],
        ))
        .map_err(q)?;
    let (sys, version_num, segment_size, archive_mode, tablespaces): (
        String,
        i32,
        i64,
        String,
        i64,
    ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    if archive_mode == "off" {
        return Err(PgError::Tool {
            program: "the server".into(),
            detail:
                "archive_mode is off, so no WAL reaches the vault and a physical backup could \
                     never be restored; set archive_mode = on and archive_command = \
                     'coffer wal push --job <job> %p', restart the server, and run the backup again"
                    .into(),
        });
    }
    if tablespaces > 0 && version_num < STREAMED_ARCHIVES {
        return Err(PgError::Tool {
            program: "the server".into(),
            detail: format!(
                "the cluster has {tablespaces} tablespace(s) outside the data directory; coffer \
                 backs those up with the streamed BASE_BACKUP of PostgreSQL 15 or later, and \
                 this server is {version_num}: upgrade it, or back it up with `coffer backup pg` \
                 (logical)"
            ),
        });
    }
    Ok(Server {
        system_identifier: sys.parse().unwrap_or(0),
        version_num,
        segment_size: segment_size as u64,
        tablespaces,
    })
}

impl Source for BaseBackupSource {
    fn kind(&self) -> &str {
        KIND_BASE
    }

    fn reader(&mut self) -> &mut (dyn Read + Send) {
        &mut self.watch
    }

    fn finish(&mut self) -> Result<Map<String, Value>> {
        let fail = |detail: String| Error::Source {
            what: format!("the base backup of {}", self.target),
            detail,
        };
        let tablespaces = match &mut self.producer {
            Producer::Tool { child, stderr } => {
                let status = child
                    .wait()
                    .map_err(|e| fail(format!("waiting for pg_basebackup: {e}")))?;
                let stderr = stderr.take().map(tools::join).unwrap_or_default();
                if !status.success() {
                    return Err(fail(format!(
                        "pg_basebackup {}",
                        tools::describe_exit(status, &stderr)
                    )));
                }
                Vec::new()
            }
            Producer::Protocol(thread, _) => match thread.take().map(JoinHandle::join) {
                Some(Ok(Ok(listed))) => listed
                    .into_iter()
                    .map(|t| Tablespace {
                        oid: t.oid,
                        location: t.location,
                    })
                    .collect(),
                Some(Ok(Err(e))) => return Err(fail(e.to_string())),
                _ => return Err(fail("the BASE_BACKUP stream stopped".into())),
            },
        };
        let label = String::from_utf8_lossy(&self.watch.label).into_owned();
        let (start, tli) = parse_label(&label)
            .ok_or_else(|| fail("the stream holds no readable backup_label".into()))?;
        let (stop_tli, stop) = parse_manifest_end(&self.watch.manifest).ok_or_else(|| {
            fail(
                "the stream holds no readable backup_manifest (PostgreSQL 13 or later writes one)"
                    .into(),
            )
        })?;
        let seg = self.server.segment_size;
        let facts = BaseFacts {
            system_identifier: self.server.system_identifier.to_string(),
            server_version_num: self.server.version_num,
            segment_size: seg,
            timeline: tli,
            start_lsn: start.to_string(),
            stop_lsn: stop.to_string(),
            stop_timeline: stop_tli,
            start_wal: SegmentName::holding(tli, start, seg).to_string(),
            stop_wal: SegmentName::holding(stop_tli, Lsn(stop.0.saturating_sub(1)), seg)
                .to_string(),
            stopped_at: now_rfc3339(),
            backup_label: label,
            backup_manifest_size: self.watch.manifest.len() as u64,
            tablespaces,
        };
        let mut m = Map::new();
        m.insert("engine".into(), "postgresql".into());
        m.insert("connection".into(), self.target.clone().into());
        m.insert(
            "physical".into(),
            serde_json::to_value(&facts).unwrap_or_default(),
        );
        Ok(m)
    }
}

impl Drop for BaseBackupSource {
    /// A backup that stopped early kills pg_basebackup, or closes the
    /// replication connection (the server ends its backup when the
    /// connection drops).
    fn drop(&mut self) {
        match &mut self.producer {
            Producer::Tool { child, .. } => {
                if let Ok(None) = child.try_wait() {
                    let _ = child.kill();
                }
                let _ = child.wait();
            }
            Producer::Protocol(thread, closer) => {
                // Closing the pipe's read end makes the thread's next write
                // fail; closing the connection ends a wait for the server
                // (a spread checkpoint, WAL archiving).
                let stream =
                    std::mem::replace(&mut self.watch, TarWatch::new(Box::new(std::io::empty())));
                drop(stream);
                if let (Some(c), Some(t)) = (closer.as_ref(), thread.as_ref()) {
                    if !t.is_finished() {
                        c.close();
                    }
                }
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}
