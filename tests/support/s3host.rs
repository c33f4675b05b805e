#![allow(dead_code)]
//! A host of the S3 tests that go through the fault proxy: its own config
//! directory, local vault and HOME, the server's credentials, and the
//! endpoint it is told (the proxy's). Shared by tests/offsite_faults.rs
//! and tests/offsite_soak.rs, which add what each needs.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

use super::s3::S3Server;

const BIN: &str = env!("CARGO_BIN_EXE_coffer");

/// A host reaching the bucket at `url` through `endpoint`.
pub struct Host {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    pub endpoint: String,
    pub url: String,
}

impl Host {
    /// A host of the vault at `s3://BUCKET/prefix` (prefix ends in `/`),
    /// reaching it through `endpoint`.
    pub fn new(server: &S3Server, endpoint: &str, prefix: &str) -> Host {
        Host {
            dir: tempfile::tempdir().unwrap(),
            env: server.env(),
            endpoint: endpoint.to_string(),
            url: format!("s3://{}/{prefix}", server.bucket()),
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// `coffer --config …` with only this host's environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .arg("--config")
            .arg(self.path("cfg/config.toml"));
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs `args`, failing the test (with stderr) unless the status is one
    /// of `codes`.
    #[track_caller]
    pub fn expect_one_of(&self, args: &[&str], codes: &[i32]) -> Output {
        let o = self.run(args);
        let code = o.status.code();
        assert!(
            code.is_some_and(|c| codes.contains(&c)),
            "coffer {args:?} exited {code:?}, expected one of {codes:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    #[track_caller]
    pub fn expect(&self, args: &[&str], code: i32) -> Output {
        self.expect_one_of(args, &[code])
    }

    /// `coffer --json ARGS`, which must succeed, parsed.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_slice(&self.expect(&a, 0).stdout).unwrap()
    }

    /// `--json init --local VAULT --s3 URL --s3-endpoint ENDPOINT EXTRA…`.
    pub fn init_args(&self, extra: &[&str]) -> Vec<String> {
        let vault = self.path("vault");
        let mut a: Vec<&str> = vec![
            "--json",
            "init",
            "--local",
            vault.to_str().unwrap(),
            "--s3",
            &self.url,
            "--s3-endpoint",
            &self.endpoint,
        ];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect()
    }

    /// Runs init with `extra`, expecting status `code`.
    #[track_caller]
    pub fn init(&self, extra: &[&str], code: i32) -> Output {
        let a = self.init_args(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        self.expect(&a, code)
    }

    /// Sets `key = value` (TOML) in the settings' `[s3]` table.
    pub fn set_s3(&self, key: &str, value: &str) {
        let path = self.path("cfg/config.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("[s3]\n"), "{text}");
        let text = text.replacen("[s3]\n", &format!("[s3]\n{key} = {value}\n"), 1);
        std::fs::write(&path, text).unwrap();
    }
}
