//! The pg_dump source.
//!
//! ```text
//!  snapshot thread (tokio-postgres, current-thread runtime)
//!    BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY
//!    SELECT pg_export_snapshot()  ──snapshot id──▶  pg_dump --snapshot=ID -Fc -Z0 ──stdout──▶ pipeline
//!    server facts                                                         │ (head of the stream)
//!    ◀── count these tables ── facts thread ◀── pg_restore --list ◀───────┘
//!    COUNT / md5 per table (same snapshot, while pg_dump runs)
//!    COMMIT only after pg_dump exited (Source::finish)
//! ```
//!
//! No temporary file: pg_dump's stdout is the pipeline's input. The
//! exporting transaction stays open until pg_dump has exited, and
//! [`PgDumpSource::finish`] (called by the pipeline after EOF, before it
//! commits anything) fails the backup when pg_dump exited non-zero or was
//! killed, with pg_dump's own message.

use std::io::{self, Read};
use std::process::{Child, ChildStdout, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio_postgres::CancelToken;

use super::conninfo::ConnInfo;
use super::facts::{self, ServerFacts, TableFact};
use super::toc::{self, Toc, TocFeed};
use super::{db_error, tools, PgError, KIND_DUMP};
use crate::error::{Error, Result};
use crate::source::Source;

/// pg_dump's selection options, passed through and recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// `--schema-only`.
    #[serde(default)]
    pub schema_only: bool,
    /// `--data-only`.
    #[serde(default)]
    pub data_only: bool,
    /// `--table` patterns.
    #[serde(default)]
    pub tables: Vec<String>,
    /// `--exclude-table` patterns.
    #[serde(default)]
    pub exclude_tables: Vec<String>,
    /// `--schema` patterns.
    #[serde(default)]
    pub schemas: Vec<String>,
}

impl Selection {
    /// pg_dump arguments.
    pub fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.schema_only {
            a.push("--schema-only".into());
        }
        if self.data_only {
            a.push("--data-only".into());
        }
        a.extend(self.schemas.iter().map(|s| format!("--schema={s}")));
        a.extend(self.tables.iter().map(|t| format!("--table={t}")));
        a.extend(
            self.exclude_tables
                .iter()
                .map(|t| format!("--exclude-table={t}")),
        );
        a
    }

    /// True when the whole database is dumped.
    pub fn is_everything(&self) -> bool {
        *self == Selection::default()
    }
}

/// What to dump.
#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    /// The database (conninfo or URL; PG* variables and ~/.pgpass apply).
    pub conn: ConnInfo,
    /// pg_dump's selection options.
    pub selection: Selection,
}

/// What a finished dump recorded (for the command's report).
#[derive(Debug, Clone, Serialize)]
pub struct DumpSummary {
    /// Database name.
    pub database: String,
    /// Tables whose data the archive holds.
    pub tables: usize,
    /// Their rows.
    pub rows: i64,
    /// Tables with a content checksum.
    pub checksummed_tables: usize,
    /// Large objects in the database.
    pub large_objects: i64,
    /// TOC entries of the archive.
    pub toc_entries: usize,
    /// What pg_dump said on stderr although it succeeded (warnings).
    pub pg_dump_messages: Vec<String>,
}

enum Cmd {
    Count(Vec<u32>, mpsc::Sender<Result<Vec<TableFact>, PgError>>),
    Close(mpsc::Sender<Result<(), PgError>>),
}

struct Ready {
    snapshot: String,
    server: ServerFacts,
    cancel: CancelToken,
}

