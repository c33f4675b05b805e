//! Restore into a regular file, out of order: blob by blob, pack by pack.
//!
//! A later night's stream takes most chunks from old blobs and a scattering
//! of chunks from every night since, and a blob written on night 2 holds
//! changed chunks from all over that night's dump. Restoring in stream order
//! (as [`super::restore::run`] must, for a pipe) decodes such a blob again
//! for nearly every chunk it contributes. A file can be written at any
//! offset, so here the planner first resolves a window of the stream (up to
//! `WINDOW_CHUNKS` chunks, so memory stays flat) and sorts it by pack and
//! blob; the workers then read each pack front to back, decode each blob
//! once, check every chunk's keyed hash, and `pwrite` it to every offset
//! where the stream has it. Tier fallback and error reporting are the
//! the `Fetcher`'s, as for the ordered path.
//!
//! The caller owns the file (a temporary beside the target) and decides
//! what happens to it: nothing written here is visible until every chunk
//! of every window is verified and the totals match the manifest.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver};
use vault_format::manifest::Manifest;
use vault_format::{ChunkId, SnapshotId};

use super::fetch::{missing_chunk, BlobLoc, Fetcher};
use super::restore::{
    check_length, check_totals, closed, for_each_entry, ReadContext, RestoreReport,
};
use crate::catalog::{Catalog, ChunkRef};
use crate::error::{Error, Result};
use crate::progress::Progress;

/// Chunks resolved before the window is sorted and handed out. At peak a
/// chunk costs ~160 bytes of plan (its list entry, its place, its extract
/// and write in a job), so ~20 MiB however large the snapshot (1 GiB of
/// stream at the 8 KiB average chunk). A blob used by several windows is
/// decoded once per window.
const WINDOW_CHUNKS: usize = 1 << 17;
/// Decoded bytes a job covers, so that a few large packs still spread
/// across the workers.
const JOB_BYTES: u64 = 4 << 20;

/// One chunk of the stream: where it goes and where it comes from.
struct Place {
    /// Offset in the output.
    out: u64,
    /// Index into the window's blob table.
    blob: u32,
    /// Offset in the decoded blob.
    off: u32,
    len: u32,
    id: ChunkId,
}

/// One blob's share of a job.
struct BlobWork {
    loc: BlobLoc,
    /// Distinct chunks to take from it: (offset in blob, length, id).
    extracts: Vec<(u32, u32, ChunkId)>,
    /// (output offset, index into `extracts`).
    writes: Vec<(u64, u32)>,
}

/// Blobs of one pack, in pack order.
type Job = Vec<BlobWork>;

