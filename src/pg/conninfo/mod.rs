//! libpq connection strings: `key=value` conninfo or `postgresql://` URLs,
//! resolved the way libpq resolves them (explicit parameters, then the PG*
//! environment variables, then libpq's defaults, with the password from
//! `~/.pgpass`), because coffer opens its own connection with tokio-postgres
//! (which knows none of that) *and* runs libpq tools against the same server.
//!
//! Passwords never reach a command line: [`ConnInfo::tool_conninfo`] is the
//! resolved conninfo without the password, and [`ConnInfo::apply_to`] hands an
//! explicit password to the child in `PGPASSWORD`.

use std::path::Path;
use std::process::Command;

mod parse;
mod pgpass;
mod tokio;

pub(crate) use parse::quote;
use parse::{parse_keywords, parse_url};
use pgpass::os_user;
#[cfg(test)]
use pgpass::pgpass_lookup;

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