/// The connection holding the exported snapshot, on its own thread.
struct Session {
    cmds: Option<tokio::sync::mpsc::UnboundedSender<Cmd>>,
    cancel: CancelToken,
    aborted: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Session {
    fn start(conn: &ConnInfo) -> Result<(Session, String, ServerFacts), PgError> {
        let cfg = conn.tokio_config()?;
        let target = conn.describe();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<Ready, PgError>>();
        let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::unbounded_channel::<Cmd>();
        let aborted = Arc::new(AtomicBool::new(false));
        let aborted_in = aborted.clone();
        let thread = std::thread::Builder::new()
            .name("pg-snapshot".into())
            .spawn(move || {
                let rt = match super::runtime() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let (client, connection) = match cfg.connect(tokio_postgres::NoTls).await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready_tx.send(Err(PgError::Connect {
                                target,
                                detail: db_error(&e),
                            }));
                            return;
                        }
                    };
                    let connection = tokio::spawn(connection);
                    let setup = async {
                        let q = |what: &'static str| {
                            move |e: tokio_postgres::Error| PgError::Query {
                                what: what.into(),
                                detail: db_error(&e),
                            }
                        };
                        client
                            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                            .await
                            .map_err(q("starting the snapshot transaction"))?;
                        let snapshot: String = client
                            .query_one("SELECT pg_export_snapshot()", &[])
                            .await
                            .map_err(q("exporting the snapshot"))?
                            .get(0);
                        facts::pin_session(&client).await?;
                        let server = facts::server_facts(&client).await?;
                        Ok::<_, PgError>(Ready {
                            snapshot,
                            server,
                            cancel: client.cancel_token(),
                        })
                    }
                    .await;
                    let ok = setup.is_ok();
                    let _ = ready_tx.send(setup);
                    if !ok {
                        return;
                    }
                    while let Some(cmd) = cmd_rx.recv().await {
                        match cmd {
                            Cmd::Count(_, reply) if aborted_in.load(Ordering::SeqCst) => {
                                let _ = reply.send(Err(closed()));
                            }
                            Cmd::Count(oids, reply) => {
                                let _ = reply.send(facts::record_tables(&client, &oids).await);
                            }
                            Cmd::Close(reply) => {
                                let r = client.batch_execute("COMMIT").await.map_err(|e| {
                                    PgError::Query {
                                        what: "ending the snapshot transaction".into(),
                                        detail: db_error(&e),
                                    }
                                });
                                let _ = reply.send(r);
                                // Terminate cleanly rather than drop the socket.
                                drop(client);
                                let _ = tokio::time::timeout(
                                    std::time::Duration::from_secs(1),
                                    connection,
                                )
                                .await;
                                return;
                            }
                        }
                    }
                    // Dropped without Close: the server rolls back.
                    drop(client);
                    let _ =
                        tokio::time::timeout(std::time::Duration::from_secs(1), connection).await;
                });
            })
            .map_err(|e| PgError::Tool {
                program: "the snapshot thread".into(),
                detail: e.to_string(),
            })?;
        let ready = ready_rx.recv().unwrap_or_else(|_| {
            Err(PgError::Tool {
                program: "the snapshot thread".into(),
                detail: "stopped before connecting".into(),
            })
        });
        match ready {
            Ok(r) => Ok((
                Session {
                    cmds: Some(cmd_tx),
                    cancel: r.cancel,
                    aborted,
                    thread: Some(thread),
                },
                r.snapshot,
                r.server,
            )),
            Err(e) => {
                let _ = thread.join();
                Err(e)
            }
        }
    }

    fn sender(&self) -> tokio::sync::mpsc::UnboundedSender<Cmd> {
        self.cmds.clone().expect("session open")
    }

    /// Commits (the transaction is read-only: this only ends it) and joins.
    fn close(&mut self) -> Result<(), PgError> {
        let (tx, rx) = mpsc::channel();
        let sent = self
            .cmds
            .take()
            .map(|c| c.send(Cmd::Close(tx)).is_ok())
            .unwrap_or(false);
        let r = if sent {
            rx.recv().unwrap_or(Ok(()))
        } else {
            Ok(())
        };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        r
    }

    /// Stops whatever the session runs and lets it roll back, without
    /// waiting for the server.
    fn abort(&mut self) {
        self.aborted.store(true, Ordering::SeqCst);
        if self.cmds.take().is_some() {
            if let Ok(rt) = super::runtime() {
                let _ = rt.block_on(self.cancel.cancel_query(tokio_postgres::NoTls));
            }
        }
        // Detached: it ends when its query does, dropping the connection.
        self.thread.take();
    }
}

/// Reads pg_dump's stdout, teeing the head into `pg_restore --list`.
struct DumpReader {
    out: ChildStdout,
    toc: TocFeed,
}

impl Read for DumpReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.out.read(buf)?;
        if n == 0 {
            self.toc.close();
        } else {
            self.toc.feed(&buf[..n]);
        }
        Ok(n)
    }
}

type FactsThread = JoinHandle<Result<(Toc, Vec<TableFact>), PgError>>;

/// pg_dump running, with its stderr reader and the facts thread.
struct Spawned {
    child: Child,
    reader: DumpReader,
    stderr: JoinHandle<String>,
    facts: FactsThread,
}

/// A running `pg_dump` of one database over an exported snapshot.
pub struct PgDumpSource {
    reader: DumpReader,
    child: Child,
    stderr: Option<JoinHandle<String>>,
    facts: Option<FactsThread>,
    session: Session,
    snapshot: String,
    server: ServerFacts,
    pg_dump_version: String,
    selection: Selection,
    connection: String,
    summary: Option<DumpSummary>,
    done: bool,
}

