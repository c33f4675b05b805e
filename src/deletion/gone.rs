//! Packs the catalog knows that no tier holds any more: another host's
//! prune deleted them (after moving what its snapshots needed, which
//! [`super::refresh`] follows), or they were lost. Which one is told
//! apart exactly, by the chunks this catalog's snapshots reference: a pack
//! none of them needs anything from leaves the catalog; one they need is
//! lost data, and stays, so restore and verify name it.

use std::collections::{HashMap, HashSet};

use vault_format::PackId;

use crate::catalog::Catalog;
use crate::error::Result;
use crate::pipeline::restore::{for_each_entry, ReadContext};
use crate::progress::Progress;

/// What became of the gone packs.
#[derive(Debug, Clone, Default)]
pub struct Gone {
    /// No snapshot needs anything from these: they left the catalog.
    pub forgotten: Vec<PackId>,
    /// A snapshot needs a chunk only these hold (lost data), or the walk
    /// could not finish.
    pub needed: Vec<PackId>,
}

/// Forgets those of `gone` (packs no tier holds) that no catalog snapshot
/// needs a chunk from. Exact, and memory in proportion to the gone packs'
/// chunks only: the ids of the chunks whose first location is still in a
/// gone pack (those with a further copy were moved by the refresh) are
/// looked up in every snapshot's chunk list.
///
/// When a snapshot's chunk list cannot be read, nothing is forgotten (and
/// every gone pack is counted as needed): without the whole walk nothing
/// may be.
///
/// # Errors
/// Catalog errors.
pub fn forget_unneeded(
    catalog: &Catalog,
    ctx: &ReadContext,
    gone: &[PackId],
    progress: &dyn Progress,
) -> Result<Gone> {
    if gone.is_empty() {
        return Ok(Gone::default());
    }
    let stranded: HashMap<_, _> = catalog.chunks_first_in(gone)?.into_iter().collect();
    let mut needed: HashSet<PackId> = HashSet::new();
    for s in catalog.snapshots(None)? {
        if needed.len() == gone.len() {
            break;
        }
        let m = catalog.manifest(&s.id)?;
        let lists: Vec<PackId> = m
            .chunk_list
            .iter()
            .filter_map(|c| stranded.get(c).copied())
            .collect();
        if !lists.is_empty() {
            // Its list cannot be read: it needs those packs, and nothing
            // else about it can be known.
            needed.extend(lists);
            continue;
        }
        let walked = for_each_entry(ctx, &m, catalog, progress, |id, _| {
            if let Some(p) = stranded.get(&id) {
                needed.insert(*p);
            }
            Ok(())
        });
        if walked.is_err() {
            // A list elsewhere cannot be read (damaged, or another pack
            // missing): what it needs is unknown, so nothing is forgotten.
            // Not an error here: the restore or verify that called reports
            // what it finds itself.
            return Ok(Gone {
                forgotten: Vec::new(),
                needed: gone.to_vec(),
            });
        }
    }
    let (needed, forgotten): (Vec<PackId>, Vec<PackId>) =
        gone.iter().partition(|p| needed.contains(p));
    catalog.remove_packs(&forgotten)?;
    Ok(Gone { forgotten, needed })
}
