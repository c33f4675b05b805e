//! `coffer health`: monitoring-plugin statuses (0 OK, 1 WARNING, 2
//! CRITICAL, 3 UNKNOWN), one problem a line.

use anyhow::Result;
use coffer::commands::health::{self, HealthReport, Severity};

use super::output::{out, render, Render, Verbosity};
use super::Ctx;

pub fn run(ctx: &Ctx) -> Result<i32> {
    // Whatever stops health from judging (no settings, a catalog that
    // cannot be opened) is UNKNOWN, as monitoring plugins report it.
    let rep = match ctx
        .vault()
        .and_then(|v| health::health(&v).map_err(anyhow::Error::from))
    {
        Ok(r) => r,
        Err(e) => {
            if ctx.v.json {
                out(&serde_json::json!({"status": "unknown", "error": e.to_string()}).to_string());
            } else {
                out(&format!("COFFER UNKNOWN - {e:#}"));
            }
            return Ok(Severity::Unknown.exit_status());
        }
    };
    Ok(render(ctx.v, &rep))
}

impl Render for HealthReport {
    fn text(&self, _v: Verbosity) {
        let count = |s: Severity| self.problems.iter().filter(|p| p.severity == s).count();
        if self.problems.is_empty() {
            out(&format!(
                "COFFER OK - {} scheduled job(s), no problems (checked {})",
                self.jobs, self.checked_at
            ));
        } else {
            out(&format!(
                "COFFER {} - {} critical, {} warning (checked {})",
                self.status.word(),
                count(Severity::Critical),
                count(Severity::Warning),
                self.checked_at
            ));
        }
        for p in &self.problems {
            out(&format!("{}: {}", p.severity.word(), p.message));
        }
    }

    fn status(&self) -> i32 {
        self.status.exit_status()
    }
}
