//! Alerts: what a job's run tells the outside world.
//!
//! - `[alerts] webhook`: a POST of a JSON body on failure (and, with
//!   `on-success = true`, on success). The body has a `text` field, so
//!   chat webhooks (Slack, Mattermost, Rocket.Chat, Teams' incoming
//!   webhooks) show it as a message, and the event's fields for anything
//!   else.
//! - `[[jobs]] ping`: a healthchecks-style URL per job: `URL/start` when the
//!   job starts, `URL` when it succeeds, `URL/fail` when it fails.
//! - `[alerts] command`: a program run with the event in its environment
//!   (`COFFER_EVENT`, `COFFER_JOB`, `COFFER_OUTCOME`, `COFFER_SNAPSHOT`,
//!   `COFFER_ERROR`, `COFFER_HOST`, `COFFER_TEXT`).
//!
//! Delivery never fails the backup: each target is tried up to `retries`
//! times more with a doubling backoff (1 s, 2 s, 4 s…) and a `timeout` per
//! attempt; what still fails is returned as a problem (the run logs it).
//! URLs carry tokens, so problems name only the URL's host.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[alerts]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AlertSettings {
    /// Where to POST events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Also alert on success [default: false: failures only].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<bool>,
    /// A program (and arguments) run per event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Per attempt [default: 10s].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Attempts after the first [default: 3].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

impl AlertSettings {
    /// Whether nothing is set.
    pub fn is_default(&self) -> bool {
        *self == AlertSettings::default()
    }
}

/// One event.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// A line for people (chat webhooks show it).
    pub text: String,
    /// `failure` or `success`.
    pub event: String,
    /// The job.
    pub job: String,
    /// `ok`, `partial`, `failed`.
    pub outcome: String,
    /// The snapshot committed, if any.
    pub snapshot: Option<String>,
    /// Why it failed, or what is pending.
    pub error: Option<String>,
    /// This host (`COFFER_HOST` or the hostname).
    pub host: String,
    /// When (RFC 3339).
    pub time: String,
}

impl Alert {
    /// The event of a job's run.
    pub fn of_run(job: &str, outcome: &str, snapshot: Option<&str>, error: Option<&str>) -> Alert {
        let host = crate::util::hostname();
        let failed = outcome == "failed";
        let text = if failed {
            format!(
                "coffer on {host}: backup job {job} FAILED: {}",
                error.unwrap_or("unknown error")
            )
        } else {
            format!(
                "coffer on {host}: backup job {job} {outcome}{}{}",
                snapshot
                    .map(|s| format!(", snapshot {s}"))
                    .unwrap_or_default(),
                error.map(|e| format!(" ({e})")).unwrap_or_default()
            )
        };
        Alert {
            text,
            event: if failed { "failure" } else { "success" }.into(),
            job: job.into(),
            outcome: outcome.into(),
            snapshot: snapshot.map(str::to_string),
            error: error.map(str::to_string),
            host,
            time: crate::util::now_rfc3339(),
        }
    }
}

/// Delivers alerts with the settings' timeout and retries.
pub struct Notifier {
    settings: AlertSettings,
    agent: ureq::Agent,
    retries: u32,
    timeout: Duration,
}

