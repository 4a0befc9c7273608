//! The router namespace, where every link is wired and shaped: the `ip`,
//! `tc` and `nft` commands that build and change it (docs/lab.md §1–4).

use super::delay::{DelayLine, Hold, DOWN, UP};
use super::shape::{ClientSpec, LinkShape};
use super::sys::{run, Tools};
use super::Host;
use std::io;
use std::net::Ipv4Addr;

/// The first routing table of the delay line (client n uses this + n).
pub(super) const TABLE_BASE: usize = 1000;

/// The router namespace and the tools that act on it.
pub(super) struct Router {
    pub tools: Tools,
    pub ns: String,
}

/// What is installed on one client's link now, so that a reshape changes
/// only what differs and removes only what exists.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Installed {
    pub spec: ClientSpec,
    down_tbf: bool,
    up_tbf: bool,
    ifb: bool,
    routed: bool,
}

impl Router {
    /// `ip <command>`, words split at spaces (no name of ours has one).
    pub fn ip(&self, command: &str) -> io::Result<()> {
        let args: Vec<&str> = command.split_whitespace().collect();
        run(&self.tools.ip, &args, None).map(drop)
    }

    /// `tc -n <router> <command>`.
    fn tc(&self, command: &str) -> io::Result<()> {
        let mut args = vec!["-n", &self.ns];
        args.extend(command.split_whitespace());
        run(&self.tools.tc, &args, None).map(drop)
    }

    /// Runs an nft script in the router (nft has no `-n`).
    pub fn nft(&self, script: &str) -> io::Result<()> {
        let nft = self.tools.nft.display().to_string();
        let args = ["netns", "exec", &self.ns, &nft, "-f", "-"];
        run(&self.tools.ip, &args, Some(script)).map(drop)
    }

    /// A veth pair from the router's `side` to `eth0` in `host.ns`, on
    /// 10.77.`subnet`.0/24, with the host's default route via the router.
    pub fn wire(&self, side: &str, host: &Host, subnet: usize) -> io::Result<()> {
        let (rt, ns, gateway) = (&self.ns, &host.ns, format!("10.77.{subnet}.1"));
        self.ip(&format!(
            "-n {rt} link add {side} type veth peer name eth0 netns {ns}"
        ))?;
        self.ip(&format!("-n {rt} addr add {gateway}/24 dev {side}"))?;
        self.ip(&format!("-n {rt} link set {side} up"))?;
        self.ip(&format!("-n {ns} addr add {}/24 dev eth0", host.ip))?;
        self.ip(&format!("-n {ns} link set eth0 up"))?;
        self.ip(&format!("-n {ns} route add default via {gateway}"))
    }

    /// Installs `spec`'s rate limits and delay-line routing on client
    /// `n`'s link (1-based, address `ip`), changing `now` to match, and
    /// gives the delay line its new times. Loss is the caller's: it
    /// rewrites one table for all clients.
    pub fn install(
        &self,
        n: usize,
        ip: Ipv4Addr,
        spec: &ClientSpec,
        now: &mut Installed,
        delay: &DelayLine,
    ) -> io::Result<()> {
        let (rt, link, ifb) = (&self.ns, format!("c{n}"), format!("ifbc{n}"));
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
                    self.ip(&format!("-n {rt} link add {ifb} type ifb"))?;
                    self.ip(&format!("-n {rt} link set {ifb} up"))?;
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
        // Times first, routes second: the first packet routed through the
        // line already gets the new times.
        delay.set(n - 1, holds);
        if spec.delays() != now.routed {
            let verb = if spec.delays() { "add" } else { "del" };
            for rule in delay_rules(n, ip) {
                self.ip(&format!("-n {rt} rule {verb} {rule}"))?;
            }
            now.routed = spec.delays();
        }
        Ok(())
    }
}

/// The policy routing that sends client `n`'s packets through its TUN
/// `d<n>` (table 1000+n routes everything there), as `ip rule`
/// selectors. A packet coming back out of the TUN toward the client is
/// delivered; one from the client enters the TUN; one toward the client
/// from anywhere else (the server, or another client's delay line)
/// enters it too. A packet from the client coming back out of the TUN
/// matches no rule of this client and is routed on (into the receiving
/// client's own delay line, if that one delays too). Without these
/// rules, the client's packets never go near the TUN.
fn delay_rules(n: usize, ip: Ipv4Addr) -> [String; 3] {
    let table = TABLE_BASE + n;
    [
        format!("pref 100 iif d{n} to {ip} lookup main"),
        format!("pref 200 iif c{n} lookup {table}"),
        format!("pref 300 to {ip} lookup {table}"),
    ]
}
