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

/// The module path of a file of `src/` (`signal/node/mod.rs` is
/// `[signal, node]`); None for the crate roots (`lib.rs`, `main.rs`).
fn module_path(path: &Path) -> Option<Vec<String>> {
    let rel = path.strip_prefix(src()).ok()?;
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let file = parts.pop()?;
    let stem = file.strip_suffix(".rs")?.to_string();
    if parts.is_empty() && matches!(stem.as_str(), "lib" | "main") {
        return None;
    }
    if stem != "mod" {
        parts.push(stem);
    }
    Some(parts)
}

/// The lowercase path segments at the start of `text` (`a::b::C` gives
/// `[a, b]`; a `{a, b}` list gives each of `a` and `b` on its own).
fn segments(text: &str) -> Vec<Vec<String>> {
    if let Some(list) = text.strip_prefix('{') {
        let list = &list[..list.find('}').unwrap_or(0)];
        return list
            .split(',')
            .flat_map(|item| segments(item.trim()))
            .collect();
    }
    let first: String = text
        .chars()
        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
        .collect();
    if first.is_empty() {
        return vec![Vec::new()];
    }
    match text[first.len()..].strip_prefix("::") {
        Some(rest) => segments(rest)
            .into_iter()
            .map(|tail| std::iter::once(first.clone()).chain(tail).collect())
            .collect(),
        None => vec![vec![first]],
    }
}

/// Every "module A uses module B" of `src/`, as full module paths, read
/// from the `crate::`, `super::` and `self::` paths in the code.
fn uses() -> Vec<(Vec<String>, Vec<String>)> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().filter_map(|f| module_path(f)).collect();
    let mut edges = Vec::new();
    for file in &files {
        let Some(from) = module_path(file) else {
            continue;
        };
        let text = code(file);
        let parent = from[..from.len().saturating_sub(1)].to_vec();
        for (base, prefix) in [
            (Vec::new(), "crate::"),
            (parent, "super::"),
            (from.clone(), "self::"),
        ] {
            for (i, _) in text.match_indices(prefix) {
                // `super::super::x` is read once, from its first `super::`.
                if text[..i].ends_with("super::") {
                    continue;
                }
                let mut base = base.clone();
                let mut rest = &text[i + prefix.len()..];
                while let Some(r) = rest.strip_prefix("super::") {
                    base.pop();
                    rest = r;
                }
                for tail in segments(rest) {
                    let full: Vec<String> = base.iter().cloned().chain(tail).collect();
                    // The longest prefix that is a module (the rest are items).
                    let to = (1..=full.len())
                        .rev()
                        .map(|n| full[..n].to_vec())
                        .find(|p| modules.contains(p));
                    if let Some(to) = to {
                        edges.push((from.clone(), to));
                    }
                }
            }
        }
    }
    edges
}

/// A graph of modules: who uses whom.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// For the crate (`[]`) and each module with submodules: which of its
/// children use which. A child that uses something inside a sibling uses
/// the sibling; a module using its own parent or child is containment,
/// not an edge.
fn sibling_graphs() -> BTreeMap<Vec<String>, Graph> {
    let mut graphs: BTreeMap<Vec<String>, Graph> = BTreeMap::new();
    for (from, to) in uses() {
        let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
        if common == from.len() || common == to.len() {
            continue;
        }
        graphs
            .entry(from[..common].to_vec())
            .or_default()
            .entry(from[common].clone())
            .or_default()
            .insert(to[common].clone());
    }
    graphs
}

/// The top-level modules and what each uses.
fn graph() -> Graph {
    sibling_graphs().remove(&Vec::new()).unwrap_or_default()
}

/// Panics naming a cycle of `graph`, if it has one.
fn assert_acyclic(graph: &Graph, what: &str) {
    fn visit<'a>(
        m: &'a str,
        graph: &'a Graph,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        what: &str,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(at) = path.iter().position(|p| *p == m) {
            panic!("import cycle in {what}: {} -> {m}", path[at..].join(" -> "));
        }
        path.push(m);
        for next in graph.get(m).into_iter().flatten() {
            visit(next, graph, path, done, what);
        }
        path.pop();
        done.insert(m);
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, graph, &mut Vec::new(), &mut done, what);
    }
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
    assert_acyclic(&graph, "src/");
}

#[test]
fn no_module_has_children_that_use_each_other_in_a_cycle() {
    let graphs = sibling_graphs();
    // The roles and the room core have children that use each other.
    for parent in [vec!["signal"], vec!["sfu"], vec!["signal", "node"]] {
        let parent: Vec<String> = parent.into_iter().map(String::from).collect();
        assert!(graphs.contains_key(&parent), "{parent:?} was read");
    }
    for (parent, graph) in &graphs {
        let what = format!("src/{}", parent.join("/"));
        println!("{what}: {graph:?}");
        assert_acyclic(graph, &what);
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
            if file.ends_with("tests.rs") {
                continue;
            }
            let text = code(&file);
            let text = text.split("#[cfg(test)]").next().unwrap_or("");
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
