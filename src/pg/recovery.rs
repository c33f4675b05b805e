//! The recovery configuration PostgreSQL 12+ reads: `recovery.signal` and
//! the `recovery_target*` and `restore_command` settings appended to
//! `postgresql.auto.conf`, quoted for its lexer (and restore_command for
//! the shell and `%` expansion).

use std::io::Write;
use std::path::Path;

use vault_format::wal::Lsn;

use crate::error::{Error, Result};

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// `recovery_target_time` (with its offset).
    Time(jiff::Timestamp, String),
    /// `recovery_target_lsn`.
    Lsn(Lsn),
    /// `recovery_target_xid`.
    Xid(String),
    /// `recovery_target_name` (a `pg_create_restore_point`).
    Name(String),
    /// `recovery_target = 'immediate'`: as soon as the backup is consistent.
    Immediate,
    /// No target: replay every archived WAL file (the end of the archive).
    Latest,
}

impl RecoveryTarget {
    /// Parses `--target-time` the way PostgreSQL's `recovery_target_time`
    /// takes it (`2026-01-15 14:30:00+00`, or `now()` output from psql),
    /// insisting on the offset: without one PostgreSQL would read it in the
    /// server's time zone, which coffer cannot know.
    ///
    /// # Errors
    /// [`Error::Config`] for a time without an offset or that does not parse.
    pub fn time(s: &str) -> Result<Self> {
        let t = s.trim();
        // psql prints `+00` and `+05:30`; jiff wants hours and minutes.
        let normalised = match t.rfind(['+', '-']) {
            Some(i) if i > 10 && t[i + 1..].len() == 2 => format!("{t}:00"),
            _ => t.to_string(),
        };
        let ts: jiff::Timestamp = normalised.parse().map_err(|_| {
            Error::Config(format!(
                "--target-time {s:?} is not a time with an offset; write it as PostgreSQL prints \
                 now(), e.g. \"2026-01-15 14:30:00+00\""
            ))
        })?;
        Ok(RecoveryTarget::Time(ts, t.to_string()))
    }

    /// The settings lines for `postgresql.auto.conf`: every target setting,
    /// the others empty (PostgreSQL refuses two targets, and a base backup
    /// of a recovered cluster may still carry an old one).
    pub fn settings(&self) -> Vec<(String, String)> {
        let (name, value) = match self {
            RecoveryTarget::Time(_, s) => ("recovery_target_time", s.clone()),
            RecoveryTarget::Lsn(l) => ("recovery_target_lsn", l.to_string()),
            RecoveryTarget::Xid(x) => ("recovery_target_xid", x.clone()),
            RecoveryTarget::Name(n) => ("recovery_target_name", n.clone()),
            RecoveryTarget::Immediate => ("recovery_target", "immediate".into()),
            RecoveryTarget::Latest => ("", String::new()),
        };
        // The empty ones first: PostgreSQL applies the settings in file
        // order, and an empty one after a set one counts as a second target.
        let mut out: Vec<(String, String)> = [
            "recovery_target",
            "recovery_target_lsn",
            "recovery_target_name",
            "recovery_target_time",
            "recovery_target_xid",
        ]
        .into_iter()
        .filter(|k| *k != name)
        .map(|k| (k.to_string(), String::new()))
        .collect();
        if !name.is_empty() {
            out.push((name.to_string(), value));
        }
        out
    }
}

/// The inside of a single-quoted string in postgresql.conf: `'` doubled,
/// `\\` escaped (the configuration lexer reads backslash escapes).
pub fn conf_quote(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\'', "''")
}

/// A word for `sh -c` (restore_command runs through the shell).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:@,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `recovery.signal`, and the settings appended to `postgresql.auto.conf`
/// (the last setting of a name wins there, so earlier ones are overridden).
pub fn write_recovery(
    dir: &Path,
    settings: &[(String, String)],
    snapshot: &str,
) -> std::io::Result<()> {
    std::fs::write(dir.join("recovery.signal"), b"")?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("postgresql.auto.conf"))?;
    writeln!(
        f,
        "\n# Recovery settings written by `coffer restore pitr` from base backup {snapshot}."
    )?;
    writeln!(
        f,
        "# PostgreSQL removes recovery.signal when recovery ends; delete these lines then."
    )?;
    for (k, v) in settings {
        writeln!(f, "{k} = '{}'", conf_quote(v))?;
    }
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_target_set_last_and_the_others_emptied_first() {
        let s = RecoveryTarget::Name("before 'x'".into()).settings();
        assert_eq!(s.len(), 5);
        assert_eq!(s[4], ("recovery_target_name".into(), "before 'x'".into()));
        assert!(s[..4]
            .iter()
            .all(|(k, v)| v.is_empty() && k != "recovery_target_name"));
        assert!(RecoveryTarget::Latest
            .settings()
            .iter()
            .all(|(_, v)| v.is_empty()));
    }

    #[test]
    fn values_survive_the_config_lexer_and_the_shell() {
        assert_eq!(conf_quote(r"a'b\c"), r"a''b\\c");
        assert_eq!(shell_quote("/usr/bin/coffer"), "/usr/bin/coffer");
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }

    #[test]
    fn times_need_their_offset() {
        for ok in [
            "2026-01-15 14:30:00+00",
            "2026-11-29 03:45:00.599051+00",
            "2026-01-15 14:30:00+05:30",
        ] {
            assert!(RecoveryTarget::time(ok).is_ok(), "{ok}");
        }
        assert!(RecoveryTarget::time("2026-01-15 14:30:00").is_err());
    }
}
