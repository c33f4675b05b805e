//! Verify's check of the manifests: each copy present, and the one
//! committed (the BLAKE3 of its sealed bytes, in the catalog).

use super::VerifyReport;
use crate::catalog::{Catalog, CopyState};
use crate::error::Result;
use crate::pipeline::restore::ReadContext;
use crate::tier::{keys, Tier};

/// Checks every snapshot's manifest in `tier`: present, and its sealed
/// bytes the ones committed (their BLAKE3 is in the catalog, as a pack's
/// is its id). A manifest replaced or damaged in the bucket is marked
/// corrupt there, for `coffer sync` to replace from another tier. Where
/// the hash is not known yet (catalogs older than it), `--read-data`
/// opens the manifest, compares it with the catalog's and records it.
///
/// With `presence_only` (a verify within a budget, run daily) a copy is only
/// asked for (HEAD): a manifest grows with its stream (about 9 MB for a
/// 1 GiB stream of small chunks), and reading them all each day would cost
/// more than the budget. The full check is a verify without a budget.
pub(super) fn check_manifests(
    catalog: &Catalog,
    tier: &dyn Tier,
    recorded_only: bool,
    presence_only: bool,
    read: Option<&ReadContext>,
    rep: &mut VerifyReport,
) -> Result<()> {
    let hashes = catalog.sealed_hashes()?;
    let states = catalog.snapshot_states(tier.name())?;
    for s in catalog.snapshots(None)? {
        if recorded_only && !states.contains_key(&s.id) {
            continue;
        }
        rep.snapshots_checked += 1;
        let key = keys::snapshot(&s.id);
        if presence_only {
            match tier.head(&key) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    catalog.set_snapshot_copy(&s.id, tier.name(), CopyState::Missing)?;
                    rep.problems.push(format!(
                        "manifest of snapshot {} is missing in tier {}; `coffer sync` copies it from another tier",
                        s.id,
                        tier.name()
                    ));
                }
                Err(e) => rep.problems.push(format!(
                    "manifest of snapshot {} in tier {} is unreadable: {e}",
                    s.id,
                    tier.name()
                )),
            }
            continue;
        }
        let sealed = match tier.get(&key) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                catalog.set_snapshot_copy(&s.id, tier.name(), CopyState::Missing)?;
                rep.problems.push(format!(
                    "manifest of snapshot {} is missing in tier {}; `coffer sync` copies it from another tier",
                    s.id,
                    tier.name()
                ));
                continue;
            }
            Err(e) => {
                rep.problems.push(format!(
                    "manifest of snapshot {} in tier {} is unreadable: {e}",
                    s.id,
                    tier.name()
                ));
                continue;
            }
        };
        let good = match hashes.get(&s.id) {
            Some(h) => blake3::hash(&sealed).to_hex().as_str() == h,
            None => match read {
                Some(ctx) => {
                    let same = vault_format::manifest::Manifest::open(&ctx.identity, &sealed)
                        .is_ok_and(|m| {
                            m.encode()
                                == catalog
                                    .manifest(&s.id)
                                    .map(|c| c.encode())
                                    .unwrap_or_default()
                        });
                    if same {
                        catalog.set_sealed_hash(&s.id, &sealed)?;
                    }
                    same
                }
                None => true,
            },
        };
        if good && states.get(&s.id) != Some(&CopyState::Present) {
            catalog.set_snapshot_copy(&s.id, tier.name(), CopyState::Present)?;
        }
        if !good {
            catalog.set_snapshot_copy(&s.id, tier.name(), CopyState::Corrupt)?;
            rep.problems.push(format!(
                "manifest of snapshot {} in tier {} is not the one committed (replaced or damaged); `coffer sync` replaces it from another tier",
                s.id,
                tier.name()
            ));
        }
    }
    Ok(())
}
