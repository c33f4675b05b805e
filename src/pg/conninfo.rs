//! libpq connection strings: `key=value` conninfo or `postgresql://` URLs,
//! resolved the way libpq resolves them (explicit parameters, then the PG*
//! environment variables, then libpq's defaults, with the password from
//! `~/.pgpass`), because coffer opens its own connection with tokio-postgres
//! (which knows none of that) *and* runs libpq tools against the same server.
//!
//! Passwords never reach a command line: [`ConnInfo::tool_conninfo`] is the
//! resolved conninfo without the password, and [`ConnInfo::apply_to`] hands an
//! explicit password to the child in `PGPASSWORD`.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::PgError;

/// libpq's environment variables, by parameter.
const ENV: &[(&str, &str)] = &[
    ("host", "PGHOST"),
    ("hostaddr", "PGHOSTADDR"),
    ("port", "PGPORT"),
    ("dbname", "PGDATABASE"),
    ("user", "PGUSER"),
    ("password", "PGPASSWORD"),
    ("passfile", "PGPASSFILE"),
    ("options", "PGOPTIONS"),
    ("application_name", "PGAPPNAME"),
    ("sslmode", "PGSSLMODE"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("target_session_attrs", "PGTARGETSESSIONATTRS"),
    ("service", "PGSERVICE"),
];

/// Parameters coffer passes on to the tools explicitly, resolved, so that its
/// own connection and the tools' reach the same server as the same user.
const RESOLVED_FOR_TOOLS: &[&str] = &["host", "hostaddr", "port", "user", "dbname"];

/// Unix-socket directories libpq builds commonly default to (Debian's
/// first, then upstream's).
const DEFAULT_SOCKET_DIRS: &[&str] = &["/var/run/postgresql", "/run/postgresql", "/tmp"];

/// A parsed connection string: the parameters the user gave, in order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnInfo {
    params: Vec<(String, String)>,
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never show a password, not even in debug output.
        write!(f, "ConnInfo({})", self.without_password().to_conninfo())
    }
}

impl ConnInfo {
    /// Parses a conninfo string, a `postgresql://` / `postgres://` URL, or a
    /// bare database name (as pg_dump's `--dbname` does). Empty means "all
    /// defaults".
    ///
    /// # Errors
    /// [`PgError::Conninfo`] for a malformed string (the message never
    /// repeats the string, which may hold a password).
    pub fn parse(s: &str) -> Result<Self, PgError> {
        let t = s.trim();
        if t.is_empty() {
            return Ok(ConnInfo::default());
        }
        if t.starts_with("postgresql://") || t.starts_with("postgres://") {
            return parse_url(t);
        }
        if !t.contains('=') {
            return Ok(ConnInfo {
                params: vec![("dbname".into(), t.to_string())],
            });
        }
        parse_keywords(t)
    }

    /// The value given for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key` (replacing any earlier value).
    pub fn set(&mut self, key: &str, value: &str) {
        self.params.retain(|(k, _)| k != key);
        self.params.push((key.to_string(), value.to_string()));
    }

    /// The same parameters without the password.
    pub fn without_password(&self) -> ConnInfo {
        ConnInfo {
            params: self
                .params
                .iter()
                .filter(|(k, _)| k != "password")
                .cloned()
                .collect(),
        }
    }

    /// Whether the string itself carried a password.
    pub fn has_password(&self) -> bool {
        self.get("password").is_some()
    }

    /// `key='value' ...` (values quoted as libpq expects).
    pub fn to_conninfo(&self) -> String {
        self.params
            .iter()
            .map(|(k, v)| format!("{k}={}", quote(v)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The value libpq would use for `key`: the string's, else the
    /// environment's (PG* variables), else libpq's default.
    pub fn effective(&self, key: &str) -> Option<String> {
        if let Some(v) = self.get(key) {
            if !v.is_empty() {
                return Some(v.to_string());
            }
        }
        if let Some((_, var)) = ENV.iter().find(|(k, _)| *k == key) {
            if let Ok(v) = std::env::var(var) {
                if !v.is_empty() {
                    return Some(v);
                }
            }
        }
        match key {
            "port" => Some("5432".into()),
            "user" => os_user(),
            "dbname" => self.effective("user"),
            "host" if self.effective("hostaddr").is_none() => Some(default_host(
                &self.effective("port").unwrap_or_else(|| "5432".into()),
            )),
            _ => None,
        }
    }

    /// Whether `key` was given in the string or the environment (rather than
    /// defaulted).
    pub fn is_given(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| !v.is_empty())
            || ENV
                .iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, var)| std::env::var(var).ok())
                .is_some_and(|v| !v.is_empty())
    }

