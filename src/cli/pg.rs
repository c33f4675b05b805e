//! CLI handlers for PostgreSQL: `backup pg`, `restore --dbname`,
//! `verify --restore-test`. (Being implemented: issue 4.)

use std::path::Path;

use anyhow::{bail, Result};
use clap::Args;
use coffer::Vault;
use vault_format::manifest::Manifest;

use super::output::Verbosity;

/// `coffer backup pg`
#[derive(Debug, Args)]
pub struct PgBackupArgs {
    /// libpq conninfo or URL of the database to dump (PG* variables and
    /// ~/.pgpass apply).
    #[arg(long, value_name = "CONNINFO")]
    pub dbname: Option<String>,
}

/// `coffer restore --dbname ...`
#[derive(Debug, Args)]
pub struct PgRestoreArgs {
    /// Restore the dump into this database (conninfo or URL) with pg_restore.
    #[arg(long, value_name = "CONNINFO")]
    pub dbname: Option<String>,
}

/// `coffer verify --restore-test ...`
#[derive(Debug, Args)]
pub struct PgDrillArgs {
    /// Restore this pg_dump snapshot into a scratch database and compare it
    /// with the facts recorded at backup time.
    #[arg(long, value_name = "SNAPSHOT")]
    pub restore_test: Option<String>,
}

pub fn backup(
    _vault: &Vault,
    _v: Verbosity,
    _job: &str,
    _tags: &[String],
    _a: &PgBackupArgs,
) -> Result<i32> {
    bail!("coffer backup pg is not available yet")
}

pub fn restore(
    _vault: &Vault,
    _v: Verbosity,
    _m: &Manifest,
    _identity: Option<&Path>,
    _a: &PgRestoreArgs,
) -> Result<i32> {
    bail!("restore --dbname is not available yet")
}

pub fn drill(
    _vault: &Vault,
    _v: Verbosity,
    _identity: Option<&Path>,
    _a: &PgDrillArgs,
) -> Result<i32> {
    bail!("verify --restore-test is not available yet")
}
