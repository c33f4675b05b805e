//! Reading an S3 object as a seekable stream of ranged GETs.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use aws_sdk_s3::error::ProvideErrorMetadata;

use super::S3Settings;

/// Ranged-GET window: starts at 2 MiB and doubles on sequential reads up to
/// 8 MiB. A restore keeps up to 4 packs open per worker, so this bounds the
/// buffers of an S3 restore to 2 workers x 4 x 8 MiB.
const READ_WINDOW_MIN: usize = 2 << 20;
const READ_WINDOW_MAX: usize = 8 << 20;
/// A forward seek shorter than this keeps the grown window: restore workers
/// each read every other blob of a pack, which is still a forward scan.
const SHORT_SEEK: u64 = 32 << 20;

/// What a reader needs of the tier (cheap clones).
pub(super) struct S3Handle {
    pub name: String,
    pub client: aws_sdk_s3::Client,
    pub rt: Arc<tokio::runtime::Runtime>,
    pub settings: S3Settings,
}

/// A seekable reader over ranged GETs. The window doubles while reads move
/// forward (a whole-pack read costs few requests) and starts small again
/// after a backward or long seek (a restore that needs one blob fetches
/// little more than it).
pub(super) struct RangeReader {
    tier: S3Handle,
    key: String,
    size: u64,
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
    window: usize,
}

impl RangeReader {
    pub(super) fn new(tier: S3Handle, key: &str, size: u64) -> Self {
        RangeReader {
            tier,
            key: key.to_string(),
            size,
            pos: 0,
            buf: Vec::new(),
            buf_start: 0,
            window: READ_WINDOW_MIN,
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let len = (self.window as u64).min(self.size - self.pos);
        let t = &self.tier;
        let full = format!("{}{}", t.settings.prefix, self.key);
        let r = t.rt.block_on(async {
            let o = t
                .client
                .get_object()
                .bucket(&t.settings.bucket)
                .key(&full)
                .range(format!("bytes={}-{}", self.pos, self.pos + len - 1))
                .send()
                .await
                .map_err(|e| {
                    io::Error::other(format!(
                        "tier {}: get {}: {}",
                        t.name,
                        self.key,
                        e.message().unwrap_or("request failed")
                    ))
                })?;
            o.body
                .collect()
                .await
                .map(|b| b.into_bytes().to_vec())
                .map_err(|e| io::Error::other(format!("tier {}: get {}: {e}", t.name, self.key)))
        })?;
        if r.len() as u64 != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "short ranged read",
            ));
        }
        self.buf = r;
        self.buf_start = self.pos;
        self.window = (self.window * 2).min(READ_WINDOW_MAX);
        Ok(())
    }
}

impl Read for RangeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || out.is_empty() {
            return Ok(0);
        }
        let in_buf =
            self.pos >= self.buf_start && self.pos < self.buf_start + self.buf.len() as u64;
        if !in_buf {
            self.fill()?;
        }
        let off = (self.pos - self.buf_start) as usize;
        let n = out.len().min(self.buf.len() - off);
        out[..n].copy_from_slice(&self.buf[off..off + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for RangeReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => n as i128,
            SeekFrom::End(d) => self.size as i128 + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if new < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before start",
            ));
        }
        let new = new as u64;
        let buf_end = self.buf_start + self.buf.len() as u64;
        let in_buf = new >= self.buf_start && new <= buf_end;
        let short_forward = new > buf_end && new - buf_end < SHORT_SEEK;
        if !in_buf && !short_forward {
            self.window = READ_WINDOW_MIN;
        }
        self.pos = new;
        Ok(new)
    }
}
