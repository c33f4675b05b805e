//! PostgreSQL sources and targets: `coffer backup pg`, `coffer restore
//! --dbname`, and restore drills (`coffer verify --restore-test`). User
//! documentation: docs/postgres.md.
//!
//! - [`dump`]: the backup source. A REPEATABLE READ, READ ONLY transaction
//!   over tokio-postgres exports its snapshot; `pg_dump --snapshot=...
//!   --format=custom -Z0` streams straight into the backup pipeline; the
//!   archive's TOC is read off the stream's head with `pg_restore --list`,
//!   and the facts of the tables it holds data for are recorded from the
//!   same snapshot while pg_dump runs. [`dump::PgDumpSource::finish`]
//!   checks pg_dump's exit status and stderr before anything is committed.
//! - [`globals`]: `pg_dumpall --globals-only` (roles, tablespaces), backed
//!   up as a companion snapshot, and replayed with psql.
//! - [`restore`]: streams a dump snapshot into `pg_restore` and compares
//!   the restored tables with the recorded [`facts`].
//! - [`drill`]: the same into a scratch database coffer creates and drops,
//!   recorded as a `restore-test` run in the catalog.
//!
//! Nothing here prints; async code runs on current-thread runtimes owned by
//! this module, and never calls into tiers or pipelines.

pub mod conninfo;
pub mod drill;
pub mod dump;
pub mod facts;
pub mod globals;
pub mod restore;
pub mod toc;
pub mod tools;

use std::io::{Cursor, Read};

use thiserror::Error;

pub use conninfo::ConnInfo;

/// Snapshot kind of a pg_dump archive (custom format, uncompressed).
pub const KIND_DUMP: &str = "pg_dump";
/// Snapshot kind of `pg_dumpall --globals-only` output (SQL).
pub const KIND_GLOBALS: &str = "pg_globals";

/// Failures of the PostgreSQL layer. Converted to [`crate::Error`] by the
/// operations (which know whether a source or a target failed).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PgError {
    /// A connection string coffer cannot use.
    #[error("connection string: {0}")]
    Conninfo(String),
    /// A client program cannot be run.
    #[error("cannot run {program}: {detail}; install the PostgreSQL client programs (Debian: postgresql-client) or set COFFER_PG_BINDIR")]
    Missing {
        /// The program.
        program: String,
        /// Why.
        detail: String,
    },
    /// Connecting failed.
    #[error("cannot connect to {target}: {detail}")]
    Connect {
        /// Where to (password-free).
        target: String,
        /// The server's or the network's message.
        detail: String,
    },
    /// A query failed.
    #[error("{what}: {detail}")]
    Query {
        /// What coffer was doing.
        what: String,
        /// The server's message.
        detail: String,
    },
    /// A client program failed.
    #[error("{program} {detail}")]
    Tool {
        /// The program.
        program: String,
        /// Exit status and its own message.
        detail: String,
    },
}

impl From<PgError> for crate::Error {
    fn from(e: PgError) -> Self {
        match e {
            PgError::Conninfo(_) | PgError::Missing { .. } => crate::Error::Config(e.to_string()),
            PgError::Connect { target, detail } => crate::Error::Source {
                what: target,
                detail,
            },
            PgError::Query { what, detail } => crate::Error::Source { what, detail },
            PgError::Tool { program, detail } => crate::Error::Source {
                what: program,
                detail,
            },
        }
    }
}

/// A server error as libpq prints it (`FATAL: ...; DETAIL: ...`), or the
/// client-side error with its causes, on one line.
pub fn db_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!("; DETAIL: {d}"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; HINT: {h}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}

/// A synchronous handle on one tokio-postgres connection: a current-thread
/// runtime owned by the caller's thread, entered only for queries.
pub(crate) struct Db {
    rt: tokio::runtime::Runtime,
    client: Option<tokio_postgres::Client>,
    connection: Option<tokio::task::JoinHandle<()>>,
}

impl Db {
    /// Connects.
    pub(crate) fn connect(conn: &ConnInfo) -> Result<Db, PgError> {
        let cfg = conn.tokio_config()?;
        let rt = runtime()?;
        let (client, connection) =
            rt.block_on(cfg.connect(tokio_postgres::NoTls))
                .map_err(|e| PgError::Connect {
                    target: conn.describe(),
                    detail: db_error(&e),
                })?;
        let connection = rt.spawn(async move {
            let _ = connection.await;
        });
        Ok(Db {
            rt,
            client: Some(client),
            connection: Some(connection),
        })
    }

    /// The client.
    pub(crate) fn client(&self) -> &tokio_postgres::Client {
        self.client.as_ref().expect("open until dropped")
    }

    /// Runs a future on this connection's runtime.
    pub(crate) fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

impl Drop for Db {
    /// Closes the connection properly (the server sees a Terminate, not a
    /// dropped socket), waiting at most a second.
    fn drop(&mut self) {
        drop(self.client.take());
        if let Some(c) = self.connection.take() {
            self.rt.block_on(async {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), c).await;
            });
        }
    }
}

/// A current-thread runtime with I/O and timers.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, PgError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PgError::Tool {
            program: "the async runtime".into(),
            detail: e.to_string(),
        })
}

/// A stream already in memory (the globals, a few KiB), as a backup source.
pub struct MemorySource {
    kind: String,
    data: Cursor<Vec<u8>>,
    facts: serde_json::Map<String, serde_json::Value>,
}

impl MemorySource {
    /// Wraps `data` with its kind and facts.
    pub fn new(
        kind: &str,
        data: Vec<u8>,
        facts: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        MemorySource {
            kind: kind.to_string(),
            data: Cursor::new(data),
            facts,
        }
    }
}

impl crate::source::Source for MemorySource {
    fn kind(&self) -> &str {
        &self.kind
    }
    fn reader(&mut self) -> &mut (dyn Read + Send) {
        &mut self.data
    }
    fn finish(&mut self) -> crate::Result<serde_json::Map<String, serde_json::Value>> {
        Ok(self.facts.clone())
    }
}
