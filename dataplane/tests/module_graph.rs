//! The import graph of `dataplane/src` between its rooms (the top-level modules: `buffer`, `port`, `router`,
//! … — a directory module and its files are one room) has no cycles: no module imports a module that imports
//! it back. A cycle means something sits in the wrong room (an id type in the module that uses it, a stage
//! reaching up into the pipeline that calls it).
//!
//! How: every `.rs` file under `src/` (except `bin/`) is read; comments, string and char literals and
//! `#[cfg(test)]` modules (inline, or a `mod tests;` file) are dropped, since tests may drive a module through
//! those above it; every `crate::a::b…` and `super::…` path is resolved to the longest module prefix that
//! exists as a file, and `use crate::{a, b}` groups to each member. The rooms' graph is then searched for
//! strongly connected components (Tarjan). Doc links are comments, so they do not count.
//!
//! [`KNOWN_CYCLES`] lists the cycles not yet untangled, each with its reason; the test fails on any other
//! cycle, and also when a known one is gone (so the list only shrinks). `cargo test -p dataplane --test
//! module_graph -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Cycles left to untangle, by their rooms (sorted).
const KNOWN_CYCLES: &[(&[&str], &str)] = &[];

type Module = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` → `a::b`; `src/a/mod.rs` → `a`; `src/lib.rs` → the crate root (empty).
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).expect("under src").with_extension("");
    let mut parts: Module = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

/// The code without comments, string literals and char literals (each replaced by a space).
fn strip(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                out.push(' ');
            }
            b'r' if (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                j += 1;
                let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
                while j < b.len() && !b[j..].starts_with(&close) {
                    j += 1;
                }
                i = j + close.len();
                out.push(' ');
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push(' ');
            }
            // A char literal ('x', '\n', '\u{..}'), not a lifetime ('a).
            b'\'' if b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\') => {
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push(' ');
            }
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

/// The code without `#[cfg(test)] mod NAME { … }` blocks; the names of `#[cfg(test)] mod NAME;` files.
fn drop_test_modules(code: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut test_files = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        let decl = after.strip_prefix("pub ").unwrap_or(after);
        let Some(decl) = decl.strip_prefix("mod ") else {
            // Some other item under cfg(test): keep it (it is dropped if it is a module).
            out.push_str("#[cfg(test)]");
            rest = &rest[at + "#[cfg(test)]".len()..];
            continue;
        };
        let name: String = decl.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let tail = decl.trim_start()[name.len()..].trim_start();
        if let Some(tail) = tail.strip_prefix(';') {
            test_files.push(name);
            rest = tail;
        } else if let Some(body) = tail.strip_prefix('{') {
            let mut depth = 1;
            let mut end = body.len();
            for (k, c) in body.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = k + 1;
                    break;
                }
            }
            rest = &body[end..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    (out, test_files)
}

/// Every `crate::…` / `super::…` path in the code of module `me`, as segments from the crate root.
fn paths(code: &str, me: &Module) -> Vec<Module> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut found = Vec::new();
    let mut from = 0;
    while from < code.len() {
        let Some(pos) = ["crate::", "super::"].iter().filter_map(|k| code[from..].find(k)).min() else { break };
        let start = from + pos;
        let before = &code[..start];
        if before.chars().next_back().is_some_and(ident) || before.ends_with("::") {
            from = start + 1;
            continue;
        }
        // The base: the root for `crate::`, one level up per `super::`.
        let mut t = &code[start..];
        let mut base: Module = me.clone();
        if let Some(rest) = t.strip_prefix("crate::") {
            base.clear();
            t = rest;
        } else {
            while let Some(rest) = t.strip_prefix("super::") {
                base.pop();
                t = rest;
            }
        }
        from = code.len() - t.len();
        if let Some(group) = t.strip_prefix('{') {
            // use crate::{a, b::c, …}
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for item in inner.split(',') {
                let segs = item.trim().split("::").map(|s| s.trim().to_string());
                found.push(base.iter().cloned().chain(segs).collect());
            }
            continue;
        }
        let mut segs = base;
        loop {
            let name: String = t.chars().take_while(|&c| ident(c)).collect();
            if name.is_empty() {
                break;
            }
            t = &t[name.len()..];
            segs.push(name);
            match t.strip_prefix("::") {
                Some(next) => t = next,
                None => break,
            }
        }
        found.push(segs);
    }
    found
}

/// The module a path names: its longest prefix that is a module file.
fn resolve(path: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    (1..=path.len()).rev().map(|k| path[..k].to_vec()).find(|m| modules.contains(m))
}

