//! `coffer wal push|fetch|upload|verify` (and the hidden `prefetch` the
//! fetch starts).

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use coffer::commands::wal::{self, FetchOptions};
use coffer::wal::fetch::Fetched;
use coffer::wal::push::PushReport;
use coffer::wal::upload::UploadReport;
use coffer::wal::verify::WalReport;
use serde::Serialize;

use super::output::{bytes, note, out, render, with_progress, Render, Verbosity};
use super::Ctx;

/// What `wal fetch` exits with when the file is damaged everywhere or a
/// tier cannot be asked: above 125, so PostgreSQL stops recovery instead
/// of ending it early as if the archive ended there.
const FETCH_FATAL: i32 = 128;

/// `coffer wal ...`
#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Archive one WAL file: `archive_command = 'coffer wal push --job J %p'`.
    /// Exits 0 once the file is fsynced in the local tier (or was archived
    /// before with the same content); non-zero otherwise, so PostgreSQL
    /// retries. With an S3 tier, a background uploader sends batches.
    Push {
        /// The job: one per cluster; base backups of the cluster use it too.
        #[arg(long)]
        job: String,
        /// The WAL file (%p).
        path: PathBuf,
    },
    /// Fetch one WAL file: `restore_command = 'coffer wal fetch --job J
    /// --identity FILE %f %p'` (`coffer restore pitr` writes it). Exits 1
    /// when no tier has the file, 128 when it is damaged everywhere or a
    /// tier cannot be asked.
    Fetch {
        /// The job.
        #[arg(long)]
        job: String,
        /// The age identity file [default: $COFFER_IDENTITY, else the one init wrote].
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Where WAL fetched ahead waits [default: .coffer-spool beside %p].
        #[arg(long, value_name = "DIR")]
        spool: Option<PathBuf>,
        /// The WAL file name (%f).
        name: String,
        /// Where PostgreSQL wants it (%p).
        dest: PathBuf,
    },
    /// Upload every WAL file waiting for the offsite tier now (`coffer
    /// sync` does this too).
    Upload {
        /// Only this job's.
        #[arg(long)]
        job: Option<String>,
        /// Run as the background uploader: only if none runs, uploading
        /// each batch when it is due, until nothing waits.
        #[arg(long, hide = true)]
        background: bool,
    },
    /// Check the archive: gaps per timeline from the oldest base backup,
    /// base backups whose WAL is incomplete, offsite lag. Exits 4 on a gap
    /// or an incomplete base backup.
    Verify {
        /// Only this job.
        #[arg(long)]
        job: Option<String>,
    },
    /// Decrypt the segments after one into the spool (started by fetch).
    #[command(hide = true)]
    Prefetch {
        #[arg(long)]
        job: String,
        #[arg(long)]
        identity: Option<PathBuf>,
        #[arg(long)]
        spool: PathBuf,
        #[arg(long)]
        segment_size: u64,
        after: String,
    },
}

pub fn run(ctx: &Ctx, c: WalCommand) -> Result<i32> {
    match c {
        WalCommand::Push { job, path } => {
            let vault = ctx.vault()?;
            let rep = with_progress(ctx.v, "archiving", |p| wal::push(&vault, &job, &path, p))?;
            Ok(render(ctx.v, &rep))
        }
        WalCommand::Fetch {
            job,
            identity,
            spool,
            name,
            dest,
        } => {
            let opts = FetchOptions {
                job,
                identity,
                spool,
            };
            let got = ctx
                .vault()
                .and_then(|v| Ok(wal::fetch(&v, &opts, &name, &dest)?));
            match got {
                Ok(Fetched::Delivered { from, .. }) => {
                    note(ctx.v, &format!("coffer: {name} from {from}"));
                    Ok(0)
                }
                // Quiet: PostgreSQL asks for files that do not exist.
                Ok(Fetched::Missing) => Ok(1),
                Err(e) => {
                    eprintln!("coffer: error: {e:#}; recovery must stop here");
                    Ok(FETCH_FATAL)
                }
            }
        }
        WalCommand::Prefetch {
            job,
            identity,
            spool,
            segment_size,
            after,
        } => {
            let opts = FetchOptions {
                job,
                identity,
                spool: Some(spool),
            };
            wal::prefetch(&ctx.vault()?, &opts, &after, segment_size)?;
            Ok(0)
        }
        WalCommand::Upload { job, background } => {
            let vault = ctx.vault()?;
            let r = wal::upload(&vault, job.as_deref(), background)?;
            Ok(render(ctx.v, &r))
        }
        WalCommand::Verify { job } => {
            let vault = ctx.vault()?;
            Ok(render(
                ctx.v,
                &Verified(wal::verify(&vault, job.as_deref())?),
            ))
        }
    }
}

impl Render for PushReport {
    fn text(&self, v: Verbosity) {
        let what = if self.stored {
            format!("archived ({} stored)", bytes(self.stored_size))
        } else {
            "already archived with the same content".into()
        };
        note(
            v,
            &format!("coffer: {} of job {}: {what}", self.name, self.job),
        );
    }
}

impl Render for UploadReport {
    fn status(&self) -> i32 {
        if self.problems.is_empty() {
            0
        } else {
            coffer::error::exit::OFFSITE_PENDING
        }
    }

    fn text(&self, v: Verbosity) {
        for p in &self.problems {
            eprintln!("coffer: {p}");
        }
        note(
            v,
            &format!(
                "coffer: uploaded {} WAL file(s) in {} batch(es), {}; {} waiting",
                self.files,
                self.batches,
                bytes(self.bytes),
                self.pending
            ),
        );
    }
}

#[derive(Serialize)]
#[serde(transparent)]
struct Verified(Vec<WalReport>);

impl Render for Verified {
    fn text(&self, _: Verbosity) {
        if self.0.is_empty() {
            out("no WAL archived yet (archive_command = 'coffer wal push --job <job> %p')");
        }
        for r in &self.0 {
            out(&format!(
                "job {}: {} WAL file(s), {} stored, newest pushed {}, cluster {}",
                r.job,
                r.files,
                bytes(r.stored_bytes),
                r.last_push.as_deref().unwrap_or("-"),
                r.system_identifier.as_deref().unwrap_or("-")
            ));
            for t in &r.timelines {
                out(&format!(
                    "  timeline {}: {} .. {} ({} segments){}",
                    t.timeline,
                    t.first,
                    t.last,
                    t.segments,
                    if t.gaps.is_empty() { "" } else { ": GAPS" }
                ));
                for (a, b) in &t.gaps {
                    out(&format!("    missing {a} .. {b}"));
                }
            }
            for b in &r.base_backups {
                out(&format!(
                    "  base backup {} ({} .. {}, ended {}): {}",
                    &b.snapshot[..16.min(b.snapshot.len())],
                    b.start_lsn,
                    b.stop_lsn,
                    b.stopped_at,
                    if b.complete {
                        "complete".to_string()
                    } else {
                        format!("INCOMPLETE, missing {}", b.missing.join(", "))
                    }
                ));
            }
            if r.offsite_pending > 0 {
                out(&format!(
                    "  offsite: {} file(s) waiting since {}",
                    r.offsite_pending,
                    r.offsite_oldest_pending.as_deref().unwrap_or("-")
                ));
            }
        }
    }

    fn status(&self) -> i32 {
        if self.0.iter().any(WalReport::damaged) {
            coffer::error::exit::INTEGRITY
        } else {
            0
        }
    }
}
