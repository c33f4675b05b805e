//! `coffer restore pitr`: a data directory that recovers to a point in
//! time, from a base backup and the WAL archive.
//!
//! 1. Pick the base backup: the newest *complete* one (every segment from
//!    its start to its stop archived) that ended before the target, or the
//!    one named with `--snapshot`. A target outside the archived window is
//!    refused, naming the window.
//! 2. Restore its tar into a new directory (mode 0700; as root, owned by
//!    the data directory's owner); its tablespaces into their original
//!    directories or their `--tablespace-mapping`, each new or empty, and
//!    linked from `pg_tblspc/`.
//! 3. Write `recovery.signal` and append the recovery settings to
//!    `postgresql.auto.conf`: `restore_command` runs `coffer wal fetch`
//!    with this settings file and identity.
//!
//! PostgreSQL does the replay when the operator starts the server; the
//! report says how.

mod tablespaces;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::restore::{restore, Target as RestoreTarget};
use crate::error::{Error, Result};
use crate::pg::basebackup::BaseFacts;
pub use crate::pg::recovery::RecoveryTarget;
use crate::pg::recovery::{shell_quote, write_recovery};
use crate::pipeline::restore::RestoreReport;
use crate::progress::Progress;
use crate::vault::Vault;
use crate::wal::verify::{base_backups, missing};
use tablespaces::Placed;
pub use tablespaces::RestoredTablespace;

/// What to recover.
#[derive(Debug, Clone)]
pub struct PitrOptions {
    /// The job (its base backups and its WAL).
    pub job: String,
    /// The new data directory.
    pub to: PathBuf,
    /// Where to stop.
    pub target: RecoveryTarget,
    /// `recovery_target_action`: pause, promote or shutdown.
    pub action: String,
    /// `recovery_target_timeline`: latest, current or a number.
    pub timeline: String,
    /// A base backup to use instead of the one coffer picks.
    pub snapshot: Option<String>,
    /// The identity file (also written into `restore_command`).
    pub identity: Option<PathBuf>,
    /// Who owns the data directory when running as root.
    pub owner: Option<String>,
    /// Tablespace directories: (original, new).
    pub tablespace_mapping: Vec<(PathBuf, PathBuf)>,
}

/// What `restore pitr` did.
#[derive(Debug, Clone, Serialize)]
pub struct PitrReport {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The base backup used.
    pub snapshot: String,
    /// When it ended.
    pub backup_stopped_at: String,
    /// The WAL the archive holds after it (newest push, RFC 3339).
    pub archive_ends: Option<String>,
    /// The settings written to postgresql.auto.conf.
    pub settings: Vec<(String, String)>,
    /// The owner the directory was given, when root.
    pub owner: Option<String>,
    /// The tablespaces outside the data directory.
    pub tablespaces: Vec<RestoredTablespace>,
    /// The base backup's restore.
    pub restore: RestoreReport,
}

