//! `BASE_BACKUP` over PostgreSQL's replication protocol, for the one case
//! `pg_basebackup` cannot stream: a cluster with tablespaces outside the
//! data directory (`pg_basebackup -D - -Ft` refuses to write more than one
//! archive to stdout, and any other target is a directory on disk).
//!
//! PostgreSQL 15 and later send the whole backup in one COPY OUT
//! ("copystream", `TARGET 'client'`): each CopyData message starts with a
//! type byte, `n` (a new archive: its name and tablespace location), `d`
//! (archive or manifest bytes), `m` (the manifest follows) or `p`
//! (progress). The archives are complete tar files (with their end
//! blocks), tablespaces first and the data directory last.
//!
//! The client is synchronous and small: startup in replication mode,
//! password, MD5 and SCRAM-SHA-256 authentication (postgres-protocol's
//! implementations), one simple query, and the message loop. Connection
//! settings are resolved exactly as for coffer's other connection
//! ([`ConnInfo::tokio_config`]: PG* environment, `~/.pgpass`); like that
//! connection it has no TLS.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::{backend::Message, frontend};

use super::{ConnInfo, PgError};

/// One tablespace of a base backup, as the server listed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTablespace {
    /// Its OID (the archive is `<oid>.tar`, the link `pg_tblspc/<oid>`).
    pub oid: u32,
    /// Its directory on the server.
    pub location: String,
}

