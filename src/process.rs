//! The process's environment, which every role shares: the panic hook,
//! logging, and where the control sockets live.

use std::path::PathBuf;

/// Makes any panic, on any thread or in any task, end the whole process:
/// the panic message goes to stderr (the default hook's text, "thread '…'
/// panicked at …"), then the process aborts (SIGABRT).
///
/// Without it, a panic inside a detached `smol` task (every client
/// connection is one) is caught by the executor and silently dropped, and
/// the node carries on with whatever state the task left behind; the
/// release build (`panic = "abort"`) would die of the same panic. With it,
/// debug and release builds behave alike, the supervisor (or systemd)
/// sees the crash, and the tests can see it too.
pub fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        std::process::abort();
    }));
}

/// Logs to stderr at `level`.
pub(crate) fn init_logging(level: log::LevelFilter) {
    // RUST_LOG, when set, wins: handy for a one-off debug run.
    // tungstenite traces whole frames, and frames carry room tokens: the
    // libraries say at most `info`, whatever the level.
    let quiet = level.min(log::LevelFilter::Info);
    let _ = simple_logger::SimpleLogger::new()
        .with_level(level)
        .env()
        .with_module_level("tungstenite", quiet)
        .with_module_level("async_tungstenite", quiet)
        .with_module_level("rustls", quiet)
        .init();
}

/// The control sockets' folder of a service: systemd's runtime folder
/// when it made one (`RuntimeDirectory=`), else /run/wren.
pub(crate) fn service_socket_dir() -> PathBuf {
    std::env::var_os("RUNTIME_DIRECTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/wren"))
}

/// A folder for the control sockets that only this process uses: under
/// `XDG_RUNTIME_DIR` or the temp dir. The SFU children remove their
/// sockets and the folder when they exit.
pub(crate) fn private_socket_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("wren-{}", std::process::id()));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    Ok(dir)
}
