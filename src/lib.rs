//! wren — a small-footprint WebRTC conferencing server for ARM edge devices.
//!
//! One binary, three roles (see [`cli`]): a signaling node ([`signal`]) that
//! speaks the seed protocol over WebSocket and keeps the room tables; an SFU
//! ([`sfu`]) that terminates WebRTC with str0m and forwards media; and the
//! default all-in-one mode (`supervise`) that runs both. The two talk over
//! a Unix socket ([`ipc`]).

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
pub(crate) mod supervise;
