//! The signaling role: WebSocket server, room tables, SFU clients — one
//! thread, one `smol::LocalExecutor`.
//!
//! The room logic lives in `node::Node`, a state machine without I/O;
//! this module is the shell that moves bytes between it, the client
//! connections (`conn`), the SFU control sockets (`sfu_link`) and, in a
//! cluster, the Redis the nodes share (`cluster_link`).

pub(crate) mod cluster_link;
mod conn;
pub mod error;
pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod node;
mod outbox;
pub mod protoo;
mod sfu_link;
pub(crate) mod tls;
pub mod token;

use crate::ids::NodeId;
use crate::ipc::ToSfu;
use crate::limits::{Limits, ACCEPT_BACKOFF, HTTP_HEAD_TIMEOUT_MS, SHUTDOWN_DRAIN};
use async_signal::{Signal, Signals};
use node::{ConnId, Effect, Node, Now, SfuSlot};
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::net::TcpListener;
use smol::stream::StreamExt;
use smol::LocalExecutor;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What a signaling node needs to run.
#[derive(Debug, Clone)]
pub(crate) struct SignalConfig {
    pub listen: SocketAddr,
    pub bizid: NodeId,
    /// Control sockets of the SFUs, one slot each.
    pub sfu_sockets: Vec<PathBuf>,
    pub limits: Limits,
    /// Serve https:// and wss:// with this certificate chain and key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Require room tokens signed with this secret.
    pub token_secret: Option<token::Secret>,
    /// Origins allowed to open WebSockets (empty: any).
    pub allowed_origins: Vec<String>,
    /// The cluster's Redis; None for a node on its own.
    pub cluster: Option<cluster_link::ClusterConfig>,
}

/// Something to write to one client connection.
#[derive(Debug)]
enum Outbound {
    Text(Rc<str>),
    Close(u16, &'static str),
    Ping,
}

/// The node's end of one SFU control connection.
struct SfuLink {
    /// Control messages, written to the socket in order.
    tx: Sender<ToSfu>,
    /// Dropping it ends the connection (see [`Shared::reset_sfu`]).
    _reset: Sender<()>,
}

/// State shared by every task of the node (one thread: `RefCell` is enough).
struct Shared {
    node: RefCell<Node>,
    conns: RefCell<HashMap<ConnId, outbox::Sender<Outbound>>>,
    sfus: RefCell<Vec<Option<SfuLink>>>,
    next_conn: Cell<u64>,
    allowed_origins: Vec<String>,
    /// Connection tasks still running (a shutdown waits for them).
    live_conns: Cell<usize>,
    /// How often each connection is pinged.
    ping_interval: Duration,
    /// When the ticker will next tick the node, as it last asked.
    armed: Cell<Option<Instant>>,
    /// Wakes the ticker to ask the node again (capacity one: wake-ups
    /// coalesce).
    wake: Sender<()>,
    /// The link to the cluster's Redis, while it is up.
    cluster: RefCell<Option<redis::aio::MultiplexedConnection>>,
    /// The last heartbeat's round trip to Redis.
    cluster_rtt: Cell<Option<Duration>>,
    /// The node's operations for Redis, while the link is up.
    cluster_ops: RefCell<Option<Sender<node::ClusterOp>>>,
}

/// Reads both clocks once, for one input to the node.
fn clock() -> Now {
    Now {
        mono: Instant::now(),
        unix_secs: token::unix_now(),
    }
}

impl Shared {
    /// Runs `f` on the node, then carries out every effect it produced.
    fn with_node<R>(&self, f: impl FnOnce(&mut Node) -> R) -> R {
        let r = f(&mut self.node.borrow_mut());
        self.flush();
        self.rearm();
        r
    }

