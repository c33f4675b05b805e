//! Reading an S3 object as a seekable stream of ranged GETs.

use std::cell::RefCell;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::S3Settings;

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
