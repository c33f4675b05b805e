//! `coffer daemon`: several backups of a short-interval job, retention
//! after each, /metrics served (and scraped by a real Prometheus server,
//! queried through its HTTP API), and SIGTERM in the middle of a backup:
//! the daemon stops, the interrupted job commits nothing and its producer
//! is gone. Progress is read from the daemon's own log lines; the only
//! polls are bounded waits on other processes' files and servers.

#[path = "support/cli.rs"]
mod cli_support;
#[path = "support/s3.rs"]
mod s3;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStderr, Stdio};
use std::time::{Duration, Instant};

use cli_support::*;
use serde_json::Value;

fn append(v: &Vault, toml: &str) {
    let mut s = std::fs::read_to_string(&v.config).unwrap();
    s.push_str(toml);
    std::fs::write(&v.config, s).unwrap();
}

/// A running daemon and its JSON log.
struct Daemon {
    child: Child,
    log: BufReader<ChildStderr>,
    seen: Vec<Value>,
}

impl Daemon {
    fn start(v: &Vault) -> Daemon {
        Daemon::start_with(v, &[])
    }

    fn start_with(v: &Vault, env: &[(String, String)]) -> Daemon {
        let mut child = v
            .cmd()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(["daemon", "--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = BufReader::new(child.stderr.take().unwrap());
        Daemon {
            child,
            log,
            seen: Vec::new(),
        }
    }

    /// Reads log lines until `pred` holds for one; returns it.
    fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let mut line = String::new();
            let n = self.log.read_line(&mut line).unwrap();
            assert!(n > 0, "the daemon ended before {what}: {:#?}", self.seen);
            let ev: Value = serde_json::from_str(line.trim())
                .unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
            assert!(ev["time"].is_string(), "{ev}");
            self.seen.push(ev.clone());
            if pred(&ev) {
                return ev;
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bounded poll of something another process does.
fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split(' ').nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_daemon_runs_the_schedule_serves_metrics_and_stops_on_sigterm_mid_backup() {
    let v = Vault::new();
    let data = v.work.join("data.txt");
    std::fs::write(&data, b"hello").unwrap();
    let fifo = v.work.join("never-written");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let mark = v.work.join("slow-started");
    append(
        &v,
        &format!(
            r#"
[daemon]
metrics-address = "127.0.0.1:0"

[[jobs]]
name = "files"
file = "{}"
every = "1s"
retention = {{ keep-last = 2 }}

[[jobs]]
name = "slow"
command = ["sh", "-c", "echo begin; touch {}; cat {}"]
every = "1h"
"#,
            data.display(),
            mark.display(),
            fifo.display()
        ),
    );
    let mut d = Daemon::start(&v);
    let started = d.until("it started", |e| e["event"] == "started");
    let addr = started["metrics"].as_str().unwrap().to_string();
    assert_eq!(started["jobs"], serde_json::json!(["files", "slow"]));

    // Several backups of the 1-second job, each followed by retention.
    for _ in 0..4 {
        let done = d.until("a backup of files", |e| {
            e["event"] == "job-finished" && e["job"] == "files"
        });
        assert_eq!(done["outcome"], "ok", "{done}");
        assert!(done["snapshot"].is_string());
    }
    let files = v
        .snapshots()
        .into_iter()
        .filter(|s| s["job"] == "files")
        .count();
    assert_eq!(files, 2, "keep-last 2 after four backups");

    // /metrics is served, and says so.
    let (status, body) = http_get(&addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("coffer_snapshots{job=\"files\"} 2"), "{body}");
    assert_eq!(http_get(&addr, "/other").unwrap().0, 404);

    // SIGTERM while `slow` is in the middle of its backup.
    wait_for("the slow job's producer to start", || mark.exists());
    let pid = rustix::process::Pid::from_raw(d.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let stopping = d.until("stopping", |e| e["event"] == "stopping");
    assert_eq!(
        stopping["interrupted"],
        serde_json::json!(["slow"]),
        "{stopping}"
    );
    let slow = d.until("the slow job ended", |e| {
        e["event"] == "job-finished" && e["job"] == "slow"
    });
    assert_eq!(slow["outcome"], "interrupted", "{slow}");
    d.until("stopped", |e| e["event"] == "stopped");
    let status = d.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!v.snapshots().iter().any(|s| s["job"] == "slow"));
    // Its producer is gone: no reader holds the FIFO open any more.
    let w = rustix::fs::open(
        &fifo,
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::NONBLOCK,
        rustix::fs::Mode::empty(),
    );
    assert_eq!(
        w.err(),
        Some(rustix::io::Errno::NXIO),
        "the producer still runs"
    );
}

#[test]
fn a_prometheus_server_scrapes_the_daemon() {
    let v = Vault::new();
    let data = v.work.join("data.txt");
    std::fs::write(&data, b"hello").unwrap();
    append(
        &v,
        &format!(
            "\n[daemon]\nmetrics-address = \"127.0.0.1:0\"\n\n[[jobs]]\nname = \"files\"\nfile = \"{}\"\nevery = \"1h\"\n",
            data.display()
        ),
    );
    let mut d = Daemon::start(&v);
    let addr = d.until("it started", |e| e["event"] == "started")["metrics"]
        .as_str()
        .unwrap()
        .to_string();
    d.until("the first backup", |e| e["event"] == "job-finished");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: coffer\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let mut prom = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is needed: apt-get install prometheus (scripts/test installs it)");
    let mut answer = Value::Null;
    wait_for("Prometheus to have scraped the daemon", || {
        let Some((200, body)) = http_get(&web, "/api/v1/query?query=coffer_snapshots") else {
            return false;
        };
        answer = serde_json::from_str(&body).unwrap_or(Value::Null);
        answer["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    });
    let _ = prom.kill();
    let _ = prom.wait();
    let r = &answer["data"]["result"][0];
    // Prometheus renames the exporter's `job` label (it has its own).
    assert_eq!(r["metric"]["exported_job"], "files", "{answer}");
    assert_eq!(r["value"][1], "1", "{answer}");
}

#[test]
fn an_offsite_upload_that_fails_is_retried_with_backoff_until_the_tier_is_back() {
    let server = s3::s3s_fs();
    let v = Vault::uninit();
    let url = format!("s3://{}/daemon", server.bucket());
    let env = server.env();
    let local = v.vault.to_str().unwrap().to_string();
    let endpoint = server.endpoint();
    let o = v
        .cmd()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args([
            "init",
            "--local",
            &local,
            "--s3",
            &url,
            "--s3-endpoint",
            &endpoint,
        ])
        .args(["--s3-region", server.region()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let data = v.work.join("data.bin");
    std::fs::write(&data, random_bytes(9, 200_000)).unwrap();
    append(
        &v,
        &format!(
            "\n[daemon]\nretry-base = \"1s\"\n\n[[jobs]]\nname = \"files\"\nfile = \"{}\"\nevery = \"1h\"\n",
            data.display()
        ),
    );
    // The job's backup gives up on S3 at once: the daemon's sync retries.
    let settings = std::fs::read_to_string(&v.config).unwrap();
    std::fs::write(
        &v.config,
        settings.replacen("[s3]\n", "[s3]\nretry_uploads_for = \"0s\"\n", 1),
    )
    .unwrap();
    server.stop();
    let mut d = Daemon::start_with(&v, &env);
    let done = d.until("the backup", |e| e["event"] == "job-finished");
    assert_eq!(done["outcome"], "partial", "{done}");
    // Each failed sync waits twice as long as the one before.
    let first = d.until("a failed sync", |e| e["event"] == "sync-finished");
    assert_eq!(
        (
            first["outcome"].as_str(),
            first["retry_in_seconds"].as_u64()
        ),
        (Some("failed"), Some(1)),
        "{first}"
    );
    let second = d.until("another failed sync", |e| e["event"] == "sync-finished");
    assert_eq!(
        (
            second["outcome"].as_str(),
            second["retry_in_seconds"].as_u64()
        ),
        (Some("failed"), Some(2)),
        "{second}"
    );
    server.start_again();
    let ok = d.until("a sync that works", |e| {
        e["event"] == "sync-finished" && e["outcome"] == "ok"
    });
    assert!(ok["retry_in_seconds"].is_null(), "{ok}");
    let o = v
        .cmd()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(["--json", "status"])
        .output()
        .unwrap();
    let st: Value = serde_json::from_slice(&o.stdout).unwrap();
    let s3 = st
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tier"] == "s3")
        .unwrap();
    assert_eq!(s3["packs_pending"], 0, "{st}");
    assert_eq!(s3["snapshots_complete"], 1, "{st}");
}
