//! `coffer sync` and `coffer status`: replicate and report per tier.

use crate::catalog::{Outcome, RunKind, RunSummary};
use crate::deletion::pending;
use crate::error::Result;
use crate::progress::{Event, Progress};
use crate::replicate::{self, SyncReport, TierStatus};
use crate::vault::Vault;

/// Brings every tier up to date from the others (uploads what is pending
/// offsite, repairs a damaged or missing local copy from S3). Safe to
/// interrupt and run again; records the run.
///
/// # Errors
/// Catalog errors; a tier that cannot be listed is reported in its report.
pub fn sync(
    vault: &mut Vault,
    opts: &SyncOptions,
    progress: &dyn Progress,
) -> Result<Vec<SyncReport>> {
    let all = opts.all;
    // A lost local tier is recreated only when asked: an empty directory
    // may be a disk that is not mounted, and filling it from S3 would put
    // the vault on the wrong disk (and hide it when the disk is mounted).
    if opts.recreate_local && vault.recreate_local()? {
        progress.event(&Event::Warning(format!(
            "the local tier was lost: recreated it at {} from the s3 tier; copying its packs back",
            vault.settings.local.path.display()
        )));
    }
    let vault = &*vault;
    let catalog = vault.catalog()?;
    let tiers = vault.tiers();
    let reports =
        catalog.record_run(RunKind::Sync, None, None, |_| -> Result<SyncRun> {
            // Deletions decided earlier (forget, prune) that a tier missed.
            let deleted = pending::run(&catalog, &tiers, |_| true, progress)?;
            let learned = learn(vault, progress);
            let own = own_scope_known(&catalog, &tiers[0])?;
            let mut out = Vec::new();
            for i in 0..tiers.len() {
                if i == 0 && vault.local_lost {
                    out.push(SyncReport {
                        tier: tiers[0].name().to_string(),
                        problems: vec![format!(
                            "tier local is lost (no vault at {}): mount it if it is a disk that is not mounted, else `coffer sync --recreate-local` recreates it from the s3 tier",
                            vault.settings.local.path.display()
                        )],
                        ..Default::default()
                    });
                    continue;
                }
                let scope = if i == 0 && !all && own {
                    replicate::Scope::Own
                } else {
                    replicate::Scope::All
                };
                let mut r = match replicate::sync_scoped(&catalog, &tiers, i, scope, progress) {
                    Ok(r) => r,
                    Err(e) => SyncReport {
                        tier: tiers[i].name().to_string(),
                        problems: vec![e.to_string()],
                        ..Default::default()
                    },
                };
                if let Some((snapshots, packs)) = learned.get(&r.tier) {
                    r.snapshots_learned = *snapshots;
                    r.packs_learned = *packs;
                }
                if let Some(d) = deleted.iter().find(|d| d.tier == r.tier) {
                    r.objects_deleted = d.deleted;
                    r.deletions_retained = d.retained.len() as u64;
                    r.problems.extend(d.failed.iter().map(|(k, why)| {
                        format!("{k} could not be deleted from {}: {why}", r.tier)
                    }));
                }
                if i > 0 {
                    // Everything `wal push` stored and no batch holds yet.
                    match crate::wal::upload::upload(vault, None, true) {
                        Ok(w) => {
                            r.wal_files_copied = w.files as u64;
                            r.bytes_copied += w.bytes;
                            r.problems.extend(w.problems);
                        }
                        Err(e) => r.problems.push(format!("WAL upload: {e}")),
                    }
                }
                out.push(r);
            }
            Ok(SyncRun(out))
        })?;
    Ok(reports.0)
}

