//! PostgreSQL plumbing: connection strings, the client programs, the
//! exported-snapshot session, the facts recorded at backup and compared at
//! restore, pg_restore as a stream's consumer, and scratch servers. User
//! documentation: docs/postgres.md.
//!
//! The commands that use them live with the others: `coffer backup pg`
//! ([`crate::commands::pg_backup`], with the pg_dump source in
//! [`crate::source::pg_dump`]), `coffer restore --dbname`
//! ([`crate::commands::pg_restore`]) and restore drills
//! ([`crate::commands::drill`]).
//!
//! - [`basebackup`]: what a physical base backup records (`backup_label`,
//!   `backup_manifest`, start and stop LSN), read by PITR;
//! - [`conninfo`]: libpq connection strings and URLs, ~/.pgpass;
//! - [`session`]: the REPEATABLE READ, READ ONLY transaction that exports
//!   the snapshot pg_dump reads, and records table facts from it;
//! - [`facts`] and [`recorded`]: the facts themselves, and as a manifest
//!   holds them; [`compare`]: a restored database against them;
//! - [`recovery`]: recovery.signal and the recovery settings, quoted;
//! - [`replication`]: `BASE_BACKUP` over the replication protocol, for a
//!   cluster with tablespaces (pg_basebackup streams only one archive);
//! - [`globals`]: `pg_dumpall --globals-only`, replayed with psql;
//! - [`pg_restore`]: pg_restore and `pg_restore --list` fed by one stream;
//!   [`toc`]: the listing parsed;
//! - [`scratch`]: the scratch database of a drill; [`tools`]: finding and
//!   running the client programs.
//!
//! Nothing here prints; async code runs on current-thread runtimes owned by
//! this module, and never calls into tiers or pipelines.

pub mod basebackup;
pub mod compare;
pub mod conninfo;
pub mod facts;
pub mod globals;
pub mod pg_restore;
pub mod recorded;
pub mod recovery;
pub mod replication;
pub mod scratch;
pub mod session;
pub mod toc;
pub mod tools;

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
