//! # coffer
//!
//! An encrypted, deduplicating offsite vault for PostgreSQL backups.
//!
//! Layers, top to bottom (arrows point down only):
//! - [`commands`]: init, backup, restore, verify, rebuild — functions that
//!   return reports and never print (the `coffer` binary renders them);
//! - [`pipeline`]: the streaming backup and restore pipelines;
//! - [`source`]: what produces streams (files, stdin, directories as tar);
//! - [`catalog`]: the SQLite cache of what the vault holds;
//! - [`tier`]: where objects live (local directory; S3 next);
//! - `vault_format`: the pure format crate (ids, packs, manifests, config).

#![forbid(unsafe_code)]

pub mod catalog;
pub mod commands;
pub mod error;
pub mod pg;
pub mod pipeline;
pub mod progress;
pub mod replicate;
pub mod source;
pub mod tier;
pub mod util;
pub mod vault;

pub use error::{Error, Result};
pub use vault::Vault;
