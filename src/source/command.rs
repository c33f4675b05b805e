//! A command's standard output (`coffer backup --exec -- CMD ARGS…`).
//!
//! The reason to run the producer under coffer instead of piping it in:
//! on a pipe, a producer that dies half way looks exactly like one that
//! finished (end of input), and the truncated stream would be committed.
//! Here [`Source::finish`] waits for the command and fails the backup,
//! committing nothing, unless it exited 0.
//!
//! Only the program's name is recorded in the manifest: arguments can
//! carry secrets.

use std::io::Read;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

use vault_format::manifest::kinds;

use super::Source;
use crate::error::{Error, Result};
use crate::pg::tools;

/// A running command.
pub struct CommandSource {
    program: String,
    child: Child,
    stdout: ChildStdout,
    stderr: Option<JoinHandle<String>>,
}

impl CommandSource {
    /// Starts `argv` (program, then its arguments) with stdin closed.
    ///
    /// # Errors
    /// [`Error::Source`] when `argv` is empty or the program cannot start.
    pub fn start(argv: &[String]) -> Result<Self> {
        let Some((program, args)) = argv.split_first() else {
            return Err(Error::Config(
                "--exec needs a command after `--`, e.g. coffer backup --exec -- tar -C /srv -cf - app".into(),
            ));
        };
        let fail = |detail: String| Error::Source {
            what: format!("the command {program}"),
            detail,
        };
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                fail(format!(
                    "cannot start it: {e}; check the program name and PATH"
                ))
            })?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail("it started without its output pipes".into()));
        };
        Ok(CommandSource {
            program: program.clone(),
            child,
            stdout,
            stderr: Some(tools::collect(stderr, "exec")),
        })
    }
}

impl Source for CommandSource {
    fn kind(&self) -> &str {
        kinds::COMMAND
    }

    fn reader(&mut self) -> &mut (dyn Read + Send) {
        &mut self.stdout
    }

    fn finish(&mut self) -> Result<serde_json::Map<String, serde_json::Value>> {
        let status = self.child.wait().map_err(|e| Error::Source {
            what: format!("the command {}", self.program),
            detail: format!("waiting for it: {e}"),
        })?;
        let stderr = self.stderr.take().map(tools::join).unwrap_or_default();
        if !status.success() {
            return Err(Error::Source {
                what: format!("the command {}", self.program),
                detail: tools::describe_exit(status, &stderr),
            });
        }
        let mut m = serde_json::Map::new();
        m.insert("program".into(), self.program.clone().into());
        Ok(m)
    }
}

impl Drop for CommandSource {
    /// A backup that stopped early (an error, SIGTERM) does not leave the
    /// producer running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
