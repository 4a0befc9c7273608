//! What a link does to the packets crossing it, one direction at a time,
//! and how that is written for `tc` (rate) and `nft` (loss). Delay and
//! jitter are the delay line's (delay.rs).

use std::fmt::Write as _;
use std::io;
use std::str::FromStr;

/// One direction of a client's link. `Default` is a plain wire: no rate
/// limit, no loss, no delay (with the defaults a limit would use when
/// `rate_kbit` is set).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkShape {
    /// Rate limit in kbit/s of Ethernet frames (tbf counts L2 bytes, so
    /// UDP goodput is ~3 % lower for 1000-byte payloads); None: unlimited.
    pub rate_kbit: Option<u32>,
    /// Bytes let through at line rate at the start and after each idle
    /// period (tbf `burst`). Small keeps the rate honest: docs/lab.md
    /// measured +29 % over 5 s with 100 kB.
    pub burst_bytes: u32,
    /// How long a packet may wait in the rate limiter's queue before it is
    /// dropped (tbf `latency`): short drops early, long builds up
    /// queueing delay as a bloated buffer does.
    pub queue_ms: u32,
    /// Share of UDP packets dropped at random, in percent (0.01 steps).
    /// TCP (signaling) is spared, so a test's setup does not stall on it.
    pub loss_pct: f32,
    /// Fixed one-way delay in milliseconds.
    pub delay_ms: u32,
    /// Each packet's delay is `delay_ms` ± up to this many milliseconds
    /// (uniform; never below zero).
    pub jitter_ms: u32,
    /// Never let a packet overtake the one before it (the default). With
    /// per-packet jitter and no order, most media packets arrive out of
    /// order (80 % at 1250 packets/s, docs/lab.md), which no real path
    /// does; keeping order pushes the delay toward `delay + jitter` at
    /// high packet rates instead.
    pub keep_order: bool,
}

impl Default for LinkShape {
    fn default() -> LinkShape {
        LinkShape {
            rate_kbit: None,
            burst_bytes: 10_000,
            queue_ms: 100,
            loss_pct: 0.0,
            delay_ms: 0,
            jitter_ms: 0,
            keep_order: true,
        }
    }
}

/// The smallest burst that lets a full-size frame through: tbf drops
/// every packet larger than its bucket.
const MIN_BURST: u32 = 1600;

impl LinkShape {
    /// A link limited to `kbit` kbit/s, nothing else.
    pub fn rate(kbit: u32) -> LinkShape {
        LinkShape {
            rate_kbit: Some(kbit),
            ..LinkShape::default()
        }
    }

    /// A link dropping `pct` percent of UDP packets, nothing else.
    pub fn loss(pct: f32) -> LinkShape {
        LinkShape {
            loss_pct: pct,
            ..LinkShape::default()
        }
    }

    /// A link delaying each packet by `delay_ms` ± `jitter_ms`, in order.
    pub fn delay(delay_ms: u32, jitter_ms: u32) -> LinkShape {
        LinkShape {
            delay_ms,
            jitter_ms,
            ..LinkShape::default()
        }
    }

    /// Whether packets in this direction go through the delay line.
    pub fn delays(&self) -> bool {
        self.delay_ms > 0 || self.jitter_ms > 0
    }

    /// Refuses values tc or nft would reject or misread.
    pub fn check(&self) -> io::Result<()> {
        let bad = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if !(0.0..=100.0).contains(&self.loss_pct) {
            return bad(format!("loss {} % is not within 0..100", self.loss_pct));
        }
        if self.rate_kbit == Some(0) {
            return bad("a rate of 0 kbit/s passes nothing; leave it unset".into());
        }
        if self.rate_kbit.is_some() && self.burst_bytes < MIN_BURST {
            return bad(format!(
                "burst {} bytes is below one full-size frame ({MIN_BURST})",
                self.burst_bytes
            ));
        }
        if self.rate_kbit.is_some() && self.queue_ms == 0 {
            return bad("a queue of 0 ms drops everything".into());
        }
        Ok(())
    }

    /// The tbf arguments after `tc qdisc replace dev X root`, or None
    /// when the rate is not limited.
    pub(super) fn tbf(&self) -> Option<String> {
        let rate = self.rate_kbit?;
        Some(format!(
            "tbf rate {rate}kbit burst {} latency {}ms",
            self.burst_bytes, self.queue_ms
        ))
    }

    /// The loss threshold out of 10 000 (numgen draws 0..9999).
    fn loss_per_10k(&self) -> u32 {
        (self.loss_pct * 100.0).round() as u32
    }
}

/// Parses the CLI's `key=value` list (`rate=400 loss=5 delay=75
/// jitter=15 queue=100 burst=10000`); a key left out keeps its default,
/// so an empty list is an unshaped link.
impl FromStr for LinkShape {
    type Err = String;

