//! `pg_restore` as the consumer of a restored stream, with `pg_restore
//! --list` reading the same stream's head (its TOC says which tables the
//! restore filled, for the comparison with the recorded facts).
//!
//! [`PgRestoreSink`] is a `Write`: the restore pipeline writes the snapshot
//! into it, then [`PgRestoreSink::finish`] waits for pg_restore and decides
//! whose failure it was. With `--jobs` > 1 pg_restore needs a seekable
//! archive, so the stream goes to a private temporary file first and
//! pg_restore runs on it at the end.

use std::io::{BufWriter, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

use super::conninfo::ConnInfo;
use super::toc::{self, Toc, TocFeed};
use super::{tools, PgError};
use crate::error::Error;

/// Why streaming into pg_restore failed.
pub enum StreamError {
    /// Reading the snapshot from the vault failed (or coffer could not run).
    Vault(Error),
    /// pg_restore (or pg_restore --list) failed: its message.
    PgRestore(String),
}

impl From<PgError> for StreamError {
    fn from(e: PgError) -> Self {
        StreamError::Vault(e.into())
    }
}

enum Mode {
    /// pg_restore reads the stream on its stdin.
    Pipe {
        child: Child,
        stdin: Option<ChildStdin>,
        stderr: JoinHandle<String>,
    },
    /// The stream is spooled for `pg_restore --jobs`, which runs at the end.
    Spool(Box<Spool>),
}

/// The archive spooled for `pg_restore --jobs`, and the command to run on it.
struct Spool {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    file: BufWriter<std::fs::File>,
    cmd: Command,
}

/// A stream's way into pg_restore (see the module docs).
pub struct PgRestoreSink {
    mode: Mode,
    toc: TocFeed,
    lister: JoinHandle<Result<Toc, PgError>>,
}

fn output_err(what: String) -> impl FnOnce(std::io::Error) -> StreamError {
    move |io| StreamError::Vault(Error::Output { what, io })
}

impl PgRestoreSink {
    /// Starts `pg_restore ARGS --dbname=TARGET` (or, with `jobs` > 1, the
    /// spool it will read) and `pg_restore --list LIST_ARGS`.
    ///
    /// # Errors
    /// The programs cannot be started, or the spool cannot be created.
    pub fn start(
        target: &ConnInfo,
        args: &[String],
        list_args: &[String],
        jobs: u32,
    ) -> Result<Self, StreamError> {
        let (toc, lister) = toc::start(list_args)?;
        let mut cmd = tools::command("pg_restore");
        cmd.args(["--no-password", "--exit-on-error"]).args(args);
        target.apply_to(&mut cmd, "--dbname");
        let mode = if jobs > 1 {
            // pg_restore --jobs needs a seekable archive: spool it, privately.
            let dir = tempfile::Builder::new()
                .prefix("coffer-restore-")
                .tempdir()
                .map_err(output_err(
                    "a temporary directory for pg_restore --jobs".into(),
                ))?;
            let path = dir.path().join("archive.dump");
            let file =
                std::fs::File::create(&path).map_err(output_err(path.display().to_string()))?;
            cmd.arg(format!("--jobs={jobs}")).arg(&path);
            Mode::Spool(Box::new(Spool {
                _dir: dir,
                path,
                file: BufWriter::with_capacity(1 << 20, file),
                cmd,
            }))
        } else {
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| tools::spawn_error("pg_restore", e))?;
            let stderr = tools::collect(child.stderr.take().expect("piped stderr"), "pg_restore");
            let stdin = child.stdin.take();
            Mode::Pipe {
                child,
                stdin,
                stderr,
            }
        };
        Ok(PgRestoreSink { mode, toc, lister })
    }

    /// Ends the stream: `stream` is how the vault's side of it ended.
    /// Returns its value and pg_restore's listing.
    ///
    /// # Errors
    /// [`StreamError::Vault`] when the vault's side failed — the cause
    /// even when pg_restore then choked on the cut stream — and
    /// [`StreamError::PgRestore`] with pg_restore's message when it failed.
    pub fn finish<R>(mut self, stream: Result<R, Error>) -> Result<(R, Toc), StreamError> {
        self.toc.close();
        let (status, stderr): (ExitStatus, String) = match self.mode {
            Mode::Spool(spool) => {
                let Spool {
                    path,
                    mut file,
                    mut cmd,
                    _dir,
                } = *spool;
                let stream = stream.map_err(StreamError::Vault)?;
                file.flush()
                    .map_err(output_err(path.display().to_string()))?;
                drop(file);
                let out = cmd
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .output()
                    .map_err(|e| tools::spawn_error("pg_restore", e))?;
                return conclude(
                    Ok(stream),
                    out.status,
                    &String::from_utf8_lossy(&out.stderr),
                    self.lister,
                );
            }
            Mode::Pipe {
                mut child,
                stdin,
                stderr,
            } => {
                drop(stdin);
                let status = child.wait().map_err(output_err("pg_restore".into()))?;
                (status, tools::join(stderr))
            }
        };
        conclude(stream, status, &stderr, self.lister)
    }
}

/// Whose failure it was: the vault's own is the cause even when pg_restore
/// then failed on the cut stream; a broken pipe is pg_restore's doing.
fn conclude<R>(
    stream: Result<R, Error>,
    status: ExitStatus,
    stderr: &str,
    lister: JoinHandle<Result<Toc, PgError>>,
) -> Result<(R, Toc), StreamError> {
    match stream {
        Err(e) if !matches!(e, Error::Output { .. }) => return Err(StreamError::Vault(e)),
        Err(e) if status.success() => return Err(StreamError::Vault(e)),
        _ => {}
    }
    if !status.success() {
        return Err(StreamError::PgRestore(format!(
            "pg_restore {}",
            tools::describe_exit(status, stderr)
        )));
    }
    let stream = stream.map_err(StreamError::Vault)?;
    let toc = toc::join(lister).map_err(|e| StreamError::PgRestore(e.to_string()))?;
    Ok((stream, toc))
}

impl Write for PgRestoreSink {
    /// Writes into pg_restore's stdin (or the spool) and tees into the
    /// lister. pg_restore stops reading once it has what a selective
    /// restore needs and exits: when the pipe breaks and pg_restore
    /// succeeded, the rest of the stream is still read (and verified) but
    /// dropped; when it failed, the write fails and stops the pipeline.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.mode {
            Mode::Spool(spool) => {
                let n = spool.file.write(buf)?;
                self.toc.feed(&buf[..n]);
                return Ok(n);
            }
            Mode::Pipe { child, stdin, .. } => {
                if let Some(s) = stdin {
                    match s.write_all(buf) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                            *stdin = None;
                            match child.wait() {
                                Ok(st) if st.success() => {}
                                _ => return Err(e),
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        self.toc.feed(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.mode {
            Mode::Spool(spool) => spool.file.flush(),
            Mode::Pipe { stdin: Some(s), .. } => s.flush(),
            Mode::Pipe { .. } => Ok(()),
        }
    }
}
