//! The PostgreSQL client programs coffer runs, and reading what they say.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

use super::PgError;

/// A client program: `pg_dump`, `pg_dumpall`, `pg_restore` or `psql`.
///
/// Found as `$COFFER_PG_DUMP` (etc., the program's name upper-cased), else
/// in `$COFFER_PG_BINDIR`, else on `PATH`. pg_dump must be at least as new
/// as the server; on Debian, `/usr/bin/pg_dump` picks the newest installed.
pub fn program(name: &str) -> PathBuf {
    let var = format!("COFFER_{}", name.to_ascii_uppercase());
    if let Some(p) = std::env::var_os(&var).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(dir) = std::env::var_os("COFFER_PG_BINDIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(dir).join(name);
    }
    PathBuf::from(name)
}

/// A command for `name` with stdin closed, never prompting for a password
/// (`--no-password` is added by callers: not every tool takes it first).
pub fn command(name: &str) -> Command {
    let mut c = Command::new(program(name));
    c.stdin(Stdio::null());
    c
}

/// `name --version`, e.g. `pg_dump (PostgreSQL) 15.18`.
///
/// # Errors
/// [`PgError::Missing`] when the program cannot be run.
pub fn version(name: &str) -> Result<String, PgError> {
    let path = program(name);
    let out = Command::new(&path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| PgError::Missing {
            program: path.display().to_string(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(PgError::Missing {
            program: path.display().to_string(),
            detail: format!(
                "`--version` {}",
                describe_exit(out.status, &String::from_utf8_lossy(&out.stderr))
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Spawn error for `name`.
pub fn spawn_error(name: &str, e: std::io::Error) -> PgError {
    PgError::Missing {
        program: program(name).display().to_string(),
        detail: e.to_string(),
    }
}

/// At most this much of a tool's stderr is kept (the start and the end).
const STDERR_KEEP: usize = 64 * 1024;

/// Reads a child's stderr to the end on a thread, so the child never blocks
/// on a full pipe; keeps the first and last `STDERR_KEEP` bytes.
pub fn collect(mut r: impl Read + Send + 'static, name: &str) -> JoinHandle<String> {
    std::thread::Builder::new()
        .name(format!("{name}-stderr"))
        .spawn(move || {
            let mut head = Vec::new();
            let mut tail: Vec<u8> = Vec::new();
            let mut buf = [0u8; 8192];
            let mut dropped = false;
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) if head.len() < STDERR_KEEP => head.extend_from_slice(&buf[..n]),
                    Ok(n) => {
                        tail.extend_from_slice(&buf[..n]);
                        if tail.len() > 2 * STDERR_KEEP {
                            tail.drain(..tail.len() - STDERR_KEEP);
                            dropped = true;
                        }
                    }
                }
            }
            let mut s = String::from_utf8_lossy(&head).into_owned();
            if dropped {
                s.push_str("\n[...]\n");
            }
            s.push_str(&String::from_utf8_lossy(&tail));
            s
        })
        .expect("spawn stderr reader")
}

/// Joins a [`collect`] thread.
pub fn join(h: JoinHandle<String>) -> String {
    h.join().unwrap_or_default()
}

/// `exited with status 1: <message>` / `was killed by signal 9 (SIGKILL)`,
/// with the tool's own message on one line.
pub fn describe_exit(status: ExitStatus, stderr: &str) -> String {
    let how = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}{}", signal_name(s)),
        _ => format!("ended with {status}"),
    };
    let msg = one_line(stderr);
    if msg.is_empty() {
        how
    } else {
        format!("{how}: {msg}")
    }
}

/// Joins a tool's stderr lines with "; " (not doubling a `;` that ends a
/// quoted SQL command), trimmed.
pub fn one_line(s: &str) -> String {
    let mut out = String::new();
    for l in s.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push_str(if out.ends_with(';') { " " } else { "; " });
        }
        out.push_str(l);
    }
    out
}

fn signal_name(s: i32) -> &'static str {
    match s {
        1 => " (SIGHUP)",
        2 => " (SIGINT)",
        6 => " (SIGABRT)",
        9 => " (SIGKILL)",
        11 => " (SIGSEGV)",
        13 => " (SIGPIPE)",
        15 => " (SIGTERM)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_line_messages() {
        assert_eq!(
            super::one_line("pg_restore: error: x\nCommand was: CREATE SCHEMA app;\n\n  next\n"),
            "pg_restore: error: x; Command was: CREATE SCHEMA app; next"
        );
    }
}
