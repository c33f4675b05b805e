//! The `coffer` binary: parse, run, and turn errors into one line and a
//! documented exit status (see `coffer --help`).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            // One line: the whole chain, then the documented status.
            eprintln!("coffer: error: {e:#}");
            let code = e
                .downcast_ref::<coffer::Error>()
                .map(coffer::Error::exit_code)
                .unwrap_or(coffer::error::exit::USAGE);
            ExitCode::from(code as u8)
        }
    }
}
