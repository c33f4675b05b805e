//! `coffer forget`: apply retention policies (or forget named snapshots),
//! delete the forgotten snapshots' manifests from every tier. Packs are
//! prune's business.
//!
//! The decision ([`crate::retention::plan`]) is made from the catalog and
//! the pins in the tiers; it is recorded in the catalog (the snapshots go,
//! a deletion per manifest per tier is recorded) in one transaction before
//! any object is deleted, so an interrupted forget is finished by the next
//! forget, prune or sync, and never leaves a listed snapshot without its
//! manifest.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use vault_format::SnapshotId;

use crate::catalog::{Outcome, RunKind, RunSummary};
use crate::deletion::pending::{self, TierDeletions};
use crate::error::{Error, Result};
use crate::progress::{Event, Progress};
use crate::retention::{self, Candidate, GroupPlan, Policy, Selection};
use crate::vault::Vault;

/// What to forget.
#[derive(Debug, Clone, Default)]
pub struct ForgetOptions {
    /// Only this job (and its pg_dump globals).
    pub job: Option<String>,
    /// A policy from the command line; unset: each job's from the settings
    /// (or `BACKUP_RETENTION`).
    pub policy: Policy,
    /// Forget exactly these (ids, prefixes or `latest`) instead.
    pub snapshots: Vec<String>,
    /// Decide and report, delete nothing.
    pub dry_run: bool,
}

/// What forget decided and did (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct ForgetReport {
    /// Per job and host: each snapshot, kept or not, and why.
    pub groups: Vec<GroupPlan>,
    /// The snapshots forgotten (or, with `dry_run`, to be).
    pub forgotten: Vec<SnapshotId>,
    /// Nothing was deleted.
    pub dry_run: bool,
    /// Per tier: manifests deleted, retained, failed.
    pub deletions: Vec<TierDeletions>,
    /// Jobs that have no policy (all of their snapshots kept).
    pub without_policy: Vec<String>,
    /// Wall time.
    pub seconds: f64,
}

impl RunSummary for ForgetReport {
    fn outcome(&self) -> Outcome {
        if self.deletions.iter().any(|d| d.pending() > 0) {
            Outcome::Partial
        } else {
            Outcome::Ok
        }
    }
    fn problem(&self) -> Option<String> {
        self.deletions.iter().find_map(|d| {
            d.failed
                .first()
                .map(|(k, why)| format!("{k} in tier {}: {why}", d.tier))
        })
    }
    fn details(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self).ok()
    }
}

/// Forgets per `opts`; records the run.
///
/// # Errors
/// [`Error::Config`] for a policy that keeps nothing, an unknown job or
/// snapshot, a job without a policy when one was named, or a pinned
/// snapshot named to be forgotten; catalog errors.
pub fn forget(
    vault: &Vault,
    opts: &ForgetOptions,
    progress: &dyn Progress,
) -> Result<ForgetReport> {
    let catalog = vault.catalog()?;
    catalog.record_run(RunKind::Forget, opts.job.as_deref(), None, |_| {
        forget_unrecorded(vault, &catalog, opts, progress)
    })
}

