//! Many peers running on a thread of their own while the test talks
//! signaling, as real clients do: a browser's media runs while its page
//! (and every other page) sends requests. Running peers only between
//! requests instead starves them whenever the node is slow to answer (a
//! hundred subscriptions under QEMU take longer than a key frame request
//! may stay unanswered).

use crate::peer::{run_all, run_until, Peer};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Duration;

/// When the test is done with the peers.
type Done = Box<dyn Fn(&[&mut Peer]) -> bool + Send>;

/// What the test asks of the peers' thread.
enum Order {
    /// Run this peer too, from now on.
    Add(Box<Peer>),
    /// Run until `done` holds or `limit` passes, then give the peers back.
    Finish { limit: Duration, done: Done },
}

/// Peers running on their own thread; added one by one, given back (in
/// the order they were added) by [`Swarm::run_until`].
pub struct Swarm {
    orders: Sender<Order>,
    thread: JoinHandle<(bool, Vec<Peer>)>,
}

impl Swarm {
    /// Starts the peers' thread, with no peer yet.
    pub fn start() -> Swarm {
        let (orders, inbox) = channel();
        let thread = std::thread::Builder::new()
            .name("swarm".into())
            .spawn(move || serve(&inbox))
            .expect("the swarm's thread starts");
        Swarm { orders, thread }
    }

    /// Hands `peer` (answered, about to connect) to the thread.
    pub fn add(&self, peer: Peer) {
        self.orders
            .send(Order::Add(Box::new(peer)))
            .expect("the swarm's thread runs");
    }

    /// Runs the peers until `done` holds or `limit` passes; returns
    /// whether it held, and the peers.
    pub fn run_until(
        self,
        limit: Duration,
        done: impl Fn(&[&mut Peer]) -> bool + Send + 'static,
    ) -> (bool, Vec<Peer>) {
        self.orders
            .send(Order::Finish {
                limit,
                done: Box::new(done),
            })
            .expect("the swarm's thread runs");
        self.thread.join().expect("the swarm's thread ends")
    }
}

fn serve(inbox: &Receiver<Order>) -> (bool, Vec<Peer>) {
    let mut peers: Vec<Peer> = Vec::new();
    loop {
        match inbox.try_recv() {
            Ok(Order::Add(peer)) => peers.push(*peer),
            Ok(Order::Finish { limit, done }) => {
                let mut all: Vec<&mut Peer> = peers.iter_mut().collect();
                let held = run_until(&mut all, limit, done);
                return (held, peers);
            }
            // The test is gone (it panicked): nothing more to run.
            Err(TryRecvError::Disconnected) => return (false, peers),
            Err(TryRecvError::Empty) => {
                let mut all: Vec<&mut Peer> = peers.iter_mut().collect();
                run_all(&mut all, Duration::from_millis(5));
            }
        }
    }
}
