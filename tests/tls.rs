//! https:// and wss:// with a certificate made for the test.

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::Message;
use futures_rustls::rustls::{ClientConfig, RootCertStore};
use futures_rustls::TlsConnector;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use smol::stream::StreamExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wren_testkit::{http_get, socket_path, wren_command, Server, WAIT};

/// A self-signed certificate for 127.0.0.1, made with the openssl tool.
fn make_cert() -> (PathBuf, PathBuf) {
    let cert = socket_path("tls").with_extension("crt");
    let key = cert.with_extension("key");
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=wren-test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        // An end-entity certificate that is its own trust anchor: webpki
        // refuses a CA certificate as a server's.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    (cert, key)
}

fn connector(cert: &PathBuf) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(cert).unwrap())
        .unwrap();
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    server: &Server,
    tls: &TlsConnector,
) -> std::io::Result<futures_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(server.http).await?;
    let name = ServerName::IpAddress(server.http.ip().into());
    tls.connect(name, tcp).await
}

async fn https_get(server: &Server, tls: &TlsConnector, path: &str) -> Option<String> {
    let mut s = tls_connect(server, tls).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    Some(out)
}

#[test]
fn the_page_and_the_websocket_are_served_over_tls() {
    let (cert, key) = make_cert();
    let server = Server::spawn(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let tls = connector(&cert);
    smol::block_on(async {
        let deadline = Instant::now() + WAIT;
        loop {
            let health = https_get(&server, &tls, "/healthz").await;
            if health.is_some_and(|h| h.starts_with("HTTP/1.1 200")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "wren never became healthy over TLS"
            );
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        let page = https_get(&server, &tls, "/").await.unwrap();
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");

        let stream = tls_connect(&server, &tls).await.unwrap();
        let mut req = format!("wss://{}/ws?peer=alice", server.http)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "protoo".parse().unwrap());
        let (mut ws, resp) = async_tungstenite::client_async(req, stream).await.unwrap();
        assert_eq!(resp.headers()["Sec-WebSocket-Protocol"], "protoo");
        let join = json!({"request": true, "id": 1, "method": "join", "data": {"rid": "secure"}});
        ws.send(Message::text(join.to_string())).await.unwrap();
        let Some(Ok(Message::Text(answer))) = ws.next().await else {
            panic!("no answer")
        };
        let answer: Value = serde_json::from_str(answer.as_str()).unwrap();
        assert_eq!(answer["ok"], true);
        assert_eq!(answer["data"], json!({"pubs": [], "users": []}));
    });
    // Plain HTTP on the TLS port gets nothing useful.
    assert!(http_get(server.http, "/").is_none_or(|(status, _)| status != 200));
}

#[test]
fn a_missing_key_is_a_clear_startup_error() {
    let (cert, _) = make_cert();
    let out = wren_command()
        .args([
            "signal",
            "--listen",
            "127.0.0.1:0",
            "--sfu-socket",
            "/nonexistent.sock",
        ])
        .args([
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            "/nonexistent.key",
        ])
        .output()
        .expect("wren runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent.key"), "{err}");
}
