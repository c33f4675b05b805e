//! Reading an S3 object as a seekable stream of ranged GETs.

use std::cell::RefCell;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::time::Duration;

use super::S3Settings;
use crate::tier::TierError;

/// Ranged-GET window: starts at 2 MiB and doubles on sequential reads up to
/// 8 MiB (a 32 MiB pack read whole costs 6 requests).
const READ_WINDOW_MIN: usize = 2 << 20;
const READ_WINDOW_MAX: usize = 8 << 20;
/// A forward seek shorter than this keeps the grown window: restore workers
/// each read every other blob of a pack, which is still a forward scan.
const SHORT_SEEK: u64 = 32 << 20;
/// Windows a thread holds, across every reader it reads through; filling
/// another reuses the buffer of the one filled longest ago (whose reader
/// fetches it again if it is read there again).
///
/// The buffers belong to the thread, not to the reader, because a reader
/// stays open long after it is read: a restore worker keeps 32 packs open
/// (`pipeline::fetch`, for a stream that jumps between packs), and with a
/// window in each an S3 restore of 1 GiB peaked at 235-259 MiB RSS (local
/// tier: 55 MiB) on 2 cores. A worker reads one pack at a time (in order,
/// or sorted by pack for a file), so two windows are enough: they bound
/// the buffers to 2 x 8 MiB per thread (2 workers and the planner on
/// 2 cores: 48 MiB), whatever the number of packs open: that restore now
/// peaks at 98-109 MiB, as fast as before (docs/benchmarks.md).
const WINDOWS_PER_THREAD: usize = 2;

/// A window of some reader's object, held by the thread that filled it.
struct Window {
    /// [`RangeReader::id`]; 0 for a free buffer.
    reader: u64,
    /// Object offset of `bytes[0]`.
    start: u64,
    bytes: Vec<u8>,
}

thread_local! {
    /// This thread's windows, least recently filled first.
    static WINDOWS: RefCell<Vec<Window>> = const { RefCell::new(Vec::new()) };
}

/// Reader ids (0 is no reader).
static NEXT_READER: AtomicU64 = AtomicU64::new(1);

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
/// little more than it). The bytes fetched are held in the reading thread's
/// [`WINDOWS`], not here: an open reader that is not being read costs no
/// buffer.
pub(super) struct RangeReader {
    tier: S3Handle,
    /// Identifies this reader's window in [`WINDOWS`].
    id: u64,
    key: String,
    /// The version to read (one a delete marker hides), else the current.
    version: Option<String>,
    size: u64,
    pos: u64,
    /// Extent of the last window fetched (it may have been reused since):
    /// where a seek lands relative to it decides the next window's size.
    buf_start: u64,
    buf_end: u64,
    window: usize,
}

impl RangeReader {
    pub(super) fn new(tier: S3Handle, key: &str, version: Option<String>, size: u64) -> Self {
        RangeReader {
            tier,
            id: NEXT_READER.fetch_add(1, Ordering::Relaxed),
            key: key.to_string(),
            version,
            size,
            pos: 0,
            buf_start: 0,
            buf_end: 0,
            window: READ_WINDOW_MIN,
        }
    }

    /// Copies from this reader's window at `pos`, if this thread holds
    /// one covering it; `None` when it does not.
    fn copy_out(&self, out: &mut [u8]) -> Option<usize> {
        WINDOWS.with_borrow(|windows| {
            let w = windows.iter().find(|w| w.reader == self.id)?;
            let off = self.pos.checked_sub(w.start)? as usize;
            let n = out.len().min(w.bytes.len().checked_sub(off)?);
            if n == 0 {
                return None;
            }
            out[..n].copy_from_slice(&w.bytes[off..off + n]);
            Some(n)
        })
    }