/// Restores a base backup and configures recovery to the target.
///
/// # Errors
/// [`Error::Config`] for a target outside the archived window, a missing
/// or incomplete base backup, or a non-empty target directory; restore
/// errors otherwise.
pub fn restore_pitr(
    vault: &Vault,
    opts: &PitrOptions,
    progress: &dyn Progress,
) -> Result<PitrReport> {
    let catalog = vault.catalog()?;
    let (_, key) = vault.identity(opts.identity.as_deref(), "restore pitr")?;
    let archive = crate::wal::Archive::new(key.wal_key(), &opts.job);
    let files = catalog.wal_files(Some(&opts.job))?;
    let archived = crate::wal::verify::archived_names(vault, &files, &archive)?;
    let last_push = files.iter().map(|w| w.pushed.clone()).max();
    let bases = base_backups(&catalog, &opts.job)?;
    if bases.is_empty() {
        return Err(Error::Config(format!(
            "job {} has no physical base backup; take one with `coffer backup pg --physical --job {}`",
            opts.job, opts.job
        )));
    }
    // A base backup of another cluster than the one whose WAL the job
    // archives could never replay it.
    let system = catalog
        .wal_system(&opts.job)?
        .map(|s| s.system_identifier.to_string());
    let complete: Vec<&(String, BaseFacts)> = bases
        .iter()
        .filter(|(_, f)| missing(&f.needed_segments(), &archived).is_empty())
        .filter(|(_, f)| system.as_ref().is_none_or(|s| *s == f.system_identifier))
        .collect();
    let (id, facts) = choose(opts, &bases, &complete, last_push.as_deref())?;
    if let RecoveryTarget::Time(t, s) = &opts.target {
        if let Some(gap) = gap_before(facts, &files, &archived, *t) {
            return Err(Error::Config(format!(
                "--target-time {s} cannot be reached from base backup {id}: WAL segment {gap} \
                 after it is not archived (WAL retention keeps only an older base backup's own \
                 range); `coffer wal verify --job {}` shows what is",
                opts.job
            )));
        }
    }
    let owner = intended_owner(&opts.to, opts.owner.as_deref())?;
    let manifest = super::restore::find(vault, id, Some(&opts.job))?;
    let ctx = super::read_context(vault, opts.identity.as_deref(), "restore pitr")?;
    let tablespaces = Placed::prepare(facts, opts)?;
    let rep = match restore(
        vault,
        &ctx,
        &manifest,
        &RestoreTarget::DataDir(opts.to.clone(), tablespaces.map()),
        progress,
    ) {
        Ok(rep) => rep,
        Err(e) => {
            // Nothing half-restored is left: the data directory's
            // temporary is gone already; the tablespaces' files go too.
            tablespaces.undo();
            return Err(e);
        }
    };
    let out = |io| Error::Output {
        what: opts.to.display().to_string(),
        io,
    };
    std::fs::set_permissions(&opts.to, std::fs::Permissions::from_mode(0o700)).map_err(out)?;
    let settings = recovery_settings(vault, opts)?;
    write_recovery(&opts.to, &settings, id).map_err(out)?;
    if let Some((_, uid, gid)) = &owner {
        chown_tree(&opts.to, *uid, *gid).map_err(out)?;
        for t in &tablespaces.list {
            chown_tree(&t.dir, *uid, *gid).map_err(out)?;
        }
    }
    Ok(PitrReport {
        data_dir: opts.to.clone(),
        snapshot: id.to_string(),
        backup_stopped_at: facts.stopped_at.clone(),
        archive_ends: last_push,
        settings,
        owner: owner.map(|(name, _, _)| name),
        tablespaces: tablespaces.list,
        restore: rep,
    })
}

/// The base backup for the target (see the module docs).
fn choose<'a>(
    opts: &PitrOptions,
    bases: &'a [(String, BaseFacts)],
    complete: &[&'a (String, BaseFacts)],
    last_push: Option<&str>,
) -> Result<(&'a str, &'a BaseFacts)> {
    if let Some(want) = &opts.snapshot {
        let (id, f) = bases
            .iter()
            .find(|(id, _)| id.starts_with(want.as_str()))
            .ok_or_else(|| {
                Error::Config(format!(
                    "{want} is not a base backup of job {}; list them with `coffer snapshots --job {}`",
                    opts.job, opts.job
                ))
            })?;
        if !complete.iter().any(|(c, _)| c == id) {
            return Err(Error::Config(format!(
                "base backup {id} is incomplete: WAL it needs is not archived (`coffer wal verify --job {}` names it)",
                opts.job
            )));
        }
        return Ok((id, f));
    }
    let Some(first) = complete.first() else {
        return Err(Error::Config(format!(
            "no base backup of job {} is complete: the WAL from their start to their stop is not \
             all archived; check archive_command and `coffer wal verify --job {}`",
            opts.job, opts.job
        )));
    };
    let newest = complete[complete.len() - 1];
    let window = || {
        format!(
            "the archive of job {} covers {} (end of the oldest complete base backup) to {} (the newest WAL pushed)",
            opts.job,
            first.1.stopped_at,
            last_push.unwrap_or("(no WAL pushed)")
        )
    };
    let pick = match &opts.target {
        RecoveryTarget::Time(t, s) => {
            let ends = |f: &BaseFacts| {
                crate::util::parse_time(&f.stopped_at).map(jiff::Timestamp::try_from)
            };
            let before: Vec<_> = complete
                .iter()
                .filter(|(_, f)| matches!(ends(f), Some(Ok(e)) if e < *t))
                .collect();
            let Some(b) = before.last() else {
                return Err(Error::Config(format!(
                    "--target-time {s} is before the archived window: {}",
                    window()
                )));
            };
            // Unknown (a rebuilt catalog knows no pushes): PostgreSQL says
            // so if the archive ends before the target.
            let after_end = last_push
                .and_then(crate::util::parse_time)
                .and_then(|e| jiff::Timestamp::try_from(e).ok())
                .is_some_and(|e| *t > e);
            if after_end {
                return Err(Error::Config(format!(
                    "--target-time {s} is after the archived window: {}; WAL written after it \
                     is not in the vault yet",
                    window()
                )));
            }
            **b
        }
        RecoveryTarget::Lsn(l) => {
            let b = complete
                .iter()
                .rfind(|(_, f)| f.stop().is_some_and(|s| s <= *l))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "--target-lsn {l} is before the archived window: the oldest complete base \
                         backup of job {} ends at {}",
                        opts.job, first.1.stop_lsn
                    ))
                })?;
            *b
        }
        // Where an xid or a restore point lies is only known to the WAL:
        // the newest complete backup, or --snapshot for an older one.
        _ => newest,
    };
    Ok((&pick.0, &pick.1))
}

