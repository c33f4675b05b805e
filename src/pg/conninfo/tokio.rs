//! coffer's own connection: a tokio-postgres config resolved the way libpq
//! resolves a conninfo (PG* environment, defaults, `~/.pgpass`).

use std::time::Duration;

use super::ConnInfo;
use crate::pg::PgError;

impl ConnInfo {
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
        let (host, port) = self.set_addresses(&mut c)?;
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

    /// Hosts (or socket directories), addresses and ports; returns the host
    /// and port strings as given (for the `~/.pgpass` lookup).
    fn set_addresses(
        &self,
        c: &mut tokio_postgres::Config,
    ) -> Result<(Option<String>, String), PgError> {
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
        Ok((host, port))
    }
}
