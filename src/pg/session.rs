//! The connection that exports the snapshot pg_dump reads, on its own
//! thread with a current-thread runtime: `BEGIN ISOLATION LEVEL REPEATABLE
//! READ, READ ONLY`, `pg_export_snapshot()`, the server facts, then the
//! table facts of the same snapshot while pg_dump runs. The transaction
//! stays open until pg_dump has exited (`Session::close`); a backup that
//! stops early rolls it back (`Session::abort`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use tokio_postgres::CancelToken;

use super::conninfo::ConnInfo;
use super::facts::{self, ServerFacts, TableFact};
use super::{db_error, PgError};

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
pub(crate) struct Session {
    cmds: Option<tokio::sync::mpsc::UnboundedSender<Cmd>>,
    cancel: CancelToken,
    aborted: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Session {
    pub(crate) fn start(conn: &ConnInfo) -> Result<(Session, String, ServerFacts), PgError> {
        let cfg = conn.tokio_config()?;
        let target = conn.describe();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<Ready, PgError>>();
        let (cmd_tx, cmd_rx) = tokio::sync::mpsc::unbounded_channel::<Cmd>();
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
                rt.block_on(serve(cfg, target, ready_tx, cmd_rx, aborted_in));
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

    /// A handle another thread uses to record table facts in this
    /// session's snapshot while pg_dump runs.
    pub(crate) fn counter(&self) -> TableCounter {
        TableCounter(self.cmds.clone().expect("session open"))
    }

    /// Commits (the transaction is read-only: this only ends it) and joins.
    pub(crate) fn close(&mut self) -> Result<(), PgError> {
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
    pub(crate) fn abort(&mut self) {
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

/// The session's thread: connect, open the snapshot transaction, export the
/// snapshot and the server facts (sent on `ready`), then serve table-fact
/// requests until closed.
async fn serve(
    cfg: tokio_postgres::Config,
    target: String,
    ready_tx: mpsc::Sender<Result<Ready, PgError>>,
    mut cmd_rx: tokio::sync::mpsc::UnboundedReceiver<Cmd>,
    aborted_in: Arc<AtomicBool>,
) {
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
                let r = client
                    .batch_execute("COMMIT")
                    .await
                    .map_err(|e| PgError::Query {
                        what: "ending the snapshot transaction".into(),
                        detail: db_error(&e),
                    });
                let _ = reply.send(r);
                // Terminate cleanly rather than drop the socket.
                drop(client);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), connection).await;
                return;
            }
        }
    }
    // Dropped without Close: the server rolls back.
    drop(client);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), connection).await;
}

/// Asks the session to record table facts (row counts, checksums) in its
/// snapshot.
pub(crate) struct TableCounter(tokio::sync::mpsc::UnboundedSender<Cmd>);

impl TableCounter {
    /// Records the facts of the tables with `oids`; waits for them.
    ///
    /// # Errors
    /// The session closed, or the queries failed.
    pub(crate) fn count(&self, oids: Vec<u32>) -> Result<Vec<TableFact>, PgError> {
        let (tx, rx) = mpsc::channel();
        self.0.send(Cmd::Count(oids, tx)).map_err(|_| closed())?;
        rx.recv().map_err(|_| closed())?
    }
}

fn closed() -> PgError {
    PgError::Tool {
        program: "the snapshot connection".into(),
        detail: "closed before the table facts were recorded".into(),
    }
}
