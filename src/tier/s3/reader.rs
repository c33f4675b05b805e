//! Reading an S3 object as a seekable stream of ranged GETs.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use std::time::Duration;

use super::S3Settings;
use crate::tier::TierError;

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
    /// The version to read (one a delete marker hides), else the current.
    version: Option<String>,
    size: u64,
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
    window: usize,
}

impl RangeReader {
    pub(super) fn new(tier: S3Handle, key: &str, version: Option<String>, size: u64) -> Self {
        RangeReader {
            tier,
            key: key.to_string(),
            version,
            size,
            pos: 0,
            buf: Vec::new(),
            buf_start: 0,
            window: READ_WINDOW_MIN,
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let len = (self.window as u64).min(self.size - self.pos);
        let r = self
            .tier
            .fetch(&self.key, self.version.as_deref(), self.pos, Some(len))
            .map_err(|e| io::Error::other(e.to_string()))?;
        if r.len() as u64 != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "tier {}: get {}: the store returned {} of {len} bytes at offset {}",
                    self.tier.name,
                    self.key,
                    r.len(),
                    self.pos
                ),
            ));
        }
        self.buf = r;
        self.buf_start = self.pos;
        self.window = (self.window * 2).min(READ_WINDOW_MAX);
        Ok(())
    }
}

/// How many times a read is resumed after its body stream broke or the
/// request failed in a way worth trying again, beyond the SDK's own
/// retries of the request. The delays double from [`RESUME_FIRST_DELAY`]
/// (with jitter): 0.2 + 0.4 + ... + 6.4 s, about 13 s at most in all.
const RESUME_ATTEMPTS: u32 = 6;
const RESUME_FIRST_DELAY: Duration = Duration::from_millis(200);

impl S3Handle {
    /// Reads `len` bytes of `key` (of `version`, else the current one) from
    /// `from` (to the end when `len` is `None`). The SDK retries a request that fails, but not a body that
    /// breaks off half way (a reset connection, a proxy timing out): such a
    /// read is resumed with a ranged GET from the offset reached, with
    /// backoff, up to [`RESUME_ATTEMPTS`] times. A missing object or refused
    /// credentials fail at once. Damage is left for the caller to judge
    /// from the bytes (pack ids are content hashes).
    pub(super) fn fetch(
        &self,
        key: &str,
        version: Option<&str>,
        from: u64,
        len: Option<u64>,
    ) -> Result<Vec<u8>, TierError> {
        let full = format!("{}{}", self.settings.prefix, key);
        let mut out = Vec::with_capacity(len.unwrap_or(0).min(16 << 20) as usize);
        let mut attempt = 0;
        loop {
            let at = from + out.len() as u64;
            let range = match len {
                Some(l) => {
                    let want = l - out.len() as u64;
                    if want == 0 {
                        return Ok(out);
                    }
                    Some(format!("bytes={at}-{}", at + want - 1))
                }
                None if at > 0 => Some(format!("bytes={at}-")),
                None => None,
            };
            // Ok(true): the body ended; Err((worth retrying, error)).
            let r: Result<bool, (bool, TierError)> = self.rt.block_on(async {
                let o = self
                    .client
                    .get_object()
                    .bucket(&self.settings.bucket)
                    .key(&full)
                    .set_version_id(version.map(str::to_string))
                    .set_range(range)
                    .send()
                    .await;
                let mut o = match o {
                    Ok(o) => o,
                    // The end of the object was reached exactly at a break.
                    Err(e) if len.is_none() && at > 0 && super::status(&e) == Some(416) => {
                        return Ok(true)
                    }
                    Err(e) => {
                        let retry = super::worth_retrying(&e);
                        return Err((
                            retry,
                            super::tier_error(&self.name, &self.settings, "get", key, &e),
                        ));
                    }
                };
                loop {
                    match o.body.try_next().await {
                        Ok(Some(b)) => out.extend_from_slice(&b),
                        Ok(None) => return Ok(true),
                        Err(e) => {
                            return Err((
                                true,
                                TierError::Remote {
                                    tier: self.name.clone(),
                                    op: "get",
                                    key: key.to_string(),
                                    detail: format!("download interrupted: {e}"),
                                },
                            ))
                        }
                    }
                }
            });
            let complete = match r {
                Ok(c) => c,
                Err((false, e)) => return Err(e),
                Err((true, e)) if attempt >= RESUME_ATTEMPTS => {
                    return Err(match e {
                        TierError::Remote {
                            tier,
                            op,
                            key,
                            detail,
                        } => TierError::Remote {
                            tier,
                            op,
                            key,
                            detail: format!("{detail} ({} attempts)", attempt + 1),
                        },
                        other => other,
                    })
                }
                Err((true, _)) => false,
            };
            // A body that ended early without an error is a break too.
            let short = len.is_some_and(|l| (out.len() as u64) < l);
            if complete && (!short || attempt >= RESUME_ATTEMPTS) {
                return Ok(out);
            }
            attempt += 1;
            std::thread::sleep(backoff(attempt));
        }
    }
}

/// The delay before resume `n` (from 1): doubling from
/// [`RESUME_FIRST_DELAY`], with up to half of it again as jitter so that
/// workers that broke together do not come back together.
fn backoff(n: u32) -> Duration {
    let base = RESUME_FIRST_DELAY * 2u32.pow(n.saturating_sub(1).min(6));
    let jitter = getrandom::u64().unwrap_or(0) % (base.as_millis() as u64 / 2 + 1);
    base + Duration::from_millis(jitter)
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
