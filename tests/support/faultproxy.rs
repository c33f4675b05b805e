#![allow(dead_code)]
//! A fault-injecting HTTP/1.1 proxy for the S3 integration tests.
//!
//! Tests put it between the `coffer` binary (or an SDK client) and a real S3
//! server from `support/s3.rs`, to see what coffer does when the store
//! misbehaves the way real stores and networks do: connections reset, 503
//! SlowDown, 500 InternalError, a write that happened but whose reply was lost,
//! a download cut short. The server behind it stays real, so everything that
//! is not a fault is S3's actual behaviour.
//!
//! It runs in the test process on std threads and listens on 127.0.0.1:0.
//! Give [`FaultProxy::endpoint`] to the client as its S3 endpoint. Requests
//! are forwarded byte for byte, Host header included: the client signs
//! (SigV4) for the proxy's host:port, and the server checks the signature
//! against the Host header it receives, which is that same host:port, so
//! signatures stay valid without the proxy knowing any keys.
//!
//! # Rules
//!
//! [`FaultProxy::set`] replaces the [`Rules`]; the next request is decided by
//! the new ones (on every connection, including kept-alive ones). For each
//! request, in this order:
//!
//! 1. [`Rules::script`]: the first entry with `count > 0` whose method (`""`
//!    = any) and path substring match fires its [`Fault`] and is decremented.
//!    Deterministic: use it to hit exactly the request a test is about.
//! 2. [`Rules::down`]: every request is reset, whatever `only` says (the
//!    store is unreachable).
//! 3. [`Rules::only`]: a request that does not match passes untouched (no
//!    faults, no latency).
//! 4. The probabilities `reset`, `error_503`, `error_500`, `lost_reply`,
//!    `truncate`, each drawn per request in that order from a PRNG seeded
//!    with [`Rules::seed`] (re-seeded by every `set`); the first that fires
//!    decides. All five are drawn for every request, so one request's fate
//!    does not shift the draws of the next. The sequence is reproducible for
//!    requests that arrive one at a time; concurrent requests take their
//!    draws in arrival order.
//! 5. [`Rules::latency`] delays every forwarded request that `only` lets
//!    through.
//!
//! What each fault does on the wire:
//!
//! * `Reset`: the client connection is aborted (TCP RST) without forwarding.
//! * `Error503` / `Error500`: the request (body included) is read and
//!   answered with an S3 XML error (`SlowDown` / `InternalError`) without
//!   forwarding; the connection stays usable.
//! * `LostReply`: the request is forwarded and the server's whole response
//!   read, then the client connection is aborted: the write happened, the
//!   client cannot know it.
//! * `Truncate`: only for a GET answered 200/206 with a Content-Length over
//!   16 bytes: the head (with the original Content-Length) and a random
//!   prefix of 0..len bytes of the body are sent, then the connection is
//!   closed. Any other response passes untouched; a scripted Truncate that
//!   met such a response stays armed for the next match.
//!
//! [`FaultProxy::stats`] counts requests, each fault carried out, and the
//! requests forwarded to the server (including lost replies and truncated
//! ones: the server saw them).
//!
//! # Protocol
//!
//! One thread per client connection, with keep-alive; each has its own
//! upstream connection, opened lazily and reopened when the server closed it.
//! Bodies (Content-Length or chunked, forwarded verbatim) stream through a
//! 64 KiB buffer. `Expect: 100-continue` goes to the server with the head,
//! and the server's interim `100 Continue` is relayed before the body.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Buffer for streaming bodies (and the read buffer of each socket).
const BUF: usize = 64 * 1024;
/// Longest request/response head accepted; S3 heads are a few KiB.
const MAX_HEAD: u64 = 1024 * 1024;
/// Longest chunk-size or trailer line in a chunked body.
const MAX_LINE: u64 = 64 * 1024;
/// Truncate leaves bodies this short alone: a cut of a tiny body proves
/// nothing and S3 error bodies of GETs are not 200/206 anyway.
const TRUNCATE_MIN_BODY: u64 = 16;
/// How long a connection that may still carry unread client bytes is drained
/// before it is closed (see [`End::Linger`]).
const LINGER: Duration = Duration::from_secs(1);