/// What the stream of a `BASE_BACKUP` holds, in order.
#[derive(Debug)]
pub enum BackupEvent<'a> {
    /// The backup started: the tablespaces besides the data directory.
    Started(Vec<ListedTablespace>),
    /// An archive begins; `tablespace` is `None` for the data directory.
    Archive {
        /// Its tablespace's OID.
        tablespace: Option<u32>,
    },
    /// Bytes of the current archive.
    Data(&'a [u8]),
    /// `backup_manifest`, whole.
    Manifest(Vec<u8>),
    /// The backup ended at this LSN (text, as the server gives it).
    Ended(String),
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A replication connection.
pub struct Replication {
    stream: Box<dyn Stream>,
    buf: BytesMut,
    target: String,
    closer: Closer,
}

/// Closes a replication connection from another thread: a backup that
/// stops early must not wait for the server's next message (a spread
/// checkpoint, or WAL archiving, can take minutes).
#[derive(Debug)]
pub enum Closer {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix-socket connection.
    Unix(UnixStream),
}

impl Closer {
    /// Shuts the connection down both ways; the reader sees its end.
    pub fn close(&self) {
        let _ = match self {
            Closer::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Closer::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Replication {
    /// Connects to the first reachable host of `conn` in physical
    /// replication mode and authenticates.
    ///
    /// # Errors
    /// [`PgError::Conninfo`] for what the connection cannot do,
    /// [`PgError::Connect`] when no host answers or authentication fails.
    pub fn connect(conn: &ConnInfo) -> Result<Replication, PgError> {
        let cfg = conn.tokio_config()?;
        let target = conn.describe();
        let fail = |detail: String| PgError::Connect {
            target: target.clone(),
            detail,
        };
        let (stream, closer) = open(&cfg).map_err(|e| fail(e.to_string()))?;
        let mut r = Replication {
            stream,
            buf: BytesMut::with_capacity(1 << 16),
            target: target.clone(),
            closer,
        };
        let user = cfg.get_user().unwrap_or_default().to_string();
        let mut params = vec![("user", user.as_str()), ("replication", "true")];
        if let Some(app) = cfg.get_application_name() {
            params.push(("application_name", app));
        }
        r.send(|b| frontend::startup_message(params.iter().copied(), b))
            .map_err(|e| fail(e.to_string()))?;
        r.authenticate(cfg.get_password(), &user)
            .map_err(|e| match e {
                PgError::Query { detail, .. } => fail(detail),
                other => other,
            })?;
        loop {
            match r.recv("starting the replication connection")? {
                Message::ReadyForQuery(_) => return Ok(r),
                Message::ParameterStatus(_) | Message::BackendKeyData(_) => {}
                _ => return Err(fail("unexpected message after authentication".into())),
            }
        }
    }

    fn authenticate(&mut self, password: Option<&[u8]>, user: &str) -> Result<(), PgError> {
        let what = "authenticating";
        let need = || PgError::Query {
            what: what.into(),
            detail: "the server asks for a password and none was found (PGPASSWORD, \
                     password= or ~/.pgpass)"
                .into(),
        };
        match self.recv(what)? {
            Message::AuthenticationOk => Ok(()),
            Message::AuthenticationCleartextPassword => {
                let p = password.ok_or_else(need)?;
                self.send(|b| frontend::password_message(p, b))?;
                self.expect_auth_ok(what)
            }
            Message::AuthenticationMd5Password(body) => {
                let p = password.ok_or_else(need)?;
                let hash = md5_hash(user.as_bytes(), p, body.salt());
                self.send(|b| frontend::password_message(hash.as_bytes(), b))?;
                self.expect_auth_ok(what)
            }
            Message::AuthenticationSasl(body) => {
                let mut mechanisms = body.mechanisms();
                let mut scram = false;
                while let Some(m) = mechanisms.next().map_err(|e| self.io(what, e))? {
                    scram |= m == sasl::SCRAM_SHA_256;
                }
                if !scram {
                    return Err(self.unsupported("a SASL mechanism other than SCRAM-SHA-256"));
                }
                let p = password.ok_or_else(need)?;
                let mut s = sasl::ScramSha256::new(p, sasl::ChannelBinding::unsupported());
                self.send(|b| {
                    frontend::sasl_initial_response(sasl::SCRAM_SHA_256, s.message(), b)
                })?;
                let Message::AuthenticationSaslContinue(body) = self.recv(what)? else {
                    return Err(self.unsupported("an unexpected SASL exchange"));
                };
                s.update(body.data()).map_err(|e| self.io(what, e))?;
                self.send(|b| frontend::sasl_response(s.message(), b))?;
                let Message::AuthenticationSaslFinal(body) = self.recv(what)? else {
                    return Err(self.unsupported("an unexpected SASL exchange"));
                };
                s.finish(body.data()).map_err(|e| self.io(what, e))?;
                self.expect_auth_ok(what)
            }
            _ => Err(self
                .unsupported("an authentication method other than password, md5 or SCRAM-SHA-256")),
        }
    }

    fn expect_auth_ok(&mut self, what: &str) -> Result<(), PgError> {
        match self.recv(what)? {
            Message::AuthenticationOk => Ok(()),
            _ => Err(self.unsupported("an unexpected authentication reply")),
        }
    }

    fn unsupported(&self, what: &str) -> PgError {
        PgError::Connect {
            target: self.target.clone(),
            detail: format!(
                "the server asked for {what}, which coffer's replication connection does not speak"
            ),
        }
    }

    fn io(&self, what: &str, e: io::Error) -> PgError {
        PgError::Query {
            what: format!("{what} on the replication connection to {}", self.target),
            detail: e.to_string(),
        }
    }

    fn send(&mut self, build: impl FnOnce(&mut BytesMut) -> io::Result<()>) -> Result<(), PgError> {
        let mut out = BytesMut::new();
        build(&mut out).map_err(|e| self.io("sending", e))?;
        self.stream
            .write_all(&out)
            .and_then(|()| self.stream.flush())
            .map_err(|e| self.io("sending", e))
    }

    /// The next message; an ErrorResponse becomes an error, notices are
    /// skipped.
    fn recv(&mut self, what: &str) -> Result<Message, PgError> {
        loop {
            match Message::parse(&mut self.buf).map_err(|e| self.io(what, e))? {
                Some(Message::ErrorResponse(body)) => {
                    let mut fields = body.fields();
                    let mut message = String::new();
                    while let Ok(Some(f)) = fields.next() {
                        if f.type_() == b'M' {
                            message = String::from_utf8_lossy(f.value_bytes()).into_owned();
                        }
                    }
                    return Err(PgError::Query {
                        what: what.into(),
                        detail: message,
                    });
                }
                Some(Message::NoticeResponse(_)) => {}
                Some(m) => return Ok(m),
                None => {
                    let mut chunk = [0u8; 1 << 16];
                    let n = self.stream.read(&mut chunk).map_err(|e| self.io(what, e))?;
                    if n == 0 {
                        return Err(self.io(
                            what,
                            io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the server closed the connection",
                            ),
                        ));
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }

    /// The rows of one result set (text columns), up to its
    /// CommandComplete.
    fn rows(&mut self, what: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
        let mut rows = Vec::new();
        loop {
            match self.recv(what)? {
                Message::RowDescription(_) => {}
                Message::DataRow(body) => {
                    let buf = body.buffer();
                    let mut ranges = body.ranges();
                    let mut row = Vec::new();
                    while let Some(r) = ranges.next().map_err(|e| self.io(what, e))? {
                        row.push(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    rows.push(row);
                }
                Message::CommandComplete(_) => return Ok(rows),
                _ => {
                    return Err(
                        self.io(what, io::Error::other("unexpected message in a result set"))
                    )
                }
            }
        }
    }

    /// A handle that closes this connection from another thread.
    ///
    /// # Errors
    /// When the socket cannot be duplicated.
    pub fn closer(&self) -> io::Result<Closer> {
        Ok(match &self.closer {
            Closer::Tcp(s) => Closer::Tcp(s.try_clone()?),
            Closer::Unix(s) => Closer::Unix(s.try_clone()?),
        })
    }

    /// Runs `BASE_BACKUP` (PostgreSQL 15 or later) and hands its stream to
    /// `sink` in order. An error from `sink` ends the backup (the server
    /// aborts it when the connection closes).
    ///
    /// # Errors
    /// [`PgError::Query`] for the server's errors and a stream that breaks
    /// the protocol; `sink`'s errors as [`PgError::Query`].
    pub fn base_backup(
        mut self,
        label: &str,
        checkpoint: &str,
        sink: &mut dyn FnMut(BackupEvent<'_>) -> io::Result<()>,
    ) -> Result<(), PgError> {
        let what = "BASE_BACKUP";
        let quote = |s: &str| s.replace('\'', "''");
        let query = format!(
            "BASE_BACKUP (LABEL '{}', CHECKPOINT '{}', MANIFEST 'yes', TARGET 'client', WAIT true)",
            quote(label),
            quote(checkpoint)
        );
        self.send(|b| frontend::query(&query, b))?;
        let _start = self.rows(what)?;
        let mut tablespaces = Vec::new();
        for row in self.rows(what)? {
            if let (Some(Some(oid)), Some(Some(location))) = (row.first(), row.get(1)) {
                let oid = oid.parse().map_err(|_| {
                    self.io(what, io::Error::other("a tablespace OID is not a number"))
                })?;
                tablespaces.push(ListedTablespace {
                    oid,
                    location: location.clone(),
                });
            }
        }
        let feed = |e: io::Error| PgError::Query {
            what: "streaming the base backup into the vault".into(),
            detail: e.to_string(),
        };
        sink(BackupEvent::Started(tablespaces)).map_err(feed)?;
        match self.recv(what)? {
            Message::CopyOutResponse(_) => {}
            _ => return Err(self.io(what, io::Error::other("the server sent no COPY stream"))),
        }
        let mut manifest: Option<Vec<u8>> = None;
        loop {
            match self.recv(what)? {
                Message::CopyData(body) => {
                    let data = body.data();
                    let Some((&kind, rest)) = data.split_first() else {
                        continue;
                    };
                    match kind {
                        b'n' => {
                            // Archive name, then the tablespace location
                            // (empty for the data directory).
                            let mut parts = rest.split(|&b| b == 0);
                            let name = String::from_utf8_lossy(parts.next().unwrap_or_default());
                            let location = parts.next().unwrap_or_default();
                            let tablespace = if location.is_empty() {
                                None
                            } else {
                                Some(name.trim_end_matches(".tar").parse().map_err(|_| {
                                    self.io(
                                        what,
                                        io::Error::other(format!("unexpected archive name {name}")),
                                    )
                                })?)
                            };
                            sink(BackupEvent::Archive { tablespace }).map_err(feed)?;
                        }
                        b'd' => match &mut manifest {
                            Some(m) => m.extend_from_slice(rest),
                            None => sink(BackupEvent::Data(rest)).map_err(feed)?,
                        },
                        b'm' => manifest = Some(Vec::new()),
                        _ => {}
                    }
                }
                Message::CopyDone => break,
                _ => {
                    return Err(self.io(
                        what,
                        io::Error::other("unexpected message in the COPY stream"),
                    ))
                }
            }
        }
        if let Some(m) = manifest {
            sink(BackupEvent::Manifest(m)).map_err(feed)?;
        }
        let end = self.rows(what)?;
        let lsn = end
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .ok_or_else(|| self.io(what, io::Error::other("the server sent no end position")))?;
        loop {
            match self.recv(what)? {
                Message::ReadyForQuery(_) => break,
                Message::CommandComplete(_) => {}
                _ => {
                    return Err(self.io(
                        what,
                        io::Error::other("unexpected message after the backup"),
                    ))
                }
            }
        }
        sink(BackupEvent::Ended(lsn)).map_err(feed)?;
        let _ = self.send(|b| {
            frontend::terminate(b);
            Ok(())
        });
        Ok(())
    }
}

/// The first host of `cfg` that accepts a connection, and its closer.
/// TCP connections get keepalives, as libpq (and so pg_basebackup) sets
/// them: a half-open connection must end the backup, not hang it.
fn open(cfg: &tokio_postgres::Config) -> io::Result<(Box<dyn Stream>, Closer)> {
    use tokio_postgres::config::Host;
    let timeout = cfg
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::from_secs(30));
    let ports = cfg.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let mut last = io::Error::other("no host to connect to");
    for (i, host) in cfg.get_hosts().iter().enumerate() {
        let attempt: io::Result<(Box<dyn Stream>, Closer)> = match host {
            Host::Unix(dir) => UnixStream::connect(dir.join(format!(".s.PGSQL.{}", port(i))))
                .and_then(|s| {
                    let c = s.try_clone()?;
                    Ok((Box::new(s) as Box<dyn Stream>, Closer::Unix(c)))
                }),
            Host::Tcp(name) => {
                let addr = cfg
                    .get_hostaddrs()
                    .get(i)
                    .map(|a| vec![std::net::SocketAddr::new(*a, port(i))])
                    .map_or_else(
                        || {
                            std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), port(i)))
                                .map(Iterator::collect)
                        },
                        Ok,
                    );
                addr.and_then(|addrs: Vec<std::net::SocketAddr>| {
                    let mut e = io::Error::other(format!("{name} has no address"));
                    for a in addrs {
                        match TcpStream::connect_timeout(&a, timeout) {
                            Ok(s) => {
                                let _ = s.set_nodelay(true);
                                let _ = rustix::net::sockopt::set_socket_keepalive(&s, true);
                                let _ = rustix::net::sockopt::set_tcp_keepidle(
                                    &s,
                                    Duration::from_secs(60),
                                );
                                let c = s.try_clone()?;
                                return Ok((Box::new(s) as Box<dyn Stream>, Closer::Tcp(c)));
                            }
                            Err(err) => e = err,
                        }
                    }
                    Err(e)
                })
            }
        };
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}
