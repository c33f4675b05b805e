//! # coffer
//!
//! An encrypted, deduplicating offsite vault for PostgreSQL backups.
//!
//! Layers, top to bottom (arrows point down only; docs/design.md):
//! - [`commands`]: init, backup, restore, verify, sync, rebuild and the
//!   PostgreSQL workflows — functions that return reports and never print
//!   (the `coffer` binary renders them);
//! - [`pipeline`]: the streaming backup and restore pipelines;
//! - [`source`]: what produces streams (files, stdin, directories as tar,
//!   pg_dump); [`pg`]: PostgreSQL plumbing;
//! - [`catalog`]: the SQLite cache of what the vault holds, and the runs;
//! - [`wal`]: the WAL archive (push, fetch, upload in batches, gaps);
//! - [`tier`] and [`replicate`]: where objects live (local directory, S3)
//!   and copying between tiers;
//! - [`vault`]: an opened vault (settings, keys, tiers, catalog);
//! - `vault_format`: the pure format crate (ids, packs, manifests, config).

#![forbid(unsafe_code)]

pub mod alerts;
pub mod catalog;
pub mod commands;
pub mod deletion;
pub mod error;
pub mod pg;
pub mod pipeline;
pub mod progress;
pub mod replicate;
pub mod retention;
pub mod source;
pub mod tier;
pub mod util;
pub mod vault;
pub mod wal;

pub use error::{Error, Result};
pub use vault::Vault;
