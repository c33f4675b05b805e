//! `coffer restore pitr`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{ArgGroup, Args};
use coffer::commands::pitr::{self, PitrOptions, PitrReport, RecoveryTarget};

use super::output::{bytes, note, out, render, with_progress, Render, Verbosity};
use super::Ctx;

/// `coffer restore pitr`
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("recovery_target").required(true).args(
    ["target_time", "target_lsn", "target_xid", "target_name", "target"])))]
pub struct PitrArgs {
    /// The job whose base backups and WAL to use.
    #[arg(long)]
    pub job: String,
    /// The new data directory (must not exist or be empty).
    #[arg(long, value_name = "DATADIR")]
    pub to: PathBuf,
    /// Stop at this time, as recovery_target_time takes it (with its
    /// offset, e.g. "2026-01-15 14:30:00+00", or now() output from psql).
    #[arg(long, value_name = "TIME")]
    pub target_time: Option<String>,
    /// Stop at this LSN (e.g. 0/3000148).
    #[arg(long, value_name = "LSN")]
    pub target_lsn: Option<String>,
    /// Stop at this transaction id.
    #[arg(long, value_name = "XID")]
    pub target_xid: Option<String>,
    /// Stop at this restore point (pg_create_restore_point).
    #[arg(long, value_name = "NAME")]
    pub target_name: Option<String>,
    /// `immediate`: stop as soon as the base backup is consistent;
    /// `latest`: replay all the archived WAL (recover to the end of the
    /// archive: the usual choice after losing the server).
    #[arg(long, value_parser = ["immediate", "latest"])]
    pub target: Option<String>,
    /// What the server does at the target: pause (inspect, then promote
    /// with pg_wal_replay_resume()), promote, or shutdown.
    #[arg(long, default_value = "pause", value_parser = ["pause", "promote", "shutdown"])]
    pub target_action: String,
    /// The timeline to recover along: latest, current, or a number.
    #[arg(long, default_value = "latest")]
    pub timeline: String,
    /// Use this base backup (id or prefix) instead of the newest complete
    /// one before the target (needed for an xid or a restore point older
    /// than the newest base backup).
    #[arg(long, value_name = "ID")]
    pub snapshot: Option<String>,
    /// The age identity file, also written into restore_command [default:
    /// $COFFER_IDENTITY, else the one init wrote].
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// As root: the user to own the data directory [default: the owner of
    /// its parent directory, else postgres].
    #[arg(long, value_name = "USER")]
    pub owner: Option<String>,
    /// Restore the tablespace that was at OLDDIR into NEWDIR instead
    /// (repeatable; as pg_basebackup's --tablespace-mapping). A tablespace
    /// not mapped goes back to its original directory, which must not
    /// exist or be empty.
    #[arg(long, value_name = "OLDDIR=NEWDIR")]
    pub tablespace_mapping: Vec<String>,
}

pub fn run(ctx: &Ctx, a: PitrArgs) -> Result<i32> {
    let target = if let Some(t) = &a.target_time {
        RecoveryTarget::time(t)?
    } else if let Some(l) = &a.target_lsn {
        RecoveryTarget::Lsn(l.parse().map_err(|_| {
            coffer::Error::Config(format!(
                "--target-lsn {l:?} is not an LSN; write it as PostgreSQL prints one, e.g. 0/3000148"
            ))
        })?)
    } else if let Some(x) = &a.target_xid {
        RecoveryTarget::Xid(x.clone())
    } else if let Some(n) = &a.target_name {
        RecoveryTarget::Name(n.clone())
    } else if a.target.as_deref() == Some("latest") {
        RecoveryTarget::Latest
    } else {
        RecoveryTarget::Immediate
    };
    let mut tablespace_mapping = Vec::new();
    for m in &a.tablespace_mapping {
        let Some((old, new)) = m.split_once('=') else {
            return Err(coffer::Error::Config(format!(
                "--tablespace-mapping {m:?} is not OLDDIR=NEWDIR"
            ))
            .into());
        };
        tablespace_mapping.push((PathBuf::from(old), PathBuf::from(new)));
    }
    let vault = ctx.vault()?;
    let opts = PitrOptions {
        job: a.job,
        to: a.to,
        target,
        action: a.target_action,
        timeline: a.timeline,
        snapshot: a.snapshot,
        identity: a.identity,
        owner: a.owner,
        tablespace_mapping,
    };
    let rep = with_progress(ctx.v, "restoring", |p| pitr::restore_pitr(&vault, &opts, p))?;
    Ok(render(ctx.v, &rep))
}

impl Render for PitrReport {
    fn text(&self, v: Verbosity) {
        out(&self.data_dir.display().to_string());
        note(
            v,
            &format!(
                "coffer: restored base backup {} (ended {}, {}) into {}{}",
                self.snapshot,
                self.backup_stopped_at,
                bytes(self.restore.bytes),
                self.data_dir.display(),
                self.owner
                    .as_deref()
                    .map(|o| format!(", owned by {o}"))
                    .unwrap_or_default()
            ),
        );
        for t in &self.tablespaces {
            note(
                v,
                &format!(
                    "coffer:   tablespace {} (was {}) restored into {}",
                    t.oid,
                    t.was,
                    t.dir.display()
                ),
            );
        }
        for (k, val) in &self.settings {
            note(v, &format!("coffer:   {k} = '{val}'"));
        }
        note(
            v,
            &format!(
                "coffer: next: start the server on it (as its owner: pg_ctl -D {} start); it replays \
                 the archived WAL to the target; with the pause action, check the data, then run \
                 SELECT pg_wal_replay_resume(); to promote. Afterwards remove the recovery lines \
                 from postgresql.auto.conf and pg_wal/.coffer-spool.",
                self.data_dir.display()
            ),
        );
    }
}
