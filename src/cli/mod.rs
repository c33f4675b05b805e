//! Command-line parsing (clap). Options map onto library types; each
//! command's handler merges flags with the settings, calls the library, and
//! renders the report as text or `--json`.

pub mod output;
pub mod pg;
pub mod run;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  the operation failed; nothing was committed
  2  bad usage or configuration
  3  backup committed locally, offsite copy pending
  4  data missing or corrupt (restore aborted, or verify found damage)
  5  a key is missing or does not open the vault

Environment: COFFER_CONFIG (settings file), COFFER_IDENTITY (identity file
for commands that decrypt), BACKUP_DIRECTORY (default local vault for init),
AWS_* (S3 credentials, standard chain), PG* and ~/.pgpass (PostgreSQL),
COFFER_PG_BINDIR / COFFER_PG_DUMP / COFFER_PG_DUMPALL / COFFER_PG_RESTORE /
COFFER_PSQL (which PostgreSQL client programs to run).";

/// coffer: an encrypted, deduplicating offsite vault for PostgreSQL backups.
#[derive(Debug, Parser)]
#[command(name = "coffer", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Settings file [default: $COFFER_CONFIG, else ~/.config/coffer/config.toml].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print machine-readable JSON on stdout (see docs/cli.md for the fields).
    #[arg(long, global = true)]
    pub json: bool,
    /// Log each step (packs sealed and stored, manifest, commit) to stderr.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Print only results and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a vault: keys, a local tier and this host's settings.
    Init(InitArgs),
    /// Back up a file, stdin (-) or a directory (stored as a tar stream).
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// Restore a snapshot to a file, stdout, or a directory tree.
    Restore(RestoreArgs),
    /// Check every pack (and with --read-data every chunk) for damage.
    Verify(VerifyArgs),
    /// Copy what is pending to every tier (offsite uploads) and repair any
    /// tier from another, byte for byte. Safe to interrupt and re-run.
    Sync,
    /// Per tier: snapshots complete, packs and bytes pending, age of the
    /// newest complete snapshot.
    Status,
    /// Catalog maintenance.
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
}

/// `coffer init`
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory of the local tier [default: $BACKUP_DIRECTORY, else ~/.local/share/coffer/vault].
    #[arg(long, value_name = "DIR")]
    pub local: Option<PathBuf>,
    /// Seal to this age recipient (age1...) instead of generating an
    /// identity here; repeat for several (e.g. an ops key and an escrow key).
    #[arg(long = "recipient", value_name = "R")]
    pub recipients: Vec<String>,
    /// Offsite tier: an S3 bucket (and prefix). If it already holds a
    /// vault, attach to it (needs --identity): a new host, or disaster recovery.
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    pub s3: Option<String>,
    /// Endpoint of an S3-compatible store (MinIO, Ceph, Garage, SeaweedFS, R2, B2).
    #[arg(long, value_name = "URL", requires = "s3")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: from the AWS environment or profile, else us-east-1].
    #[arg(long, value_name = "REGION", requires = "s3")]
    pub s3_region: Option<String>,
    /// Storage class for objects (e.g. STANDARD_IA).
    #[arg(long, value_name = "CLASS", requires = "s3")]
    pub s3_storage_class: Option<String>,
    /// S3 Object Lock mode for every object: governance or compliance
    /// (the bucket must have Object Lock enabled).
    #[arg(long, value_name = "MODE", requires_all = ["s3", "s3_object_lock_days"])]
    pub s3_object_lock: Option<String>,
    /// Object Lock retention in days.
    #[arg(long, value_name = "DAYS", requires = "s3_object_lock")]
    pub s3_object_lock_days: Option<u32>,
    /// Identity file, to attach to an existing vault found in S3.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// zstd level for new data (1-19; higher is smaller and slower). Fixed
    /// in the vault config; see docs/performance.md for the trade-off.
    #[arg(long, value_name = "N", default_value_t = vault_format::pack::PackParams::default().zstd_level,
          value_parser = clap::value_parser!(i32).range(1..=19))]
    pub zstd_level: i32,
}

/// `coffer backup`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BackupArgs {
    /// Job name, used to group snapshots and select `latest`.
    #[arg(long, default_value = "default", global = true)]
    pub job: String,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "T", global = true)]
    pub tags: Vec<String>,
    /// A file, `-` for stdin, or a directory (archived as tar).
    #[arg(value_name = "PATH|-", required = true)]
    pub path: Option<String>,
    #[command(subcommand)]
    pub source: Option<BackupSource>,
}

/// Sources with their own options.
#[derive(Debug, Subcommand)]
pub enum BackupSource {
    /// Dump a PostgreSQL database (pg_dump -Fc -Z0 over an exported
    /// snapshot) and its cluster globals into the vault.
    Pg(pg::PgBackupArgs),
}

/// `coffer snapshots`
#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// Only this job's snapshots.
    #[arg(long)]
    pub job: Option<String>,
}

/// `coffer restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id, a unique prefix of it, or `latest`.
    pub snapshot: String,
    /// With `latest`: the newest snapshot of this job.
    #[arg(long)]
    pub job: Option<String>,
    /// Read only from this tier (`local` or `s3`) [default: local first,
    /// falling back per pack to the next tier].
    #[arg(long, value_name = "TIER")]
    pub tier: Option<String>,
    /// Where to: a new file, a new or empty directory (directory
    /// snapshots), or `-` for stdout [default: stdout when it is not a terminal].
    #[arg(long, value_name = "PATH|-")]
    pub to: Option<String>,
    /// The age identity file [default: $COFFER_IDENTITY, else the one init wrote].
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Restore a pg_dump snapshot into a database instead (see docs/postgres.md).
    #[command(flatten)]
    pub pg: pg::PgRestoreArgs,
}

/// `coffer verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also decrypt every pack and check every chunk's keyed hash (needs the identity).
    #[arg(long)]
    pub read_data: bool,
    /// The age identity file (with --read-data or --restore-test).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Restore drill of a pg_dump snapshot (see docs/postgres.md).
    #[command(flatten)]
    pub drill: pg::PgDrillArgs,
}

/// `coffer index ...`
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Recreate the catalog from a tier (needs the identity).
    Rebuild {
        /// The age identity file.
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// The tier to rebuild from (`local` or `s3`).
        #[arg(long, value_name = "TIER", default_value = "local")]
        tier: String,
    },
}
