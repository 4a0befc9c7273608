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
mod shape;
mod stats;
mod sys;

pub use shape::{ClientSpec, LinkShape};
pub use stats::{DirStats, LinkStats};
pub use sys::enter;

use delay::{DelayLine, Hold, DOWN, UP};
use std::ffi::OsStr;
use std::io;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Mutex;
use sys::{run, Tools};

/// Client numbers go into the third byte of 10.77.n.2 and into routing
/// table numbers: 250 leaves room.
pub const MAX_CLIENTS: usize = 250;

/// The first routing table of the delay line (client n uses this + n).
const TABLE_BASE: usize = 1000;

/// A namespace of the lab and its address on its link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The network namespace's name (for `ip netns exec`, [`enter`]).
    pub ns: String,
    /// Its address (10.77.0.2 for the server, 10.77.n.2 for client n).
    pub ip: Ipv4Addr,
}

/// What is installed on one client's link now, so a reshape changes
/// only what differs and removes only what exists.
#[derive(Clone, Copy, Debug, Default)]
struct Installed {
    spec: ClientSpec,
    down_tbf: bool,
    up_tbf: bool,
    ifb: bool,
    routed: bool,
}

/// A running lab; dropping it stops the delay line, kills what runs in
/// its namespaces and deletes them.
pub struct Lab {
    tools: Tools,
    prefix: String,
    router: String,
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
            tools,
            router: format!("{prefix}-rt"),
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
        let router = self.router.clone();
        let hosts: Vec<Host> = std::iter::once(self.server.clone())
            .chain(self.clients.iter().cloned())
            .collect();
        for ns in std::iter::once(&router).chain(hosts.iter().map(|h| &h.ns)) {
            self.ip(&["netns", "add", ns])?;
            self.ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        // rp_filter off: downlink packets come back out of the TUN with a
        // source the router reaches through s0. IPv6 off before any link
        // exists, so no router solicitation or DAD muddies the counters.
        sysctl(
            &router,
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
            self.wire(&side, host, k)?;
        }
        let devices = enter(&router, || {
            (1..=self.clients.len())
                .map(|n| {
                    tun_rs::DeviceBuilder::new()
                        .name(format!("d{n}"))
                        .enable(true)
                        .build_sync()
                })
                .collect::<io::Result<Vec<_>>>()
        })??;
        for n in 1..=self.clients.len() {
            let table = (TABLE_BASE + n).to_string();
            let dev = format!("d{n}");
            self.ip(&[
                "-n", &router, "route", "add", "default", "dev", &dev, "table", &table,
            ])?;
        }
        let ips: Vec<Ipv4Addr> = self.clients.iter().map(|c| c.ip).collect();
        self.nft(&stats::count_table(&ips))?;
        let holds = vec![[Hold::default(); 2]; self.clients.len()];
        self.delay = Some(DelayLine::start(
            devices.into_iter().zip(ips).collect(),
            holds,
        )?);
        for (k, spec) in specs.iter().enumerate() {
            self.reshape(k, spec)?;
        }
        Ok(())
    }

    /// A veth pair from the router's `side` to `eth0` in `host.ns`, on
    /// 10.77.`subnet`.0/24, with the host's default route via the router.
    fn wire(&self, side: &str, host: &Host, subnet: usize) -> io::Result<()> {
        let (rt, ns) = (self.router.as_str(), host.ns.as_str());
        let gateway = format!("10.77.{subnet}.1");
        self.ip(&[
            "-n", rt, "link", "add", side, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        self.ip(&[
            "-n",
            rt,
            "addr",
            "add",
            &format!("{gateway}/24"),
            "dev",
            side,
        ])?;
        self.ip(&["-n", rt, "link", "set", side, "up"])?;
        self.ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/24", host.ip),
            "dev",
            "eth0",
        ])?;
        self.ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        self.ip(&["-n", ns, "route", "add", "default", "via", &gateway])
    }

