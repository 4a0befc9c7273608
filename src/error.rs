//! What can stop the program, and the exit status each kind maps to.
//!
//! | kind      | exit | meaning                                          |
//! |-----------|------|--------------------------------------------------|
//! | (none)    | 0    | success                                          |
//! | `Runtime` | 1    | a role or operation failed while running (I/O)   |
//! | `Usage`   | 2    | a bad command line: unknown flag, bad value      |
//! | `Config`  | 78   | a bad configuration file (`EX_CONFIG`, sysexits) |
//!
//! A bad file gets its own status, not 2, so that a service manager or a
//! deploy script can tell "the file is wrong, restarting will not help"
//! from "the unit's command line is wrong" and from a crash.

use std::fmt;

/// Why the program stops unsuccessfully; [`Error::exit_status`] maps it
/// to the module's table of exit statuses.
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// The command line is wrong; the message names the flag.
    Usage(String),
    /// The configuration file is wrong; the message names the file and key.
    Config(String),
    /// Running failed (a socket, a file, a child process).
    Runtime(String),
}

/// `EX_CONFIG` of sysexits.h.
const EXIT_CONFIG: u8 = 78;
/// A bad command line, as getopt-style tools exit.
const EXIT_USAGE: u8 = 2;
/// Any other failure.
const EXIT_RUNTIME: u8 = 1;

impl Error {
    /// The process exit status for this error (the module's table).
    pub fn exit_status(&self) -> u8 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Config(_) => EXIT_CONFIG,
            Error::Runtime(_) => EXIT_RUNTIME,
        }
    }

    /// Runtime failure of `what`, e.g. `Error::io("signal", e)`.
    pub(crate) fn io(what: impl fmt::Display, e: std::io::Error) -> Error {
        Error::Runtime(format!("{what}: {e}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) | Error::Config(m) | Error::Runtime(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_exit_status() {
        assert_eq!(Error::Usage("u".into()).exit_status(), 2);
        assert_eq!(Error::Config("c".into()).exit_status(), 78);
        let e = Error::io("sfu", std::io::Error::other("gone"));
        assert_eq!((e.exit_status(), e.to_string().as_str()), (1, "sfu: gone"));
    }
}
