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
//!
//! A run can be bounded (`--budget 10%|2GiB|20m`): per tier, packs are
//! checked oldest check first (a copy's check is its last verification,
//! else its write), until the budget is spent. Run daily with a budget of
//! at least 1/N of the vault, every byte of every tier is re-read at least
//! every N days, however large the vault grows; `coffer status` shows each
//! tier's oldest check and `coffer health` warns past `verify-max-age`.

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

mod manifests;
use manifests::check_manifests;

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
    /// With a budget: pack copies left for later runs (per tier, summed).
    pub packs_left: u64,
    /// With a budget: the oldest check among the copies left (RFC 3339).
    pub oldest_left: Option<String>,
}

/// How much one run may check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// A share of each tier's stored bytes, in percent.
    Percent(f64),
    /// Bytes per tier.
    Bytes(u64),
    /// Wall time for the whole run.
    Time(std::time::Duration),
}

impl std::str::FromStr for Budget {
    type Err = String;

    /// `10%`, `2GiB` (also `500MB`, `1TiB`, bytes), `20m` (humantime).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim();
        let bad = || {
            format!("--budget {s:?} is not a budget; write a share (10%), a size (2GiB) or a time (20m)")
        };
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad())?;
            return if v > 0.0 && v <= 100.0 {
                Ok(Budget::Percent(v))
            } else {
                Err(bad())
            };
        }
        let digits = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(digits);
        // humantime reads `20M` as 20 months: a size was almost surely meant.
        if unit.trim() == "M" {
            return Err(format!(
                "--budget {s:?} is ambiguous; write 20MB or 20MiB for a size, 20min for a time"
            ));
        }
        let mult: Option<u64> = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => Some(1),
            "k" | "kb" => Some(1000),
            "kib" => Some(1 << 10),
            "mb" => Some(1_000_000),
            "mib" => Some(1 << 20),
            "gb" => Some(1_000_000_000),
            "gib" => Some(1 << 30),
            "tb" => Some(1_000_000_000_000),
            "tib" => Some(1 << 40),
            _ => None,
        };
        if let (Some(m), Ok(n)) = (mult, num.parse::<f64>()) {
            if n > 0.0 {
                return Ok(Budget::Bytes((n * m as f64) as u64));
            }
        }
        humantime::parse_duration(t)
            .ok()
            .filter(|d| !d.is_zero())
            .map(Budget::Time)
            .ok_or_else(bad)
    }
}

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Only this tier.
    pub tier: Option<String>,
    /// Stop when spent (per tier for shares and sizes).
    pub budget: Option<Budget>,
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
    verify_with(vault, read, &VerifyOptions::default(), progress)
}

/// [`verify`] of one tier or all, within a budget.
///
/// # Errors
/// As [`verify`]; [`crate::Error::Config`] for an unknown tier.
pub fn verify_with(
    vault: &Vault,
    read: Option<&ReadContext>,
    opts: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let tiers = vault.select_tiers(opts.tier.as_deref())?;
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
            packs_left: 0,
            oldest_left: None,
        };
        if vault.local_lost {
            rep.problems.push(format!(
                "tier local is lost (no vault at {}): `coffer sync --recreate-local` recreates it from the s3 tier (if it is a disk that is not mounted, mount it instead)",
                vault.settings.local.path.display()
            ));
        }
        let all = catalog.packs()?;
        let deadline = match opts.budget {
            Some(Budget::Time(d)) => Some(started + d),
            _ => None,
        };
        let primary = vault.primary();
        for tier in &tiers {
            // The local tier of a shared vault keeps what this host keeps
            // (replicate::Scope::Own): the packs and manifests it has a
            // copy record for. Checking other hosts' there would record
            // them missing, and sync would then copy them in piecemeal.
            let own = tier.name() == primary.name();
            let kept = catalog.pack_states(tier.name())?;
            let packs: Vec<(PackId, u64)> = all
                .iter()
                .filter(|(id, _)| !own || kept.contains_key(id))
                .copied()
                .collect();
            let packs = in_budget(&catalog, tier.name(), &packs, opts.budget, &mut rep)?;
            check_packs(
                &catalog, &**tier, &packs, read, deadline, progress, &mut rep,
            )?;
            let presence_only = opts.budget.is_some();
            check_manifests(&catalog, &**tier, own, presence_only, read, &mut rep)?;
            for key in tier.hidden_by_delete_markers() {
                rep.problems.push(format!(
                    "{key} in tier {} was deleted behind coffer's back: a delete marker hides it, its locked version is intact and was read; `coffer sync` removes the marker",
                    tier.name()
                ));
            }
        }
        rep.seconds = started.elapsed().as_secs_f64();
        Ok(rep)
    })
}