    /// Changes client `k`'s link (`k` is 0-based: client k+1, the
    /// `specs[k]` of `new`) to `spec`, live: tc replaces qdiscs in place,
    /// the loss table is replaced in one nft transaction, the delay line
    /// takes the new times from the next packet on. Only what differs is
    /// touched.
    pub fn reshape(&self, k: usize, spec: &ClientSpec) -> io::Result<()> {
        spec.up.check()?;
        spec.down.check()?;
        let mut state = self
            .state
            .lock()
            .map_err(|_| io::Error::other("a reshape panicked"))?;
        let installed = state.get_mut(k).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("client index {k}: the lab has {}", self.clients.len()),
            )
        })?;
        self.apply(k + 1, spec, installed)?;
        installed.spec = *spec;
        let specs: Vec<ClientSpec> = state.iter().map(|s| s.spec).collect();
        self.nft(&shape::loss_table(&specs))
    }

    /// Installs the rate limits and the delay line's routing of client
    /// `n` (1-based).
    fn apply(&self, n: usize, spec: &ClientSpec, now: &mut Installed) -> io::Result<()> {
        let (link, ifb) = (format!("c{n}"), format!("ifbc{n}"));
        match spec.down.tbf() {
            Some(tbf) => {
                self.tc(&format!("qdisc replace dev {link} root {tbf}"))?;
                now.down_tbf = true;
            }
            None if now.down_tbf => {
                self.tc(&format!("qdisc del dev {link} root"))?;
                now.down_tbf = false;
            }
            None => {}
        }
        match spec.up.tbf() {
            Some(tbf) => {
                if !now.ifb {
                    self.ip(&["-n", &self.router, "link", "add", &ifb, "type", "ifb"])?;
                    self.ip(&["-n", &self.router, "link", "set", &ifb, "up"])?;
                    now.ifb = true;
                }
                self.tc(&format!("qdisc replace dev {ifb} root {tbf}"))?;
                if !now.up_tbf {
                    // The uplink's ingress, redirected through the IFB so
                    // that its egress qdisc can shape it. No matchall on
                    // this kernel: `u32 match u32 0 0` matches everything.
                    self.tc(&format!("qdisc add dev {link} handle ffff: ingress"))?;
                    self.tc(&format!(
                        "filter add dev {link} parent ffff: protocol all \
                         u32 match u32 0 0 action mirred egress redirect dev {ifb}"
                    ))?;
                    now.up_tbf = true;
                }
            }
            None if now.up_tbf => {
                // Deleting the ingress qdisc takes its redirect with it.
                self.tc(&format!("qdisc del dev {link} ingress"))?;
                self.tc(&format!("qdisc del dev {ifb} root"))?;
                now.up_tbf = false;
            }
            None => {}
        }
        let hold = |s: &LinkShape| Hold {
            delay_ms: s.delay_ms,
            jitter_ms: s.jitter_ms,
            keep_order: s.keep_order,
        };
        let mut holds = [Hold::default(); 2];
        (holds[UP], holds[DOWN]) = (hold(&spec.up), hold(&spec.down));
        if let Some(delay) = &self.delay {
            delay.set(n - 1, holds);
        }
        if spec.delays() != now.routed {
            let verb = if spec.delays() { "add" } else { "del" };
            for rule in delay_rules(n, self.clients[n - 1].ip) {
                let mut args = vec!["-n", &self.router, "rule", verb];
                args.extend(rule.iter().map(String::as_str));
                self.ip(&args)?;
            }
            now.routed = spec.delays();
        }
        Ok(())
    }

    /// Client `k`'s link as it is shaped now (`k` 0-based).
    pub fn spec(&self, k: usize) -> ClientSpec {
        self.state.lock().map(|s| s[k].spec).unwrap_or_default()
    }

    /// What crossed client `k`'s link (`k` 0-based) each way since the
    /// lab started.
    pub fn stats(&self, k: usize) -> io::Result<LinkStats> {
        if k >= self.clients.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("client index {k}: the lab has {}", self.clients.len()),
            ));
        }
        stats::read(&self.tools.ip, &self.tools.nft, &self.router, k + 1)
    }

    /// Packets the delay line dropped because it held too many already
    /// (0 unless a test floods a delayed link).
    pub fn delay_drops(&self) -> u64 {
        self.delay.as_ref().map_or(0, DelayLine::overflow)
    }

    /// `ip netns exec <ns> <program>`: add arguments, spawn. Whatever it
    /// starts in a lab namespace is killed when the lab is dropped.
    pub fn command(&self, ns: &str, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(&self.tools.ip);
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
        &self.router
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

    fn ip(&self, args: &[&str]) -> io::Result<()> {
        run(&self.tools.ip, args, None).map(drop)
    }

    /// `tc -n <router> <command>` (words split at spaces: none of ours
    /// has a space inside).
    fn tc(&self, command: &str) -> io::Result<()> {
        let mut args = vec!["-n", &self.router];
        args.extend(command.split_whitespace());
        run(&self.tools.tc, &args, None).map(drop)
    }

    /// Runs an nft script in the router (nft has no `-n`).
    fn nft(&self, script: &str) -> io::Result<()> {
        let nft = self.tools.nft.display().to_string();
        let args = ["netns", "exec", &self.router, &nft, "-f", "-"];
        run(&self.tools.ip, &args, Some(script)).map(drop)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // First the delay line: its TUN descriptors would keep the router
        // namespace alive (anonymous) after its name is deleted.
        self.delay.take();
        for ns in self.namespaces() {
            sys::destroy(&self.tools.ip, &ns);
        }
    }
}

/// The policy routing that sends client `n`'s packets through its TUN
/// `d<n>` (table 1000+n routes everything there), as `ip rule` argument
/// lists, in the order they are added. A packet coming back out of the
/// TUN toward the client is delivered; one from the client enters the
/// TUN; one toward the client from anywhere else (the server, or another
/// client's delay line) enters it too. A packet from the client coming
/// back out of the TUN matches no rule of this client and is routed on
/// (into the receiving client's own delay line, if it has one).
fn delay_rules(n: usize, ip: Ipv4Addr) -> [Vec<String>; 3] {
    let (tun, link, table) = (
        format!("d{n}"),
        format!("c{n}"),
        (TABLE_BASE + n).to_string(),
    );
    let ip = ip.to_string();
    [
        ["pref", "100", "iif", &tun, "to", &ip, "lookup", "main"],
        ["pref", "200", "iif", &link, "lookup", &table, "", ""],
        ["pref", "300", "to", &ip, "lookup", &table, "", ""],
    ]
    .map(|r| {
        r.iter()
            .filter(|a| !a.is_empty())
            .map(|a| a.to_string())
            .collect()
    })
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
