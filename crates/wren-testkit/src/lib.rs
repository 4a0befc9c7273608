//! What wren's end-to-end tests and its load tool (`wren-bench`) share:
//! starting the real `wren` binary and waiting for it ([`server`]), its
//! HTTP endpoints ([`http`]), the seed protocol's client side ([`protoo`]),
//! a real WebRTC peer on str0m ([`peer`]), what `/proc` says about a
//! process ([`procfs`]), the assertions the tests share ([`calls`]),
//! peers running on a thread of their own ([`swarm`]), what a
//! subscriber's decoder would have made of its video ([`video`]), and a
//! network lab of namespaces joined by shaped links ([`netlab`], Linux, as
//! root; the `wren-netlab` binary serves it to the browser harness), and a
//! Redis of a test's own for the cluster's tests ([`redis`]).
//!
//! Nothing here is part of the server: the `wren` library and binary do
//! not depend on this crate.

pub mod calls;
pub mod http;
#[cfg(target_os = "linux")]
pub mod netlab;
pub mod peer;
pub mod procfs;
pub mod protoo;
pub mod redis;
pub mod server;
pub mod swarm;
pub mod video;

pub use calls::{assert_full, assert_media_stops, media_call, publish, subscribe};
pub use http::{http_get, metric};
pub use protoo::{minfo, publish_data, subscribe_data, Client};
pub use server::{
    free_tcp_port, free_udp_port, qemu_for, runner, socket_path, spawn_wren, wren_bin,
    wren_command, Server, SfuProcess, WAIT,
};
