//! Process lifecycle: SIGTERM drains and exits 0; an SFU whose signaling
//! node dies drops the sessions that node made.

use serde_json::json;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use wren_testkit::peer::run_all;
use wren_testkit::{socket_path, Client, Server, SfuProcess, WAIT};

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Waits for our child to exit; returns its exit code.
fn wait_exit(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn sigterm_closes_every_socket_with_1001_and_exits_0() {
    let mut server = Server::start();
    let sfu_pid = wren_testkit::procfs::children(server.child.id());
    assert_eq!(sfu_pid.len(), 1, "one SFU child");
    let mut alice = Client::connect(&server, "alice");
    alice.ok("join", json!({"rid": "r"}));
    sigterm(&server.child);
    assert_eq!(alice.wait_close(), Some(1001));
    assert_eq!(wait_exit(&mut server.child), Some(0));
    // The SFU child follows its parent and removes its socket.
    let deadline = Instant::now() + WAIT;
    while std::path::Path::new(&format!("/proc/{}", sfu_pid[0])).exists()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", sfu_pid[0])).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "the SFU child is gone"
    );
}

#[test]
fn an_sfu_stopped_with_sigterm_exits_0_and_removes_its_socket() {
    let socket = socket_path("term");
    let mut sfu = SfuProcess::start(&socket, "sfu-t");
    let deadline = Instant::now() + WAIT;
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(socket.exists());
    sigterm(&sfu.child);
    assert_eq!(wait_exit(&mut sfu.child), Some(0));
    assert!(!socket.exists());
}

#[test]
fn an_sfu_drops_the_sessions_of_a_signaling_node_that_died() {
    let socket = socket_path("orphans");
    let _sfu = SfuProcess::start(&socket, "sfu-o");
    let mut node = Server::start_signal(&socket);
    assert!(node.wait_health(200));
    let mut alice = Client::connect(&node, "alice");
    let mut bob = Client::connect(&node, "bob");
    alice.ok("join", json!({"rid": "r"}));
    bob.ok("join", json!({"rid": "r"}));
    let (mut publisher, mut subscriber, _) = wren_testkit::media_call(&mut alice, &mut bob, "r");

    // The node dies without a word; a new one takes over the SFU.
    let _ = node.child.kill();
    let _ = node.child.wait();
    let fresh = Server::start_signal(&socket);
    assert!(fresh.wait_health(200));
    wren_testkit::assert_media_stops(
        &mut publisher,
        &mut subscriber,
        "the orphaned subscription carries no more media",
    );
}

/// SIGTERM while media flows between two real WebRTC peers: every client
/// gets 1001, the node exits 0, the SFU child follows, and no control
/// socket (nor the private folder that held it) is left behind.
#[test]
fn sigterm_with_media_flowing_closes_every_socket_exits_0_and_leaves_no_socket() {
    let mut server = Server::start();
    let sfu_pid = wren_testkit::procfs::children(server.child.id());
    assert_eq!(sfu_pid.len(), 1, "one SFU child");
    // The all-in-one mode's private folder (src/supervise.rs).
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("wren-{}", server.child.id()));
    let socket = dir.join("sfu-1.sock");
    assert!(socket.exists(), "{} exists while running", socket.display());

    let mut alice = Client::connect(&server, "alice");
    let mut bob = Client::connect(&server, "bob");
    alice.ok("join", json!({"rid": "r"}));
    bob.ok("join", json!({"rid": "r"}));
    let (mut publisher, mut subscriber, _) = wren_testkit::media_call(&mut alice, &mut bob, "r");
    let before = subscriber.received;

    std::thread::scope(|s| {
        // The peers keep sending and receiving through the signal.
        let media = s.spawn(|| {
            run_all(
                &mut [&mut publisher, &mut subscriber],
                Duration::from_secs(2),
            );
        });
        std::thread::sleep(Duration::from_millis(300));
        sigterm(&server.child);
        assert_eq!(alice.wait_close(), Some(1001));
        assert_eq!(bob.wait_close(), Some(1001));
        assert_eq!(wait_exit(&mut server.child), Some(0));
        media.join().expect("the media thread");
    });
    assert!(
        subscriber.received[1] > before[1],
        "video was flowing: {before:?} -> {:?}",
        subscriber.received
    );

    let deadline = Instant::now() + WAIT;
    while std::path::Path::new(&format!("/proc/{}", sfu_pid[0])).exists()
        && Instant::now() < deadline
    {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", sfu_pid[0])).unwrap_or_default();
        if stat.contains(") Z ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", sfu_pid[0])).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "the SFU child is gone"
    );
    assert!(!socket.exists(), "{} is left behind", socket.display());
    assert!(!dir.exists(), "{} is left behind", dir.display());
}
