//! The compressors: each turns a run of new chunks into one stored blob
//! (a zstd frame, or the raw bytes when compression does not pay).

use crossbeam_channel::{Receiver, Sender};
use vault_format::blob::{BlobEncoder, Codec};
use vault_format::pack::ChunkKind;
use vault_format::ChunkId;

use crate::error::{Error, Result};

/// A run of consecutive new chunks of one kind, to become one blob.
pub(crate) struct BlobJob {
    pub kind: ChunkKind,
    pub raw: Vec<u8>,
    pub chunks: Vec<(ChunkId, u32)>,
}

/// A blob in its stored form (compressed or raw), not yet sealed: the
/// packer seals it into a pack.
pub(crate) struct CompressedBlob {
    pub kind: ChunkKind,
    pub codec: Codec,
    pub stored: Vec<u8>,
    pub chunks: Vec<(ChunkId, u32)>,
}

/// One compressor thread: jobs in, blobs out. Buffers go back through the
/// pools so the steady state allocates nothing.
pub(crate) fn compressor(
    level: i32,
    jobs: Receiver<BlobJob>,
    out: Sender<Result<CompressedBlob>>,
    raw_pool: Sender<Vec<u8>>,
    stored_pool: Receiver<Vec<u8>>,
) {
    let mut enc = match BlobEncoder::new(level) {
        Ok(e) => e,
        Err(e) => {
            let _ = out.send(Err(e.into()));
            return;
        }
    };
    for mut job in jobs {
        let mut stored = stored_pool.try_recv().unwrap_or_default();
        let r = enc
            .encode(&job.raw, &mut stored)
            .map(|codec| CompressedBlob {
                kind: job.kind,
                codec,
                stored,
                chunks: std::mem::take(&mut job.chunks),
            });
        job.raw.clear();
        let _ = raw_pool.send(job.raw);
        if out.send(r.map_err(Error::from)).is_err() {
            return;
        }
    }
}
