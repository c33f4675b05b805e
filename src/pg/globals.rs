//! Cluster globals: `pg_dumpall --globals-only` (roles, role memberships
//! and settings, tablespaces) backed up beside each dump, because a dump
//! restored on a new machine needs its owners and grantees to exist; and
//! their replay with psql.

use std::io::Write;
use std::process::Stdio;

use serde::Serialize;
use serde_json::{Map, Value};

use super::conninfo::ConnInfo;
use super::facts::ServerFacts;
use super::tools;
use crate::error::{Error, Result};

/// The globals, captured in memory (they are a few KiB, even with
/// thousands of roles).
#[derive(Debug, Clone)]
pub struct Globals {
    /// The SQL.
    pub sql: Vec<u8>,
    /// False when dumped with `--no-role-passwords` (not a superuser).
    pub role_passwords: bool,
    /// `pg_dumpall --version`.
    pub pg_dumpall_version: String,
}

/// Runs `pg_dumpall --globals-only`, connecting to `database` (the one
/// being dumped, which the role can certainly reach). Without
/// `role_passwords`, passes `--no-role-passwords` (needed unless the role
/// is a superuser: pg_authid is not readable otherwise).
///
/// # Errors
/// [`Error::Config`] when pg_dumpall is missing; [`Error::Source`] with
/// pg_dumpall's own message when it fails.
pub fn dump(conn: &ConnInfo, database: &str, role_passwords: bool) -> Result<Globals> {
    let version = tools::version("pg_dumpall")?;
    let mut cmd = tools::command("pg_dumpall");
    cmd.args(["--globals-only", "--no-password"]);
    if !role_passwords {
        cmd.arg("--no-role-passwords");
    }
    conn.apply_to(&mut cmd, "--dbname");
    cmd.arg(format!("--database={database}"));
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::from(tools::spawn_error("pg_dumpall", e)))?;
    if !out.status.success() {
        return Err(Error::Source {
            what: format!(
                "the cluster globals (roles, tablespaces) of {}",
                conn.describe()
            ),
            detail: format!(
                "pg_dumpall --globals-only {}; pass --no-globals to back up the database alone",
                tools::describe_exit(out.status, &String::from_utf8_lossy(&out.stderr))
            ),
        });
    }
    Ok(Globals {
        sql: out.stdout,
        role_passwords,
        pg_dumpall_version: version,
    })
}

/// The manifest facts of a globals snapshot.
pub fn facts(g: &Globals, server: &ServerFacts, connection: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("engine".into(), "postgresql".into());
    m.insert("format".into(), "sql".into());
    m.insert(
        "server_version".into(),
        server.server_version.clone().into(),
    );
    m.insert(
        "server_version_num".into(),
        server.server_version_num.into(),
    );
    m.insert(
        "pg_dumpall_version".into(),
        g.pg_dumpall_version.clone().into(),
    );
    m.insert("role_passwords".into(), g.role_passwords.into());
    m.insert("role".into(), server.current_user.clone().into());
    m.insert("connection".into(), connection.into());
    m.insert("database".into(), server.database.clone().into());
    m
}

/// What replaying the globals did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Replay {
    /// Statements that failed because the object already exists (expected:
    /// e.g. the superuser role of the new cluster). Not an error.
    pub already_existed: Vec<String>,
    /// Other messages psql printed (notices, warnings).
    pub messages: Vec<String>,
}

/// Replays globals SQL into the server `conn` names, with
/// `psql -v ON_ERROR_STOP=0` so that roles which already exist do not stop
/// the rest; `write` streams the SQL into psql's stdin.
///
/// # Errors
/// [`Error::Output`] listing psql's errors when any statement failed for
/// another reason than "already exists"; errors of `write`.
pub fn replay<T>(
    conn: &ConnInfo,
    write: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<(T, Replay)> {
    let target = conn.describe();
    let mut cmd = tools::command("psql");
    cmd.args(["-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=0"]);
    conn.apply_to(&mut cmd, "--dbname");
    cmd.args(["-f", "-"]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::from(tools::spawn_error("psql", e)))?;
    let stderr = tools::collect(child.stderr.take().expect("piped stderr"), "psql");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let written = write(&mut stdin);
    drop(stdin);
    let status = child.wait().map_err(|e| Error::Output {
        what: format!("psql into {target}"),
        io: e,
    })?;
    let text = tools::join(stderr);
    if !status.success() {
        return Err(Error::Output {
            what: format!("the globals into {target}"),
            io: std::io::Error::other(format!("psql {}", tools::describe_exit(status, &text))),
        });
    }
    let value = written?;
    let mut rep = Replay::default();
    let mut errors = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("ERROR:") {
            if line.contains("already exists") {
                rep.already_existed.push(line.to_string());
            } else {
                errors.push(line.to_string());
            }
        } else {
            rep.messages.push(line.to_string());
        }
    }
    if !errors.is_empty() {
        return Err(Error::Output {
            what: format!("the globals into {target}"),
            io: std::io::Error::other(format!(
                "{} statement(s) failed: {}",
                errors.len(),
                errors.join("; ")
            )),
        });
    }
    Ok((value, rep))
}
