//! Command-line parsing (clap) and one small handler per command, in the
//! command's own file: it merges flags with the settings, calls the
//! library (`coffer::commands`), and renders the report as text or `--json`
//! ([`output::Render`]). Nothing here decides policy or touches a tier or
//! the catalog directly.

mod backup;
mod daemon;
mod forget;
mod health;
mod index;
mod init;
mod metrics;
mod output;
mod pitr;
mod prune;
mod restore;
mod run;
mod snapshots;
mod sync;
mod verify;
mod wal;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use coffer::vault::settings;
use coffer::Vault;

use output::Verbosity;

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  the operation failed; nothing was committed
  2  bad usage or configuration
  3  done locally, a tier pending (offsite copy, or a deletion; run sync)
  4  data missing or corrupt (restore aborted, or verify found damage)
  5  a key is missing or does not open the vault
  `wal fetch` (restore_command): 1 the WAL file is in no tier; 128 it is
  damaged everywhere or a tier cannot be asked (PostgreSQL stops recovery)

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
    Init(init::InitArgs),
    /// Back up a file, stdin (-), a directory (stored as a tar stream) or
    /// a command's output (--exec -- CMD ARGS…).
    Backup(backup::BackupArgs),
    /// Run the jobs of the settings once: the named ones, or every one that
    /// is due (for cron and systemd timers; docs/operations.md).
    Run(run::RunArgs),
    /// Run the jobs' schedule until SIGTERM: each due job as `coffer run
    /// JOB`, failures retried with backoff, /metrics served when
    /// [daemon] metrics-address is set (docs/operations.md).
    Daemon(daemon::DaemonArgs),
    /// List the catalog's runs (backups, restores, verifies, …), newest
    /// first, with size, duration, outcome and error.
    Runs(run::RunsArgs),
    /// Is everything as it should be? Monitoring-plugin statuses: 0 OK,
    /// 1 WARNING, 2 CRITICAL, 3 UNKNOWN; one problem a line
    /// (docs/operations.md).
    Health,
    /// Prometheus metrics (text exposition format) of backups, tiers,
    /// verification, drills and WAL, on stdout or --textfile PATH.
    Metrics(metrics::MetricsArgs),
    /// List snapshots.
    Snapshots(snapshots::SnapshotsArgs),
    /// Restore a snapshot to a file, stdout, or a directory tree.
    Restore(restore::RestoreArgs),
    /// Check every pack (and with --read-data every chunk) for damage.
    Verify(verify::VerifyArgs),
    /// Copy what is pending to every tier (offsite uploads) and repair any
    /// tier from another, byte for byte; learn other hosts' snapshots from
    /// the offsite tier (with the identity). Safe to interrupt and re-run.
    Sync(sync::SyncArgs),
    /// Per tier: snapshots complete, packs and bytes pending, age of the
    /// newest complete snapshot, when the tier was last listed. From the
    /// catalog; --check lists every tier first.
    Status(sync::StatusArgs),
    /// Forget snapshots by the jobs' retention policies (or by id): their
    /// manifests are deleted from every tier; `coffer prune` then reclaims
    /// the space. Pinned snapshots and the newest of each job are kept.
    Forget(forget::ForgetArgs),
    /// Reclaim space no kept snapshot needs: condemn unneeded packs, repack
    /// sparse ones, delete what was condemned longer ago than the grace
    /// period (needs the identity; see docs/retention.md).
    Prune(prune::PruneArgs),
    /// Pin a snapshot: no host forgets it until it is unpinned.
    Pin(forget::PinArgs),
    /// Remove a snapshot's pin.
    Unpin(forget::UnpinArgs),
    /// The WAL archive: `archive_command` (push), `restore_command`
    /// (fetch), offsite upload and gap checks (docs/postgres.md).
    Wal {
        #[command(subcommand)]
        command: wal::WalCommand,
    },
    /// Catalog maintenance.
    Index {
        #[command(subcommand)]
        command: index::IndexCommand,
    },
}

/// What every handler gets: how to print, and where the settings are.
pub struct Ctx {
    pub v: Verbosity,
    /// The settings file to use.
    pub settings_path: PathBuf,
    /// True when it was named (`--config` or `COFFER_CONFIG`), not found by
    /// default: the quick start only creates a vault where coffer looks by
    /// default.
    pub explicit: bool,
}

impl Ctx {
    /// Opens the vault the settings describe.
    pub fn vault(&self) -> Result<Vault> {
        Ok(Vault::open(&self.settings_path)?)
    }
}

/// Runs the parsed command; returns the exit status for outcomes that are
/// not errors but not plain success either (e.g. verify found damage).
pub fn run(cli: Cli) -> Result<i32> {
    let ctx = Ctx {
        v: Verbosity {
            json: cli.json,
            verbose: cli.verbose,
            quiet: cli.quiet,
        },
        explicit: cli.config.is_some()
            || std::env::var_os("COFFER_CONFIG").is_some_and(|c| !c.is_empty()),
        settings_path: settings::settings_path(cli.config.as_deref()),
    };
    match cli.command {
        Command::Init(a) => init::run(&ctx, a),
        Command::Backup(a) => backup::run(&ctx, a),
        Command::Run(a) => run::run(&ctx, a),
        Command::Runs(a) => run::runs(&ctx, a),
        Command::Daemon(a) => daemon::run(&ctx, a),
        Command::Health => health::run(&ctx),
        Command::Metrics(a) => metrics::run(&ctx, a),
        Command::Snapshots(a) => snapshots::run(&ctx, a),
        Command::Restore(a) => restore::run(&ctx, a),
        Command::Verify(a) => verify::run(&ctx, a),
        Command::Sync(a) => sync::sync(&ctx, &a),
        Command::Status(a) => sync::status(&ctx, &a),
        Command::Forget(a) => forget::forget(&ctx, a),
        Command::Prune(a) => prune::run(&ctx, a),
        Command::Pin(a) => forget::pin(&ctx, a),
        Command::Unpin(a) => forget::unpin(&ctx, a),
        Command::Wal { command } => wal::run(&ctx, command),
        Command::Index { command } => index::run(&ctx, command),
    }
}
