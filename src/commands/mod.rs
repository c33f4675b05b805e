//! Commands: library functions that return values and never print. The CLI
//! (`src/cli`) parses flags, calls these, and renders their reports.

pub mod backup;
pub mod init;
pub mod rebuild;
pub mod restore;
pub mod verify;

use std::sync::Arc;

use crate::error::Result;
use crate::pipeline::restore::ReadContext;
use crate::vault::Vault;

/// Builds the context for commands that decrypt.
///
/// # Errors
/// [`crate::Error::Key`] when the identity is missing or does not fit.
pub fn read_context(
    vault: &Vault,
    identity: Option<&std::path::Path>,
    operation: &str,
) -> Result<ReadContext> {
    let (identity, key) = vault.identity(identity, operation)?;
    Ok(ReadContext {
        tiers: vault.tiers(),
        catalog_path: vault.settings.catalog.clone(),
        identity: Arc::new(identity),
        idkey: key.chunk_id_key(),
        threads: crate::pipeline::threads(),
    })
}
