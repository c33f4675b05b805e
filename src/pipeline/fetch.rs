//! Reading blobs: from the first tier that yields a pack intact, falling
//! back per pack to the next; every chunk's keyed hash checked. Shared by
//! the ordered restore ([`super::restore`]), the file restore
//! ([`super::restore_file`]) and anything else that reads chunks back.

use std::path::PathBuf;
use std::sync::Arc;

use vault_format::blob::BlobDecoder;
use vault_format::keys::{ChunkIdKey, Identity};
use vault_format::pack::BlobReader;
use vault_format::{ChunkId, FormatError, PackId, SnapshotId};

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::progress::{Event, Progress};
use crate::tier::{keys, ReadSeek, Tier};

/// What reading needs: the identity and the tiers.
pub struct ReadContext {
    /// Tiers, in the order to try them.
    pub tiers: Vec<Arc<dyn Tier>>,
    /// Catalog file.
    pub catalog_path: PathBuf,
    /// The age identity.
    pub identity: Arc<Identity>,
    /// Chunk-id key (to verify every chunk).
    pub idkey: ChunkIdKey,
    /// Worker threads.
    pub threads: usize,
    /// Packs already reported as read from another tier (with the tier
    /// read from): a pack's fallback is said once, not once per blob.
    pub fallbacks: std::sync::Mutex<std::collections::HashSet<(PackId, usize)>>,
}

/// Where a blob is, as the fetcher needs it.
pub(crate) type BlobLoc = crate::catalog::BlobLocation;

/// Reads blobs from tiers, with fallback; keeps a few packs open and the
/// last decoded blob.
pub(crate) struct Fetcher<'a> {
    ctx: &'a ReadContext,
    snapshot: Option<SnapshotId>,
    open: Vec<OpenPack>,
    decoder: BlobDecoder,
    stored: Vec<u8>,
    decoded: Vec<u8>,
    decoded_blob: Option<i64>,
    /// Recently decoded blobs (LRU, oldest first). A later night's stream
    /// interleaves runs from old blobs with its own new ones; without this a
    /// worker would decode the same old blob again for every run.
    cache: Vec<(i64, Vec<u8>)>,
    progress: &'a dyn Progress,
}

/// Packs a worker keeps open: a late night's stream jumps between packs of
/// every earlier night, and reopening costs an X25519 unwrap each time.
/// An open pack costs little memory in any tier: a local one is a file,
/// and an S3 one's read-ahead window belongs to the reading thread, which
/// holds two whatever the number of packs open (`tier/s3/reader.rs`; one
/// per pack took an S3 restore of 1 GiB to ~250 MiB RSS).
const OPEN_PACKS: usize = 32;
/// Decoded blobs a worker keeps besides the current one (~1 MiB each).
const DECODED_CACHE: usize = 4;

/// An open pack: its id, the index of the tier it came from, its reader.
type OpenPack = (PackId, usize, BlobReader<Box<dyn ReadSeek>>);

impl<'a> Fetcher<'a> {
    pub(crate) fn new(
        ctx: &'a ReadContext,
        snapshot: Option<SnapshotId>,
        progress: &'a dyn Progress,
    ) -> Result<Self> {
        Ok(Fetcher {
            ctx,
            snapshot,
            open: Vec::new(),
            decoder: BlobDecoder::new()?,
            stored: Vec::new(),
            decoded: Vec::new(),
            decoded_blob: None,
            cache: Vec::new(),
            progress,
        })
    }

    fn try_tier(
        &mut self,
        ti: usize,
        loc: &BlobLoc,
        extracts: &[(u32, u32, ChunkId)],
    ) -> std::result::Result<(), String> {
        let pos = self
            .open
            .iter()
            .position(|(p, t, _)| *p == loc.pack && *t == ti);
        let idx = match pos {
            Some(i) => i,
            None => {
                let tier = &self.ctx.tiers[ti];
                let src = tier.open(&keys::pack(&loc.pack)).map_err(|e| {
                    if e.is_not_found() {
                        "missing".to_string()
                    } else {
                        e.to_string()
                    }
                })?;
                let r = BlobReader::open(&self.ctx.identity, src).map_err(describe)?;
                if self.open.len() >= OPEN_PACKS {
                    self.open.remove(0);
                }
                self.open.push((loc.pack, ti, r));
                self.open.len() - 1
            }
        };
        let reader = &mut self.open[idx].2;
        let res = reader
            .read_at(loc.offset, loc.stored_len, &mut self.stored)
            .and_then(|_| {
                self.decoder.decode(
                    loc.codec,
                    &self.stored,
                    loc.raw_len as usize,
                    &mut self.decoded,
                )
            });
        if let Err(e) = res {
            self.open.remove(idx);
            self.decoded_blob = None;
            return Err(describe(e));
        }
        self.decoded_blob = Some(loc.blob);
        self.check(extracts)
    }

