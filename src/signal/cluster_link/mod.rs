//! The signaling node's link to the cluster's Redis: connect (TCP, or TLS
//! for `rediss://`), subscribe to the cluster's event channel, renew this
//! node's heartbeat, hand what arrives to the node, and make the link
//! again with backoff when it breaks.
//!
//! One RESP3 connection carries both the commands and the pub/sub
//! messages (RESP3 pushes), so that what a node reads and what it hears
//! arrive in the order Redis did them. The `redis` crate frames the
//! protocol; its connection driver runs here, on the node's own thread,
//! raced against the work (the crate's own connect would spawn it on
//! smol's global executor, a second thread). The crate never reconnects:
//! a command without an answer in [`REDIS_TIMEOUT`] ends the link, and
//! this loop makes a new one.
//!
//! The node's operations ([`ClusterOp`]) go out in the order it made
//! them, batched into pipelines, each a Lua script (`ops`, `lua/`) that
//! changes the rooms' state and publishes the event in one step; answers
//! go back to the node after every push Redis sent before them.
//!
//! Keys and channels (`db` of the URL apart, one cluster per Redis
//! database; `lua/prelude.lua` lists the rooms' keys):
//! - `wren:node:{bizid}`: a node's last heartbeat, expiring after
//!   [`NODE_TIMEOUT`];
//! - `wren:events`: every node's events ([`ClusterEvent`], JSON);
//! - `wren:to:{bizid}`: messages to one node ([`NodeMsg`], JSON).

mod ops;

use super::node::{ClusterAnswer, ClusterEvent, ClusterOp, NodeMsg};
use super::{clock, Shared};
use crate::ids::NodeId;
use crate::limits::{
    CLUSTER_OPS_BATCH, CLUSTER_PUSH_QUEUE, CLUSTER_RETRY_MAX, CLUSTER_RETRY_MIN,
    HEARTBEAT_INTERVAL, NODE_TIMEOUT, REDIS_TIMEOUT,
};
use futures_rustls::rustls::{ClientConfig, RootCertStore};
use futures_rustls::TlsConnector;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, PushInfo, PushKind};
use redis::{ProtocolVersion, RedisConnectionInfo, Value};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use smol::future::FutureExt;
use smol::net::TcpStream;
use smol::Timer;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::compat::FuturesAsyncReadCompatExt;

/// The channel every node publishes its events on.
pub const EVENTS: &str = "wren:events";

/// Debian's bundle of the system's trusted CAs: what `rediss://` trusts
/// unless `cluster-ca-file` says otherwise.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The channel of messages to one node.
pub fn node_channel(bizid: &NodeId) -> String {
    format!("wren:to:{bizid}")
}

/// The key of a node's heartbeat.
fn node_key(bizid: &NodeId) -> String {
    format!("wren:node:{bizid}")
}

/// Where the cluster's Redis is and how to talk to it, from the
/// `cluster` URL: `redis://[[user]:password@]host[:port][/db]`, or
/// `rediss://` for TLS.
#[derive(Clone)]
pub struct ClusterConfig {
    host: String,
    port: u16,
    /// With `rediss://`: the CA file its certificate is checked against.
    tls: Option<PathBuf>,
    redis: RedisConnectionInfo,
}

// Not derived: the URL may hold a password.
impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// The URL without its password, for logs.
impl std::fmt::Display for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let user = match (self.redis.username(), self.redis.password()) {
            (Some(u), _) => format!("{u}:***@"),
            (None, Some(_)) => ":***@".to_string(),
            (None, None) => String::new(),
        };
        let (host, port, db) = (&self.host, self.port, self.redis.db());
        write!(f, "{scheme}://{user}{host}:{port}/{db}")
    }
}

