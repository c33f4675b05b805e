//! Deleting from the vault: pins, forget, prune (vault-format/SPEC.md,
//! "Deletion", has the protocol, why it is safe, and its crash table).
//!
//! - [`locks`]: backup and prune locks (heartbeat objects, the exclusive
//!   prune lock);
//! - [`marks`]: condemned marks, which backups read so they never reuse a
//!   pack prune is about to delete;
//! - [`pins`]: pin objects;
//! - [`pending`]: carrying out deletions the catalog recorded;
//! - [`refresh`]: the catalog brought up to date with the tiers;
//! - [`gone`]: packs no tier holds, forgotten once no snapshot needs them;
//! - [`live`]: the live set (a Bloom filter over every kept chunk);
//! - [`repack`]: live chunks of sparse packs rewritten into new packs;
//! - [`prune`]: the two phases that tie it together.
//!
//! `forget` and `pin` are commands over these ([`crate::commands`]); the
//! policies that decide what to forget are [`crate::retention`].

pub mod gone;
pub mod live;
pub mod locks;
pub mod marks;
pub mod pending;
pub mod pins;
pub mod prune;
pub mod refresh;
pub mod repack;