    /// Wakes the ticker when the input just handled gave the node a
    /// deadline earlier than the one it sleeps until (a new peer, a call
    /// to an SFU). Later deadlines need nothing: the ticker wakes early,
    /// finds nothing due, and asks again.
    fn rearm(&self) {
        let next = self.node.borrow().poll_timeout();
        let earlier = match (next, self.armed.get()) {
            (Some(next), Some(armed)) => next < armed,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if earlier {
            let _ = self.wake.try_send(());
        }
    }

    fn flush(&self) {
        loop {
            let effect = self.node.borrow_mut().poll_effect();
            let Some(effect) = effect else { break };
            match effect {
                Effect::Send { conn, text } => self.to_conn(conn, Outbound::Text(text)),
                Effect::Close { conn, code, reason } => {
                    self.to_conn(conn, Outbound::Close(code, reason));
                    // Nothing more goes to it: its task ends after the close.
                    self.conns.borrow_mut().remove(&conn);
                }
                Effect::Cluster(op) => self.to_cluster(*op),
                Effect::Sfu { sfu, msg } => {
                    let sent = match self.sfus.borrow().get(sfu.0) {
                        Some(Some(link)) => link.tx.try_send(msg).map_err(|e| e.is_full()),
                        _ => Err(false),
                    };
                    match sent {
                        Ok(()) => {}
                        Err(true) => self.reset_sfu(sfu),
                        // Its connection is gone, and the sessions it made
                        // went with it: there is nothing left to tell.
                        Err(false) => {
                            log::debug!("SFU slot {sfu} is down; control message dropped")
                        }
                    }
                }
            }
        }
    }

    /// An SFU whose control queue is full has stopped reading it. The
    /// message that does not fit may be an unpublish or an unsubscribe:
    /// dropping it would leave a session in the SFU that the node has
    /// forgotten, with its client's media, for as long as the client stays
    /// connected. So the connection is dropped instead: the SFU drops every
    /// session it made, the node removes that SFU's streams and fails its
    /// pending calls as when an SFU dies, and reconnects.
    fn reset_sfu(&self, sfu: SfuSlot) {
        log::warn!(
            "SFU slot {sfu}: control queue full, the SFU is not reading; dropping its connection"
        );
        if let Some(link) = self.sfus.borrow_mut().get_mut(sfu.0) {
            *link = None;
        }
        self.node.borrow_mut().sfu_down(clock(), sfu);
    }

    /// Hands an operation to the cluster link; one the link cannot take
    /// any more (it just broke) is answered as failed, if it was a call.
    fn to_cluster(&self, op: node::ClusterOp) {
        let op = match self.cluster_ops.borrow().as_ref() {
            Some(tx) => match tx.try_send(op) {
                Ok(()) => return,
                Err(e) => e.into_inner(),
            },
            None => op,
        };
        let Some(call) = op.call() else {
            return;
        };
        let failed = node::ClusterAnswer::Failed("the cluster link is down".into());
        self.node.borrow_mut().cluster_answer(clock(), call, failed);
    }

    fn to_conn(&self, conn: ConnId, out: Outbound) {
        let full = match self.conns.borrow().get(&conn) {
            Some(tx) => tx.try_send(out).is_err(),
            None => false,
        };
        if full {
            // A client that stops reading must not grow our memory: drop
            // its queue, which ends its task (and so its membership).
            log::info!("connection {conn:?}: not reading, disconnecting");
            self.conns.borrow_mut().remove(&conn);
        }
    }

    fn new_conn_id(&self) -> ConnId {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        ConnId(id)
    }
}

/// Runs a signaling node until the process is stopped.
pub(crate) fn run(cfg: SignalConfig) -> std::io::Result<()> {
    let ex = LocalExecutor::new();
    smol::block_on(ex.run(serve(&ex, cfg)))
}

async fn serve(ex: &LocalExecutor<'_>, cfg: SignalConfig) -> std::io::Result<()> {
    // Before anything else, so that a stop request is always a clean one.
    let mut signals = Signals::new([Signal::Term, Signal::Int])?;
    let tls = match &cfg.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key).map_err(std::io::Error::other)?),
        None => None,
    };
    let listener = TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    let (wake, woken) = smol::channel::bounded(1);
    let shared = Rc::new(Shared {
        node: RefCell::new(Node::new(
            cfg.bizid.clone(),
            cfg.limits,
            cfg.sfu_sockets.len(),
        )),
        conns: RefCell::new(HashMap::new()),
        sfus: RefCell::new(cfg.sfu_sockets.iter().map(|_| None).collect()),
        next_conn: Cell::new(1),
        allowed_origins: cfg.allowed_origins.clone(),
        live_conns: Cell::new(0),
        ping_interval: crate::limits::ping_interval(cfg.limits.liveness_timeout()),
        armed: Cell::new(None),
        wake,
        cluster: RefCell::new(None),
        cluster_rtt: Cell::new(None),
        cluster_ops: RefCell::new(None),
    });
    if let Some(secret) = &cfg.token_secret {
        let key = token::TokenKey::new(&secret.0).map_err(std::io::Error::other)?;
        shared.node.borrow_mut().require_tokens(key);
        log::info!("room tokens are required");
    }
    if let Some(cluster) = &cfg.cluster {
        shared.node.borrow_mut().enable_cluster(fastrand::u64(..));
        ex.spawn(cluster_link::run(shared.clone(), cluster.clone()))
            .detach();
        log::info!("cluster: Redis at {cluster}");
    }
    for (slot, path) in cfg.sfu_sockets.iter().enumerate() {
        ex.spawn(sfu_link::run(shared.clone(), SfuSlot(slot), path.clone()))
            .detach();
    }
    ex.spawn(ticker(shared.clone(), woken)).detach();
    let scheme = if tls.is_some() { "https" } else { "http" };
    log::info!(
        "signaling node {} listening on {scheme}://{addr}/",
        cfg.bizid
    );
    crate::notify::notify("READY=1");
    let accept = async {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    log::warn!("accept failed: {e}");
                    smol::Timer::after(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            match &tls {
                None => ex.spawn(conn::handle(shared, stream, peer)).detach(),
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    ex.spawn(async move {
                        let timeout = async {
                            smol::Timer::after(Duration::from_millis(HTTP_HEAD_TIMEOUT_MS)).await;
                            Err(std::io::ErrorKind::TimedOut.into())
                        };
                        match handshake.or(timeout).await {
                            Ok(s) => conn::handle(shared, s, peer).await,
                            Err(e) => log::debug!("{peer}: TLS handshake failed: {e}"),
                        }
                    })
                    .detach()
                }
            }
        }
    };
    accept
        .or(async {
            signals.next().await;
        })
        .await;
    drain(&shared).await;
    Ok(())
}

