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

use crate::catalog::{Catalog, CopyState, Outcome, RunKind, RunSummary};
use crate::error::Result;
use crate::pipeline::restore::ReadContext;
use crate::progress::Progress;
use crate::tier::{keys, Tier};
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
    let kind = if read.is_some() {
        RunKind::VerifyData
    } else {
        RunKind::Verify
    };
    // Packs another host's prune deleted are not problems: with the
    // identity, a repack's new packs are learned (so their chunks are
    // checked) and the gone packs no snapshot needs are forgotten.
    crate::deletion::refresh::catch_up(vault, read, progress)?;
    let catalog = vault.catalog()?;
    catalog.record_run(kind, None, None, |_| {
        let started = std::time::Instant::now();
        let mut rep = VerifyReport {
            packs_checked: 0,
            bytes_read: 0,
            chunks_checked: 0,
            snapshots_checked: 0,
            problems: Vec::new(),
            seconds: 0.0,
        };
        let packs = catalog.packs()?;
        for tier in vault.tiers() {
            check_packs(&catalog, &*tier, &packs, read, progress, &mut rep)?;
            for s in catalog.snapshots(None)? {
                rep.snapshots_checked += 1;
                if tier.head(&keys::snapshot(&s.id))?.is_none() {
                    rep.problems.push(format!(
                        "manifest of snapshot {} is missing in tier {}",
                        s.id,
                        tier.name()
                    ));
                }
            }
        }
        rep.seconds = started.elapsed().as_secs_f64();
        Ok(rep)
    })
}

impl RunSummary for VerifyReport {
    fn outcome(&self) -> Outcome {
        if self.problems.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Partial
        }
    }
    fn bytes(&self) -> u64 {
        self.bytes_read
    }
    fn problem(&self) -> Option<String> {
        self.problems.first().cloned()
    }
    fn details(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self).ok()
    }
}

/// Checks every pack in one tier. Packs are checked on worker threads, each
/// reading a pack once into memory (hash, then decrypt from the same bytes:
/// one download per pack from S3); the catalog is updated here, in order of
/// completion.
fn check_packs(
    catalog: &Catalog,
    tier: &dyn Tier,
    packs: &[(PackId, u64)],
    read: Option<&ReadContext>,
    progress: &dyn Progress,
    rep: &mut VerifyReport,
) -> Result<()> {
    let threads = crate::pipeline::threads().min(4);
    let (job_tx, job_rx) = crossbeam_channel::bounded::<PackId>(threads);
    let (res_tx, res_rx) = crossbeam_channel::bounded::<PackCheck>(threads);
    std::thread::scope(|s| -> Result<()> {
        for i in 0..threads {
            let (job_rx, res_tx) = (job_rx.clone(), res_tx.clone());
            crate::pipeline::spawn(s, format!("verify-{i}"), move || {
                let mut w = Worker::new();
                for id in job_rx {
                    let r = w.check(tier, &id, read, progress);
                    if res_tx.send(r).is_err() {
                        return;
                    }
                }
            })?;
        }
        drop((job_rx, res_tx));
        crate::pipeline::spawn(s, "verify-feed".into(), move || {
            for (id, _) in packs {
                if job_tx.send(*id).is_err() {
                    return;
                }
            }
        })?;
        for r in res_rx {
            rep.packs_checked += 1;
            rep.bytes_read += r.bytes;
            rep.chunks_checked += r.chunks;
            if let Some(p) = &r.problem {
                rep.problems
                    .push(format!("pack {} in tier {}: {p}", r.id, tier.name()));
            }
            catalog.set_pack_copy(&r.id, tier.name(), r.state, true)?;
        }
        Ok(())
    })
}

/// One pack's verdict.
struct PackCheck {
    id: PackId,
    state: CopyState,
    problem: Option<String>,
    bytes: u64,
    chunks: u64,
}

/// Per-thread buffers and decoder.
struct Worker {
    pack: Vec<u8>,
    stored: Vec<u8>,
    raw: Vec<u8>,
    decoder: Option<BlobDecoder>,
}

impl Worker {
    fn new() -> Self {
        Worker {
            pack: Vec::new(),
            stored: Vec::new(),
            raw: Vec::new(),
            decoder: BlobDecoder::new().ok(),
        }
    }

    fn check(
        &mut self,
        tier: &dyn Tier,
        id: &PackId,
        read: Option<&ReadContext>,
        progress: &dyn Progress,
    ) -> PackCheck {
        let mut out = PackCheck {
            id: *id,
            state: CopyState::Present,
            problem: None,
            bytes: 0,
            chunks: 0,
        };
        let key = keys::pack(id);
        self.pack.clear();
        let r = tier.open(&key).and_then(|mut r| {
            r.read_to_end(&mut self.pack)
                .map_err(|e| crate::tier::TierError::Io {
                    tier: tier.name().to_string(),
                    op: "read",
                    key: key.clone(),
                    io: e,
                })
        });
        match r {
            Err(e) if e.is_not_found() => {
                out.state = CopyState::Missing;
                out.problem = Some("missing".into());
                return out;
            }
            Err(e) => {
                out.state = CopyState::Corrupt;
                out.problem = Some(format!("unreadable ({e})"));
                return out;
            }
            Ok(_) => {}
        }
        out.bytes = self.pack.len() as u64;
        progress.advance(out.bytes);
        if blake3::hash(&self.pack).as_bytes() != id.as_bytes() {
            out.state = CopyState::Corrupt;
            out.problem = Some("corrupt (its bytes do not hash to its id)".into());
            return out;
        }
        if let Some(ctx) = read {
            match self.check_chunks(ctx) {
                Ok(n) => out.chunks = n,
                Err(p) => {
                    out.state = CopyState::Corrupt;
                    out.problem = Some(p);
                }
            }
        }
        out
    }

    fn check_chunks(&mut self, ctx: &ReadContext) -> std::result::Result<u64, String> {
        let decoder = self.decoder.as_mut().ok_or("zstd decoder unavailable")?;
        let mut r = PackReader::open(&ctx.identity, std::io::Cursor::new(&self.pack[..]))
            .map_err(|e| e.to_string())?;
        let blobs = r.index().blobs.clone();
        let mut n = 0;
        for b in &blobs {
            r.read_blob(b, &mut self.stored)
                .map_err(|e| e.to_string())?;
            decoder
                .decode(b.codec, &self.stored, b.raw_len as usize, &mut self.raw)
                .map_err(|e| e.to_string())?;
            let mut off = 0usize;
            for (id, len) in &b.chunks {
                let bytes = &self.raw[off..off + *len as usize];
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
}
