//! `wren`: a small WebRTC conferencing server. This file only reads the
//! command line and starts a role; see the modules for the rest.

use std::process::ExitCode;

fn main() -> ExitCode {
    // First: a panic anywhere (a detached task included) ends the process.
    wren::process::abort_on_panic();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match wren::cli::parse(&args) {
        Ok(cmd) => match wren::cli::run(cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wren: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("wren: {e}\n\n{}", wren::cli::USAGE);
            ExitCode::from(2)
        }
    }
}
