//! wren — a small-footprint WebRTC conferencing server for ARM edge devices.
//!
//! One binary, three roles: a signaling node ([`signal`]) that speaks the
//! seed protocol over WebSocket and keeps the room tables; an SFU ([`sfu`])
//! that terminates WebRTC with str0m and forwards media; and the default
//! all-in-one mode (`operation::supervise`) that runs both. The two talk
//! over a Unix socket ([`ipc`]).
//!
//! The modules read top-down, each using only those below it:
//!
//! - the program: [`cli`] (the command line, parsed), `config` (every
//!   setting merged and checked), [`operation`] (what the program does,
//!   the supervisor included), [`process`] (the process environment),
//!   [`error`] (errors and exit statuses);
//! - the roles: [`signal`] and [`sfu`], which never use each other; each
//!   is a shell around an I/O-free core (`signal::node`, `sfu::engine`);
//! - what both roles share: [`ipc`] (the control channel), [`ids`],
//!   [`limits`] (every bound), `notify` (systemd readiness).
//!
//! `tests/layout.rs` checks that order.

pub mod cli;
pub(crate) mod config;
pub mod error;
pub mod ids;
pub mod ipc;
pub mod limits;
pub(crate) mod notify;
pub mod operation;
pub mod process;
pub mod sfu;
pub mod signal;
