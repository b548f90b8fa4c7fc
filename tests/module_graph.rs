//! The server's top-level modules (`src/*.rs` and `src/*/`) use each other
//! without circles: each `crate::<module>` path outside comments is an
//! edge, and the graph of them must have no cycle. A circle means two
//! modules cannot change apart (ARCHITECTURE.md's code map relies on it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level modules, each with the text of its files, comments cut.
fn modules() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("src is readable") {
        let path = entry.expect("an entry").path();
        let name = path.file_stem().and_then(|s| s.to_str()).expect("a UTF-8 name").to_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        let text = modules.entry(name).or_insert_with(String::new);
        let mut files = vec![path.clone()];
        while let Some(file) = files.pop() {
            if file.is_dir() {
                files.extend(std::fs::read_dir(&file).expect("readable").map(|e| e.expect("an entry").path()));
            } else if file.extension().is_some_and(|e| e == "rs") {
                let code = std::fs::read_to_string(&file).expect("readable");
                for line in code.lines() {
                    text.push_str(line.split("//").next().unwrap_or(""));
                    text.push('\n');
                }
            }
        }
    }
    modules
}

/// The modules `text` names as `crate::<module>`, alone or in a group.
fn uses(text: &str, modules: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group[..group.find('}').unwrap_or(group.len())]
                .split(',')
                .map(|item| item.trim().split("::").next().unwrap_or(""))
                .collect(),
            None => vec![rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or("")],
        };
        used.extend(names.into_iter().filter(|name| modules.contains_key(*name)).map(str::to_owned));
    }
    used
}

#[test]
fn the_top_level_modules_use_each_other_without_circles() {
    let modules = modules();
    let graph: BTreeMap<&str, BTreeSet<String>> = modules
        .iter()
        .map(|(name, text)| (name.as_str(), uses(text, &modules).into_iter().filter(|used| used != name).collect()))
        .collect();
    assert!(graph.len() > 10 && graph["reactor"].contains("room"), "the graph was read: {graph:?}");
    // Depth-first search; a module met again while on the path closes a circle.
    fn visit<'a>(
        name: &'a str,
        graph: &'a BTreeMap<&str, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if let Some(at) = path.iter().position(|n| *n == name) {
            panic!("the modules use each other in a circle: {} -> {name}", path[at..].join(" -> "));
        }
        if !done.insert(name) {
            return;
        }
        path.push(name);
        for used in &graph[name] {
            visit(used, graph, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for name in graph.keys() {
        visit(name, &graph, &mut Vec::new(), &mut done);
    }
}
