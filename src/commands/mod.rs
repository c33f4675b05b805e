//! Commands: library functions that return values and never print. The CLI
//! (`src/cli`) parses flags, calls these, and renders their reports.

pub mod backup;
pub mod daemon;
pub mod drill;
pub mod forget;
pub mod health;
pub mod init;
pub mod metrics;
pub mod pg_backup;
pub mod pg_restore;
pub mod pin;
pub mod pitr;
pub mod prune;
pub mod rebuild;
pub mod restore;
pub mod run;
pub mod snapshots;
pub mod sync;
pub mod verify;
pub mod wal;

use std::sync::Arc;

use crate::error::Result;
use crate::pipeline::restore::ReadContext;
use crate::vault::Vault;

/// Builds the context for commands that decrypt, reading from every tier
/// (local first, falling back per pack).
///
/// # Errors
/// [`crate::Error::Key`] when the identity is missing or does not fit.
pub fn read_context(
    vault: &Vault,
    identity: Option<&std::path::Path>,
    operation: &str,
) -> Result<ReadContext> {
    read_context_from(vault, identity, operation, None)
}

/// Like [`read_context`], reading only from the tier named `tier` (`--tier`).
///
/// # Errors
/// As [`read_context`]; [`crate::Error::Config`] for an unknown tier.
pub fn read_context_from(
    vault: &Vault,
    identity: Option<&std::path::Path>,
    operation: &str,
    tier: Option<&str>,
) -> Result<ReadContext> {
    let tiers = vault.select_tiers(tier)?;
    let (identity, key) = vault.identity(identity, operation)?;
    Ok(ReadContext {
        tiers,
        catalog_path: vault.settings.catalog.clone(),
        identity: Arc::new(identity),
        idkey: key.chunk_id_key(),
        threads: crate::pipeline::threads(),
        fallbacks: Default::default(),
    })
}

/// Warns about objects read from under a delete marker (S3 Object Lock):
/// deleted behind coffer's back, still kept, and `coffer sync` makes them
/// current again.
pub fn warn_hidden(tiers: &[Arc<dyn crate::tier::Tier>], progress: &dyn crate::progress::Progress) {
    for t in tiers {
        let hidden = t.hidden_by_delete_markers();
        if let Some(first) = hidden.first() {
            progress.event(&crate::progress::Event::Warning(format!(
                "{} object(s) in tier {} were deleted behind coffer's back (a delete marker hides them; their locked versions were read), e.g. {first}; `coffer sync` removes the markers",
                hidden.len(),
                t.name()
            )));
        }
    }
}
