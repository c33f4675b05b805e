//! The physical base backup source: `pg_basebackup -D - -Ft -X none`
//! streamed straight into the pipeline (no temporary directory).
//!
//! ```text
//!  facts (tokio-postgres): system identifier, version, segment size, archiving on?
//!  pg_basebackup ──tar on stdout──▶ TarWatch ──▶ pipeline (FastCDC: unchanged pages dedup)
//!                                      └─ keeps backup_label and backup_manifest
//! ```
//!
//! `-X none`: the WAL comes from the archive (`coffer wal push`), and the
//! server's `pg_backup_stop` waits until the backup's last segment is
//! archived before pg_basebackup exits, so a backup whose archiving works
//! is complete when it commits. With `-D -` PostgreSQL puts
//! `backup_manifest` at the end of the tar, where [`TarWatch`] reads the
//! stop LSN from it. [`Source::finish`] fails the backup (nothing is
//! committed) when pg_basebackup failed or either file is missing.

use std::io::{self, Read};
use std::process::{Child, ChildStdout, Stdio};
use std::thread::JoinHandle;

use serde_json::{Map, Value};
use vault_format::wal::{Lsn, SegmentName};

use super::Source;
use crate::error::{Error, Result};
use crate::pg::basebackup::{parse_label, parse_manifest_end, BaseFacts, KIND_BASE};
use crate::pg::conninfo::ConnInfo;
use crate::pg::{db_error, tools, Db, PgError};
use crate::util::now_rfc3339;

/// Captures at most this much of `backup_manifest` (it lists every file
/// with a checksum: ~100 bytes a file).
const MAX_MANIFEST: u64 = 256 << 20;

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
}

/// A running `pg_basebackup`.
pub struct BaseBackupSource {
    child: Child,
    watch: TarWatch<ChildStdout>,
    stderr: Option<JoinHandle<String>>,
    server: Server,
    target: String,
}

impl BaseBackupSource {
    /// Checks the server and starts pg_basebackup.
    ///
    /// # Errors
    /// [`Error::Source`] when the server cannot be reached, has tablespaces
    /// besides the default ones, or does not archive WAL.
    pub fn start(opts: &BaseOptions) -> Result<Self> {
        let target = opts.conn.describe();
        let fail = |detail: String| Error::Source {
            what: target.clone(),
            detail,
        };
        let server = server_facts(&opts.conn).map_err(|e| fail(e.to_string()))?;
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
            .map_err(|e| fail(tools::spawn_error("pg_basebackup", e).to_string()))?;
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(
                "pg_basebackup started without its output pipes".into(),
            ));
        };
        let stderr = tools::collect(err, "pg_basebackup");
        Ok(BaseBackupSource {
            child,
            watch: TarWatch::new(out),
            stderr: Some(stderr),
            server,
            target,
        })
    }
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
    if tablespaces > 0 {
        return Err(PgError::Tool {
            program: "the server".into(),
            detail: format!(
                "the cluster has {tablespaces} tablespace(s) outside the data directory, which \
                 coffer's physical backups do not cover yet; back it up with `coffer backup pg` \
                 (logical) instead"
            ),
        });
    }
    Ok(Server {
        system_identifier: sys.parse().unwrap_or(0),
        version_num,
        segment_size: segment_size as u64,
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
        let status = self
            .child
            .wait()
            .map_err(|e| fail(format!("waiting for pg_basebackup: {e}")))?;
        let stderr = self.stderr.take().map(tools::join).unwrap_or_default();
        if !status.success() {
            return Err(fail(format!(
                "pg_basebackup {}",
                tools::describe_exit(status, &stderr)
            )));
        }
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
    /// A backup that stopped early kills pg_basebackup (the server ends
    /// its backup when the connection drops).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Passes a tar stream through, keeping the contents of the top-level
/// `backup_label` and `backup_manifest` entries. Headers are decoded by
/// the `tar` crate; only the block arithmetic is here.
pub struct TarWatch<R> {
    inner: R,
    header: Vec<u8>,
    /// Data bytes left in the current entry, then its padding.
    data_left: u64,
    pad_left: u64,
    capture: Option<Captured>,
    ended: bool,
    /// `backup_label`.
    pub label: Vec<u8>,
    /// `backup_manifest`.
    pub manifest: Vec<u8>,
}

#[derive(Clone, Copy)]
enum Captured {
    Label,
    Manifest,
}

impl<R> TarWatch<R> {
    /// Watches `inner`.
    pub fn new(inner: R) -> Self {
        TarWatch {
            inner,
            header: Vec::with_capacity(512),
            data_left: 0,
            pad_left: 0,
            capture: None,
            ended: false,
            label: Vec::new(),
            manifest: Vec::new(),
        }
    }

    fn observe(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() && !self.ended {
            if self.data_left > 0 {
                let n = (self.data_left.min(buf.len() as u64)) as usize;
                match self.capture {
                    Some(Captured::Label) => self.label.extend_from_slice(&buf[..n]),
                    Some(Captured::Manifest) => self.manifest.extend_from_slice(&buf[..n]),
                    None => {}
                }
                self.data_left -= n as u64;
                buf = &buf[n..];
            } else if self.pad_left > 0 {
                let n = (self.pad_left.min(buf.len() as u64)) as usize;
                self.pad_left -= n as u64;
                buf = &buf[n..];
            } else {
                let n = (512 - self.header.len()).min(buf.len());
                self.header.extend_from_slice(&buf[..n]);
                buf = &buf[n..];
                if self.header.len() == 512 {
                    self.start_entry();
                }
            }
        }
    }

    fn start_entry(&mut self) {
        let block = std::mem::take(&mut self.header);
        if block.iter().all(|&b| b == 0) {
            self.ended = true;
            return;
        }
        let h = tar::Header::from_byte_slice(&block);
        let size = h.entry_size().unwrap_or(0);
        let path = h.path_bytes();
        let name = path.strip_prefix(b"./").unwrap_or(&path);
        self.capture = match name {
            b"backup_label" if size <= 64 << 10 => Some(Captured::Label),
            b"backup_manifest" if size <= MAX_MANIFEST => Some(Captured::Manifest),
            _ => None,
        };
        self.data_left = size;
        self.pad_left = (512 - size % 512) % 512;
        self.header = Vec::with_capacity(512);
    }
}

impl<R: Read> Read for TarWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_and_manifest_are_kept_from_a_tar_stream() {
        let mut b = tar::Builder::new(Vec::new());
        for (name, body) in [
            ("PG_VERSION", &b"15\n"[..]),
            ("backup_label", b"START WAL LOCATION: 0/2000028\n"),
            ("base/1/1259", &[7u8; 9000][..]),
            ("backup_manifest", b"{\"WAL-Ranges\": []}"),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(body.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, body).unwrap();
        }
        let tarball = b.into_inner().unwrap();
        // Read in odd-sized pieces, as a pipe delivers them.
        let mut w = TarWatch::new(std::io::Cursor::new(tarball.clone()));
        let mut out = Vec::new();
        let mut buf = [0u8; 333];
        loop {
            let n = w.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, tarball);
        assert_eq!(w.label, b"START WAL LOCATION: 0/2000028\n");
        assert_eq!(w.manifest, b"{\"WAL-Ranges\": []}");
    }
}