    /// Fetches the window at `pos` into a buffer of this thread: this
    /// reader's own, else a free one, else a new one while the thread holds
    /// fewer than [`WINDOWS_PER_THREAD`], else the least recently filled.
    fn fill(&mut self) -> io::Result<()> {
        let len = (self.window as u64).min(self.size - self.pos);
        let mut w = WINDOWS.with_borrow_mut(|windows| {
            let own = windows.iter().position(|w| w.reader == self.id);
            let free = || windows.iter().position(|w| w.reader == 0);
            match own.or_else(free) {
                Some(i) => windows.remove(i),
                None if windows.len() < WINDOWS_PER_THREAD => Window {
                    reader: 0,
                    start: 0,
                    bytes: Vec::new(),
                },
                None => windows.remove(0),
            }
        });
        w.reader = 0;
        let r = self.tier.fetch_into(
            &self.key,
            self.version.as_deref(),
            self.pos,
            Some(len),
            &mut w.bytes,
        );
        let got = w.bytes.len() as u64;
        let ok = r.is_ok() && got == len;
        if ok {
            w.reader = self.id;
            w.start = self.pos;
        } else {
            w.bytes.clear();
        }
        // Most recently filled last; a failed fill leaves its buffer free.
        WINDOWS.with_borrow_mut(|windows| {
            if ok {
                windows.push(w);
            } else {
                windows.insert(0, w);
            }
        });
        r.map_err(|e| io::Error::other(e.to_string()))?;
        if !ok {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "tier {}: get {}: the store returned {got} of {len} bytes at offset {}",
                    self.tier.name, self.key, self.pos
                ),
            ));
        }
        self.buf_start = self.pos;
        self.buf_end = self.pos + len;
        self.window = (self.window * 2).min(READ_WINDOW_MAX);
        Ok(())
    }

    /// Marks this reader's window on this thread free, keeping the
    /// buffer for the thread's next fill (`drop`: freeing the buffer too).
    fn release(&self, drop: bool) {
        let _ = WINDOWS.try_with(|windows| {
            if let Ok(mut windows) = windows.try_borrow_mut() {
                if let Some(i) = windows.iter().position(|w| w.reader == self.id) {
                    if drop {
                        windows.remove(i);
                    } else {
                        windows[i].reader = 0;
                        windows[i].bytes.clear();
                    }
                }
            }
        });
    }
}

impl Drop for RangeReader {
    /// A closed pack gives its window's memory back. (Dropped on another
    /// thread it cannot reach it: the window stays with the thread that
    /// filled it, for that thread's next fills to reuse.)
    fn drop(&mut self) {
        self.release(true);
    }
}

/// How many times a read is resumed after its body stream broke or the
/// request failed in a way worth trying again, beyond the SDK's own
/// retries of the request. The delays double from [`RESUME_FIRST_DELAY`]
/// (with jitter): 0.2 + 0.4 + ... + 6.4 s, about 13 s at most in all.
const RESUME_ATTEMPTS: u32 = 6;
const RESUME_FIRST_DELAY: Duration = Duration::from_millis(200);
/// How many of those may be requests that failed outright (no answer, or a
/// 5xx, after the SDK's own 4 attempts): a store that is down must fail a
/// read in seconds, not in a quarter of a minute per object, or a verify
/// of an unreachable tier would take hours.
const REQUEST_RETRIES: u32 = 2;

