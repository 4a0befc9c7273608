//! The source tree keeps its shape: the top-level modules of `src/` use
//! each other top-down only (the program, then the roles, then what the
//! roles share; no cycle), the two roles never use each other, and the
//! two cores stay I/O-free. Read from the sources, as a reviewer would.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module's layer: a module may use modules of its own
/// layer or below, never above. Within a layer, the graph must still be
/// acyclic.
const LAYERS: &[(&str, u8)] = &[
    ("cli", 3),
    ("config", 3),
    ("operation", 3),
    ("error", 3),
    ("process", 3),
    ("signal", 2),
    ("sfu", 2),
    ("ipc", 1),
    ("ids", 1),
    ("limits", 1),
    ("notify", 1),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments (doc comments name modules
/// they do not use).
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .expect("readable source")
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level module a file of `src/` belongs to (None: lib.rs, main.rs).
fn module_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// Which top-level modules each one uses (`crate::NAME`).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(from) = module_of(&file) else {
            continue;
        };
        let text = code(&file);
        let uses = graph.entry(from.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != from {
                uses.insert(name);
            }
        }
        // `use crate::{a, b}`
        for (i, _) in text.match_indices("crate::{") {
            let list = &text[i + "crate::{".len()..];
            let list = &list[..list.find('}').unwrap_or(0)];
            for name in list
                .split(',')
                .map(|s| s.trim().split("::").next().unwrap_or(""))
            {
                if !name.is_empty() && name != from {
                    uses.insert(name.to_string());
                }
            }
        }
    }
    graph
}

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(m, _)| *m == module)
        .unwrap_or_else(|| panic!("src/{module}: a new top-level module; give it a layer here"))
        .1
}

#[test]
fn top_level_modules_use_each_other_top_down_without_cycles() {
    let graph = graph();
    for (from, uses) in &graph {
        println!("{from} -> {uses:?}");
        for to in uses {
            assert!(
                layer(to) <= layer(from),
                "src/{from} uses crate::{to}, a layer above it"
            );
        }
    }
    // Depth-first search for a cycle.
    fn visit<'a>(
        m: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(at) = path.iter().position(|p| *p == m) {
            panic!("import cycle: {} -> {m}", path[at..].join(" -> "));
        }
        path.push(m);
        for next in graph.get(m).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(m);
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_roles_never_use_each_other() {
    let graph = graph();
    assert!(!graph["signal"].contains("sfu"), "signal uses sfu");
    assert!(!graph["sfu"].contains("signal"), "sfu uses signal");
}

#[test]
fn the_cores_are_io_free() {
    // The room core and the SFU core get time and bytes as inputs; their
    // shells own the sockets, the executor and the clock.
    let cores = [
        src().join("signal/node"),
        src().join("sfu/engine.rs"),
        src().join("sfu/session.rs"),
        src().join("sfu/track.rs"),
        src().join("sfu/keyframe.rs"),
        src().join("sfu/rewrite.rs"),
    ];
    let forbidden = [
        "Instant::now(",
        "SystemTime::now(",
        "unix_now(",
        "smol::",
        "std::net::TcpStream",
        "std::net::UdpSocket",
        "std::fs::",
        "std::thread::",
    ];
    for core in cores {
        let mut files = Vec::new();
        if core.is_dir() {
            rust_files(&core, &mut files);
        } else {
            files.push(core);
        }
        for file in files {
            // Unit tests may use real time to make their inputs.
            let text = code(&file);
            let text = text.split("#[cfg(test)]").next().unwrap_or("");
            if file.ends_with("tests.rs") {
                continue;
            }
            for word in forbidden {
                assert!(
                    !text.contains(word),
                    "{}: {word} in an I/O-free core",
                    file.display()
                );
            }
        }
    }
}
