//! Rendering: a progress bar on a terminal, step logs with `-v`, and each
//! report as text or `--json` ([`Render`]).

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use coffer::commands::backup::BackupReport;
use coffer::progress::{Event, Progress};

/// How chatty to be.
#[derive(Debug, Clone, Copy)]
pub struct Verbosity {
    pub json: bool,
    pub verbose: bool,
    pub quiet: bool,
}

/// A report the CLI prints: as JSON with `--json`, else as text.
pub trait Render: serde::Serialize {
    /// Prints it for a person: results on stdout, notes and problems on
    /// stderr.
    fn text(&self, v: Verbosity);

    /// The exit status it means (0 unless it found something wrong).
    fn status(&self) -> i32 {
        0
    }
}

/// Prints `r` as `--json` asks, and returns its exit status.
pub fn render<R: Render + ?Sized>(v: Verbosity, r: &R) -> i32 {
    if v.json {
        json(r);
    } else {
        r.text(v);
    }
    r.status()
}

/// Progress for the terminal: a bytes/s bar only when stderr is a terminal
/// (never when piped or with --json/-q); events logged with -v; warnings
/// always (unless -q). The bar is cleared when this is dropped, so it never
/// outlives the operation, whatever the operation returned.
pub struct TermProgress {
    bar: Option<ProgressBar>,
    v: Verbosity,
}

impl TermProgress {
    pub fn new(v: Verbosity, what: &str) -> Self {
        let bar = (!v.json && !v.quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg} {bytes} ({bytes_per_sec}, {elapsed})",
                )
                .expect("valid template"),
            );
            b.set_message(what.to_string());
            b
        });
        TermProgress { bar, v }
    }

    fn line(&self, s: &str) {
        match &self.bar {
            Some(b) => b.println(s),
            None => {
                let mut e = std::io::stderr().lock();
                let _ = writeln!(e, "{s}");
            }
        }
    }
}

impl Drop for TermProgress {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Progress for TermProgress {
    fn advance(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    fn event(&self, e: &Event) {
        match e {
            Event::Warning(w) if !self.v.quiet => self.line(&format!("coffer: warning: {w}")),
            Event::Warning(_) => {}
            _ if !self.v.verbose => {}
            Event::PackSealed { id, size } => {
                self.line(&format!("coffer: pack sealed {id} ({size} bytes)"))
            }
            Event::PackStored { id, tier } => {
                self.line(&format!("coffer: pack stored {id} in {tier}"))
            }
            Event::ManifestStored { id } => self.line(&format!("coffer: manifest stored {id}")),
            Event::SnapshotCommitted { id } => {
                self.line(&format!("coffer: snapshot committed {id}"))
            }
            Event::Step(s) => self.line(&format!("coffer: {s}")),
        }
    }
}

/// Runs `f` with a progress display labelled `what`; the display is gone
/// when it returns.
pub fn with_progress<T>(v: Verbosity, what: &str, f: impl FnOnce(&TermProgress) -> T) -> T {
    let p = TermProgress::new(v, what);
    f(&p)
}

/// Prints to stdout; a closed pipe (e.g. `| head`) is not an error.
pub fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{s}");
}

/// Prints JSON to stdout.
pub fn json<T: serde::Serialize + ?Sized>(v: &T) {
    out(&serde_json::to_string_pretty(v).expect("reports serialize"));
}

/// Prints a note to stderr unless quiet.
pub fn note(v: Verbosity, s: &str) {
    if !v.quiet && !v.json {
        eprintln!("{s}");
    }
}

/// Human byte counts.
pub fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// Says, on stderr, which committed snapshots still lack an offsite copy;
/// returns exit status 3 when any does, else 0.
pub fn offsite_pending<'a>(reports: impl IntoIterator<Item = &'a BackupReport>) -> i32 {
    let mut status = 0;
    for r in reports {
        for o in r.offsite.iter().filter(|o| !o.complete) {
            status = coffer::error::exit::OFFSITE_PENDING;
            eprintln!(
                "coffer: snapshot {} is committed locally, but its offsite copy in tier {} is PENDING: {}",
                r.id,
                o.tier,
                o.pending_reason.as_deref().unwrap_or("unknown")
            );
        }
    }
    status
}

/// Prints each problem on stderr, then `summary` (for reports that list
/// damage: verify, index rebuild).
pub fn print_problems(v: Verbosity, problems: &[String], summary: &str) {
    for p in problems {
        eprintln!("coffer: {p}");
    }
    note(v, summary);
}

/// Status 4 when a report found damage.
pub fn problems_status(problems: &[String]) -> i32 {
    if problems.is_empty() {
        0
    } else {
        coffer::error::exit::INTEGRITY
    }
}
