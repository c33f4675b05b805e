//! How long-running operations report progress without printing: the
//! library calls a [`Progress`]; the CLI draws a bar or logs events.

use vault_format::{PackId, SnapshotId};

/// Milestones of a backup, in the order they happen. The crash tests kill a
/// backup at each of them.
#[derive(Debug, Clone)]
pub enum Event {
    /// A pack's ciphertext is complete in the spool.
    PackSealed {
        /// Pack id.
        id: PackId,
        /// Ciphertext bytes.
        size: u64,
    },
    /// A pack is durable in a tier and recorded in the catalog.
    PackStored {
        /// Pack id.
        id: PackId,
        /// Tier name.
        tier: String,
    },
    /// The snapshot's manifest is durable in a tier.
    ManifestStored {
        /// Snapshot id.
        id: SnapshotId,
    },
    /// The catalog committed the snapshot: it now exists.
    SnapshotCommitted {
        /// Snapshot id.
        id: SnapshotId,
    },
    /// A step of a forget or prune (their crash tests kill them at each).
    Step(String),
    /// Something worth telling the operator that does not stop the run.
    Warning(String),
}

/// Receives progress. All methods default to doing nothing.
pub trait Progress: Send + Sync {
    /// `n` more input (backup) or output (restore) bytes were processed.
    fn advance(&self, _n: u64) {}
    /// A milestone.
    fn event(&self, _e: &Event) {}
}

/// Reports nothing.
pub struct Silent;
impl Progress for Silent {}
