//! `wren-netlab`: the network lab (`wren_testkit::netlab`) for programs
//! that are not Rust, such as the browser harness. Linux, as root.
//!
//! `wren-netlab up --clients N` builds a lab of N unshaped clients and
//! prints one line of JSON:
//!
//! ```text
//! {"prefix":"wl-…","router":"wl-…-rt","server":{"ns":"wl-…-srv","ip":"10.77.0.2"},
//!  "clients":[{"ns":"wl-…-c1","ip":"10.77.1.2"},…]}
//! ```
//!
//! Then it reads commands on stdin, one a line, and answers each with
//! one line, `ok` or `error: …` (or JSON for `stats`):
//!
//! - `shape <i> <up|down> [rate=<kbit>] [loss=<pct>] [delay=<ms>]
//!   [jitter=<ms>] [queue=<ms>] [burst=<bytes>]`: client i's (1-based)
//!   link in that direction becomes exactly this; a key left out is
//!   unshaped, so `shape 2 down` lifts every limit of client 2's
//!   downlink;
//! - `stats <i>`: `{"client":i,"up":{"bytes":…,"packets":…,
//!   "offered_bytes":…,"offered_packets":…},"down":{…}}`, counted since
//!   start (bytes and packets are what left the link; offered, what
//!   entered it).
//!
//! On end of input, SIGTERM or SIGINT it deletes the lab (killing what
//! runs in its namespaces) and exits 0. If it is killed outright, the
//! next lab sweeps the namespaces it left.

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    lab::main()
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    eprintln!("wren-netlab: the network lab needs Linux");
    std::process::ExitCode::FAILURE
}

#[cfg(target_os = "linux")]
mod lab {
    use async_signal::{Signal, Signals};
    use smol::stream::StreamExt;
    use std::io::{BufRead, Write};
    use std::process::ExitCode;
    use std::sync::mpsc::{channel, Sender};
    use wren_testkit::netlab::{ClientSpec, Lab, LinkShape};

    /// What the main loop waits for.
    enum Event {
        Line(String),
        /// End of input, a read error, or a signal: time to tear down.
        Stop,
    }

    const USAGE: &str = "usage: wren-netlab up --clients N (then commands on stdin: \
                         `shape <i> <up|down> [rate=kbit] [loss=pct] [delay=ms] [jitter=ms] \
                         [queue=ms] [burst=bytes]`, `stats <i>`)";

    pub fn main() -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let n = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["up", "--clients", n] => n.parse::<usize>().ok(),
            _ => None,
        };
        let Some(n) = n else {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        };
        let (events, inbox) = channel();
        // Before the lab exists, so that a signal sent as soon as the
        // JSON line is read still tears it down.
        if let Err(e) = watch_signals(events.clone()) {
            eprintln!("wren-netlab: signals: {e}");
            return ExitCode::FAILURE;
        }
        let lab = match Lab::new(&vec![ClientSpec::default(); n]) {
            Ok(lab) => lab,
            Err(e) => {
                eprintln!("wren-netlab: {e}");
                return ExitCode::FAILURE;
            }
        };
        say(&describe(&lab));
        read_lines(events);
        while let Ok(Event::Line(line)) = inbox.recv() {
            say(&answer(&lab, &line));
        }
        drop(lab);
        ExitCode::SUCCESS
    }

    /// One line to stdout, flushed at once: the harness waits for it.
    /// A closed stdout is ignored; end of input ends the run.
    fn say(line: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    fn describe(lab: &Lab) -> String {
        let host = |h: &wren_testkit::netlab::Host| serde_json::json!({ "ns": h.ns, "ip": h.ip.to_string() });
        serde_json::json!({
            "prefix": lab.prefix(),
            "router": lab.router_ns(),
            "server": host(lab.server()),
            "clients": lab.clients().iter().map(host).collect::<Vec<_>>(),
        })
        .to_string()
    }

    fn watch_signals(events: Sender<Event>) -> std::io::Result<()> {
        let mut signals = Signals::new([Signal::Term, Signal::Int])?;
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                smol::block_on(signals.next());
                let _ = events.send(Event::Stop);
            })?;
        Ok(())
    }

    fn read_lines(events: Sender<Event>) {
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if events.send(Event::Line(line)).is_err() {
                    return;
                }
            }
            let _ = events.send(Event::Stop);
        });
    }

    /// The one-line answer to a command line.
    fn answer(lab: &Lab, line: &str) -> String {
        match command(lab, line) {
            Ok(reply) => reply,
            // One line, whatever the error carried (nft scripts do).
            Err(e) => format!("error: {}", e.replace('\n', " ")),
        }
    }

    fn command(lab: &Lab, line: &str) -> Result<String, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let client = |word: Option<&&str>| {
            let n = lab.clients().len();
            word.and_then(|w| w.parse::<usize>().ok())
                .filter(|i| (1..=n).contains(i))
                .ok_or_else(|| format!("a client number from 1 to {n} is needed"))
        };
        match words.first() {
            Some(&"shape") => {
                let i = client(words.get(1))?;
                let shape: LinkShape = words[3.min(words.len())..].join(" ").parse()?;
                let mut spec = lab.spec(i - 1);
                match words.get(2) {
                    Some(&"up") => spec.up = shape,
                    Some(&"down") => spec.down = shape,
                    _ => return Err("shape <i> up|down [key=value…]".into()),
                }
                lab.reshape(i - 1, &spec).map_err(|e| e.to_string())?;
                Ok("ok".into())
            }
            Some(&"stats") => {
                let i = client(words.get(1))?;
                let stats = lab.stats(i - 1).map_err(|e| e.to_string())?;
                Ok(stats.to_json(i))
            }
            Some(other) => Err(format!("unknown command `{other}` (shape, stats)")),
            None => Err("empty command (shape, stats)".into()),
        }
    }
}