/// The packs of `tier` to check this run: all of them without a budget;
/// else oldest check first, up to the budget's bytes (at least one pack).
/// What is left is counted in `rep`.
fn in_budget(
    catalog: &Catalog,
    tier: &str,
    all: &[(PackId, u64)],
    budget: Option<Budget>,
    rep: &mut VerifyReport,
) -> Result<Vec<(PackId, u64)>> {
    let Some(budget) = budget else {
        return Ok(all.to_vec());
    };
    let checked = catalog.pack_check_times(tier)?;
    let mut order: Vec<(Option<&String>, PackId, u64)> = all
        .iter()
        .map(|(id, size)| (checked.get(id), *id, *size))
        .collect();
    // Never checked (None) first, then oldest.
    order.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let total: u64 = all.iter().map(|(_, s)| s).sum();
    let cap = match budget {
        Budget::Percent(p) => (total as f64 * p / 100.0).ceil() as u64,
        Budget::Bytes(b) => b,
        Budget::Time(_) => u64::MAX,
    };
    let mut spent = 0u64;
    let mut take = Vec::new();
    for (when, id, size) in order {
        if take.is_empty() || spent + size <= cap {
            spent += size;
            take.push((id, size));
        } else {
            rep.packs_left += 1;
            if let Some(w) = when {
                if rep.oldest_left.as_ref().is_none_or(|o| w < o) {
                    rep.oldest_left = Some(w.clone());
                }
            }
        }
    }
    Ok(take)
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
    deadline: Option<std::time::Instant>,
    progress: &dyn Progress,
    rep: &mut VerifyReport,
) -> Result<()> {
    let threads = crate::pipeline::threads().min(4);
    let (job_tx, job_rx) = crossbeam_channel::bounded::<PackId>(threads);
    let (res_tx, res_rx) = crossbeam_channel::bounded::<PackCheck>(threads);
    let left = std::sync::atomic::AtomicU64::new(0);
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
        let left = &left;
        crate::pipeline::spawn(s, "verify-feed".into(), move || {
            for (i, (id, _)) in packs.iter().enumerate() {
                // A time budget stops feeding; what is fed is finished.
                if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                    left.store(
                        (packs.len() - i) as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    return;
                }
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
            if let Some(state) = r.state {
                catalog.set_pack_copy(&r.id, tier.name(), state, true)?;
            }
        }
        rep.packs_left += left.load(std::sync::atomic::Ordering::Relaxed);
        Ok(())
    })
}

/// One pack's verdict.
struct PackCheck {
    id: PackId,
    /// What to record; `None` when the copy could not be read (the store
    /// did not answer, a download broke): that says nothing about its
    /// bytes, and marking it corrupt would have sync replace a good copy.
    state: Option<CopyState>,
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
            state: Some(CopyState::Present),
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
                out.state = Some(CopyState::Missing);
                out.problem = Some("missing".into());
                return out;
            }
            Err(e) => {
                out.state = None;
                out.problem = Some(format!(
                    "unreadable ({e}); not marked damaged: verify again when the tier answers"
                ));
                return out;
            }
            Ok(_) => {}
        }
        out.bytes = self.pack.len() as u64;
        progress.advance(out.bytes);
        if blake3::hash(&self.pack).as_bytes() != id.as_bytes() {
            out.state = Some(CopyState::Corrupt);
            out.problem = Some("corrupt (its bytes do not hash to its id)".into());
            return out;
        }
        if let Some(ctx) = read {
            match self.check_chunks(ctx) {
                Ok(n) => out.chunks = n,
                Err(p) => {
                    out.state = Some(CopyState::Corrupt);
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
