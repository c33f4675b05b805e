//! Alerts against HTTP servers the test runs on 127.0.0.1: a job's
//! healthchecks-style pings (start, success, fail), the webhook's JSON
//! body with its `text` on failure (retried after a 500), the alert
//! command with the event in its environment; and a webhook that is down
//! or never answers costs nothing but a logged line naming only its host.

#[path = "support/cli.rs"]
mod cli_support;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use cli_support::*;
use serde_json::Value;

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    body: String,
}

/// An HTTP server recording requests; answers with `statuses` in turn,
/// then 200.
struct Recorder {
    addr: String,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Recorder {
    fn start(statuses: Vec<u16>) -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let statuses = Arc::new(Mutex::new(VecDeque::from(statuses)));
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { break };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or("").to_string();
                let path = parts.next().unwrap_or("").to_string();
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body);
                s.lock().unwrap().push(Request {
                    method,
                    path,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let status = statuses.lock().unwrap().pop_front().unwrap_or(200);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Recorder { addr, seen }
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

fn append(v: &Vault, toml: &str) {
    let mut s = std::fs::read_to_string(&v.config).unwrap();
    s.push_str(toml);
    std::fs::write(&v.config, s).unwrap();
}

fn run_json(v: &Vault, job: &str) -> (i32, Value) {
    let o = v.run(&["--json", "run", job]);
    (
        o.status.code().unwrap_or(-1),
        serde_json::from_slice(&o.stdout).unwrap(),
    )
}

#[test]
fn jobs_ping_post_a_webhook_and_run_a_command_on_failure() {
    let v = Vault::new();
    // The webhook's first answer is a 500: the alert is sent again.
    let hook = Recorder::start(vec![500]);
    let pings = Recorder::start(vec![]);
    let data = v.work.join("data.txt");
    std::fs::write(&data, b"x").unwrap();
    let env_out = v.work.join("alert-env");
    append(
        &v,
        &format!(
            r#"
[alerts]
webhook = "http://{h}/hooks/T0/secret-token"
command = ["sh", "-c", "echo noise for stdout; env | grep ^COFFER_ | sort > {env}"]
retries = 2
timeout = "5s"

[[jobs]]
name = "good"
file = "{data}"
ping = "http://{p}/ping/good"

[[jobs]]
name = "bad"
command = ["sh", "-c", "echo half; exit 9"]
ping = "http://{p}/ping/bad/"
"#,
            h = hook.addr,
            p = pings.addr,
            env = env_out.display(),
            data = data.display()
        ),
    );
    let o = v.run(&["--json", "run", "good", "bad"]);
    assert_eq!(o.status.code(), Some(1));
    // The alert command's own output stays out of coffer's JSON.
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        rep["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["alert_problems"].is_null()),
        "{rep}"
    );

    let got: Vec<(String, String)> = pings
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    let want: Vec<(String, String)> = [
        "/ping/good/start",
        "/ping/good",
        "/ping/bad/start",
        "/ping/bad/fail",
    ]
    .iter()
    .map(|p| ("GET".to_string(), p.to_string()))
    .collect();
    assert_eq!(got, want);

    // Failures only (on-success is off); the 500 made it try twice.
    let posts = hook.requests();
    assert_eq!(posts.len(), 2, "{posts:?}");
    for p in &posts {
        assert_eq!(
            (p.method.as_str(), p.path.as_str()),
            ("POST", "/hooks/T0/secret-token")
        );
        let body: Value = serde_json::from_str(&p.body).unwrap();
        assert_eq!(body["event"], "failure");
        assert_eq!(body["job"], "bad");
        let text = body["text"].as_str().unwrap();
        assert!(
            text.contains("bad")
                && text.contains("FAILED")
                && text.contains("exited with status 9"),
            "{text}"
        );
    }

    let env = std::fs::read_to_string(&env_out).unwrap();
    assert!(env.contains("COFFER_EVENT=failure\n"), "{env}");
    assert!(env.contains("COFFER_JOB=bad\n"), "{env}");
    assert!(env.contains("COFFER_OUTCOME=failed\n"), "{env}");
}

#[test]
fn a_webhook_that_is_down_or_silent_never_fails_the_backup() {
    let v = Vault::new();
    // Down: a port nobody listens on. Silent: accepts, never answers.
    let down = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let data = v.work.join("data.txt");
    std::fs::write(&data, b"x").unwrap();
    for (url, says) in [
        (format!("http://{down}/hook/tok3n"), ""),
        (format!("http://{silent_addr}/hook/tok3n"), "tim"),
    ] {
        let cfg = std::fs::read_to_string(&v.config).unwrap();
        let base = cfg.split("\n[alerts]").next().unwrap().to_string();
        std::fs::write(
            &v.config,
            format!(
                "{base}\n[alerts]\nwebhook = \"{url}\"\non-success = true\nretries = 0\ntimeout = \"1s\"\n\n[[jobs]]\nname = \"good\"\nfile = \"{}\"\n",
                data.display()
            ),
        )
        .unwrap();
        let (code, rep) = run_json(&v, "good");
        assert_eq!(code, 0, "{rep}");
        let j = &rep["jobs"][0];
        assert_eq!(j["outcome"], "ok", "{rep}");
        let problem = j["alert_problems"][0].as_str().unwrap();
        assert!(problem.contains("not delivered"), "{problem}");
        assert!(problem.to_lowercase().contains(says), "{problem}");
        assert!(
            !problem.contains("tok3n"),
            "the URL's token leaked: {problem}"
        );
    }
    drop(silent);
}