    /// The database name libpq would connect to.
    pub fn database(&self) -> String {
        self.effective("dbname").unwrap_or_default()
    }

    /// What to call this connection in messages: `db "x" on host:port as user`.
    pub fn describe(&self) -> String {
        let host = self
            .effective("host")
            .or_else(|| self.effective("hostaddr"))
            .unwrap_or_default();
        format!(
            "database {:?} on {}:{} as {}",
            self.database(),
            host,
            self.effective("port").unwrap_or_default(),
            self.effective("user").unwrap_or_default()
        )
    }

    /// The resolved, password-free conninfo handed to pg_dump, pg_restore,
    /// pg_dumpall and psql with `--dbname`: host, port, user and database as
    /// coffer resolved them (so the tools reach the server coffer's own
    /// connection reached), plus every other parameter the string gave.
    pub fn tool_conninfo(&self) -> String {
        let mut out = ConnInfo::default();
        for key in RESOLVED_FOR_TOOLS {
            if *key == "hostaddr" && !self.is_given("hostaddr") {
                continue;
            }
            if let Some(v) = self.effective(key) {
                out.set(key, &v);
            }
        }
        for (k, v) in &self.params {
            if k != "password" && !RESOLVED_FOR_TOOLS.contains(&k.as_str()) {
                out.set(k, v);
            }
        }
        out.to_conninfo()
    }

    /// Passes this connection to a libpq tool: `--dbname=<tool_conninfo>`,
    /// plus `PGPASSWORD` when the string carried a password (never argv).
    /// `flag` is the option naming the conninfo (`--dbname`, or `-d`).
    pub fn apply_to(&self, cmd: &mut Command, flag: &str) {
        cmd.arg(format!("{flag}={}", self.tool_conninfo()));
        if let Some(pw) = self.get("password") {
            cmd.env("PGPASSWORD", pw);
        }
    }

    /// A tokio-postgres config for coffer's own connection, with the PG*
    /// environment, libpq's defaults and `~/.pgpass` applied.
    ///
    /// # Errors
    /// [`PgError::Conninfo`] for what coffer's connection cannot do (TLS,
    /// service files) or a malformed value.
    pub fn tokio_config(&self) -> Result<tokio_postgres::Config, PgError> {
        let mut c = tokio_postgres::Config::new();
        if let Some(s) = self.effective("service") {
            return Err(PgError::Conninfo(format!(
                "connection service {s:?} (PGSERVICE / service=): coffer's own connection cannot read pg_service.conf; give host, port, user and dbname instead"
            )));
        }
        match self.effective("sslmode").as_deref() {
            None | Some("disable" | "allow" | "prefer") => {
                c.ssl_mode(tokio_postgres::config::SslMode::Disable);
            }
            Some(m) => {
                return Err(PgError::Conninfo(format!(
                    "sslmode={m}: coffer's own connection does not support TLS yet; connect over a Unix socket, a local port or an SSH tunnel (see docs/postgres.md)"
                )))
            }
        }
        let host = self.effective("host");
        if let Some(h) = &host {
            for h in h.split(',') {
                if h.starts_with('/') {
                    c.host_path(h);
                } else {
                    c.host(h);
                }
            }
        }
        if let Some(a) = self.effective("hostaddr") {
            for a in a.split(',') {
                let addr = a
                    .parse()
                    .map_err(|_| PgError::Conninfo(format!("hostaddr {a:?} is not an address")))?;
                c.hostaddr(addr);
                if host.is_none() {
                    c.host(a);
                }
            }
        }
        let port = self.effective("port").unwrap_or_else(|| "5432".into());
        for p in port.split(',') {
            let p: u16 = if p.is_empty() {
                5432
            } else {
                p.parse()
                    .map_err(|_| PgError::Conninfo(format!("port {p:?} is not a number")))?
            };
            c.port(p);
        }
        let user = self.effective("user").unwrap_or_default();
        c.user(&user);
        let dbname = self.database();
        c.dbname(&dbname);
        if let Some(o) = self.effective("options") {
            c.options(&o);
        }
        c.application_name(
            self.effective("application_name")
                .unwrap_or_else(|| "coffer".into()),
        );
        if let Some(t) = self.effective("connect_timeout") {
            let secs: u64 = t
                .parse()
                .map_err(|_| PgError::Conninfo(format!("connect_timeout {t:?} is not a number")))?;
            if secs > 0 {
                c.connect_timeout(Duration::from_secs(secs.max(2)));
            }
        }
        if let Some(t) = self.effective("target_session_attrs") {
            use tokio_postgres::config::TargetSessionAttrs as T;
            c.target_session_attrs(match t.as_str() {
                "read-write" => T::ReadWrite,
                "read-only" => T::ReadOnly,
                _ => T::Any,
            });
        }
        let password = match self.effective("password") {
            Some(p) => Some(p),
            None => self.pgpass_password(host.as_deref(), &port, &dbname, &user),
        };
        if let Some(p) = password {
            c.password(p);
        }
        Ok(c)
    }

