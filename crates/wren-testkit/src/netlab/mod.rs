//! A network lab of shaped links (Linux, as root): wren in one network
//! namespace, each client (a browser, a str0m peer) in its own, all
//! joined by a router namespace where each client's link is shaped, per
//! direction, and can be reshaped while a test runs. The recipe and its
//! measurements are in docs/lab.md; in short, this kernel has no netem,
//! so:
//!
//! - rate: tbf on the router's interface toward the client (downlink)
//!   and on an IFB fed from that interface's ingress (uplink);
//! - loss: nftables `numgen` rules in the router's forward hook (UDP);
//! - delay and jitter: a TUN delay line in this process (delay.rs), with
//!   policy routing sending a client's packets through it only while its
//!   link delays.
//!
//! Addresses: the server is 10.77.0.2, client n (1-based) 10.77.n.2, the
//! router 10.77.x.1 on each link; every namespace has a default route
//! through the router (Firefox sends no ICE check without one). IPv6 is
//! off in the lab. Namespaces are named `wl-<pid>-<tag>-{rt,srv,c1..}`,
//! deleted on drop, and those of dead processes are swept by the next
//! lab.

mod delay;
mod router;
mod shape;
mod stats;
mod sys;

pub use shape::{ClientSpec, LinkShape};
pub use stats::{DirStats, LinkStats};
pub use sys::enter;

use delay::{DelayLine, Hold};
use router::{Installed, Router, TABLE_BASE};
use std::ffi::OsStr;
use std::io;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Mutex;

/// Client numbers go into the third byte of 10.77.n.2 and into routing
/// table numbers: 250 leaves room.
pub const MAX_CLIENTS: usize = 250;

/// A namespace of the lab and its address on its link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The network namespace's name (for `ip netns exec`, [`enter`]).
    pub ns: String,
    /// Its address (10.77.0.2 for the server, 10.77.n.2 for client n).
    pub ip: Ipv4Addr,
}

/// A running lab; dropping it stops the delay line, kills what runs in
/// its namespaces and deletes them.
pub struct Lab {
    router: Router,
    prefix: String,
    server: Host,
    clients: Vec<Host>,
    state: Mutex<Vec<Installed>>,
    delay: Option<DelayLine>,
}

