//! `wren`: a small WebRTC conferencing server. This file only reads the
//! command line, runs the operation and turns its outcome into an exit
//! status (see `wren::error` for the table).

use std::process::ExitCode;
use wren::error::Error;

fn main() -> ExitCode {
    // First: a panic anywhere (a detached task included) ends the process.
    wren::process::abort_on_panic();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match wren::cli::parse(&args).and_then(wren::operation::run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match &e {
                Error::Usage(_) => eprintln!("wren: {e}\n\n{}", wren::cli::USAGE),
                _ => eprintln!("wren: {e}"),
            }
            ExitCode::from(e.exit_status())
        }
    }
}