fn forget_unrecorded(
    vault: &Vault,
    catalog: &crate::catalog::Catalog,
    opts: &ForgetOptions,
    progress: &dyn Progress,
) -> Result<ForgetReport> {
    let started = std::time::Instant::now();
    if !opts.policy.is_unset() && opts.policy.keeps_nothing() {
        return Err(Error::Config(
            "that policy keeps nothing; give at least one --keep-… rule above zero".into(),
        ));
    }
    let pins = super::pin::refresh_pins(vault, catalog)?;
    let cands = candidates(catalog, &pins)?;
    if let Some(j) = &opts.job {
        if !cands.iter().any(|c| &c.job == j) {
            return Err(Error::Config(format!(
                "job {j:?} has no snapshots; list them with `coffer snapshots`"
            )));
        }
    }
    let ids = opts
        .snapshots
        .iter()
        .map(|q| catalog.resolve_snapshot(q, opts.job.as_deref()))
        .collect::<Result<Vec<SnapshotId>, _>>()?;
    let policies = resolve_policies(vault, opts, &cands)?;
    let lookup = |job: &str| policies.get(job).cloned().flatten();
    let sel = if opts.snapshots.is_empty() {
        Selection::Policies(&lookup)
    } else {
        Selection::Ids(&ids)
    };
    let tz = vault.settings.time_zone()?;
    let mut groups =
        retention::plan(&cands, &sel, &tz).map_err(|e| Error::Config(e.to_string()))?;
    groups.retain(|g| selected(opts, &cands, g));
    let forgotten: Vec<SnapshotId> = groups
        .iter()
        .flat_map(|g| &g.snapshots)
        .filter(|v| !v.keep)
        .map(|v| v.id)
        .collect();
    let without_policy = groups
        .iter()
        .filter(|g| {
            g.snapshots
                .iter()
                .any(|v| v.reasons.contains(&retention::Keep::NoPolicy))
        })
        .map(|g| g.job.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut deletions = Vec::new();
    if !opts.dry_run {
        let tiers = vault.tiers();
        let names: Vec<&str> = tiers.iter().map(|t| t.name()).collect();
        // Its own connection: `catalog` is borrowed by the run record, and
        // this needs a transaction.
        vault.catalog()?.forget_snapshots(&forgotten, &names)?;
        progress.event(&Event::Step(format!(
            "forget: {} snapshot(s) forgotten in the catalog",
            forgotten.len()
        )));
        deletions = pending::run(
            catalog,
            &tiers,
            |k| k.starts_with(crate::tier::keys::SNAPSHOTS),
            progress,
        )?;
    }
    Ok(ForgetReport {
        groups,
        forgotten,
        dry_run: opts.dry_run,
        deletions,
        without_policy,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Every snapshot in the catalog as retention sees it, with its pin and,
/// for a globals snapshot, the dump it belongs to.
fn candidates(
    catalog: &crate::catalog::Catalog,
    pins: &std::collections::BTreeMap<SnapshotId, String>,
) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for s in catalog.snapshots(None)? {
        let dump = if s.kind == crate::pg::KIND_GLOBALS {
            catalog
                .manifest(&s.id)?
                .source
                .get("dump_snapshot")
                .and_then(|v| v.as_str())
                .and_then(|h| h.parse().ok())
        } else {
            None
        };
        out.push(Candidate {
            pin: pins.get(&s.id).cloned(),
            id: s.id,
            job: s.job,
            host: s.host,
            created: s.created,
            tags: s.tags,
            dump,
        });
    }
    Ok(out)
}

/// The policy of each job: the command line's for the selected job(s),
/// else the settings'. Naming a job that has none is an error.
fn resolve_policies(
    vault: &Vault,
    opts: &ForgetOptions,
    cands: &[Candidate],
) -> Result<HashMap<String, Option<Policy>>> {
    let mut out = HashMap::new();
    let jobs: BTreeSet<&str> = cands.iter().map(|c| c.job.as_str()).collect();
    for job in jobs {
        let chosen = opts.job.as_deref().is_none_or(|j| j == job);
        let p = if !chosen {
            None
        } else if !opts.policy.is_unset() {
            Some(opts.policy.clone())
        } else {
            vault.settings.policy_for(job)?
        };
        out.insert(job.to_string(), p);
    }
    if let Some(j) = &opts.job {
        if opts.snapshots.is_empty() && out.get(j).is_none_or(|p| p.is_none()) {
            return Err(Error::Config(format!(
                "job {j:?} has no retention policy: give --keep-… flags, or set one in the settings ([[jobs]] retention, [retention]) or BACKUP_RETENTION"
            )));
        }
    }
    Ok(out)
}

/// With `--job J`, only J's groups and the globals that follow J's dumps
/// are shown and forgotten.
fn selected(opts: &ForgetOptions, cands: &[Candidate], g: &GroupPlan) -> bool {
    let Some(j) = &opts.job else {
        return true;
    };
    if &g.job == j {
        return true;
    }
    let dumps: BTreeSet<SnapshotId> = cands.iter().filter(|c| &c.job == j).map(|c| c.id).collect();
    g.snapshots.iter().all(|v| {
        cands
            .iter()
            .find(|c| c.id == v.id)
            .and_then(|c| c.dump)
            .is_some_and(|d| dumps.contains(&d))
    }) && !g.snapshots.is_empty()
}
