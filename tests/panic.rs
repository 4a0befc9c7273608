//! A panic anywhere ends the process (`wren::process::abort_on_panic`,
//! installed first thing by `main`). Every client connection of the
//! signaling node is a detached `smol` task, and the executor catches a
//! panic in a detached task and drops it: without the hook a debug build
//! would carry on after one, while the release build (`panic = "abort"`)
//! dies. The shipped binary has no way to trigger a panic, so the proof
//! runs this test binary again as a child that installs the same hook and
//! panics inside a detached task.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};
use std::time::Duration;

/// Set in the child: `hook` installs the hook first, `none` does not.
const CHILD: &str = "WREN_PANIC_TEST_CHILD";
const TEST: &str = "a_panic_in_a_detached_task_aborts_the_process";
const SIGABRT: i32 = 6;

/// What the child does: a connection-like detached task panics while the
/// executor has more work to do.
fn panic_in_a_detached_task(hook: bool) {
    if hook {
        wren::process::abort_on_panic();
    }
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(async {
        ex.spawn(async { panic!("boom in a detached task") })
            .detach();
        smol::Timer::after(Duration::from_millis(200)).await;
    }));
    println!("the executor carried on after the panic");
}

/// Runs this test alone in a child process of this binary (through QEMU
/// when the tests run under it).
fn run_child(mode: &str) -> Output {
    let exe = std::env::current_exe().expect("own executable");
    let mut cmd = match wren_testkit::runner() {
        [] => Command::new(&exe),
        [qemu, rest @ ..] => {
            let mut c = Command::new(qemu);
            c.args(rest).arg(&exe);
            c
        }
    };
    cmd.args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .output()
        .expect("the child runs")
}

#[test]
fn a_panic_in_a_detached_task_aborts_the_process() {
    if let Ok(mode) = std::env::var(CHILD) {
        panic_in_a_detached_task(mode == "hook");
        return;
    }

    // Without the hook the executor swallows the panic: the bug.
    let out = run_child("none");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}\n{stdout}", out.status);
    assert!(stdout.contains("the executor carried on"), "{stdout}");

    // With it, the process dies of SIGABRT after logging the panic.
    let out = run_child("hook");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(SIGABRT),
        "{:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(!stdout.contains("the executor carried on"), "{stdout}");
    assert!(
        stderr.contains("panicked") && stderr.contains("boom in a detached task"),
        "the panic is logged: {stderr}"
    );
}