/// Which requests the proxy breaks, and how. See the module documentation.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    /// Seed of the PRNG behind the probabilities and the truncation lengths.
    pub seed: u64,
    /// Probabilities (0.0..=1.0), each drawn independently per request in this
    /// order; the first that fires decides the request's fate.
    /// Close the client connection without forwarding (connection reset).
    pub reset: f64,
    /// Answer 503 SlowDown (S3 XML error body) without forwarding.
    pub error_503: f64,
    /// Answer 500 InternalError without forwarding.
    pub error_500: f64,
    /// Forward the request, read the upstream's full response, then close the
    /// client connection without sending any of it.
    pub lost_reply: f64,
    /// GET answered 200/206 with a body over 16 bytes: send the head and only
    /// a random prefix (0..len bytes) of the body, then close.
    pub truncate: f64,
    /// Delay added before forwarding every request.
    pub latency: Option<Duration>,
    /// When true every request is reset (the store is "down").
    pub down: bool,
    /// When set, faults apply only to requests whose method equals `.0`
    /// ("" = any) and whose request path contains `.1`; others pass
    /// untouched.
    pub only: Option<(String, String)>,
    /// Deterministic faults: each entry fires on the next `count` requests
    /// that match (method, path substring); checked before everything else.
    pub script: Vec<Scripted>,
}

/// A fault for the next `count` requests matching `method` ("" = any) and
/// containing `path_contains` in their request target.
#[derive(Clone, Debug)]
pub struct Scripted {
    pub method: String,
    pub path_contains: String,
    pub fault: Fault,
    pub count: u32,
}

impl Scripted {
    /// `count` times `fault` on requests matching `method` and `path_contains`.
    pub fn new(method: &str, path_contains: &str, fault: Fault, count: u32) -> Scripted {
        Scripted {
            method: method.to_string(),
            path_contains: path_contains.to_string(),
            fault,
            count,
        }
    }