impl Notifier {
    /// A notifier for `settings`, and a warning when its `timeout` does
    /// not parse (the default is used: alerts never stop a backup).
    pub fn new(settings: &AlertSettings) -> (Notifier, Option<String>) {
        let (timeout, warning) = match crate::vault::settings::duration_setting(
            &settings.timeout,
            "[alerts] timeout",
            Duration::from_secs(10),
        ) {
            Ok(t) => (t, None),
            Err(e) => (Duration::from_secs(10), Some(format!("{e}; using 10s"))),
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .build()
            .into();
        (
            Notifier {
                settings: settings.clone(),
                agent,
                retries: settings.retries.unwrap_or(3).min(10),
                timeout,
            },
            warning,
        )
    }

    /// A job started: pings `ping/start`.
    pub fn started(&self, ping: Option<&str>) -> Vec<String> {
        ping.and_then(|p| self.ping(&format!("{}/start", p.trim_end_matches('/'))))
            .into_iter()
            .collect()
    }

    /// A job ended: its ping, and the webhook and command when the event
    /// calls for them. Returns what could not be delivered.
    pub fn finished(&self, ping: Option<&str>, alert: &Alert) -> Vec<String> {
        let mut problems = Vec::new();
        let failed = alert.event == "failure";
        if let Some(p) = ping {
            let p = p.trim_end_matches('/');
            let url = if failed {
                format!("{p}/fail")
            } else {
                p.to_string()
            };
            problems.extend(self.ping(&url));
        }
        if !failed && !self.settings.on_success.unwrap_or(false) {
            return problems;
        }
        if let Some(url) = &self.settings.webhook {
            let body = serde_json::to_string(alert).unwrap_or_default();
            problems.extend(self.retry("webhook", url, || {
                self.agent
                    .post(url)
                    .header("Content-Type", "application/json")
                    .send(body.as_str())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }));
        }
        if let Some(argv) = &self.settings.command {
            problems.extend(self.command(argv, alert));
        }
        problems
    }

    fn ping(&self, url: &str) -> Option<String> {
        self.retry("ping", url, || {
            self.agent
                .get(url)
                .call()
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    /// `attempt` until it succeeds, at most `retries` more times; the
    /// problem names only `url`'s host (its path and query may hold a
    /// token).
    fn retry(
        &self,
        what: &str,
        url: &str,
        attempt: impl Fn() -> std::result::Result<(), String>,
    ) -> Option<String> {
        let shown = if url.contains("://") {
            host_of(url)
        } else {
            url.to_string()
        };
        let mut last = String::new();
        for n in 0..=self.retries {
            if n > 0 {
                std::thread::sleep(Duration::from_secs(1 << (n - 1).min(5)));
            }
            match attempt() {
                Ok(()) => return None,
                Err(e) => last = e.replace(url, &shown),
            }
        }
        Some(format!(
            "alert {what} to {shown} not delivered after {} attempts: {last}",
            self.retries + 1
        ))
    }

    fn command(&self, argv: &[String], alert: &Alert) -> Option<String> {
        let (program, args) = argv.split_first()?;
        let run = || -> std::result::Result<(), String> {
            // Its output must not mix with coffer's own (`--json` on
            // stdout is what the daemon reads): stdout goes nowhere, stderr
            // to ours.
            let mut child = std::process::Command::new(program)
                .args(args)
                .env("COFFER_EVENT", &alert.event)
                .env("COFFER_JOB", &alert.job)
                .env("COFFER_OUTCOME", &alert.outcome)
                .env("COFFER_SNAPSHOT", alert.snapshot.as_deref().unwrap_or(""))
                .env("COFFER_ERROR", alert.error.as_deref().unwrap_or(""))
                .env("COFFER_HOST", &alert.host)
                .env("COFFER_TEXT", &alert.text)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?;
            // Bounded like the HTTP alerts: a hung command must not hold
            // the job (and its lock) forever.
            let deadline = std::time::Instant::now() + self.timeout;
            loop {
                match child.try_wait().map_err(|e| e.to_string())? {
                    Some(status) if status.success() => return Ok(()),
                    Some(status) => return Err(format!("it ended with {status}")),
                    None if std::time::Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(format!(
                            "it did not finish within {}",
                            humantime::format_duration(self.timeout)
                        ));
                    }
                    None => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        };
        self.retry("command", program, run)
    }
}

/// `scheme://host[:port]` of a URL, for messages.
fn host_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    if scheme.is_empty() {
        host.to_string()
    } else {
        format!("{scheme}://{host}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_only_the_host_of_a_url() {
        assert_eq!(
            host_of("https://user:pw@hooks.example.com:8443/services/T0/B0/secret?x=1"),
            "https://hooks.example.com:8443"
        );
        assert_eq!(host_of("/usr/local/bin/notify"), "");
    }
}
