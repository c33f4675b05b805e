//! `coffer index rebuild`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use coffer::commands::rebuild::{self, RebuildReport};

use super::output::{print_problems, problems_status, render, Render, Verbosity};
use super::Ctx;

/// `coffer index ...`
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Recreate the catalog from a tier (needs the identity).
    Rebuild {
        /// The age identity file.
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// The tier to read first (`local` or `s3`) [default: local, or s3
        /// when the local tier is lost]. The other tiers are read after it,
        /// adding what only they hold.
        #[arg(long, value_name = "TIER")]
        tier: Option<String>,
    },
}

pub fn run(ctx: &Ctx, c: IndexCommand) -> Result<i32> {
    let IndexCommand::Rebuild { identity, tier } = c;
    let vault = ctx.vault()?;
    let (id, _) = vault.identity(identity.as_deref(), "index rebuild")?;
    let tier = match tier {
        Some(t) => vault.select_tiers(Some(&t))?.remove(0),
        // select_tiers(None) leaves out a lost local tier.
        None => vault.select_tiers(None)?.remove(0),
    };
    let rep = rebuild::rebuild(&vault, &*tier, &id)?;
    Ok(render(ctx.v, &rep))
}

impl Render for RebuildReport {
    fn text(&self, v: Verbosity) {
        let summary = format!(
            "coffer: rebuilt the catalog from tier {}: {} packs, {} chunks, {} snapshots, {} WAL files",
            self.tiers_read.join(", then "),
            self.packs,
            self.chunks,
            self.snapshots,
            self.wal_files
        );
        print_problems(v, &self.problems, &summary);
    }

    fn status(&self) -> i32 {
        problems_status(&self.problems)
    }
}
