//! A real `redis-server` of a test's own, on a free loopback port, for the
//! cluster's tests: started, stopped and started again on the same port,
//! killed on drop.

use crate::server::{free_tcp_port, socket_path, wait_until, WAIT};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` process; no persistence, nothing left behind.
pub struct Redis {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    password: Option<String>,
    /// `--tls-port` mode: its certificate, key and CA.
    tls: Option<Tls>,
}

/// What a TLS-only Redis serves with.
#[derive(Clone)]
pub struct Tls {
    /// PEM certificate chain of the server.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The CA that signed it (what a client trusts).
    pub ca: PathBuf,
}

impl Redis {
    /// A Redis without a password.
    pub fn start() -> Redis {
        Redis::launch(None, None)
    }

    /// A Redis whose default user needs `password`.
    pub fn start_with_password(password: &str) -> Redis {
        Redis::launch(Some(password.to_string()), None)
    }

    /// A Redis that speaks TLS only (`rediss://`).
    pub fn start_tls(tls: Tls) -> Redis {
        Redis::launch(None, Some(tls))
    }

    fn launch(password: Option<String>, tls: Option<Tls>) -> Redis {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let mut redis = Redis {
            child: None,
            addr,
            password,
            tls,
        };
        redis.restart();
        redis
    }

    /// The URL a wren node is given (`redis://` or `rediss://`, with the
    /// password if there is one).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let auth = self
            .password
            .as_ref()
            .map_or(String::new(), |p| format!(":{p}@"));
        // A certificate names a host: the TLS test's names "localhost".
        let host = if self.tls.is_some() {
            format!("localhost:{}", self.addr.port())
        } else {
            self.addr.to_string()
        };
        format!("{scheme}://{auth}{host}/")
    }

    /// Starts it (again, after `stop`) on the same port and waits until it
    /// answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let port = self.addr.port().to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        cmd.args(["--daemonize", "no", "--loglevel", "warning"]);
        // Its working folder, where nothing should be written anyway.
        let dir = socket_path("redis").with_extension("d");
        std::fs::create_dir_all(&dir).expect("redis folder");
        cmd.arg("--dir").arg(&dir);
        match &self.tls {
            None => {
                cmd.args(["--port", &port]);
            }
            Some(tls) => {
                cmd.args(["--port", "0", "--tls-port", &port]);
                cmd.arg("--tls-cert-file").arg(&tls.cert);
                cmd.arg("--tls-key-file").arg(&tls.key);
                cmd.arg("--tls-ca-cert-file").arg(&tls.ca);
                cmd.args(["--tls-auth-clients", "no"]);
            }
        }
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts (the test command installs it)");
        self.child = Some(child);
        let up = wait_until(WAIT, || {
            // A TLS port accepts TCP once it listens: that is enough.
            match &self.tls {
                Some(_) => TcpStream::connect(self.addr).is_ok(),
                None => self.command(&["PING"]).is_some_and(|r| r == "+PONG"),
            }
        });
        assert!(up, "redis-server on {} never answered", self.addr);
    }

    /// Stops it hard (SIGKILL), as a crash or a pulled cable would.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends one command (plain TCP only, after AUTH when there is a
    /// password) and returns the reader positioned at its reply.
    fn request(&self, args: &[&str]) -> Option<BufReader<TcpStream>> {
        let mut s = TcpStream::connect(self.addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut out = Vec::new();
        let mut push = |args: &[&str]| {
            out.extend(format!("*{}\r\n", args.len()).bytes());
            for a in args {
                out.extend(format!("${}\r\n{a}\r\n", a.len()).bytes());
            }
        };
        if let Some(p) = &self.password {
            push(&["AUTH", p]);
        }
        push(args);
        s.write_all(&out).ok()?;
        let mut r = BufReader::new(s);
        if self.password.is_some() {
            r.read_line(&mut String::new()).ok()?;
        }
        Some(r)
    }

    /// Sends one command and returns the first line of the reply, e.g.
    /// `+PONG`, `:3` or `$5` (None if it cannot be read).
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut line = String::new();
        self.request(args)?.read_line(&mut line).ok()?;
        Some(line.trim_end().to_string())
    }

    /// Commands Redis has run since it started (`INFO commandstats`,
    /// summed; scripts' own calls included).
    pub fn commands(&self) -> Option<u64> {
        let mut r = self.request(&["INFO", "commandstats"])?;
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let len: usize = line.trim_end().trim_start_matches('$').parse().ok()?;
        let mut body = vec![0; len + 2];
        std::io::Read::read_exact(&mut r, &mut body).ok()?;
        let body = String::from_utf8_lossy(&body);
        // cmdstat_get:calls=3,usec=...
        Some(
            body.lines()
                .filter_map(|l| {
                    l.split_once(":calls=")?
                        .1
                        .split(',')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .sum(),
        )
    }

    /// The keys matching `pattern` (`KEYS`: a test's Redis is small).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let Some(mut r) = self.request(&["KEYS", pattern]) else {
            return Vec::new();
        };
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let n: usize = line.trim_end().trim_start_matches('*').parse().unwrap_or(0);
        let mut keys = Vec::new();
        for _ in 0..n {
            // A bulk string: its length line, then the key.
            let _ = r.read_line(&mut String::new());
            line.clear();
            let _ = r.read_line(&mut line);
            keys.push(line.trim_end().to_string());
        }
        keys
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A CA and a certificate for `localhost` signed by it, made with the
/// openssl tool in a fresh scratch folder.
pub fn tls_files() -> Tls {
    let dir = socket_path("redis-tls").with_extension("d");
    std::fs::create_dir_all(&dir).expect("tls folder");
    let run = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=wren test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\n").expect("ext file");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    Tls {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        ca: dir.join("ca.pem"),
    }
}