    /// `fault` once, on the next request matching `method` and `path_contains`.
    pub fn once(method: &str, path_contains: &str, fault: Fault) -> Scripted {
        Scripted::new(method, path_contains, fault, 1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Reset,
    Error503,
    Error500,
    LostReply,
    Truncate,
    /// Answer 404 NoSuchKey without forwarding: the client sees the object
    /// absent although the server holds it (scripted only: a stale read, or
    /// another writer's object appearing between two requests).
    NotFound,
}

/// Counters since the proxy started.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Every request head read from a client.
    pub requests: u64,
    pub reset: u64,
    pub error_503: u64,
    pub error_500: u64,
    /// Scripted 404s answered.
    pub not_found: u64,
    pub lost_reply: u64,
    pub truncate: u64,
    /// Requests sent (head and body) to the server, faulted replies included.
    pub forwarded: u64,
}

impl Stats {
    /// All faults carried out.
    pub fn faults(&self) -> u64 {
        self.reset
            + self.error_503
            + self.error_500
            + self.not_found
            + self.lost_reply
            + self.truncate
    }
}

/// A running proxy. Dropping it stops accepting and cuts the open client
/// connections (best effort).
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts forwarding to `upstream` ("http://127.0.0.1:PORT", e.g.
    /// `S3Server::endpoint()`), with no faults.
    pub fn start(upstream: &str) -> FaultProxy {
        let hostport = upstream
            .strip_prefix("http://")
            .unwrap_or_else(|| {
                panic!("faultproxy: upstream must be http://HOST:PORT, not {upstream}")
            })
            .trim_end_matches('/');
        let upstream_addr = hostport
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| panic!("faultproxy: cannot resolve upstream {upstream}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("faultproxy: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("faultproxy: local addr");
        let shared = Arc::new(Shared {
            upstream: upstream_addr,
            state: Mutex::new(State::new(Rules::default())),
            counters: Counters::default(),
            stopping: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("faultproxy-accept".into())
                .spawn(move || accept_loop(listener, shared))
                .expect("faultproxy: spawn accept thread")
        };
        FaultProxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// "http://127.0.0.1:PORT" of the proxy: give this to coffer as
    /// --s3-endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Replaces the rules (and re-seeds the PRNG); takes effect for the next
    /// request.
    pub fn set(&self, rules: Rules) {
        let mut state = lock(&self.shared.state);
        let generation = state.generation + 1;
        *state = State::new(rules);
        state.generation = generation;
    }

    /// Back to no faults (same as `set(Rules::default())`).
    pub fn clear(&self) {
        self.set(Rules::default());
    }

    /// The rules now in force, with the scripted counts left.
    pub fn rules(&self) -> Rules {
        lock(&self.shared.state).rules.clone()
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        Stats {
            requests: get(&c.requests),
            reset: get(&c.reset),
            error_503: get(&c.error_503),
            error_500: get(&c.error_500),
            not_found: get(&c.not_found),
            lost_reply: get(&c.lost_reply),
            truncate: get(&c.truncate),
            forwarded: get(&c.forwarded),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // accept() has no timeout: wake it with a connection of our own. Only
        // wait for the thread if that worked, so Drop cannot hang.
        if TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).is_ok() {
            if let Some(accept) = self.accept.take() {
                let _ = accept.join();
            }
        }
        // Like a server going away: open connections are cut.
        for conn in lock(&self.shared.conns).values() {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

// ---------------------------------------------------------------------------
// Shared state and decisions

struct Shared {
    upstream: SocketAddr,
    state: Mutex<State>,
    counters: Counters,
    stopping: AtomicBool,
    /// A handle on every open client connection, so Drop can cut them.
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
}

struct State {
    rules: Rules,
    rng: Rng,
    /// Bumped by every `set`, so a scripted Truncate is only re-armed in the
    /// rules it came from.
    generation: u64,
}

impl State {
    fn new(rules: Rules) -> State {
        State {
            rng: Rng::new(rules.seed),
            rules,
            generation: 0,
        }
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    reset: AtomicU64,
    error_503: AtomicU64,
    error_500: AtomicU64,
    not_found: AtomicU64,
    lost_reply: AtomicU64,
    truncate: AtomicU64,
    forwarded: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::SeqCst);
}

/// What happens to one request.
#[derive(Clone, Copy, Debug)]
enum Plan {
    Pass,
    Reset,
    Error(u16),
    LostReply,
    /// `scripted`: (generation, index) of the script entry it came from.
    Truncate {
        scripted: Option<(u64, usize)>,
    },
}

struct Decision {
    plan: Plan,
    latency: Option<Duration>,
}

fn matches(want_method: &str, want_path: &str, method: &str, target: &str) -> bool {
    (want_method.is_empty() || want_method.eq_ignore_ascii_case(method))
        && target.contains(want_path)
}

impl Shared {
    fn decide(&self, method: &str, target: &str) -> Decision {
        let mut state = lock(&self.state);
        let state = &mut *state;
        let rules = &mut state.rules;
        let touched = match &rules.only {
            Some((m, p)) => matches(m, p, method, target),
            None => true,
        };
        let latency = if touched { rules.latency } else { None };

        let scripted = rules
            .script
            .iter_mut()
            .enumerate()
            .find(|(_, s)| s.count > 0 && matches(&s.method, &s.path_contains, method, target));
        if let Some((index, entry)) = scripted {
            entry.count -= 1;
            let plan = match entry.fault {
                Fault::Reset => Plan::Reset,
                Fault::Error503 => Plan::Error(503),
                Fault::Error500 => Plan::Error(500),
                Fault::NotFound => Plan::Error(404),
                Fault::LostReply => Plan::LostReply,
                Fault::Truncate => Plan::Truncate {
                    scripted: Some((state.generation, index)),
                },
            };
            return Decision { plan, latency };
        }
        if rules.down {
            return Decision {
                plan: Plan::Reset,
                latency: None,
            };
        }
        if !touched {
            return Decision {
                plan: Plan::Pass,
                latency: None,
            };
        }
        let rng = &mut state.rng;
        // Always five draws, whichever fires, so the sequence per request is
        // fixed.
        let draws = [
            rng.unit() < rules.reset,
            rng.unit() < rules.error_503,
            rng.unit() < rules.error_500,
            rng.unit() < rules.lost_reply,
            rng.unit() < rules.truncate,
        ];
        let plans = [
            Plan::Reset,
            Plan::Error(503),
            Plan::Error(500),
            Plan::LostReply,
            Plan::Truncate { scripted: None },
        ];
        let plan = draws
            .iter()
            .zip(plans)
            .find(|(fired, _)| **fired)
            .map_or(Plan::Pass, |(_, plan)| plan);
        Decision { plan, latency }
    }

    /// A scripted Truncate met a response it cannot cut: give its count back.
    fn rearm(&self, generation: u64, index: usize) {
        let mut state = lock(&self.state);
        if state.generation == generation {
            if let Some(entry) = state.rules.script.get_mut(index) {
                entry.count += 1;
            }
        }
    }

    /// How many body bytes of `len` a truncated response keeps: 0..len.
    fn truncated_len(&self, len: u64) -> u64 {
        lock(&self.state).rng.below(len)
    }
}

/// xorshift64* seeded through splitmix64 (so seed 0 works): deterministic,
/// and no dependency for a test helper.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1): `p = 1.0` always fires, `p = 0.0` never.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform-enough in 0..n (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking connection thread must not take the proxy down with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------
// Connections

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let id = shared.next_conn.fetch_add(1, Ordering::SeqCst);
        if let Ok(handle) = stream.try_clone() {
            lock(&shared.conns).insert(id, handle);
        }
        let conn_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("faultproxy-conn".into())
            .spawn(move || {
                let end = serve(&conn_shared, &stream);
                // The registry's handle is a second descriptor of the socket:
                // it must go before the close below, or no FIN/RST is sent.
                lock(&conn_shared.conns).remove(&id);
                finish(stream, end);
            });
        if spawned.is_err() {
            lock(&shared.conns).remove(&id);
        }
    }
}

/// How a client connection ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Orderly close (FIN) after what was sent.
    Graceful,
    /// Abortive close (RST): what a reset or a lost reply looks like, and
    /// what a broken upstream exchange turns into.
    Reset,
    /// The client may still be sending a body nobody will read: stop
    /// sending, drain for a moment, then close, so the kernel does not
    /// answer the unread bytes with an RST that could destroy the response
    /// just sent.
    Linger,
}

/// What to do after a request.
enum Next {
    KeepAlive,
    End(End),
}

fn finish(stream: TcpStream, end: End) {
    match end {
        End::Graceful => {
            let _ = stream.shutdown(Shutdown::Both);
        }
        End::Reset => {
            // SO_LINGER 0: close sends RST instead of FIN.
            let _ = rustix::net::sockopt::set_socket_linger(&stream, Some(Duration::ZERO));
        }
        End::Linger => {
            let _ = stream.shutdown(Shutdown::Write);
            let _ = stream.set_read_timeout(Some(LINGER));
            let _ = io::copy(&mut &stream, &mut io::sink());
        }
    }
    drop(stream);
}

/// The upstream side of one client connection.
struct Upstream {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Upstream {
    fn connect(addr: SocketAddr) -> io::Result<Upstream> {
        let writer = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        writer.set_nodelay(true)?;
        Ok(Upstream {
            reader: BufReader::with_capacity(BUF, writer.try_clone()?),
            writer,
        })
    }

    /// Whether a kept-alive connection can take another request: the server
    /// may have closed it while idle (EOF waiting), and anything it sent
    /// unasked makes the stream unusable.
    fn reusable(&self) -> bool {
        if !self.reader.buffer().is_empty() || self.writer.set_nonblocking(true).is_err() {
            return false;
        }
        let idle = matches!(self.writer.peek(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        self.writer.set_nonblocking(false).is_ok() && idle
    }
}

fn serve(shared: &Shared, client: &TcpStream) -> End {
    let _ = client.set_nodelay(true);
    let Ok(read_half) = client.try_clone() else {
        return End::Graceful;
    };
    let mut from_client = BufReader::with_capacity(BUF, read_half);
    let mut upstream: Option<Upstream> = None;
    loop {
        let raw = match read_head(&mut from_client) {
            Ok(Some(raw)) => raw,
            // The client closed between requests (or sent garbage).
            Ok(None) | Err(_) => return End::Graceful,
        };
        bump(&shared.counters.requests);
        let Ok(req) = Request::parse(raw) else {
            return End::Reset;
        };
        let decision = shared.decide(&req.method, &req.target);
        let next = match decision.plan {
            Plan::Reset => {
                bump(&shared.counters.reset);
                return End::Reset;
            }
            Plan::Error(status) => answer_error(shared, &req, &mut from_client, client, status),
            _ => forward(
                shared,
                &req,
                &decision,
                &mut from_client,
                client,
                &mut upstream,
            ),
        };
        match next {
            Ok(Next::KeepAlive) => {}
            Ok(Next::End(end)) => return end,
            // A broken exchange on either side: cut the client, so it sees
            // a transport error rather than a half answer.
            Err(_) => return End::Reset,
        }
    }
}

/// Answers an injected 503/500 without the server. The body is read first so
/// the connection can carry the next request.
fn answer_error(
    shared: &Shared,
    req: &Request,
    from_client: &mut BufReader<TcpStream>,
    mut client: &TcpStream,
    status: u16,
) -> io::Result<Next> {
    if req.expect_continue && req.framing.has_body() {
        // The client may wait for this before sending the body we must read;
        // a 100 followed by a final error is valid HTTP.
        client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    copy_body(from_client, &mut io::sink(), req.framing)?;
    let (reason, code, counter) = match status {
        503 => ("Slow Down", "SlowDown", &shared.counters.error_503),
        404 => ("Not Found", "NoSuchKey", &shared.counters.not_found),
        _ => (
            "Internal Server Error",
            "InternalError",
            &shared.counters.error_500,
        ),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
    );
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut response = head.into_bytes();
    response.extend_from_slice(body.as_bytes());
    client.write_all(&response)?;
    bump(counter);
    Ok(if req.close {
        Next::End(End::Graceful)
    } else {
        Next::KeepAlive
    })
}

fn forward(
    shared: &Shared,
    req: &Request,
    decision: &Decision,
    from_client: &mut BufReader<TcpStream>,
    mut client: &TcpStream,
    upstream: &mut Option<Upstream>,
) -> io::Result<Next> {
    if let Some(latency) = decision.latency {
        std::thread::sleep(latency);
    }
    if !upstream.as_ref().is_some_and(Upstream::reusable) {
        *upstream = Some(Upstream::connect(shared.upstream)?);
    }
    let Some(up) = upstream.as_mut() else {
        unreachable!("connected above")
    };
    let lost_reply = matches!(decision.plan, Plan::LostReply);

    // Byte for byte, Host included: the signature covers it.
    up.writer.write_all(&req.raw)?;
    if req.expect_continue && req.framing.has_body() {
        // The server decides whether it wants the body: relay its interim
        // answer, and send the body only after a 100.
        loop {
            let resp = read_response_head(&mut up.reader)?;
            if resp.status == 100 {
                client.write_all(&resp.head.raw)?;
                break;
            }
            if resp.is_interim() {
                client.write_all(&resp.head.raw)?;
                continue;
            }
            // A final answer without wanting the body (e.g. 403). The client
            // may or may not send the body now, so neither connection can
            // carry another request.
            bump(&shared.counters.forwarded);
            let framing = resp.framing(&req.method);
            if lost_reply {
                copy_body(&mut up.reader, &mut io::sink(), framing)?;
                bump(&shared.counters.lost_reply);
                *upstream = None;
                return Ok(Next::End(End::Reset));
            }
            client.write_all(&resp.head.raw)?;
            copy_body(&mut up.reader, &mut client, framing)?;
            *upstream = None;
            return Ok(Next::End(End::Linger));
        }
    }
    copy_body(from_client, &mut up.writer, req.framing)?;
    bump(&shared.counters.forwarded);

    let resp = loop {
        let resp = read_response_head(&mut up.reader)?;
        if !resp.is_interim() {
            break resp;
        }
        if !lost_reply {
            client.write_all(&resp.head.raw)?;
        }
    };
    let framing = resp.framing(&req.method);
    let upstream_reusable = !resp.close && framing != Framing::UntilClose;

    match decision.plan {
        Plan::LostReply => {
            // Read it all, so the server finished its side, then lose it.
            copy_body(&mut up.reader, &mut io::sink(), framing)?;
            bump(&shared.counters.lost_reply);
            if !upstream_reusable {
                *upstream = None;
            }
            return Ok(Next::End(End::Reset));
        }
        Plan::Truncate { scripted } => match framing {
            Framing::Length(len)
                if req.method == "GET"
                    && matches!(resp.status, 200 | 206)
                    && len > TRUNCATE_MIN_BODY =>
            {
                let keep = shared.truncated_len(len);
                client.write_all(&resp.head.raw)?;
                copy_exact(&mut up.reader, &mut client, keep)?;
                bump(&shared.counters.truncate);
                // The rest of the body is still coming: that connection is
                // done too.
                *upstream = None;
                // FIN, not RST: the client must get the prefix, then EOF.
                return Ok(Next::End(End::Graceful));
            }
            _ => {
                if let Some((generation, index)) = scripted {
                    shared.rearm(generation, index);
                }
            }
        },
        _ => {}
    }

    client.write_all(&resp.head.raw)?;
    copy_body(&mut up.reader, &mut client, framing)?;
    if !upstream_reusable {
        *upstream = None;
    }
    Ok(
        if req.close || resp.close || framing == Framing::UntilClose {
            Next::End(End::Graceful)
        } else {
            Next::KeepAlive
        },
    )
}

// ---------------------------------------------------------------------------
// HTTP/1.1 framing

/// How a message body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// Exactly this many bytes (0 = no body).
    Length(u64),
    /// Chunked transfer coding, forwarded verbatim up to the final CRLF.
    Chunked,
    /// A response with neither: the body ends when the server closes.
    UntilClose,
}

impl Framing {
    fn has_body(self) -> bool {
        self != Framing::Length(0)
    }
}

/// A message head: the raw bytes (forwarded unchanged) and what was parsed
/// from them.
struct Head {
    raw: Vec<u8>,
    start: Vec<String>,
    headers: Vec<(String, String)>,
}

impl Head {
    fn parse(raw: Vec<u8>) -> io::Result<Head> {
        let text = String::from_utf8_lossy(&raw).into_owned();
        let mut lines = text.lines();
        let start: Vec<String> = lines
            .next()
            .unwrap_or_default()
            .splitn(3, ' ')
            .map(str::to_string)
            .collect();
        if start.len() < 3 {
            return Err(invalid("malformed start line"));
        }
        let mut headers = Vec::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid("malformed header"))?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        Ok(Head {
            raw,
            start,
            headers,
        })
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The comma-separated tokens of every `name` header, lowercased.
    fn tokens(&self, name: &str) -> Vec<String> {
        self.values(name)
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// Whether the connection ends after this message.
    fn close(&self, version: &str) -> bool {
        let connection = self.tokens("connection");
        connection.iter().any(|t| t == "close")
            || (version == "HTTP/1.0" && !connection.iter().any(|t| t == "keep-alive"))
    }

    /// Body framing from Transfer-Encoding / Content-Length; `None` if
    /// neither is present.
    fn body_framing(&self) -> io::Result<Option<Framing>> {
        let codings = self.tokens("transfer-encoding");
        if let Some(last) = codings.last() {
            return if last == "chunked" {
                Ok(Some(Framing::Chunked))
            } else {
                Err(invalid("transfer coding other than chunked"))
            };
        }
        let mut length = None;
        for value in self.values("content-length") {
            let n: u64 = value.parse().map_err(|_| invalid("bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(invalid("conflicting Content-Length"));
            }
            length = Some(n);
        }
        Ok(length.map(Framing::Length))
    }
}

struct Request {
    raw: Vec<u8>,
    method: String,
    /// The request-target, e.g. `/bucket/prefix/packs/ab/…?x-id=GetObject`.
    target: String,
    framing: Framing,
    expect_continue: bool,
    close: bool,
}

impl Request {
    fn parse(raw: Vec<u8>) -> io::Result<Request> {
        let head = Head::parse(raw)?;
        let framing = head.body_framing()?.unwrap_or(Framing::Length(0));
        let expect_continue = head
            .values("expect")
            .any(|v| v.eq_ignore_ascii_case("100-continue"));
        let close = head.close(&head.start[2]);
        let [method, target, _version] =
            <[String; 3]>::try_from(head.start).map_err(|_| invalid("malformed request line"))?;
        Ok(Request {
            raw: head.raw,
            method,
            target,
            framing,
            expect_continue,
            close,
        })
    }
}

struct Response {
    head: Head,
    status: u16,
    close: bool,
}

impl Response {
    fn is_interim(&self) -> bool {
        (100..200).contains(&self.status)
    }

    fn framing(&self, method: &str) -> Framing {
        if method == "HEAD" || self.is_interim() || matches!(self.status, 204 | 304) {
            return Framing::Length(0);
        }
        match self.head.body_framing() {
            Ok(Some(framing)) => framing,
            // Unknown framing: what the server sends until it closes.
            Ok(None) | Err(_) => Framing::UntilClose,
        }
    }
}

fn read_response_head(reader: &mut BufReader<TcpStream>) -> io::Result<Response> {
    let raw = read_head(reader)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "upstream closed before answering",
        )
    })?;
    let head = Head::parse(raw)?;
    let status = head.start[1]
        .parse()
        .map_err(|_| invalid("malformed status line"))?;
    let close = head.close(&head.start[0]);
    Ok(Response {
        head,
        status,
        close,
    })
}

/// Reads a head up to and including the empty line. `None` on a clean EOF
/// before its first byte (the peer closed between messages).
fn read_head(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Vec<u8>>> {
    let mut raw = Vec::new();
    loop {
        let start = raw.len();
        let n = reader.by_ref().take(MAX_HEAD).read_until(b'\n', &mut raw)?;
        if n == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF in a head",
                ))
            };
        }
        let line = &raw[start..];
        if !line.ends_with(b"\n") {
            return Err(invalid("head line too long"));
        }
        if line == b"\r\n" || line == b"\n" {
            if start == 0 {
                // A stray CRLF between messages (RFC 9112 §2.2).
                raw.clear();
                continue;
            }
            return Ok(Some(raw));
        }
        if raw.len() as u64 > MAX_HEAD {
            return Err(invalid("head too long"));
        }
    }
}

/// Streams one body from `reader` to `writer` through the reader's buffer.
fn copy_body(
    reader: &mut BufReader<TcpStream>,
    writer: &mut dyn Write,
    framing: Framing,
) -> io::Result<()> {
    match framing {
        Framing::Length(n) => copy_exact(reader, writer, n),
        Framing::UntilClose => loop {
            let chunk = reader.fill_buf()?;
            if chunk.is_empty() {
                return Ok(());
            }
            let n = chunk.len();
            writer.write_all(chunk)?;
            reader.consume(n);
        },
        Framing::Chunked => loop {
            let line = read_line(reader)?;
            writer.write_all(&line)?;
            let text = String::from_utf8_lossy(&line);
            let size = text.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
            if size == 0 {
                // Trailer fields, then the empty line that ends the body.
                loop {
                    let line = read_line(reader)?;
                    writer.write_all(&line)?;
                    if line == b"\r\n" || line == b"\n" {
                        return Ok(());
                    }
                }
            }
            // Chunk data and its CRLF.
            copy_exact(reader, writer, size + 2)?;
        },
    }
}

fn copy_exact(
    reader: &mut BufReader<TcpStream>,
    writer: &mut dyn Write,
    mut left: u64,
) -> io::Result<()> {
    while left > 0 {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "EOF in a body",
            ));
        }
        let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        writer.write_all(&chunk[..n])?;
        reader.consume(n);
        left -= n as u64;
    }
    Ok(())
}

fn read_line(reader: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\n") {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "EOF or overlong line in a chunked body",
        ));
    }
    Ok(line)
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}
