//! The scratch server of a restore drill: coffer connects to its
//! maintenance database (the conninfo's `dbname`, default `postgres`),
//! creates `coffer_drill_<snapshot>_<random>` like the source database, and
//! drops it afterwards. It never defaults to the server the backup came
//! from: a drill loads a whole database and should not land on production
//! by surprise.

use super::conninfo::{quote, ConnInfo};
use super::facts::quote_ident;
use super::recorded::RecordedFacts;
use super::{db_error, Db, PgError};
use crate::error::{Error, Result};

/// A connection to the scratch server's maintenance database.
pub struct ScratchServer {
    admin: Db,
    maint: ConnInfo,
    /// Its `server_version`.
    pub version: String,
    version_num: i32,
}

impl ScratchServer {
    /// Connects to `scratch`'s maintenance database.
    ///
    /// # Errors
    /// [`Error::Config`] naming the server and how to choose another.
    pub fn connect(scratch: &ConnInfo) -> Result<Self> {
        let mut maint = scratch.clone();
        if !maint.is_given("dbname") {
            maint.set("dbname", "postgres");
        }
        let admin = Db::connect(&maint).map_err(|e| {
            Error::Config(format!(
                "{e}; name a scratch server with --scratch CONNINFO (see docs/postgres.md)"
            ))
        })?;
        let (version, version_num): (String, i32) = admin
            .run(async {
                let r = admin
                    .client()
                    .query_one(
                        "SELECT current_setting('server_version'), current_setting('server_version_num')::int4",
                        &[],
                    )
                    .await?;
                Ok::<_, tokio_postgres::Error>((r.get(0), r.get(1)))
            })
            .map_err(|e| Error::Config(format!("scratch server: {}", db_error(&e))))?;
        Ok(ScratchServer {
            admin,
            maint,
            version,
            version_num,
        })
    }

    /// The conninfo of database `name` on this server.
    pub fn conninfo(&self, name: &str) -> ConnInfo {
        let mut c = self.maint.clone();
        c.set("dbname", name);
        c
    }

    /// Creates the scratch database like the source: same encoding, and its
    /// locale when the scratch server has it (else the C locale, noted).
    pub fn create(
        &self,
        name: &str,
        recorded: &RecordedFacts,
        notes: &mut Vec<String>,
    ) -> Result<()> {
        let enc = recorded.encoding.clone().unwrap_or_else(|| "UTF8".into());
        let base = format!(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING {}",
            quote_ident(name),
            quote(&enc)
        );
        let with_locale = match (&recorded.collate, &recorded.ctype) {
            (Some(c), Some(t)) => Some(format!(
                "{base} LC_COLLATE {} LC_CTYPE {}",
                quote(c),
                quote(t)
            )),
            _ => None,
        };
        let exec = |sql: &str| self.admin.run(self.admin.client().batch_execute(sql));
        if let Some(sql) = with_locale {
            match exec(&sql) {
                Ok(()) => return Ok(()),
                Err(e) => notes.push(format!(
                    "the scratch database uses the C locale: the source's ({}) is not usable there ({})",
                    recorded.collate.as_deref().unwrap_or_default(),
                    db_error(&e)
                )),
            }
        }
        exec(&format!("{base} LC_COLLATE 'C' LC_CTYPE 'C'")).map_err(|e| {
            Error::Config(format!(
                "cannot create the scratch database {name}: {}",
                db_error(&e)
            ))
        })
    }

    /// Drops database `name` (forcing out sessions on PostgreSQL 13+).
    ///
    /// # Errors
    /// The server refused.
    pub fn drop_database(&self, name: &str) -> std::result::Result<(), PgError> {
        let force = if self.version_num >= 130000 {
            " WITH (FORCE)"
        } else {
            ""
        };
        self.admin
            .run(self.admin.client().batch_execute(&format!(
                "DROP DATABASE IF EXISTS {}{force}",
                quote_ident(name)
            )))
            .map_err(|e| PgError::Query {
                what: format!("dropping the scratch database {name}"),
                detail: db_error(&e),
            })
    }
}