    fn check(&self, extracts: &[(u32, u32, ChunkId)]) -> std::result::Result<(), String> {
        for (off, len, id) in extracts {
            let (off, len) = (*off as usize, *len as usize);
            let Some(bytes) = self.decoded.get(off..off + len) else {
                return Err("corrupt (chunk outside its blob)".into());
            };
            if self.ctx.idkey.id(bytes) != *id {
                return Err(format!(
                    "corrupt (chunk {} fails its hash check)",
                    &id.to_hex()[..16]
                ));
            }
        }
        Ok(())
    }

    /// Makes `self.decoded` the decoded blob, with every extract verified.
    pub(crate) fn load(&mut self, loc: &BlobLoc, extracts: &[(u32, u32, ChunkId)]) -> Result<()> {
        if self.decoded_blob == Some(loc.blob) && self.check(extracts).is_ok() {
            return Ok(());
        }
        // Keep the current blob, and bring back a cached one if it is the one needed.
        let spare = if self.cache.len() >= DECODED_CACHE {
            self.cache.remove(0).1
        } else {
            Vec::new()
        };
        let current = std::mem::replace(&mut self.decoded, spare);
        if let Some(b) = self.decoded_blob.take() {
            self.cache.push((b, current));
        }
        if let Some(i) = self.cache.iter().position(|(b, _)| *b == loc.blob) {
            let (b, buf) = self.cache.remove(i);
            let spare = std::mem::replace(&mut self.decoded, buf);
            self.decoded_blob = Some(b);
            if self.check(extracts).is_ok() {
                drop(spare);
                return Ok(());
            }
            self.decoded = spare;
            self.decoded_blob = None;
        }
        let mut problems = Vec::new();
        for ti in 0..self.ctx.tiers.len() {
            match self.try_tier(ti, loc, extracts) {
                Ok(()) => {
                    let first = !problems.is_empty()
                        && self
                            .ctx
                            .fallbacks
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .insert((loc.pack, ti));
                    if first {
                        self.progress.event(&Event::Warning(format!(
                            "pack {} was {}; read it from tier {} instead",
                            loc.pack,
                            problems.join(", "),
                            self.ctx.tiers[ti].name()
                        )));
                    }
                    return Ok(());
                }
                Err(p) => problems.push(format!("{} in tier {}", p, self.ctx.tiers[ti].name())),
            }
        }
        self.decoded_blob = None;
        Err(Error::Integrity {
            problem: format!("cannot read blob: {}", problems.join("; ")),
            pack: Some(loc.pack),
            tier: self
                .ctx
                .tiers
                .iter()
                .map(|t| t.name())
                .collect::<Vec<_>>()
                .join(","),
            snapshot: self.snapshot.map(|s| s.to_hex()),
        })
    }

    /// The blob [`Fetcher::load`] made current.
    pub(crate) fn decoded(&self) -> &[u8] {
        &self.decoded
    }

    /// Appends the verified extracts to `out`.
    pub(crate) fn extract(
        &mut self,
        loc: &BlobLoc,
        extracts: &[(u32, u32, ChunkId)],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        self.load(loc, extracts)?;
        for (off, len, _) in extracts {
            out.extend_from_slice(&self.decoded[*off as usize..(*off + *len) as usize]);
        }
        Ok(())
    }

    /// One chunk by id (list chunks), verified.
    pub(crate) fn chunk(
        &mut self,
        catalog: &Catalog,
        id: &ChunkId,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let loc = catalog
            .chunk_location(id)?
            .ok_or_else(|| missing_chunk(id, self.snapshot))?;
        self.extract(&loc.blob, &[(loc.offset, loc.length, *id)], out)
    }
}

fn describe(e: FormatError) -> String {
    match e {
        FormatError::Truncated { .. } => "truncated".into(),
        FormatError::Decrypt { .. } => {
            "corrupt (fails authentication) or sealed to another key".into()
        }
        other => format!("unreadable ({other})"),
    }
}

pub(crate) fn missing_chunk(id: &ChunkId, snapshot: Option<SnapshotId>) -> Error {
    Error::Integrity {
        problem: format!("chunk {} is not in the catalog", &id.to_hex()[..16]),
        pack: None,
        tier: "catalog".into(),
        snapshot: snapshot.map(|s| s.to_hex()),
    }
}