impl ClusterConfig {
    /// Checks a `cluster` URL; `ca_file` is for `rediss://` only.
    pub fn parse(url: &str, ca_file: Option<&Path>) -> Result<ClusterConfig, String> {
        // The crate's parser knows `rediss://` only with its own TLS, which
        // wren does not build in: TLS is done here, the rest parsed as
        // `redis://`.
        let (tls, plain) = match url.strip_prefix("rediss://") {
            Some(rest) => (true, format!("redis://{rest}")),
            None if url.starts_with("redis://") => (false, url.to_string()),
            None => return Err(format!("{url:?} is not a redis:// or rediss:// URL")),
        };
        let info = plain
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("invalid Redis URL: {e}"))?;
        let ConnectionAddr::Tcp(host, port) = info.addr().clone() else {
            return Err("a redis:// URL names a host".into());
        };
        if host.is_empty() {
            return Err("the Redis URL names no host".into());
        }
        if ca_file.is_some() && !tls {
            return Err("cluster-ca-file is for rediss:// URLs".into());
        }
        let tls = tls.then(|| ca_file.map_or_else(|| SYSTEM_CA_FILE.into(), Path::to_path_buf));
        if let Some(ca) = &tls {
            roots(ca)?;
        }
        Ok(ClusterConfig {
            host,
            port,
            tls,
            // Pub/sub and commands on one connection need RESP3's pushes.
            redis: info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3),
        })
    }
}

/// The CAs of a PEM file.
fn roots(ca: &Path) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", ca.display()))?;
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{}: no CA certificate", ca.display()));
    }
    Ok(store)
}

/// Keeps the link up for as long as the node runs.
pub(super) async fn run(shared: Rc<Shared>, cfg: ClusterConfig) {
    let mut retry = CLUSTER_RETRY_MIN;
    let mut reported = false;
    loop {
        let started = Instant::now();
        let why = session(&shared, &cfg).await;
        *shared.cluster.borrow_mut() = None;
        *shared.cluster_ops.borrow_mut() = None;
        let was_up = shared
            .node
            .borrow()
            .cluster_metrics()
            .is_some_and(|m| m.link == super::node::Link::Up);
        if was_up {
            log::warn!("cluster link to {cfg} lost: {why}");
        } else if !reported {
            log::warn!("cluster: Redis at {cfg} not reachable: {why}");
        }
        reported = true;
        shared.with_node(|n| n.cluster_down(clock(), why));
        // A link that held for a while starts the backoff over.
        if started.elapsed() > CLUSTER_RETRY_MAX * 4 {
            retry = CLUSTER_RETRY_MIN;
        }
        let jitter = Duration::from_millis(fastrand::u64(0..=retry.as_millis() as u64 / 4));
        Timer::after(retry + jitter).await;
        retry = (retry * 2).min(CLUSTER_RETRY_MAX);
    }
}

/// Fails after [`REDIS_TIMEOUT`]: raced against a step of connecting.
async fn timeout<T>() -> Result<T, String> {
    Timer::after(REDIS_TIMEOUT).await;
    Err("timed out".to_string())
}

/// The connection's driver: reads and writes the socket until it closes.
type Driver = Pin<Box<dyn Future<Output = ()>>>;