/// The first segment missing between the base backup's start and the
/// first segment pushed at or after `target` (it holds the target's
/// commits), on any timeline; `None` when replay can get there or the
/// catalog does not know when files were pushed.
fn gap_before(
    base: &BaseFacts,
    files: &[crate::catalog::WalRecord],
    archived: &std::collections::BTreeSet<String>,
    target: jiff::Timestamp,
) -> Option<String> {
    use vault_format::wal::{SegmentName, WalFile};
    let seg = base.segment_size.max(1);
    let from = base.start()?.0 / seg;
    let to = files
        .iter()
        .filter(|w| {
            crate::util::parse_time(&w.pushed)
                .and_then(|p| jiff::Timestamp::try_from(p).ok())
                .is_some_and(|p| p >= target)
        })
        .filter_map(|w| match WalFile::parse(&w.name) {
            Ok(WalFile::Segment(s)) => Some(s.segno(seg)),
            _ => None,
        })
        .min()?;
    let held: std::collections::BTreeSet<u64> = archived
        .iter()
        .filter_map(|n| match WalFile::parse(n) {
            Ok(WalFile::Segment(s) | WalFile::Partial(s)) => Some(s.segno(seg)),
            _ => None,
        })
        .collect();
    (from..=to)
        .find(|n| !held.contains(n))
        .map(|n| SegmentName::from_segno(base.timeline, n, seg).to_string())
}

/// `restore_command` and the target, as `(name, value)`.
fn recovery_settings(vault: &Vault, opts: &PitrOptions) -> Result<Vec<(String, String)>> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Config(format!("cannot find the coffer program: {e}")))?;
    let config = std::path::absolute(&vault.settings_path).unwrap_or(vault.settings_path.clone());
    let identity = crate::vault::keyfiles::identity_path(
        opts.identity.as_deref(),
        vault.settings.identity.as_deref(),
    );
    let mut cmd = format!(
        "{} --config {} --quiet wal fetch --job {}",
        shell_quote(&exe.to_string_lossy()),
        shell_quote(&config.to_string_lossy()),
        shell_quote(&opts.job)
    );
    if let Some(id) = identity {
        let id = std::path::absolute(&id).unwrap_or(id);
        cmd.push_str(&format!(
            " --identity {}",
            shell_quote(&id.to_string_lossy())
        ));
    }
    // restore_command expands %-escapes: a literal % in a path is %%.
    let mut cmd = cmd.replace('%', "%%");
    cmd.push_str(" %f %p");
    let mut s = vec![("restore_command".to_string(), cmd)];
    s.extend(opts.target.settings());
    s.push(("recovery_target_action".into(), opts.action.clone()));
    s.push(("recovery_target_timeline".into(), opts.timeline.clone()));
    Ok(s)
}

/// As root, the data directory's intended owner: `--owner`, else the
/// owner of the directory it goes in (when not root), else `postgres`.
/// PostgreSQL refuses a data directory it does not own. Decided before
/// anything is restored, so a wrong `--owner` costs nothing.
fn intended_owner(dir: &Path, owner: Option<&str>) -> Result<Option<(String, u32, u32)>> {
    use std::os::unix::fs::MetadataExt;
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    if let Some(o) = owner {
        let (uid, gid) = crate::util::user_ids(o).ok_or_else(|| {
            Error::Config(format!(
                "there is no user {o:?} on this host; give --owner an existing user"
            ))
        })?;
        return Ok(Some((o.to_string(), uid, gid)));
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Some(m) = std::fs::metadata(parent).ok().filter(|m| m.uid() != 0) {
        return Ok(Some((format!("uid {}", m.uid()), m.uid(), m.gid())));
    }
    Ok(crate::util::user_ids("postgres").map(|(u, g)| ("postgres".to_string(), u, g)))
}

fn chown_tree(p: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(p)?.is_dir() {
        for e in std::fs::read_dir(p)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}
