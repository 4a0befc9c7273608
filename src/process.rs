//! Process-wide behaviour every role shares.

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