    /// The password `~/.pgpass` (or `passfile` / `PGPASSFILE`) holds for this
    /// connection, matched as libpq matches it. A file readable by group or
    /// others is ignored, as libpq ignores it.
    fn pgpass_password(
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
fn os_user() -> Option<String> {
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

/// libpq's default host: the Unix-socket directory that has this port's
/// socket, else localhost.
fn default_host(port: &str) -> String {
    let port = port.split(',').next().unwrap_or("5432");
    DEFAULT_SOCKET_DIRS
        .iter()
        .find(|d| Path::new(d).join(format!(".s.PGSQL.{port}")).exists())
        .map(|d| d.to_string())
        .unwrap_or_else(|| "localhost".into())
}

/// Quotes a conninfo value.
pub(crate) fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn parse_keywords(s: &str) -> Result<ConnInfo, PgError> {
    let mut params = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = it.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            it.next();
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.next() != Some('=') {
            return Err(PgError::Conninfo(format!(
                "missing \"=\" after {key:?} in the connection string"
            )));
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        let mut value = String::new();
        if it.peek() == Some(&'\'') {
            it.next();
            let mut closed = false;
            while let Some(c) = it.next() {
                match c {
                    '\\' => {
                        if let Some(n) = it.next() {
                            value.push(n);
                        }
                    }
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(PgError::Conninfo(format!(
                    "unterminated quoted value for {key:?} in the connection string"
                )));
            }
        } else {
            while let Some(&c) = it.peek() {
                if c.is_whitespace() {
                    break;
                }
                it.next();
                if c == '\\' {
                    if let Some(n) = it.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        if key.is_empty() {
            return Err(PgError::Conninfo(
                "empty parameter name in the connection string".into(),
            ));
        }
        params.push((key, value));
    }
    Ok(ConnInfo { params })
}

fn percent_decode(s: &str) -> Result<String, PgError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    PgError::Conninfo("invalid percent-encoding in the connection URL".into())
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| PgError::Conninfo("the connection URL does not decode to UTF-8".into()))
}

fn parse_url(s: &str) -> Result<ConnInfo, PgError> {
    let rest = s
        .strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
        .expect("caller checked the scheme");
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (netloc, path) = match rest.split_once('/') {
        Some((n, p)) => (n, Some(p)),
        None => (rest, None),
    };
    let mut params = Vec::new();
    let hosts = match netloc.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, pw) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                params.push(("user".to_string(), percent_decode(user)?));
            }
            if let Some(p) = pw {
                params.push(("password".to_string(), percent_decode(p)?));
            }
            hosts
        }
        None => netloc,
    };
    if !hosts.is_empty() {
        let (mut hs, mut ps) = (Vec::new(), Vec::new());
        for h in hosts.split(',') {
            let (host, port) = if let Some(r) = h.strip_prefix('[') {
                let (addr, after) = r.split_once(']').ok_or_else(|| {
                    PgError::Conninfo("unterminated [IPv6 address] in the connection URL".into())
                })?;
                (addr.to_string(), after.strip_prefix(':').unwrap_or(""))
            } else {
                match h.rsplit_once(':') {
                    Some((a, p)) => (percent_decode(a)?, p),
                    None => (percent_decode(h)?, ""),
                }
            };
            hs.push(host);
            ps.push(port.to_string());
        }
        if hs.iter().any(|h| !h.is_empty()) {
            params.push(("host".to_string(), hs.join(",")));
        }
        if ps.iter().any(|p| !p.is_empty()) {
            params.push(("port".to_string(), ps.join(",")));
        }
    }
    if let Some(p) = path {
        if !p.is_empty() {
            params.push(("dbname".to_string(), percent_decode(p)?));
        }
    }
    if let Some(q) = query {
        let mut extra: BTreeMap<String, String> = BTreeMap::new();
        for kv in q.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| PgError::Conninfo("a URL query parameter lacks \"=\"".into()))?;
            let k = percent_decode(k)?;
            let v = percent_decode(v)?;
            // libpq's JDBC-compatible spelling.
            if k == "ssl" && v == "true" {
                extra.insert("sslmode".into(), "require".into());
            } else {
                extra.insert(k, v);
            }
        }
        for (k, v) in extra {
            params.retain(|(pk, _)| *pk != k);
            params.push((k, v));
        }
    }
    Ok(ConnInfo { params })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<(String, String)> {
        ConnInfo::parse(s).unwrap().params
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keyword_strings() {
        assert_eq!(
            p("host=/tmp port = 5433 dbname='my db' password='it\\'s' user=a\\ b"),
            kv(&[
                ("host", "/tmp"),
                ("port", "5433"),
                ("dbname", "my db"),
                ("password", "it's"),
                ("user", "a b")
            ])
        );
        assert_eq!(p("mydb"), kv(&[("dbname", "mydb")]));
        assert_eq!(p("  "), kv(&[]));
        assert!(ConnInfo::parse("host x=1").is_err());
        assert!(ConnInfo::parse("password='unterminated").is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(
            p("postgresql://u%40x:p%3Aw@db.example:6432/sales?sslmode=disable&application_name=a"),
            kv(&[
                ("user", "u@x"),
                ("password", "p:w"),
                ("host", "db.example"),
                ("port", "6432"),
                ("dbname", "sales"),
                ("application_name", "a"),
                ("sslmode", "disable"),
            ])
        );
        assert_eq!(
            p("postgres://[::1]:5,h2/d"),
            kv(&[("host", "::1,h2"), ("port", "5,"), ("dbname", "d")])
        );
        assert_eq!(
            p("postgresql://%2Fvar%2Frun%2Fpostgresql/x"),
            kv(&[("host", "/var/run/postgresql"), ("dbname", "x")])
        );
        assert_eq!(p("postgresql://"), kv(&[]));
    }

    #[test]
    fn passwords_never_reach_argv_or_debug() {
        let c = ConnInfo::parse("postgresql://u:s3cret@127.0.0.1:5/db").unwrap();
        assert!(c.has_password());
        assert!(!c.tool_conninfo().contains("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(c.tool_conninfo().contains("dbname='db'"));
        assert!(c.tool_conninfo().contains("host='127.0.0.1'"));
        let mut cmd = Command::new("true");
        c.apply_to(&mut cmd, "--dbname");
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.iter().all(|a| !a.contains("s3cret")), "{args:?}");
        let env: Vec<_> = cmd.get_envs().collect();
        assert!(env
            .iter()
            .any(|(k, v)| *k == "PGPASSWORD" && v.map(|v| v == "s3cret").unwrap_or(false)));
        // Round trip through the quoted form.
        let q = ConnInfo::parse(
            &ConnInfo::parse("dbname='a \\' b\\\\'")
                .unwrap()
                .to_conninfo(),
        )
        .unwrap();
        assert_eq!(q.get("dbname"), Some("a ' b\\"));
    }

    #[test]
    fn pgpass_matching() {
        let text =
            "# comment\nother:5432:*:u:no\nlocalhost:5432:db:u:pa\\:ss\n*:*:*:*:fallback:x\n";
        assert_eq!(
            pgpass_lookup(text, "localhost", "5432", "db", "u").as_deref(),
            Some("pa:ss")
        );
        assert_eq!(
            pgpass_lookup(text, "h", "1", "d", "v").as_deref(),
            Some("fallback:x")
        );
        assert_eq!(pgpass_lookup("", "h", "1", "d", "v"), None);
    }
}
