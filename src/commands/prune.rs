//! `coffer prune`: reclaim what no kept snapshot needs (the protocol is in
//! vault-format/SPEC.md "Deletion"; the work in [`crate::deletion::prune`]).
//! Needs the identity: the live set is read from every snapshot's chunk
//! list, and packs other hosts wrote are indexed from their contents.

use std::time::Duration;

use crate::catalog::{Outcome, RunKind, RunSummary};
pub use crate::deletion::prune::{
    PruneOptions, PruneReport, DEFAULT_GRACE, DEFAULT_MAX_REPACK, DEFAULT_MAX_UNUSED,
};
use crate::error::{Error, Result};
use crate::pipeline::fetch::ReadContext;
use crate::progress::Progress;
use crate::vault::Vault;

impl RunSummary for PruneReport {
    fn outcome(&self) -> Outcome {
        let pending = self
            .tiers
            .iter()
            .any(|t| t.deletions.pending() > 0 || !t.waiting_for.is_empty());
        if pending || !self.unreachable.is_empty() || !self.repacked.problems.is_empty() {
            Outcome::Partial
        } else {
            Outcome::Ok
        }
    }
    fn bytes(&self) -> u64 {
        self.tiers.iter().map(|t| t.bytes_freed).sum()
    }
    fn problem(&self) -> Option<String> {
        self.unreachable
            .first()
            .map(|(t, why)| format!("tier {t} unreachable: {why}"))
            .or_else(|| self.repacked.problems.first().cloned())
    }
    fn details(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self).ok()
    }
}

/// The grace and the repack limits: the command line's, else the
/// settings', else the defaults. Locality is the settings' (a command line
/// flag turns it on).
///
/// # Errors
/// [`Error::Config`] for a grace or limit in the settings that does not
/// parse or is out of range.
pub fn options(
    vault: &Vault,
    dry_run: bool,
    grace: Option<Duration>,
    max_unused: Option<f64>,
    max_repack: Option<f64>,
) -> Result<PruneOptions> {
    let p = &vault.settings.prune;
    let grace = match (grace, &p.grace) {
        (Some(g), _) => g,
        (None, Some(s)) => crate::retention::policy::parse_duration(s)
            .map_err(|e| Error::Config(format!("[prune] grace in the settings: {e}")))?,
        (None, None) => DEFAULT_GRACE,
    };
    let max_unused = max_unused.or(p.max_unused).unwrap_or(DEFAULT_MAX_UNUSED);
    let max_repack = max_repack.or(p.max_repack).unwrap_or(DEFAULT_MAX_REPACK);
    for (name, v) in [("max-unused", max_unused), ("max-repack", max_repack)] {
        if !(0.0..=100.0).contains(&v) {
            return Err(Error::Config(format!(
                "{name} {v} is not a percentage between 0 and 100"
            )));
        }
    }
    Ok(PruneOptions {
        dry_run,
        grace,
        max_unused,
        max_repack,
        locality: p.locality.unwrap_or(false),
    })
}

/// Prunes the vault; records the run.
///
/// # Errors
/// As [`crate::deletion::prune::prune`].
pub fn prune(
    vault: &Vault,
    ctx: &ReadContext,
    opts: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    vault.require_local("prune")?;
    let catalog = vault.catalog()?;
    catalog.record_run(RunKind::Prune, None, None, |_| {
        let mut report = crate::deletion::prune::prune(vault, ctx, opts, progress)?;
        report.wal =
            crate::wal::retain::prune(vault, &mut vault.catalog()?, opts.dry_run, progress)?;
        Ok::<_, Error>(report)
    })
}