/// Connects and authenticates (the crate sends `HELLO 3 AUTH ...`).
async fn connect(
    cfg: &ClusterConfig,
    pushes: smol::channel::Sender<PushInfo>,
) -> Result<(MultiplexedConnection, Driver), String> {
    let tcp = async {
        TcpStream::connect((cfg.host.as_str(), cfg.port))
            .await
            .map_err(|e| e.to_string())
    }
    .or(timeout())
    .await?;
    // Heartbeats and events are small and latency-bound.
    let _ = tcp.set_nodelay(true);
    // A full queue means this thread has fallen behind Redis: closing it
    // ends the session once the queue is read, and the new session
    // resynchronises. Dropping one message would leave a hole instead.
    let sender = move |p: PushInfo| {
        let sent = pushes.try_send(p);
        if sent.is_err() {
            pushes.close();
        }
        sent
    };
    let config = AsyncConnectionConfig::new()
        .set_response_timeout(Some(REDIS_TIMEOUT))
        .set_push_sender(sender);
    let made = match &cfg.tls {
        None => async {
            let (con, driver) =
                MultiplexedConnection::new_with_config(&cfg.redis, tcp.compat(), config)
                    .await
                    .map_err(|e| e.to_string())?;
            Ok::<_, String>((con, Box::pin(driver) as Driver))
        }
        .boxed_local(),
        Some(ca) => async {
            let tls = ClientConfig::builder()
                .with_root_certificates(roots(ca)?)
                .with_no_client_auth();
            let name =
                ServerName::try_from(cfg.host.clone()).map_err(|e| format!("{}: {e}", cfg.host))?;
            let stream = TlsConnector::from(Arc::new(tls))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            let (con, driver) =
                MultiplexedConnection::new_with_config(&cfg.redis, stream.compat(), config)
                    .await
                    .map_err(|e| e.to_string())?;
            Ok((con, Box::pin(driver) as Driver))
        }
        .boxed_local(),
    };
    made.or(timeout()).await
}

/// One connection, from connect to loss; returns why it ended.
async fn session(shared: &Shared, cfg: &ClusterConfig) -> String {
    let (tx, rx) = smol::channel::bounded(CLUSTER_PUSH_QUEUE);
    let (mut con, driver) = match connect(cfg, tx).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    let driver = async {
        driver.await;
        "connection closed".to_string()
    };
    let work = async {
        let mine = match shared.node.borrow().beat() {
            Some(beat) => node_channel(&beat.bizid),
            None => return "not a node of a cluster".to_string(),
        };
        if let Err(e) = con.subscribe(&[EVENTS, mine.as_str()]).await {
            return format!("SUBSCRIBE: {e}");
        }
        let scripts = match ops::Scripts::load(&mut con).await {
            Ok(s) => s,
            Err(e) => return e,
        };
        if let Err(e) = beat(shared, &mut con).await {
            return e;
        }
        let (ops_tx, ops_rx) = smol::channel::unbounded::<ClusterOp>();
        *shared.cluster.borrow_mut() = Some(con.clone());
        *shared.cluster_ops.borrow_mut() = Some(ops_tx);
        // The node's first operation is the `Sync` of its whole state.
        shared.with_node(|n| n.cluster_up(clock()));
        log::info!("cluster link to {cfg} up");
        let mut beats_con = con.clone();
        let beats = async {
            loop {
                Timer::after(HEARTBEAT_INTERVAL).await;
                match beat(shared, &mut beats_con).await {
                    Ok(true) => {}
                    // Our key had expired: the others took us for dead and
                    // dropped our rooms' entries. Write them again.
                    Ok(false) => {
                        log::warn!("cluster: this node had been taken for dead; syncing");
                        shared.with_node(|n| n.cluster_up(clock()));
                    }
                    Err(e) => return e,
                }
            }
        };
        let pushes = async {
            while let Ok(push) = rx.recv().await {
                if let Err(e) = on_push(shared, push) {
                    return e;
                }
            }
            "fell behind the cluster's messages".to_string()
        };
        let mut ops_con = con.clone();
        let ops = async {
            while let Ok(first) = ops_rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < CLUSTER_OPS_BATCH {
                    match ops_rx.try_recv() {
                        Ok(op) => batch.push(op),
                        Err(_) => break,
                    }
                }
                let mut pipe = redis::pipe();
                for op in &batch {
                    ops::add(&mut pipe, &scripts, op);
                }
                let replies: Vec<Value> = match pipe.query_async(&mut ops_con).await {
                    Ok(r) => r,
                    Err(e) => {
                        fail_calls(shared, &batch, &e.to_string());
                        return format!("cluster operation: {e}");
                    }
                };
                // What Redis published before these answers is older than
                // them: the node hears it first.
                while let Ok(push) = rx.try_recv() {
                    if let Err(e) = on_push(shared, push) {
                        return e;
                    }
                }
                for (op, reply) in batch.iter().zip(replies) {
                    if let Some((call, answer)) = ops::answer(op, reply) {
                        shared.with_node(|n| n.cluster_answer(clock(), call, answer));
                    }
                }
            }
            "operations closed".to_string()
        };
        beats.or(pushes).or(ops).await
    };
    driver.or(work).await
}