/// Shutdown: every client gets a 1001 ("going away") close, the cluster
/// hears "bye"; waits a few seconds for the sockets to finish. Dropping the SFU control connections
/// (when the process exits) makes the SFUs drop their sessions.
async fn drain(shared: &Shared) {
    log::info!(
        "shutting down: closing {} connections",
        shared.conns.borrow().len()
    );
    crate::notify::notify("STOPPING=1");
    for tx in shared.conns.borrow().values() {
        let _ = tx.try_send(Outbound::Close(1001, "server shutting down"));
    }
    let deadline = Instant::now() + SHUTDOWN_DRAIN;
    cluster_link::leave(shared)
        .or(async {
            smol::Timer::at(deadline).await;
        })
        .await;
    while shared.live_conns.get() > 0 && Instant::now() < deadline {
        smol::Timer::after(Duration::from_millis(20)).await;
    }
}

/// Drives the node's clock: liveness and SFU call timeouts. Sleeps until
/// the node's next deadline ([`Node::poll_timeout`]), or until an input
/// makes an earlier one ([`Shared::rearm`]); an idle node sleeps for good.
async fn ticker(shared: Rc<Shared>, woken: Receiver<()>) {
    loop {
        let next = shared.node.borrow().poll_timeout();
        shared.armed.set(next);
        let timer = match next {
            Some(at) => smol::Timer::at(at),
            None => smol::Timer::never(),
        };
        let due = async {
            timer.await;
            true
        }
        .or(async {
            // Never closed: `Shared` holds the sender, and we hold `Shared`.
            let _ = woken.recv().await;
            false
        });
        if due.await {
            shared.with_node(|n| n.tick(clock()));
        }
    }
}