impl PgDumpSource {
    /// Connects, exports a snapshot and starts pg_dump on it.
    ///
    /// # Errors
    /// [`Error::Config`] for an unusable connection string or missing
    /// client programs; [`Error::Source`] when the database cannot be
    /// reached (the server's message, e.g. a failed password or a missing
    /// database).
    pub fn start(opts: &DumpOptions) -> Result<Self> {
        let pg_dump_version = tools::version("pg_dump")?;
        let (mut session, snapshot, server) = Session::start(&opts.conn)?;
        let Spawned {
            child,
            reader,
            stderr,
            facts,
        } = match Self::spawn(opts, &session, &snapshot) {
            Ok(s) => s,
            Err(e) => {
                session.abort();
                return Err(e.into());
            }
        };
        Ok(PgDumpSource {
            reader,
            child,
            stderr: Some(stderr),
            facts: Some(facts),
            session,
            snapshot,
            server,
            pg_dump_version,
            selection: opts.selection.clone(),
            connection: opts.conn.without_password().tool_conninfo(),
            summary: None,
            done: false,
        })
    }

    fn spawn(opts: &DumpOptions, session: &Session, snapshot: &str) -> Result<Spawned, PgError> {
        let mut cmd = tools::command("pg_dump");
        cmd.args(["--format=custom", "--compress=0", "--no-password"])
            .arg(format!("--snapshot={snapshot}"))
            .args(opts.selection.args());
        opts.conn.apply_to(&mut cmd, "--dbname");
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let (feed, lister) = toc::start(&[])?;
        let cmds = session.sender();
        let facts = std::thread::Builder::new()
            .name("pg-facts".into())
            .spawn(move || -> Result<(Toc, Vec<TableFact>), PgError> {
                let toc = toc::join(lister)?;
                let oids: Vec<u32> = toc.table_data_oids().into_iter().collect();
                let (tx, rx) = mpsc::channel();
                cmds.send(Cmd::Count(oids, tx)).map_err(|_| closed())?;
                let tables = rx.recv().map_err(|_| closed())??;
                Ok((toc, tables))
            })
            .map_err(|e| PgError::Tool {
                program: "the facts thread".into(),
                detail: e.to_string(),
            })?;
        // Last: nothing after this can fail and leave pg_dump running
        // (a failed spawn drops the feed, which ends the lister and the
        // facts thread).
        let mut child = cmd.spawn().map_err(|e| tools::spawn_error("pg_dump", e))?;
        let out = child.stdout.take().expect("piped stdout");
        let stderr = tools::collect(child.stderr.take().expect("piped stderr"), "pg_dump");
        Ok(Spawned {
            child,
            reader: DumpReader { out, toc: feed },
            stderr,
            facts,
        })
    }

    /// The server and database facts (known once started).
    pub fn server(&self) -> &ServerFacts {
        &self.server
    }

    /// What the dump recorded, once [`Source::finish`] succeeded.
    pub fn summary(&self) -> Option<&DumpSummary> {
        self.summary.as_ref()
    }

    fn what(&self) -> String {
        format!("database {:?}", self.server.database)
    }
}

fn closed() -> PgError {
    PgError::Tool {
        program: "the snapshot connection".into(),
        detail: "closed before the table facts were recorded".into(),
    }
}

impl Source for PgDumpSource {
    fn kind(&self) -> &str {
        KIND_DUMP
    }

    fn reader(&mut self) -> &mut (dyn Read + Send) {
        &mut self.reader
    }