/// Strongly connected components with more than one node (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.edges.get(v).into_iter().flatten() {
            if !t.index.contains_key(w.as_str()) {
                visit(t, w);
                let lw = t.low[w.as_str()];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if t.on.contains(w.as_str()) {
                let iw = t.index[w.as_str()];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let nodes: BTreeSet<&str> =
        edges.keys().map(String::as_str).chain(edges.values().flatten().map(String::as_str)).collect();
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in nodes {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out.sort();
    t.out
}

/// Module → the modules its non-test code names.
fn module_graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(src, f)).collect();
    let mut code = BTreeMap::new();
    let mut test_only = BTreeSet::new();
    for f in &files {
        let me = module_of(src, f);
        let (text, tests) = drop_test_modules(&strip(&std::fs::read_to_string(f).expect("read source")));
        for t in tests {
            test_only.insert(me.iter().cloned().chain([t]).collect::<Module>());
        }
        code.insert(me, text);
    }
    let mut graph = BTreeMap::new();
    for (me, text) in &code {
        if test_only.contains(me) {
            continue;
        }
        let targets: BTreeSet<Module> = paths(text, me)
            .into_iter()
            .filter_map(|p| resolve(&p, &modules))
            .filter(|t| t != me && !t.is_empty())
            .collect();
        graph.insert(me.clone(), targets);
    }
    graph
}

/// The rooms' graph: edges between different top-level modules.
fn rooms(graph: &BTreeMap<Module, BTreeSet<Module>>) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in graph {
        let Some(a) = from.first() else { continue };
        let entry = out.entry(a.clone()).or_default();
        for b in tos.iter().filter_map(|t| t.first()).filter(|b| *b != a) {
            entry.insert(b.clone());
        }
    }
    out
}

/// The files' graph without edges from a module to its ancestors (a file using the items its parent module
/// declares or re-exports, as `super::` does, is part of that room, not a cycle).
fn files(graph: &BTreeMap<Module, BTreeSet<Module>>) -> BTreeMap<String, BTreeSet<String>> {
    graph
        .iter()
        .map(|(from, tos)| {
            let tos = tos.iter().filter(|t| !from.starts_with(t)).map(|t| t.join("::")).collect();
            (from.join("::"), tos)
        })
        .collect()
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn the_rooms_import_graph_has_no_cycles_but_the_known_ones() {
    let graph = rooms(&module_graph(&src()));
    for (room, deps) in &graph {
        println!("{room} -> {}", deps.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    let found = cycles(&graph);
    let known: Vec<Vec<String>> = KNOWN_CYCLES.iter().map(|(c, _)| c.iter().map(|s| s.to_string()).collect()).collect();
    let describe = |c: &Vec<String>| {
        let members: BTreeSet<&String> = c.iter().collect();
        let edges: Vec<String> = c
            .iter()
            .flat_map(|a| graph[a].iter().filter(|b| members.contains(b)).map(move |b| format!("{a} -> {b}")))
            .collect();
        format!("[{}]: {}", c.join(", "), edges.join("; "))
    };
    let new: Vec<String> = found.iter().filter(|c| !known.contains(c)).map(describe).collect();
    assert!(new.is_empty(), "import cycles between rooms (move the shared item below both):\n{}", new.join("\n"));
    let gone: Vec<String> = known.iter().filter(|c| !found.contains(c)).map(|c| c.join(", ")).collect();
    assert!(gone.is_empty(), "cycles in KNOWN_CYCLES no longer exist or changed; update the list: {gone:?}");
}

#[test]
fn no_file_imports_a_file_that_imports_it() {
    let found = cycles(&files(&module_graph(&src())));
    // The known room cycles show up here too, file by file; any other is new.
    let known: BTreeSet<&str> = KNOWN_CYCLES.iter().flat_map(|(c, _)| c.iter().copied()).collect();
    let new: Vec<String> = found
        .iter()
        .filter(|c| !c.iter().all(|m| known.contains(m.split("::").next().unwrap_or(""))))
        .map(|c| c.join(", "))
        .collect();
    assert!(new.is_empty(), "import cycles between files: {new:?}");
}

/// The checker itself: a cycle through `super::` and a grouped import is found; a test module's imports and
/// a doc link are not edges.
#[test]
fn the_checker_finds_a_planted_cycle_and_ignores_tests_and_comments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::create_dir(src.join("a")).expect("mkdir");
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod c;\n").expect("write");
    std::fs::write(src.join("a/mod.rs"), "pub mod inner;\n").expect("write");
    std::fs::write(src.join("a/inner.rs"), "use super::super::b::X;\n").expect("write");
    std::fs::write(src.join("b.rs"), "use crate::{c::Y, ids};\npub struct X;\n").expect("write");
    std::fs::write(
        src.join("c.rs"),
        "/// [`crate::b::X`]\npub struct Y(u8, &'static str);\nconst S: &str = \"crate::b::X\";\n\
         #[cfg(test)]\nmod tests {\n    use crate::b::X;\n    fn f() { let _ = '{'; }\n}\n",
    )
    .expect("write");
    let graph = rooms(&module_graph(src));
    assert_eq!(graph["a"], BTreeSet::from(["b".to_string()]));
    assert_eq!(graph["b"], BTreeSet::from(["c".to_string()]));
    assert!(graph["c"].is_empty(), "{graph:?}");
    assert!(cycles(&graph).is_empty());
    std::fs::write(src.join("c.rs"), "pub fn f() { crate::a::inner::g() }\n").expect("write");
    let graph = rooms(&module_graph(src));
    assert_eq!(cycles(&graph), vec![vec!["a".to_string(), "b".to_string(), "c".to_string()]]);
}