/// Restores the snapshot's stream into `file` (which should be empty).
///
/// # Errors
/// As [`super::restore::run`]: [`Error::Integrity`] naming pack, tiers and
/// snapshot; [`Error::Output`] when a write fails.
pub fn run(
    ctx: &ReadContext,
    manifest: &Manifest,
    file: &File,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let threads = ctx.threads.max(1);
    let sid = manifest.id;
    let written = AtomicU64::new(0);
    let failed = AtomicBool::new(false);

    let (totals, results) = std::thread::scope(|s| -> Result<_> {
        let (job_tx, job_rx) = bounded::<Job>(threads * 2);
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                let job_rx = job_rx.clone();
                let (written, failed) = (&written, &failed);
                super::spawn(s, format!("restore-{i}"), move || {
                    // Set `failed` however the worker ends early, a panic
                    // included, so the planner stops sending.
                    let guard = FailOnDrop(failed);
                    let r = worker(ctx, sid, file, job_rx, written, progress);
                    if r.is_ok() {
                        std::mem::forget(guard);
                    }
                    r
                })
            })
            .collect::<Result<Vec<_>>>()?;
        drop(job_rx);

        let mut window = Window::default();
        let mut out = 0u64;
        let send = |w: &mut Window| -> Result<()> {
            for job in w.jobs() {
                if failed.load(Ordering::Relaxed) {
                    return Err(closed());
                }
                job_tx.send(job).map_err(|_| closed())?;
            }
            Ok(())
        };
        let totals = Catalog::open(&ctx.catalog_path)
            .map_err(Error::from)
            .and_then(|catalog| {
                let known = catalog.chunk_count_estimate()?;
                let t = for_each_entry(ctx, manifest, &catalog, progress, |id, len| {
                    window.entries.push((id, out, len));
                    out += u64::from(len);
                    if window.entries.len() >= WINDOW_CHUNKS {
                        window.resolve(&catalog, manifest, known)?;
                        send(&mut window)?;
                    }
                    Ok(())
                })?;
                window.resolve(&catalog, manifest, known)?;
                send(&mut window)?;
                Ok(t)
            });
        drop(job_tx);
        let results: Vec<Result<()>> = workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(closed())))
            .collect();
        Ok((totals, results))
    })?;
    // A worker's own error says more than the planner's "the writer stopped".
    for r in results {
        r?;
    }
    let (chunks, bytes) = totals?;
    check_totals(manifest, written.load(Ordering::Relaxed), chunks, bytes)?;
    Ok(RestoreReport {
        id: sid,
        bytes,
        chunks,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Raises the flag when dropped (unless forgotten).
struct FailOnDrop<'a>(&'a AtomicBool);

impl Drop for FailOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A window of the stream being planned.
#[derive(Default)]
struct Window {
    /// (id, output offset, length), as the chunk list gives them.
    entries: Vec<(ChunkId, u64, u32)>,
    /// The entries, resolved.
    places: Vec<Place>,
    blobs: Vec<BlobLoc>,
    by_row: HashMap<i64, u32>,
}

/// Resolve a window by scanning the whole chunk table (in id order, merged
/// with the sorted window) rather than one lookup per chunk when the table
/// has at most this many times as many rows as the window. A row of a scan
/// costs ~1/13 of a lookup; the margin keeps a scan from ever costing much
/// more than the lookups would have.
const SCAN_RATIO: u64 = 8;

impl Window {
    /// Resolves `entries` into `places` through the catalog, which holds
    /// `known` chunks (an estimate).
    fn resolve(&mut self, catalog: &Catalog, manifest: &Manifest, known: u64) -> Result<()> {
        let mut entries = std::mem::take(&mut self.entries);
        if known <= SCAN_RATIO * entries.len() as u64 {
            entries.sort_unstable_by_key(|e| e.0);
            let mut next = 0;
            catalog.for_each_chunk_ref::<Error>(|id, chunk| {
                while let Some(&(want, out, len)) = entries.get(next) {
                    if want > id {
                        break;
                    }
                    if want < id {
                        // The scan went past it: not in the catalog.
                        return Err(missing_chunk(&want, Some(manifest.id)));
                    }
                    self.place(catalog, manifest, want, out, len, chunk)?;
                    next += 1;
                }
                Ok(())
            })?;
            if let Some((id, _, _)) = entries.get(next) {
                return Err(missing_chunk(id, Some(manifest.id)));
            }
        } else {
            for &(id, out, len) in &entries {
                let chunk = catalog
                    .chunk_ref(&id)?
                    .ok_or_else(|| missing_chunk(&id, Some(manifest.id)))?;
                self.place(catalog, manifest, id, out, len, chunk)?;
            }
        }
        entries.clear();
        self.entries = entries;
        Ok(())
    }

    fn place(
        &mut self,
        catalog: &Catalog,
        manifest: &Manifest,
        id: ChunkId,
        out: u64,
        len: u32,
        chunk: ChunkRef,
    ) -> Result<()> {
        let blob = match self.by_row.get(&chunk.blob) {
            Some(&b) => b,
            None => {
                let loc = catalog
                    .blob_location(chunk.blob)?
                    .ok_or_else(|| missing_chunk(&id, Some(manifest.id)))?;
                self.blobs.push(loc);
                let b = (self.blobs.len() - 1) as u32;
                self.by_row.insert(chunk.blob, b);
                b
            }
        };
        check_length(
            manifest,
            &id,
            len,
            chunk.length,
            &self.blobs[blob as usize].pack,
        )?;
        self.places.push(Place {
            out,
            blob,
            off: chunk.offset,
            len,
            id,
        });
        Ok(())
    }

    /// Empties the window into jobs: blobs sorted by pack and offset (each
    /// pack read front to back), each blob's chunks by offset, one extract
    /// per distinct chunk however often the stream repeats it.
    fn jobs(&mut self) -> Vec<Job> {
        let blobs = std::mem::take(&mut self.blobs);
        self.by_row.clear();
        let mut order: Vec<u32> = (0..blobs.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| {
            let (a, b) = (&blobs[a as usize], &blobs[b as usize]);
            (a.pack.as_bytes(), a.offset).cmp(&(b.pack.as_bytes(), b.offset))
        });
        let mut rank = vec![0u32; blobs.len()];
        for (r, &b) in order.iter().enumerate() {
            rank[b as usize] = r as u32;
        }
        let mut places = std::mem::take(&mut self.places);
        places.sort_unstable_by_key(|p| (rank[p.blob as usize], p.off, p.len, p.id, p.out));

        let mut jobs: Vec<Job> = Vec::new();
        let mut job_bytes = 0u64;
        // The blob being filled: (index into `blobs`, its work).
        let mut current: Option<(u32, BlobWork)> = None;
        let finish = |w: BlobWork, jobs: &mut Vec<Job>, job_bytes: &mut u64| {
            let raw = u64::from(w.loc.raw_len);
            match jobs.last_mut() {
                Some(job)
                    if job.last().is_some_and(|l| l.loc.pack == w.loc.pack)
                        && *job_bytes + raw <= JOB_BYTES =>
                {
                    *job_bytes += raw;
                    job.push(w);
                }
                _ => {
                    *job_bytes = raw;
                    jobs.push(vec![w]);
                }
            }
        };
        for p in places {
            if current.as_ref().is_some_and(|(b, _)| *b != p.blob) {
                if let Some((_, w)) = current.take() {
                    finish(w, &mut jobs, &mut job_bytes);
                }
            }
            let (_, w) = current.get_or_insert_with(|| {
                let work = BlobWork {
                    loc: blobs[p.blob as usize].clone(),
                    extracts: Vec::new(),
                    writes: Vec::new(),
                };
                (p.blob, work)
            });
            // Only the same chunk shares an extract: two ids that a damaged
            // catalog puts at one place must each fail their own hash check.
            if w.extracts.last() != Some(&(p.off, p.len, p.id)) {
                w.extracts.push((p.off, p.len, p.id));
            }
            w.writes.push((p.out, (w.extracts.len() - 1) as u32));
        }
        if let Some((_, w)) = current.take() {
            finish(w, &mut jobs, &mut job_bytes);
        }
        jobs
    }
}

fn worker(
    ctx: &ReadContext,
    sid: SnapshotId,
    file: &File,
    jobs: Receiver<Job>,
    written: &AtomicU64,
    progress: &dyn Progress,
) -> Result<()> {
    let mut fetcher = Fetcher::new(ctx, Some(sid), progress)?;
    for job in jobs {
        for w in job {
            fetcher.load(&w.loc, &w.extracts)?;
            let blob = fetcher.decoded();
            // Chunks that follow each other both in the blob and in the
            // output (a night's new data, restored whole) go out in one
            // write: one syscall per run, not per chunk.
            let mut run: Option<(u64, usize, usize)> = None; // (out, blob start, blob end)
            let flush = |run: Option<(u64, usize, usize)>| -> Result<()> {
                if let Some((out, start, end)) = run {
                    file.write_all_at(&blob[start..end], out)
                        .map_err(|e| Error::Output {
                            what: "restore output".into(),
                            io: e,
                        })?;
                    let n = (end - start) as u64;
                    written.fetch_add(n, Ordering::Relaxed);
                    progress.advance(n);
                }
                Ok(())
            };
            for &(out, e) in &w.writes {
                let (off, len, _) = w.extracts[e as usize];
                let (off, len) = (off as usize, len as usize);
                match &mut run {
                    Some((o, start, end)) if *end == off && *o + (*end - *start) as u64 == out => {
                        *end += len;
                    }
                    _ => flush(run.replace((out, off, off + len)))?,
                }
            }
            flush(run)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ChunkLocation;
    use vault_format::blob::Codec;
    use vault_format::PackId;

    /// What `Window::resolve` does with a catalog row, without the catalog.
    fn push(w: &mut Window, out: u64, id: ChunkId, l: &ChunkLocation) {
        let blob = *w.by_row.entry(l.blob.blob).or_insert_with(|| {
            w.blobs.push(l.blob.clone());
            (w.blobs.len() - 1) as u32
        });
        w.places.push(Place {
            out,
            blob,
            off: l.offset,
            len: l.length,
            id,
        });
    }

    fn loc(pack: u8, blob: i64, blob_offset: u64, offset: u32, length: u32) -> ChunkLocation {
        ChunkLocation {
            blob: BlobLoc {
                pack: PackId([pack; 32]),
                blob,
                offset: blob_offset,
                stored_len: 100,
                raw_len: 3 << 20,
                codec: Codec::Zstd,
            },
            offset,
            length,
        }
    }

    /// A stream that interleaves two packs, revisits a blob after others
    /// and repeats one chunk: every output offset is written exactly once,
    /// each blob is visited once (in pack, then offset order), a repeated
    /// chunk is extracted once and written twice.
    #[test]
    fn jobs_cover_every_offset_once_in_pack_order() {
        let stream = [
            (2, loc(9, 20, 4096, 0, 10), 1u8),
            (0, loc(1, 10, 0, 50, 5), 2),
            (0, loc(1, 10, 0, 0, 50), 3),
            (1, loc(1, 11, 2048, 0, 7), 4),
            (0, loc(1, 10, 0, 50, 5), 2), // chunk 2 again
            (2, loc(9, 21, 0, 0, 3), 5),
        ];
        let mut w = Window::default();
        let mut out = 0u64;
        let mut expect = Vec::new();
        for (_, l, id) in &stream {
            push(&mut w, out, ChunkId([*id; 32]), l);
            expect.push((out, l.length, *id));
            out += u64::from(l.length);
        }
        let jobs = w.jobs();
        assert!(w.places.is_empty() && w.blobs.is_empty() && w.by_row.is_empty());

        let visited: Vec<(u8, u64)> = jobs
            .iter()
            .flatten()
            .map(|b| (b.loc.pack.0[0], b.loc.offset))
            .collect();
        assert_eq!(visited, [(1, 0), (1, 2048), (9, 0), (9, 4096)]);
        // Blobs of 3 MiB: at most one more in a job of one pack, never two packs.
        for job in &jobs {
            assert!(job.iter().all(|b| b.loc.pack == job[0].loc.pack));
            assert!(
                job.iter().map(|b| u64::from(b.loc.raw_len)).sum::<u64>() <= JOB_BYTES + (3 << 20)
            );
        }
        let first = &jobs[0][0];
        assert_eq!(first.extracts.len(), 2, "chunk 2 is extracted once");
        assert_eq!(first.extracts[0].0, 0, "extracts in blob order");

        let mut written: Vec<(u64, u32, u8)> = jobs
            .iter()
            .flatten()
            .flat_map(|b| {
                b.writes.iter().map(|&(o, e)| {
                    let (_, len, id) = b.extracts[e as usize];
                    (o, len, id.0[0])
                })
            })
            .collect();
        written.sort_unstable();
        assert_eq!(written, expect);
    }

    #[test]
    fn a_large_pack_is_split_into_jobs() {
        let mut w = Window::default();
        for b in 0..10 {
            push(
                &mut w,
                b * 10,
                ChunkId([b as u8; 32]),
                &loc(1, b as i64, b * 1000, 0, 10),
            );
        }
        let jobs = w.jobs();
        assert!(jobs.len() >= 5, "10 blobs of 3 MiB in {} jobs", jobs.len());
        assert_eq!(jobs.iter().map(Vec::len).sum::<usize>(), 10);
    }
}
