//! `coffer metrics [--textfile PATH]`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use coffer::commands::metrics;

use super::Ctx;

/// `coffer metrics`
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Write them to PATH (atomically: a temporary file in the same
    /// directory, renamed over it) instead of stdout; for node_exporter's
    /// textfile collector, name it `*.prom` in its directory.
    #[arg(long, value_name = "PATH")]
    pub textfile: Option<PathBuf>,
}

pub fn run(ctx: &Ctx, a: MetricsArgs) -> Result<i32> {
    let vault = ctx.vault()?;
    let text = metrics::metrics(&vault)?;
    match a.textfile {
        None => {
            std::io::stdout().write_all(text.as_bytes())?;
        }
        Some(path) => {
            let out = |e: std::io::Error| coffer::Error::Output {
                what: path.display().to_string(),
                io: e,
            };
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            // node_exporter must never read a half-written file.
            let mut tmp = tempfile::Builder::new()
                .prefix(".coffer-metrics-")
                .tempfile_in(&dir)
                .map_err(out)?;
            tmp.write_all(text.as_bytes()).map_err(out)?;
            tmp.as_file().sync_all().map_err(out)?;
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
                    .map_err(out)?;
            }
            tmp.persist(&path).map_err(|e| out(e.error))?;
        }
    }
    Ok(0)
}
