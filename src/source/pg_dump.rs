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
//! exporting transaction ([`crate::pg::session`]) stays open until pg_dump
//! has exited, and [`PgDumpSource::finish`] (called by the pipeline after
//! EOF, before it commits anything) fails the backup when pg_dump exited
//! non-zero or was killed, with pg_dump's own message.

use std::io::{self, Read};
use std::process::{Child, ChildStdout, Stdio};
use std::thread::JoinHandle;

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::Source;
use crate::error::{Error, Result};
use crate::pg::conninfo::ConnInfo;
use crate::pg::facts::{self, ServerFacts, TableFact};
use crate::pg::recorded::Selection;
use crate::pg::session::Session;
use crate::pg::toc::{self, Toc, TocFeed};
use crate::pg::{tools, PgError, KIND_DUMP};

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
        let counter = session.counter();
        let facts = std::thread::Builder::new()
            .name("pg-facts".into())
            .spawn(move || -> Result<(Toc, Vec<TableFact>), PgError> {
                let toc = toc::join(lister)?;
                let tables = counter.count(toc.table_data_oids().into_iter().collect())?;
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
        let m = self.manifest_facts(&toc, &tables, &messages);
        let s = &self.server;
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

impl PgDumpSource {
    /// The facts the manifest records: the server, the dump's selection,
    /// and per table its rows and checksum (docs/postgres.md lists them).
    fn manifest_facts(
        &self,
        toc: &Toc,
        tables: &[TableFact],
        messages: &[String],
    ) -> Map<String, Value> {
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
            serde_json::to_value(tables).unwrap_or_default(),
        );
        if !messages.is_empty() {
            m.insert("pg_dump_messages".into(), json!(messages));
        }
        m
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
