//! The load tool's parts (the `wren-bench` binary) and the WebRTC peer the
//! tests share with it. Nothing here is part of the server.

pub mod peer;
pub mod procfs;
pub mod run;
pub mod ws;