/// Fails the calls of operations that will never be answered.
fn fail_calls(shared: &Shared, batch: &[ClusterOp], why: &str) {
    for call in batch.iter().filter_map(ClusterOp::call) {
        let answer = ClusterAnswer::Failed(why.to_string());
        shared.with_node(|n| n.cluster_answer(clock(), call, answer));
    }
}

/// Renews this node's heartbeat key and announces it, in one round trip
/// (whose time `/metrics` shows). False when the key had expired.
async fn beat(shared: &Shared, con: &mut MultiplexedConnection) -> Result<bool, String> {
    let Some(beat) = shared.node.borrow().beat() else {
        return Ok(true);
    };
    let key = node_key(&beat.bizid);
    let json = serde_json::to_string(&ClusterEvent::Beat(beat)).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let (previous,): (Option<String>,) = redis::pipe()
        .cmd("SET")
        .arg(&key)
        .arg(&json)
        .arg("PX")
        .arg(NODE_TIMEOUT.as_millis() as u64)
        .arg("GET")
        .cmd("PUBLISH")
        .arg(EVENTS)
        .arg(&json)
        .ignore()
        .query_async(con)
        .await
        .map_err(|e| format!("heartbeat: {e}"))?;
    shared.cluster_rtt.set(Some(started.elapsed()));
    Ok(previous.is_some())
}

/// One message from Redis: an event for the node, or the crate saying
/// the connection is gone.
fn on_push(shared: &Shared, push: PushInfo) -> Result<(), String> {
    match push.kind {
        PushKind::Message => {}
        PushKind::Disconnection => return Err("connection closed".into()),
        // Subscription confirmations and the like.
        _ => return Ok(()),
    }
    let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
        (push.data.first(), push.data.get(1))
    else {
        return Ok(());
    };
    // A newer node's message this one does not know is not an error of
    // the link: it is ignored.
    if channel.as_slice() == EVENTS.as_bytes() {
        match serde_json::from_slice::<ClusterEvent>(payload) {
            Ok(ev) => shared.with_node(|n| n.cluster_event(clock(), ev)),
            Err(e) => log::debug!("cluster: event ignored: {e}"),
        }
    } else {
        match serde_json::from_slice::<NodeMsg>(payload) {
            Ok(msg) => shared.with_node(|n| n.cluster_message(clock(), msg)),
            Err(e) => log::debug!("cluster: message ignored: {e}"),
        }
    }
    Ok(())
}

/// A clean stop: the heartbeat key goes and the others hear "bye" now
/// rather than after the timeout.
pub(super) async fn leave(shared: &Shared) {
    let con = shared.cluster.borrow().clone();
    let (Some(mut con), Some(beat)) = (con, shared.node.borrow().beat()) else {
        return;
    };
    let bye = ClusterEvent::Bye {
        bizid: beat.bizid.clone(),
        epoch: beat.epoch,
    };
    let Ok(json) = serde_json::to_string(&bye) else {
        return;
    };
    let sent = redis::pipe()
        .cmd("DEL")
        .arg(node_key(&beat.bizid))
        .ignore()
        .cmd("PUBLISH")
        .arg(EVENTS)
        .arg(json)
        .ignore()
        .query_async::<()>(&mut con)
        .await;
    if let Err(e) = sent {
        log::debug!("cluster: bye not sent: {e}");
    }
}
