//! The daemon's children: `coffer run JOB` and `coffer sync`, each in its
//! own process group, waited for on a thread.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use super::Msg;
use crate::vault::Vault;

/// Starts `coffer ARGS` (a job's `run JOB`, or `sync`) in its own process
/// group; a thread waits for it and sends its output.
pub(super) fn spawn_task(
    vault: &Vault,
    exe: &std::path::Path,
    task: &str,
    args: &[&str],
    tx: mpsc::Sender<Msg>,
) -> std::io::Result<u32> {
    use std::os::unix::process::CommandExt;
    let started = Instant::now();
    let child = Command::new(exe)
        .arg("--config")
        .arg(&vault.settings_path)
        .args(["--json", "--quiet"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let pid = child.id();
    let task = task.to_string();
    std::thread::spawn(move || {
        let output = child
            .wait_with_output()
            .map_err(|e| format!("waiting for coffer: {e}"));
        let _ = tx.send(Msg::Done {
            task,
            output,
            seconds: started.elapsed().as_secs_f64(),
        });
    });
    Ok(pid)
}

/// A child's last stderr line, or how it ended.
pub(super) fn last_line(stderr: &[u8], status: std::process::ExitStatus) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| format!("coffer ended with {status}"))
}