/// Learns what other hosts stored in the offsite tiers: their snapshots
/// and the chunk index of their packs, so that this host lists them,
/// restores them, verifies them and (once a pack is in its local tier)
/// deduplicates against them. Only new objects are opened (a listing, then
/// the manifest and the pack index of what the catalog does not know), so
/// it is cheap when nothing changed. Needs the identity (manifests and
/// pack indexes are sealed): a host with the push key alone learns
/// nothing. A failure is a warning: sync goes on.
fn learn(vault: &Vault, progress: &dyn Progress) -> std::collections::HashMap<String, (u64, u64)> {
    let mut out = std::collections::HashMap::new();
    let configured =
        crate::vault::keyfiles::identity_path(None, vault.settings.identity.as_deref());
    // No identity here (a database host holds only the push key), or it is
    // kept offline as it should be: nothing to learn with, and nothing to
    // warn about on every sync.
    if !configured.is_some_and(|p| p.exists()) {
        return out;
    }
    let identity = match vault.identity(None, "learning other hosts' snapshots") {
        Ok((identity, _)) => identity,
        Err(e) => {
            progress.event(&Event::Warning(format!(
                "other hosts' snapshots were not learned: {e}"
            )));
            return out;
        }
    };
    let (views, _) = crate::deletion::refresh::list(&vault.offsite());
    for view in views {
        let name = view.tier.name().to_string();
        let learned = vault.catalog().and_then(|mut c| {
            crate::deletion::refresh::refresh(
                &mut c,
                std::slice::from_ref(&view),
                None,
                &vault.config,
                Some(&identity),
            )
        });
        match learned {
            Ok(l) => {
                for p in &l.problems {
                    progress.event(&Event::Warning(p.clone()));
                }
                out.insert(name, (l.snapshots, l.packs));
            }
            Err(e) => progress.event(&Event::Warning(format!(
                "learning from tier {name} failed: {e}"
            ))),
        }
    }
    out
}

/// Whether the catalog can tell which packs this host's local tier keeps
/// ([`replicate::Scope::Own`]): every pack written here has a copy record
/// for it. A catalog rebuilt after the local tier was lost has none while
/// listing this host's snapshots: then only a full copy keeps "a manifest
/// in a tier has all its packs there", and sync makes one.
fn own_scope_known(
    catalog: &crate::catalog::Catalog,
    local: &std::sync::Arc<dyn crate::tier::Tier>,
) -> Result<bool> {
    let host = crate::util::hostname();
    let has_own = catalog.snapshots(None)?.iter().any(|s| s.host == host);
    Ok(!has_own || !catalog.pack_states(local.name())?.is_empty())
}

/// What `coffer sync` is asked to do beyond bringing every tier up to date.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncOptions {
    /// Copy everything into the local tier ([`replicate::Scope::All`]).
    pub all: bool,
    /// Recreate a lost local tier from the S3 tier first.
    pub recreate_local: bool,
}

/// A sync's reports, as its run records them.
struct SyncRun(Vec<SyncReport>);

impl RunSummary for SyncRun {
    fn outcome(&self) -> Outcome {
        if self.problem().is_some() {
            Outcome::Partial
        } else {
            Outcome::Ok
        }
    }
    fn bytes(&self) -> u64 {
        self.0.iter().map(|r| r.bytes_copied).sum()
    }
    fn problem(&self) -> Option<String> {
        self.0
            .iter()
            .flat_map(|r| r.problems.first())
            .next()
            .cloned()
    }
    fn details(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.0).ok()
    }
}

/// Replication state per tier.
///
/// # Errors
/// Catalog errors.
pub fn status(vault: &Vault) -> Result<Vec<TierStatus>> {
    let catalog = vault.catalog()?;
    let mut st = replicate::status(&catalog, &vault.tiers())?;
    for t in st.iter_mut() {
        t.lost = vault.local_lost && t.tier == "local";
        if t.lost {
            // The catalog still records what the tier held; none of it is
            // there now.
            t.snapshots_complete = 0;
            t.newest_complete = None;
            t.newest_complete_age_seconds = None;
            t.packs_pending = catalog.pack_states("local")?.len() as u64;
        }
    }
    Ok(st)
}

/// `coffer status --check`: lists every tier first, so that the status
/// shows what the tiers hold rather than what the catalog last knew.
/// Returns the tiers that could not be listed, with why.
///
/// # Errors
/// Catalog errors.
pub fn check(vault: &Vault) -> Result<Vec<(String, String)>> {
    let catalog = vault.catalog()?;
    let mut failed = Vec::new();
    for t in vault.tiers() {
        if vault.local_lost && t.name() == "local" {
            continue;
        }
        if let Err(e) = replicate::check_listing(&catalog, &*t) {
            failed.push((t.name().to_string(), e.to_string()));
        }
    }
    Ok(failed)
}