    fn from_str(text: &str) -> Result<LinkShape, String> {
        let mut shape = LinkShape::default();
        for item in text.split_whitespace() {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("`{item}` is not key=value"))?;
            let int = || {
                value
                    .parse::<u32>()
                    .map_err(|_| format!("{key}: `{value}` is not a whole number"))
            };
            match key {
                "rate" => shape.rate_kbit = Some(int()?),
                "burst" => shape.burst_bytes = int()?,
                "queue" => shape.queue_ms = int()?,
                "delay" => shape.delay_ms = int()?,
                "jitter" => shape.jitter_ms = int()?,
                "loss" => {
                    shape.loss_pct = value
                        .parse()
                        .map_err(|_| format!("loss: `{value}` is not a number"))?
                }
                _ => {
                    return Err(format!(
                        "unknown key `{key}` (rate, loss, delay, jitter, queue, burst)"
                    ))
                }
            }
        }
        shape.check().map_err(|e| e.to_string())?;
        Ok(shape)
    }
}

/// Both directions of a client's link: `up` from the client toward the
/// server, `down` toward the client. `Default` is unshaped both ways.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClientSpec {
    /// Client to router (toward the server and the other clients).
    pub up: LinkShape,
    /// Router to client.
    pub down: LinkShape,
}

impl ClientSpec {
    /// The same shape both ways.
    pub fn both(shape: LinkShape) -> ClientSpec {
        ClientSpec {
            up: shape,
            down: shape,
        }
    }

    /// Only the downlink shaped.
    pub fn down(shape: LinkShape) -> ClientSpec {
        ClientSpec {
            down: shape,
            ..ClientSpec::default()
        }
    }

    /// Only the uplink shaped.
    pub fn up(shape: LinkShape) -> ClientSpec {
        ClientSpec {
            up: shape,
            ..ClientSpec::default()
        }
    }

    /// Whether either direction goes through the delay line.
    pub fn delays(&self) -> bool {
        self.up.delays() || self.down.delays()
    }
}

/// The nft script that replaces the router's loss table in one
/// transaction (so a reshape never leaves a moment without rules): one
/// rule per lossy direction, matching only the client's own interface so
/// that a packet crossing the delay line (two forward hops) is dropped at
/// most once. `clients[k]` is client k+1 (interface `c{k+1}`).
pub(super) fn loss_table(clients: &[ClientSpec]) -> String {
    let mut rules = String::new();
    for (k, spec) in clients.iter().enumerate() {
        let n = k + 1;
        for (shape, side) in [(&spec.down, "oifname"), (&spec.up, "iifname")] {
            // numgen draws 0..9999, and nft refuses a bound of 10000.
            let draw = match shape.loss_per_10k() {
                0 => continue,
                10_000.. => String::new(),
                cut => format!("numgen random mod 10000 < {cut} "),
            };
            let _ = writeln!(
                rules,
                "    {side} \"c{n}\" meta l4proto udp {draw}counter drop"
            );
        }
    }
    // `table {}` first makes the delete valid on the first run too. `fwd`
    // is an nft keyword, hence the chain's name; nft rejects the one-line
    // form of a base chain, hence the lines.
    format!(
        "table inet wlab_loss {{}}\ndelete table inet wlab_loss\ntable inet wlab_loss {{\n  \
         chain loss {{\n    type filter hook forward priority 0; policy accept;\n{rules}  }}\n}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_cli_list() {
        let s: LinkShape = "rate=400 loss=2.5 delay=75 jitter=15 queue=50 burst=5000"
            .parse()
            .unwrap();
        assert_eq!(s.rate_kbit, Some(400));
        assert_eq!(s.loss_pct, 2.5);
        assert_eq!((s.delay_ms, s.jitter_ms, s.queue_ms), (75, 15, 50));
        assert_eq!(s.burst_bytes, 5000);
        assert!(s.keep_order);
        assert_eq!("".parse::<LinkShape>().unwrap(), LinkShape::default());
        assert!("rate=fast".parse::<LinkShape>().is_err());
        assert!("speed=1".parse::<LinkShape>().is_err());
        assert!("loss=150".parse::<LinkShape>().is_err());
        assert!("rate=400 burst=100".parse::<LinkShape>().is_err());
    }

    #[test]
    fn loss_rules_match_one_interface_each() {
        let specs = [
            ClientSpec {
                up: LinkShape::loss(10.0),
                down: LinkShape::loss(5.0),
            },
            ClientSpec::default(),
            ClientSpec::down(LinkShape::loss(0.5)),
            ClientSpec::up(LinkShape::loss(100.0)),
        ];
        let table = loss_table(&specs);
        assert!(table.contains("oifname \"c1\" meta l4proto udp numgen random mod 10000 < 500"));
        assert!(table.contains("iifname \"c1\" meta l4proto udp numgen random mod 10000 < 1000"));
        assert!(table.contains("oifname \"c3\" meta l4proto udp numgen random mod 10000 < 50"));
        assert!(!table.contains("\"c2\""));
        assert!(table.contains("iifname \"c4\" meta l4proto udp counter drop"));
        assert!(table.starts_with("table inet wlab_loss {}\ndelete table inet wlab_loss\n"));
    }

    #[test]
    fn tbf_only_with_a_rate() {
        assert_eq!(LinkShape::default().tbf(), None);
        assert_eq!(
            LinkShape::rate(400).tbf().unwrap(),
            "tbf rate 400kbit burst 10000 latency 100ms"
        );
    }
}
