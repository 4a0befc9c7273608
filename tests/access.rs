//! Access control: room tokens (URL or join), publish rights, expiry,
//! the Origin allow-list, the control socket's permissions, and no token
//! or secret in the logs.

use serde_json::json;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;
use wren_testkit::peer::Peer;
use wren_testkit::{socket_path, wren_command, Client, Server, SfuProcess, WAIT};

const SECRET: &str = "a-test-secret-of-some-length";

fn config(extra: &str) -> PathBuf {
    let path = socket_path("access").with_extension("toml");
    std::fs::write(&path, format!("token-secret = \"{SECRET}\"\n{extra}")).unwrap();
    path
}

/// Mints a token with the real `wren token` command.
fn token(config: &Path, uid: &str, rid: &str, extra: &[&str]) -> String {
    let out = wren_command()
        .args([
            "token",
            "--config",
            config.to_str().unwrap(),
            "--uid",
            uid,
            "--rid",
            rid,
        ])
        .args(extra)
        .output()
        .expect("wren token runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn publish_data(rid: &str) -> serde_json::Value {
    wren_testkit::publish_data(rid, &Peer::publisher())
}

#[test]
fn tokens_in_the_url_or_in_join_admit_to_their_room_only() {
    let cfg = config("");
    let log = cfg.with_extension("log");
    let server = Server::start_logged(
        &["--config", cfg.to_str().unwrap(), "--log-level", "trace"],
        &log,
    );
    let alice_token = token(&cfg, "alice", "r1", &[]);

    // In the URL.
    let mut alice =
        Client::try_connect_with(&server, "alice", &format!("&token={alice_token}"), &[]).unwrap();
    assert_eq!(alice.err("join", json!({"rid": "r2"})), 403, "another room");
    alice.ok("join", json!({"rid": "r1"}));
    alice.ok("publish", publish_data("r1"));

    // In join; none at all; another peer's.
    let mut bob = Client::connect(&server, "bob");
    assert_eq!(bob.err("join", json!({"rid": "r1"})), 403, "no token");
    assert_eq!(
        bob.err("join", json!({"rid": "r1", "token": alice_token})),
        403,
        "alice's token"
    );
    let bob_token = token(&cfg, "bob", "r1", &["--listen-only"]);
    let joined = bob.ok("join", json!({"rid": "r1", "token": bob_token}));
    assert_eq!(joined["pubs"].as_array().unwrap().len(), 1);
    // Listen-only: may subscribe, may not publish.
    let r = bob.request("publish", publish_data("r1"));
    assert_eq!(r["errorCode"], 403);
    assert!(r["errorReason"].as_str().unwrap().contains("publish"));
    let mid = joined["pubs"][0]["mid"].clone();
    bob.ok(
        "subscribe",
        json!({"rid": "r1", "mid": mid, "jsep": {"type": "offer", "sdp": Peer::subscriber().offer()}}),
    );

    // Neither token nor secret ever reaches the log.
    drop(server);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("joined room r1"), "the log is there");
    for secret in [SECRET, &alice_token, &bob_token] {
        assert!(!logged.contains(secret), "leaked into the log");
    }
}

#[test]
fn bad_or_expired_url_tokens_are_refused_before_the_upgrade() {
    let cfg = config("");
    let server = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    let expired = token(&cfg, "alice", "r1", &["--ttl", "0"]);
    let foreign = {
        let other = socket_path("other").with_extension("toml");
        std::fs::write(&other, "token-secret = \"another-secret-entirely\"\n").unwrap();
        token(&other, "alice", "r1", &[])
    };
    let wrong_uid = token(&cfg, "mallory", "r1", &[]);
    for (what, t) in [
        ("expired", expired.as_str()),
        ("foreign", foreign.as_str()),
        ("other uid", wrong_uid.as_str()),
        ("garbage", "xyz"),
    ] {
        let r = Client::try_connect_with(&server, "alice", &format!("&token={t}"), &[]);
        let err = r.err().unwrap_or_else(|| panic!("{what} token accepted"));
        assert!(err.contains("403"), "{what}: {err}");
    }
    let good = token(&cfg, "alice", "r1", &[]);
    let mut alice =
        Client::try_connect_with(&server, "alice", &format!("&token={good}"), &[]).unwrap();
    alice.ok("join", json!({"rid": "r1"}));
}

/// The `exp` claim of a token (seconds since the Unix epoch).
fn expiry(token: &str) -> u64 {
    let body = token.split('.').next().unwrap();
    let claims = data_encoding::BASE64URL_NOPAD
        .decode(body.as_bytes())
        .expect("base64url claims");
    let claims: serde_json::Value = serde_json::from_slice(&claims).expect("JSON claims");
    claims["exp"].as_u64().expect("exp")
}

/// A URL token is checked again at `join`: one that expired after the
/// upgrade is refused with 403 "expired token", the socket stays open, and
/// a fresh token in `join` admits.
#[test]
fn a_url_token_that_expires_after_the_upgrade_does_not_admit_to_join() {
    let cfg = config("");
    let server = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    let short = token(&cfg, "alice", "r1", &["--ttl", "4"]);
    let exp = expiry(&short);
    let mut alice =
        Client::try_connect_with(&server, "alice", &format!("&token={short}"), &[]).unwrap();
    assert!(
        wren::signal::token::unix_now() < exp,
        "the upgrade took the whole ttl: nothing is tested"
    );
    // Past its expiry (a bounded wait: the ttl is 4 s).
    while wren::signal::token::unix_now() < exp + 1 {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let r = alice.request("join", json!({"rid": "r1"}));
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["errorCode"], 403, "{r}");
    assert_eq!(r["errorReason"], "forbidden: expired token", "{r}");
    assert!(alice.closed.is_none());
    let fresh = token(&cfg, "alice", "r1", &[]);
    alice.ok("join", json!({"rid": "r1", "token": fresh}));
}

#[test]
fn only_allowed_origins_may_open_a_websocket() {
    let path = socket_path("origin").with_extension("toml");
    std::fs::write(&path, "allowed-origins = [\"https://good.example\"]\n").unwrap();
    let server = Server::start_with(&["--config", path.to_str().unwrap()]);
    let bad = Client::try_connect_with(&server, "a", "", &[("Origin", "https://evil.example")]);
    assert!(bad.err().is_some_and(|e| e.contains("403")));
    let mut good =
        Client::try_connect_with(&server, "b", "", &[("Origin", "https://good.example")]).unwrap();
    good.ok("join", json!({"rid": "r"}));
    // Non-browser clients send no Origin.
    let mut tool = Client::connect(&server, "c");
    tool.ok("join", json!({"rid": "r"}));
}

#[test]
fn the_control_socket_is_0600_or_0660_with_a_group() {
    let plain = socket_path("perm");
    let _a = SfuProcess::start(&plain, "sfu-p");
    let grouped = socket_path("perm-group");
    let cfg = socket_path("perm").with_extension("toml");
    std::fs::write(&cfg, "socket-group = \"root\"\n").unwrap();
    let _b = SfuProcess::start_with(&grouped, "sfu-g", &["--config", cfg.to_str().unwrap()]);
    let deadline = Instant::now() + WAIT;
    while !(plain.exists() && grouped.exists()) && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mode = |p: &PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&plain), 0o600);
    assert_eq!(mode(&grouped), 0o660);
    assert_eq!(std::fs::metadata(&grouped).unwrap().gid(), 0);
}
