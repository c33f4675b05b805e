//! Rendering: a progress bar on a terminal, step logs with `-v`, and text or
//! JSON results.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use coffer::progress::{Event, Progress};

/// How chatty to be.
#[derive(Debug, Clone, Copy)]
pub struct Verbosity {
    pub json: bool,
    pub verbose: bool,
    pub quiet: bool,
}

/// Progress for the terminal: a bytes/s bar only when stderr is a terminal
/// (never when piped or with --json/-q); events logged with -v; warnings
/// always (unless -q).
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

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
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
        }
    }
}

/// Prints to stdout; a closed pipe (e.g. `| head`) is not an error.
pub fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{s}");
}

/// Prints JSON to stdout.
pub fn json<T: serde::Serialize>(v: &T) {
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
