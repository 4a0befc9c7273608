//! What the lab needs from the machine (root, TUN, `ip`, `tc`, `nft`),
//! running those tools, and named network namespaces: entering one from
//! a thread, listing, emptying and deleting them.

use rustix::process::{kill_process, Pid, Signal};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where `ip netns add` puts its names.
const NETNS_DIR: &str = "/run/netns";

/// The absolute paths of the tools the lab runs. Absolute, because a
/// non-login root shell or a test runner may not have /usr/sbin in PATH.
#[derive(Clone, Debug)]
pub(super) struct Tools {
    pub ip: PathBuf,
    pub tc: PathBuf,
    pub nft: PathBuf,
}

/// Checks everything the lab needs and says all that is missing at once:
/// the tests must fail with this message, never skip.
pub(super) fn preflight() -> io::Result<Tools> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    check(
        rustix::process::geteuid().is_root(),
        Path::new("/dev/net/tun"),
        &dirs,
    )
}

/// `preflight` with its inputs explicit (the unit tests give it a folder
/// without the tools).
fn check(root: bool, tun: &Path, dirs: &[PathBuf]) -> io::Result<Tools> {
    let mut missing = Vec::new();
    if !root {
        missing.push("root (it creates network namespaces, links and qdiscs: run as root)".into());
    }
    if !tun.exists() {
        missing.push(format!(
            "{} (the kernel's TUN driver: the delay line needs it)",
            tun.display()
        ));
    }
    let mut find = |tool: &str, package: &str| {
        let found = dirs.iter().map(|d| d.join(tool)).find(|p| p.is_file());
        if found.is_none() {
            missing.push(format!(
                "the `{tool}` command (Debian package {package}; `scripts/deps.sh test` installs it)"
            ));
        }
        found.unwrap_or_default()
    };
    let tools = Tools {
        ip: find("ip", "iproute2"),
        tc: find("tc", "iproute2"),
        nft: find("nft", "nftables"),
    };
    if missing.is_empty() {
        Ok(tools)
    } else {
        Err(io::Error::other(format!(
            "the network lab cannot run here; missing: {}",
            missing.join("; ")
        )))
    }
}

/// Runs `tool args…` (feeding `input` on stdin if given) and returns its
/// stdout; an error names the whole command and what it printed.
pub(super) fn run(tool: &Path, args: &[&str], input: Option<&str>) -> io::Result<String> {
    let mut cmd = Command::new(tool);
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("{} cannot start: {e}", tool.display())))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`{} {}` failed ({}): {}{}",
            tool.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            input.map(|i| format!("\ninput:\n{i}")).unwrap_or_default()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `f` on a new thread that has entered the network namespace
/// named `ns` (one made by `ip netns add`), and returns what it returns.
/// Only that thread moves: the process stays where it is. Sockets,
/// TUN devices and other descriptors made inside `f` keep the namespace
/// for their whole life, whichever thread uses them later. A panic in
/// `f` is raised again here.
pub fn enter<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let path = Path::new(NETNS_DIR).join(ns);
    let file = File::open(&path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("network namespace {ns} ({}): {e}", path.display()),
        )
    })?;
    std::thread::scope(|s| {
        let thread = std::thread::Builder::new()
            .name(format!("netns {ns}"))
            .spawn_scoped(s, move || {
                move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))
                    .map_err(|e| io::Error::other(format!("setns into {ns}: {e}")))?;
                Ok(f())
            })?;
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The named network namespaces whose names start with `prefix`.
pub(super) fn namespaces(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// SIGKILLs every process living in `ns` (what `ip netns exec` started
/// there: wren, browsers), by pid, then deletes the name. Deleting also
/// removes the namespace's links, qdiscs, routes and nft tables once no
/// process or descriptor holds it. Errors are ignored: this is cleanup.
pub(super) fn destroy(ip: &Path, ns: &str) {
    if let Ok(pids) = run(ip, &["netns", "pids", ns], None) {
        let me = std::process::id() as i32;
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            if let Some(pid) = Pid::from_raw(pid).filter(|p| p.as_raw_nonzero().get() != me) {
                let _ = kill_process(pid, Signal::KILL);
            }
        }
    }
    let _ = run(ip, &["netns", "del", ns], None);
}

/// Destroys the namespaces of labs whose process is gone
/// (`wl-<pid>-<tag>-…` with no `/proc/<pid>`): a test that was killed
/// never ran its Drop.
pub(super) fn sweep_stale(ip: &Path) {
    for ns in namespaces("wl-") {
        let pid = ns.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            destroy(ip, &ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_everything_that_is_missing() {
        let empty = std::env::temp_dir().join(format!("wl-empty-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        let err = check(
            false,
            Path::new("/nonexistent/tun"),
            std::slice::from_ref(&empty),
        )
        .unwrap_err()
        .to_string();
        std::fs::remove_dir(&empty).unwrap();
        for what in [
            "root",
            "/nonexistent/tun",
            "`ip` command (Debian package iproute2",
            "`tc` command",
            "`nft` command (Debian package nftables",
        ] {
            assert!(err.contains(what), "{what} not in: {err}");
        }
    }

    #[test]
    fn finds_tools_in_the_folders_given() {
        let dir = std::env::temp_dir().join(format!("wl-tools-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for tool in ["ip", "tc", "nft"] {
            std::fs::write(dir.join(tool), "").unwrap();
        }
        let tools = check(true, &dir, &[PathBuf::from("/nonexistent"), dir.clone()]);
        std::fs::remove_dir_all(&dir).unwrap();
        let tools = tools.unwrap();
        assert_eq!(tools.nft, dir.join("nft"));
        assert_eq!(tools.ip, dir.join("ip"));
    }
}
