//! `coffer verify`: prove the vault intact.
//!
//! Two levels:
//! - default (no key needed): every pack the catalog knows is read in full
//!   from each tier and its BLAKE3 compared with its id (the id *is* the
//!   hash of the ciphertext), and every snapshot's manifest is present;
//! - `--read-data` (identity): additionally every pack is decrypted, every
//!   blob decoded and every chunk's keyed hash checked against its id.
//!
//! Findings update the copy states in the catalog and are returned, never
//! printed; the run is recorded.

use std::io::Read;

use serde::Serialize;
use vault_format::blob::BlobDecoder;
use vault_format::pack::PackReader;
use vault_format::PackId;

use crate::catalog::{CopyState, Outcome};
use crate::error::Result;
use crate::pipeline::restore::ReadContext;
use crate::progress::Progress;
use crate::tier::keys;
use crate::vault::Vault;

/// What verify found (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Packs checked (per tier).
    pub packs_checked: u64,
    /// Ciphertext bytes read.
    pub bytes_read: u64,
    /// Chunks whose keyed hash was checked (with `--read-data`).
    pub chunks_checked: u64,
    /// Snapshots whose manifest was checked.
    pub snapshots_checked: u64,
    /// Each problem: what, which pack/snapshot, which tier.
    pub problems: Vec<String>,
    /// Seconds taken.
    pub seconds: f64,
}

/// Verifies every pack and manifest. With `read` (identity) also every chunk.
///
/// # Errors
/// Tier/catalog failures that stop the check itself; damage is reported in
/// the returned problems, not as an error.
pub fn verify(
    vault: &Vault,
    read: Option<&ReadContext>,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let started = std::time::Instant::now();
    let catalog = vault.catalog()?;
    let run = catalog.start_run(
        if read.is_some() {
            "verify-data"
        } else {
            "verify"
        },
        None,
    )?;
    let mut rep = VerifyReport {
        packs_checked: 0,
        bytes_read: 0,
        chunks_checked: 0,
        snapshots_checked: 0,
        problems: Vec::new(),
        seconds: 0.0,
    };
    let mut decoder = BlobDecoder::new()?;
    let (mut stored, mut raw) = (Vec::new(), Vec::new());
    for tier in vault.tiers() {
        for (id, _size) in catalog.packs()? {
            let key = keys::pack(&id);
            rep.packs_checked += 1;
            let state = match hash_object(&*tier, &key, &id, progress, &mut rep.bytes_read) {
                Err(p) => {
                    rep.problems
                        .push(format!("pack {id} is {p} in tier {}", tier.name()));
                    if p == "missing" {
                        CopyState::Missing
                    } else {
                        CopyState::Corrupt
                    }
                }
                Ok(()) => match read {
                    None => CopyState::Present,
                    Some(ctx) => {
                        match check_chunks(ctx, &*tier, &key, &mut decoder, &mut stored, &mut raw) {
                            Ok(n) => {
                                rep.chunks_checked += n;
                                CopyState::Present
                            }
                            Err(p) => {
                                rep.problems
                                    .push(format!("pack {id} in tier {}: {p}", tier.name()));
                                CopyState::Corrupt
                            }
                        }
                    }
                },
            };
            catalog.set_pack_copy(&id, tier.name(), state, true)?;
        }
        for s in catalog.snapshots(None)? {
            rep.snapshots_checked += 1;
            match tier.head(&keys::snapshot(&s.id))? {
                Some(_) => {}
                None => rep.problems.push(format!(
                    "manifest of snapshot {} is missing in tier {}",
                    s.id,
                    tier.name()
                )),
            }
        }
    }
    rep.seconds = started.elapsed().as_secs_f64();
    let outcome = if rep.problems.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Partial
    };
    catalog.finish_run(
        run,
        outcome,
        rep.bytes_read,
        rep.problems.first().map(String::as_str),
        None,
        Some(&serde_json::to_value(&rep).unwrap_or_default()),
    )?;
    Ok(rep)
}

fn hash_object(
    tier: &dyn crate::tier::Tier,
    key: &str,
    id: &PackId,
    progress: &dyn Progress,
    total: &mut u64,
) -> std::result::Result<(), String> {
    let mut r = match tier.open(key) {
        Ok(r) => r,
        Err(e) if e.is_not_found() => return Err("missing".into()),
        Err(e) => return Err(format!("unreadable ({e})")),
    };
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).map_err(|e| format!("unreadable ({e})"))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        *total += n as u64;
        progress.advance(n as u64);
    }
    if h.finalize().as_bytes() != id.as_bytes() {
        return Err("corrupt (its bytes do not hash to its id)".into());
    }
    Ok(())
}

fn check_chunks(
    ctx: &ReadContext,
    tier: &dyn crate::tier::Tier,
    key: &str,
    decoder: &mut BlobDecoder,
    stored: &mut Vec<u8>,
    raw: &mut Vec<u8>,
) -> std::result::Result<u64, String> {
    let src = tier.open(key).map_err(|e| e.to_string())?;
    let mut r = PackReader::open(&ctx.identity, src).map_err(|e| e.to_string())?;
    let blobs = r.index().blobs.clone();
    let mut n = 0;
    for b in &blobs {
        r.read_blob(b, stored).map_err(|e| e.to_string())?;
        decoder
            .decode(b.codec, stored, b.raw_len as usize, raw)
            .map_err(|e| e.to_string())?;
        let mut off = 0usize;
        for (id, len) in &b.chunks {
            let bytes = &raw[off..off + *len as usize];
            if ctx.idkey.id(bytes) != *id {
                return Err(format!(
                    "chunk {} fails its keyed hash check",
                    &id.to_hex()[..16]
                ));
            }
            off += *len as usize;
            n += 1;
        }
    }
    Ok(n)
}