impl Lab {
    /// Builds a lab with one client per spec (client n = `specs[n-1]`),
    /// after deleting what dead labs left behind. Fails, saying what is
    /// missing, without root, `/dev/net/tun`, `ip`, `tc` or `nft`; on any
    /// failure, what was made is deleted again.
    pub fn new(specs: &[ClientSpec]) -> io::Result<Lab> {
        let tools = sys::preflight()?;
        if specs.is_empty() || specs.len() > MAX_CLIENTS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a lab has 1 to {MAX_CLIENTS} clients, not {}", specs.len()),
            ));
        }
        for spec in specs {
            spec.up.check()?;
            spec.down.check()?;
        }
        sys::sweep_stale(&tools.ip);
        let prefix = format!("wl-{}-{:06x}", std::process::id(), fastrand::u32(..1 << 24));
        let mut lab = Lab {
            router: Router {
                tools,
                ns: format!("{prefix}-rt"),
            },
            server: Host {
                ns: format!("{prefix}-srv"),
                ip: Ipv4Addr::new(10, 77, 0, 2),
            },
            clients: (1..=specs.len())
                .map(|n| Host {
                    ns: format!("{prefix}-c{n}"),
                    ip: Ipv4Addr::new(10, 77, n as u8, 2),
                })
                .collect(),
            prefix,
            state: Mutex::new(vec![Installed::default(); specs.len()]),
            delay: None,
        };
        // On an error, `lab` is dropped here, which deletes what exists.
        lab.build(specs)?;
        Ok(lab)
    }

    /// The namespaces, the links, the delay line, then each client's
    /// shape.
    fn build(&mut self, specs: &[ClientSpec]) -> io::Result<()> {
        let rt = &self.router;
        let hosts: Vec<&Host> = std::iter::once(&self.server).chain(&self.clients).collect();
        for ns in std::iter::once(&rt.ns).chain(hosts.iter().map(|h| &h.ns)) {
            rt.ip(&format!("netns add {ns}"))?;
            rt.ip(&format!("-n {ns} link set lo up"))?;
        }
        // rp_filter off: downlink packets come back out of the TUN with a
        // source the router reaches through s0. IPv6 off before any link
        // exists, so no router solicitation or DAD muddies the counters.
        sysctl(
            &rt.ns,
            &[
                ("ipv4/ip_forward", "1"),
                ("ipv4/conf/all/rp_filter", "0"),
                ("ipv4/conf/default/rp_filter", "0"),
                ("ipv6/conf/all/disable_ipv6", "1"),
                ("ipv6/conf/default/disable_ipv6", "1"),
            ],
        )?;
        for (k, host) in hosts.iter().enumerate() {
            sysctl(&host.ns, &[("ipv6/conf/default/disable_ipv6", "1")])?;
            // Interface names are per namespace: the same in every lab.
            let side = if k == 0 { "s0".into() } else { format!("c{k}") };
            rt.wire(&side, host, k)?;
        }
        // One TUN per client, made from a thread inside the router: the
        // device belongs to the namespace its opener is in.
        let n = self.clients.len();
        let devices = enter(&rt.ns, || {
            (1..=n)
                .map(|i| {
                    tun_rs::DeviceBuilder::new()
                        .name(format!("d{i}"))
                        .enable(true)
                        .build_sync()
                })
                .collect::<io::Result<Vec<_>>>()
        })??;
        for i in 1..=n {
            let table = TABLE_BASE + i;
            rt.ip(&format!(
                "-n {} route add default dev d{i} table {table}",
                rt.ns
            ))?;
        }
        let ips: Vec<Ipv4Addr> = self.clients.iter().map(|c| c.ip).collect();
        rt.nft(&stats::count_table(&ips))?;
        let devices = devices.into_iter().zip(ips).collect();
        self.delay = Some(DelayLine::start(devices, vec![[Hold::default(); 2]; n])?);
        for (k, spec) in specs.iter().enumerate() {
            self.reshape(k, spec)?;
        }
        Ok(())
    }

    /// Changes client `k`'s link (`k` 0-based: client k+1, `specs[k]` of
    /// [`Lab::new`]) to `spec`, live: tc replaces qdiscs in place, the
    /// loss table is replaced in one nft transaction, the delay line
    /// takes the new times from the next packet on. Only what differs is
    /// touched.
    pub fn reshape(&self, k: usize, spec: &ClientSpec) -> io::Result<()> {
        spec.up.check()?;
        spec.down.check()?;
        let delay = self
            .delay
            .as_ref()
            .ok_or_else(|| io::Error::other("no delay line"))?;
        let mut state = self
            .state
            .lock()
            .map_err(|_| io::Error::other("a reshape panicked"))?;
        let installed = state.get_mut(k).ok_or_else(|| self.no_client(k))?;
        self.router
            .install(k + 1, self.clients[k].ip, spec, installed, delay)?;
        installed.spec = *spec;
        let specs: Vec<ClientSpec> = state.iter().map(|s| s.spec).collect();
        self.router.nft(&shape::loss_table(&specs))
    }

    fn no_client(&self, k: usize) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("client index {k}: the lab has {}", self.clients.len()),
        )
    }

    /// Client `k`'s link as it is shaped now (`k` 0-based).
    pub fn spec(&self, k: usize) -> ClientSpec {
        self.state.lock().map(|s| s[k].spec).unwrap_or_default()
    }

    /// What crossed client `k`'s link (`k` 0-based) each way since the
    /// lab started.
    pub fn stats(&self, k: usize) -> io::Result<LinkStats> {
        if k >= self.clients.len() {
            return Err(self.no_client(k));
        }
        let tools = &self.router.tools;
        stats::read(&tools.ip, &tools.nft, &self.router.ns, k + 1)
    }

    /// Packets the delay line dropped because it held too many already
    /// (0 unless a test floods a delayed link).
    pub fn delay_drops(&self) -> u64 {
        self.delay.as_ref().map_or(0, DelayLine::overflow)
    }

    /// `ip netns exec <ns> <program>`: add arguments, spawn. Whatever it
    /// starts in a lab namespace is killed when the lab is dropped.
    pub fn command(&self, ns: &str, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(&self.router.tools.ip);
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }

    /// Runs `f` on a thread inside namespace `ns` (see [`enter`]), e.g.
    /// to bind a str0m peer's UdpSocket in a client's namespace.
    pub fn enter<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        enter(ns, f)
    }

    /// The `wl-<pid>-<tag>` every namespace name of this lab starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The router's namespace (where the shaping happens).
    pub fn router_ns(&self) -> &str {
        &self.router.ns
    }

    /// The server's namespace and address (10.77.0.2).
    pub fn server(&self) -> &Host {
        &self.server
    }

    /// The clients, client n at index n-1.
    pub fn clients(&self) -> &[Host] {
        &self.clients
    }

    /// Client `k` (0-based; client k+1, at 10.77.(k+1).2).
    pub fn client(&self, k: usize) -> &Host {
        &self.clients[k]
    }

    /// This lab's namespaces that exist now.
    pub fn namespaces(&self) -> Vec<String> {
        sys::namespaces(&format!("{}-", self.prefix))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // First the delay line: its TUN descriptors would keep the router
        // namespace alive (anonymous) after its name is deleted.
        self.delay.take();
        for ns in self.namespaces() {
            sys::destroy(&self.router.tools.ip, &ns);
        }
    }
}

/// Writes sysctls (`/proc/sys/net/<key>`) inside `ns`: a thread that
/// entered a namespace sees that namespace's /proc/sys/net, so no
/// `sysctl` binary is needed.
fn sysctl(ns: &str, values: &[(&str, &str)]) -> io::Result<()> {
    enter(ns, || {
        for (key, value) in values {
            let path = format!("/proc/sys/net/{key}");
            match std::fs::write(&path, value) {
                // A kernel without IPv6 has nothing to turn off.
                Err(e) if e.kind() == io::ErrorKind::NotFound && key.starts_with("ipv6/") => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("{path} in {ns}: {e}"))),
                Ok(()) => {}
            }
        }
        Ok(())
    })?
}