/// Why one attempt of a read failed.
#[derive(PartialEq)]
enum Failed {
    /// Not worth trying again (missing, refused).
    Final,
    /// The request failed outright.
    Request,
    /// The body broke off: resume from the offset reached.
    Body,
}

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
        let mut out = Vec::new();
        self.fetch_into(key, version, from, len, &mut out)?;
        Ok(out)
    }

    /// [`fetch`](Self::fetch) into `out` (cleared first), reusing its
    /// allocation: a reader's windows are refilled, not reallocated.
    pub(super) fn fetch_into(
        &self,
        key: &str,
        version: Option<&str>,
        from: u64,
        len: Option<u64>,
        out: &mut Vec<u8>,
    ) -> Result<(), TierError> {
        let full = format!("{}{}", self.settings.prefix, key);
        out.clear();
        // Exact: `reserve` may double a smaller buffer past the window.
        out.reserve_exact(len.unwrap_or(0).min(16 << 20) as usize);
        let mut attempt = 0;
        let mut request_failures = 0;
        loop {
            let at = from + out.len() as u64;
            let range = match len {
                Some(l) => {
                    let want = l - out.len() as u64;
                    if want == 0 {
                        return Ok(());
                    }
                    Some(format!("bytes={at}-{}", at + want - 1))
                }
                None if at > 0 => Some(format!("bytes={at}-")),
                None => None,
            };
            // Ok(true): the body ended; Err((why, error)).
            let r: Result<bool, (Failed, TierError)> = self.rt.block_on(async {
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
                        let why = if super::worth_retrying(&e) {
                            Failed::Request
                        } else {
                            Failed::Final
                        };
                        return Err((
                            why,
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
                                Failed::Body,
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
                Err((Failed::Final, e)) => return Err(e),
                Err((why, e))
                    if attempt >= RESUME_ATTEMPTS
                        || (why == Failed::Request && {
                            request_failures += 1;
                            request_failures > REQUEST_RETRIES
                        }) =>
                {
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
                Err(_) => false,
            };
            // A body that ended early without an error is a break too.
            let short = len.is_some_and(|l| (out.len() as u64) < l);
            if complete && (!short || attempt >= RESUME_ATTEMPTS) {
                return Ok(());
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
        let n = match self.copy_out(out) {
            Some(n) => n,
            None => {
                self.fill()?;
                self.copy_out(out)
                    .ok_or_else(|| io::Error::other("window lost"))?
            }
        };
        self.pos += n as u64;
        if self.pos >= self.size {
            // Read to its end: nothing more will come of this window.
            self.release(false);
        }
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
        let in_buf = new >= self.buf_start && new <= self.buf_end;
        let short_forward = new > self.buf_end && new - self.buf_end < SHORT_SEEK;
        if !in_buf && !short_forward {
            self.window = READ_WINDOW_MIN;
        }
        self.pos = new;
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

    const BUCKET: &str = "reader-test";
    const KEY: &str = "reader-test-access-key";
    const SECRET: &str = "reader-test-secret-key-0123456789";

    /// An in-process s3s-fs server (as tests/support/s3.rs starts it),
    /// serving until the returned runtime is dropped.
    fn server(root: &std::path::Path) -> (tokio::runtime::Runtime, String) {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::server::conn::auto::Builder as ConnBuilder;
        use s3s::auth::SimpleAuth;
        use s3s::service::S3ServiceBuilder;

        std::fs::create_dir(root.join(BUCKET)).unwrap();
        let mut builder = S3ServiceBuilder::new(s3s_fs::FileSystem::new(root).unwrap());
        builder.set_auth(SimpleAuth::from_single(KEY, SECRET));
        let service = builder.build();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let http = ConnBuilder::new(TokioExecutor::new());
            while let Ok((socket, _)) = listener.accept().await {
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(conn);
            }
        });
        (rt, endpoint)
    }

    fn handle(endpoint: &str) -> S3Handle {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .force_path_style(true)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(KEY, SECRET, None, None, "test"))
            .build();
        let mut settings = S3Settings::from_url(&format!("s3://{BUCKET}/p")).unwrap();
        settings.endpoint = Some(endpoint.to_string());
        S3Handle {
            name: "s3".into(),
            client: aws_sdk_s3::Client::from_conf(config),
            rt: Arc::new(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .unwrap(),
            ),
            settings,
        }
    }

    fn clone(h: &S3Handle) -> S3Handle {
        S3Handle {
            name: h.name.clone(),
            client: h.client.clone(),
            rt: h.rt.clone(),
            settings: h.settings.clone(),
        }
    }

    fn held() -> Vec<(u64, usize)> {
        WINDOWS.with_borrow(|w| w.iter().map(|w| (w.reader, w.bytes.capacity())).collect())
    }

    /// Three readers of one object read in turn on one thread, which holds
    /// two windows: every read returns the object's bytes (a reader whose
    /// window another reused fetches it again), the thread never holds more
    /// than two windows, and dropping the readers frees them.
    #[test]
    fn readers_share_the_threads_windows() {
        let dir = tempfile::tempdir().unwrap();
        let (_server, endpoint) = server(dir.path());
        let h = handle(&endpoint);
        let data: Vec<u8> = (0..(11u32 << 20) / 4)
            .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
            .collect();
        h.rt.block_on(
            h.client
                .put_object()
                .bucket(BUCKET)
                .key("p/obj")
                .body(data.clone().into())
                .send(),
        )
        .unwrap();

        let size = data.len() as u64;
        let mut readers: Vec<RangeReader> = (0..3)
            .map(|_| RangeReader::new(clone(&h), "obj", None, size))
            .collect();
        let starts = [0u64, 3 << 20, 7 << 20];
        for (r, &at) in readers.iter_mut().zip(&starts) {
            r.seek(SeekFrom::Start(at)).unwrap();
        }
        let mut buf = vec![0u8; 300 << 10];
        for round in 0..12u64 {
            for (i, r) in readers.iter_mut().enumerate() {
                let at = starts[i] + round * buf.len() as u64;
                if at >= size {
                    continue;
                }
                let n = r.read(&mut buf).unwrap();
                assert!(n > 0);
                assert_eq!(&buf[..n], &data[at as usize..at as usize + n], "reader {i}");
                r.seek(SeekFrom::Start(at + buf.len() as u64)).unwrap();
                let windows = held();
                assert!(windows.len() <= WINDOWS_PER_THREAD, "{windows:?}");
                assert!(windows.iter().all(|w| w.1 <= READ_WINDOW_MAX));
            }
        }
        // A whole read, front to back, through windows of 2, 4, 8 MiB.
        let mut whole = Vec::new();
        readers[0].seek(SeekFrom::Start(0)).unwrap();
        readers[0].read_to_end(&mut whole).unwrap();
        assert!(whole == data);
        // Read to its end, its window is free for the next fill.
        assert!(held().iter().any(|w| w.0 == 0));
        readers.clear();
        assert!(held().iter().all(|w| w.0 == 0), "{:?}", held());
    }
}
