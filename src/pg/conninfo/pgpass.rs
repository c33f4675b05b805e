//! Passwords from `~/.pgpass` (or `passfile` / `PGPASSFILE`), and the OS
//! user and home directory libpq's defaults come from.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use super::{ConnInfo, DEFAULT_SOCKET_DIRS};

impl ConnInfo {
    /// The password `~/.pgpass` (or `passfile` / `PGPASSFILE`) holds for this
    /// connection, matched as libpq matches it. A file readable by group or
    /// others is ignored, as libpq ignores it.
    pub(super) fn pgpass_password(
        &self,
        host: Option<&str>,
        port: &str,
        dbname: &str,
        user: &str,
    ) -> Option<String> {
        let path = match self.effective("passfile") {
            Some(p) => PathBuf::from(p),
            None => home_dir()?.join(".pgpass"),
        };
        let meta = std::fs::metadata(&path).ok()?;
        if !meta.is_file() || meta.permissions().mode() & 0o077 != 0 {
            return None;
        }
        let text = std::fs::read_to_string(&path).ok()?;
        // libpq matches a connection over the default socket directory (or
        // with no host) as "localhost".
        let host = host
            .and_then(|h| h.split(',').next())
            .unwrap_or("localhost");
        let host = if DEFAULT_SOCKET_DIRS.contains(&host) {
            "localhost"
        } else {
            host
        };
        let port = port.split(',').next().unwrap_or("5432");
        pgpass_lookup(&text, host, port, dbname, user)
    }
}

/// Finds the password for (host, port, dbname, user) in pgpass text.
pub(crate) fn pgpass_lookup(
    text: &str,
    host: &str,
    port: &str,
    dbname: &str,
    user: &str,
) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() < 5 {
            continue;
        }
        let matches = |f: &str, v: &str| f == "*" || f == v;
        if matches(&fields[0], host)
            && matches(&fields[1], port)
            && matches(&fields[2], dbname)
            && matches(&fields[3], user)
        {
            return Some(fields[4..].join(":"));
        }
    }
    None
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("one field").push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| passwd_entry().map(|(_, home)| PathBuf::from(home)))
}

/// The OS user name libpq defaults `user` to (the effective user's).
pub(super) fn os_user() -> Option<String> {
    passwd_entry()
        .map(|(name, _)| name)
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
}

/// (name, home) of this process's user from /etc/passwd, without libc calls.
fn passwd_entry() -> Option<(String, String)> {
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid))
            .then(|| (f[0].to_string(), f[5].to_string()))
    })
}