    fn finish(&mut self) -> Result<Map<String, Value>> {
        self.reader.toc.close();
        let status = self.child.wait().map_err(|e| Error::Source {
            what: self.what(),
            detail: format!("waiting for pg_dump: {e}"),
        })?;
        let stderr = self.stderr.take().map(tools::join).unwrap_or_default();
        if !status.success() {
            return Err(Error::Source {
                what: self.what(),
                detail: format!("pg_dump {}", tools::describe_exit(status, &stderr)),
            });
        }
        let facts_thread = self.facts.take().expect("finish is called once");
        let (toc, tables) = facts_thread
            .join()
            .unwrap_or_else(|_| {
                Err(PgError::Tool {
                    program: "the facts thread".into(),
                    detail: "panicked".into(),
                })
            })
            .map_err(|e| Error::Source {
                what: format!("the table facts of database {:?}", self.server.database),
                detail: e.to_string(),
            })?;
        self.session.close().map_err(|e| Error::Source {
            what: format!("the snapshot of database {:?}", self.server.database),
            detail: e.to_string(),
        })?;
        self.done = true;

        let messages: Vec<String> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        let s = &self.server;
        let mut m = Map::new();
        m.insert("engine".into(), "postgresql".into());
        m.insert("archive_format".into(), "custom".into());
        m.insert("database".into(), s.database.clone().into());
        m.insert("database_size".into(), s.database_size.into());
        m.insert("server_version".into(), s.server_version.clone().into());
        m.insert("server_version_num".into(), s.server_version_num.into());
        m.insert(
            "pg_dump_version".into(),
            self.pg_dump_version.clone().into(),
        );
        m.insert("encoding".into(), s.encoding.clone().into());
        m.insert("collate".into(), s.collate.clone().into());
        m.insert("ctype".into(), s.ctype.clone().into());
        m.insert("role".into(), s.current_user.clone().into());
        m.insert("superuser".into(), s.superuser.into());
        m.insert("standby".into(), s.in_recovery.into());
        m.insert("connection".into(), self.connection.clone().into());
        m.insert("snapshot".into(), self.snapshot.clone().into());
        m.insert(
            "selection".into(),
            serde_json::to_value(&self.selection).unwrap_or_default(),
        );
        m.insert("pg_dump_args".into(), json!(self.selection.args()));
        m.insert("toc_entries".into(), toc.entries.len().into());
        m.insert("large_objects".into(), s.large_objects.into());
        m.insert(
            "large_objects_dumped".into(),
            toc.has_large_objects().into(),
        );
        m.insert(
            "checksum".into(),
            json!({
                "algorithm": facts::CHECKSUM_ALGORITHM,
                "max_rows": facts::CHECKSUM_MAX_ROWS,
                "max_bytes": facts::CHECKSUM_MAX_BYTES,
            }),
        );
        m.insert(
            "tables".into(),
            serde_json::to_value(&tables).unwrap_or_default(),
        );
        if !messages.is_empty() {
            m.insert("pg_dump_messages".into(), json!(messages));
        }
        self.summary = Some(DumpSummary {
            database: s.database.clone(),
            tables: tables.len(),
            rows: tables.iter().map(|t| t.rows).sum(),
            checksummed_tables: tables.iter().filter(|t| t.md5.is_some()).count(),
            large_objects: s.large_objects,
            toc_entries: toc.entries.len(),
            pg_dump_messages: messages,
        });
        Ok(m)
    }
}

impl Drop for PgDumpSource {
    /// A backup that stopped early (or failed) kills pg_dump and rolls the
    /// snapshot transaction back.
    fn drop(&mut self) {
        self.reader.toc.close();
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if !self.done {
            self.session.abort();
        }
    }
}

/// The manifest facts of a dump snapshot, parsed (for restores and drills).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RecordedFacts {
    /// Database name.
    #[serde(default)]
    pub database: Option<String>,
    /// `server_version_num` of the source.
    #[serde(default)]
    pub server_version_num: Option<i32>,
    /// `server_version` of the source.
    #[serde(default)]
    pub server_version: Option<String>,
    /// Encoding of the source database.
    #[serde(default)]
    pub encoding: Option<String>,
    /// `LC_COLLATE` of the source database.
    #[serde(default)]
    pub collate: Option<String>,
    /// `LC_CTYPE` of the source database.
    #[serde(default)]
    pub ctype: Option<String>,
    /// Selection options.
    #[serde(default)]
    pub selection: Option<Selection>,
    /// Large objects in the source.
    #[serde(default)]
    pub large_objects: Option<i64>,
    /// Table facts (absent: nothing to compare).
    #[serde(default)]
    pub tables: Option<Vec<TableFact>>,
    /// Checksum recipe.
    #[serde(default)]
    pub checksum: Option<Value>,
}

impl RecordedFacts {
    /// Parses a manifest's `source` map.
    pub fn of(source: &Map<String, Value>) -> RecordedFacts {
        serde_json::from_value(Value::Object(source.clone())).unwrap_or_default()
    }

    /// Whether checksums were recorded with the recipe this coffer computes.
    pub fn checksum_comparable(&self) -> bool {
        self.checksum
            .as_ref()
            .and_then(|c| c.get("algorithm"))
            .and_then(Value::as_str)
            == Some(facts::CHECKSUM_ALGORITHM)
    }
}
