//! The import rule of docs/design.md ("What may import what"), checked on
//! the source itself: each top-level module of the library imports only
//! the modules its row allows, no two modules import each other, and
//! inside `ingest/` the mapper knows no reader.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each module and what it may import (`crate::…`), as design.md says.
const ALLOWED: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("config", &["model"]),
    ("self_metrics", &[]),
    ("rng", &[]),
    ("clock", &["model"]),
    ("window", &["model"]),
    ("judge", &["model", "window", "config"]),
    ("store", &["judge", "window", "model", "config"]),
    ("verdict", &["store", "judge", "model"]),
    ("series", &["judge", "model"]),
    ("ingest", &["model", "config"]),
    (
        "export",
        &["verdict", "store", "judge", "window", "model", "dora"],
    ),
    ("dora", &["model"]),
    ("ledger", &["model", "dora"]),
    ("recording", &["ledger", "store", "judge", "verdict"]),
    (
        "notify",
        &["ledger", "config", "model", "self_metrics", "clock", "rng"],
    ),
    (
        "sim",
        &["store", "judge", "config", "model", "rng", "otlp_kit"],
    ),
    ("otlp_kit", &[]),
    (
        "loadgen",
        &["sim", "model", "client", "clock", "rng", "otlp_kit"],
    ),
    ("client", &[]),
    ("telemetry", &["config"]),
    (
        "app",
        &[
            "config",
            "model",
            "self_metrics",
            "window",
            "judge",
            "store",
            "verdict",
            "series",
            "ingest",
            "export",
            "dora",
            "ledger",
            "recording",
            "notify",
            "clock",
            "rng",
        ],
    ),
    (
        "replay",
        &[
            "app",
            "ingest",
            "verdict",
            "config",
            "model",
            "self_metrics",
        ],
    ),
];

/// Every `.rs` file below `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's code without its comments and its test modules: test code
/// may reach further (the core's tests use `rng`, say).
fn code(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if name == "tests.rs" || name == "props.rs" {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.contains("mod tests {"))
        {
            break;
        }
        if !t.starts_with("//") {
            out.push_str(line);
            out.push('\n');
        }
    }
    Some(out)
}

/// The names that follow `prefix` in `code` (`crate::store::Fleet` → `store`).
fn paths_after<'a>(code: &'a str, prefix: &str) -> BTreeSet<&'a str> {
    code.match_indices(prefix)
        .filter(|(at, _)| {
            // Not the tail of a longer path (`release_verdict::crate`).
            at.checked_sub(1)
                .and_then(|i| code.as_bytes().get(i))
                .is_none_or(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b':'))
        })
        .map(|(at, _)| {
            let rest = &code[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// The library's source files by top-level module (`src/cli/`, the
/// binary, is not the library).
fn modules() -> BTreeMap<String, Vec<(PathBuf, String)>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut by_module: BTreeMap<String, Vec<(PathBuf, String)>> = BTreeMap::new();
    for path in files {
        let rel = path.strip_prefix(&src).expect("below src/");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|s| s.trim_end_matches(".rs").to_string())
            .expect("a file name");
        if top == "cli" || top == "lib" {
            continue;
        }
        if let Some(code) = code(&path) {
            by_module.entry(top).or_default().push((path, code));
        }
    }
    by_module
}

#[test]
fn each_module_imports_only_what_design_md_allows() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    let modules = modules();
    assert!(modules.contains_key("judge") && modules.contains_key("ingest"));
    for (module, files) in &modules {
        let Some(may) = allowed.get(module.as_str()) else {
            // `server` may import everything below it: it is the top.
            assert_eq!(module, "server", "{module} has no row in the table");
            continue;
        };
        for (path, code) in files {
            for import in paths_after(code, "crate::") {
                if import != module && !may.contains(&import) {
                    wrong.push(format!("{} imports crate::{import}", path.display()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "outside design.md's table:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_two_modules_import_each_other() {
    let modules = modules();
    let imports: BTreeMap<&str, BTreeSet<&str>> = modules
        .iter()
        .map(|(m, files)| {
            let all = files
                .iter()
                .flat_map(|(_, code)| paths_after(code, "crate::"))
                .filter(|i| i != m)
                .collect();
            (m.as_str(), all)
        })
        .collect();
    // Depth-first search for a path back to where it started.
    fn cycle<'a>(
        graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        let last = *path.last()?;
        for next in graph.get(last).into_iter().flatten() {
            if let Some(at) = path.iter().position(|p| p == next) {
                let mut found = path[at..].to_vec();
                found.push(next);
                return Some(found);
            }
            path.push(next);
            if let Some(found) = cycle(graph, path) {
                return Some(found);
            }
            path.pop();
        }
        None
    }
    for start in imports.keys() {
        let found = cycle(&imports, &mut vec![start]);
        assert!(found.is_none(), "a circle: {}", found.unwrap().join(" -> "));
    }
}

#[test]
fn the_mapper_knows_no_reader() {
    let modules = modules();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ingest");
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (path, code) in &modules["ingest"] {
        let rel = path.strip_prefix(&src).expect("below src/ingest");
        let mapper = rel.starts_with("otlp") || rel == Path::new("span.rs");
        if !mapper {
            continue;
        }
        checked += 1;
        for prefix in ["super::", "crate::ingest::"] {
            for name in paths_after(code, prefix) {
                if name == "walk" || name == "json" {
                    wrong.push(format!("{} imports {prefix}{name}", path.display()));
                }
            }
        }
    }
    assert!(checked >= 3, "the mapper's files were not found");
    assert!(
        wrong.is_empty(),
        "the mapper imports a reader:\n{}",
        wrong.join("\n")
    );
}

/// Inside each module folder, the files (each sibling with what lies
/// below it) never import each other in a circle: in `ingest/`, the
/// mapper knew its readers and they knew it. The module's face (`mod.rs`,
/// which declares and re-exports the siblings) is left out.
#[test]
fn no_two_files_inside_a_module_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for (module, files) in modules() {
        let base = src.join(&module);
        if !base.is_dir() {
            continue;
        }
        // Each file's sibling (its first path component below the folder)
        // and depth (how many `super::` reach the folder).
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut parts = Vec::new();
        for (path, code) in &files {
            // `src/loadgen.rs` beside `src/loadgen/` is the face too.
            let Ok(rel) = path.strip_prefix(&base) else {
                continue;
            };
            let mut names: Vec<String> = rel
                .components()
                .map(|c| {
                    c.as_os_str()
                        .to_string_lossy()
                        .trim_end_matches(".rs")
                        .to_string()
                })
                .collect();
            if names.last().is_some_and(|n| n == "mod") {
                names.pop();
            }
            let Some(sibling) = names.first().cloned() else {
                continue; // the face
            };
            graph.entry(sibling.clone()).or_default();
            parts.push((sibling, names.len(), code));
        }
        for (sibling, depth, code) in parts {
            let up = "super::".repeat(depth);
            let own = format!("crate::{module}::");
            let named: BTreeSet<String> = paths_after(code, &up)
                .into_iter()
                .chain(paths_after(code, &own))
                .map(str::to_string)
                .filter(|n| *n != sibling && graph.contains_key(n))
                .collect();
            graph.entry(sibling).or_default().extend(named);
        }
        checked += 1;
        for start in graph.keys() {
            let mut path = vec![start.clone()];
            if let Some(circle) = circle_from(&graph, &mut path) {
                panic!("a circle inside src/{module}/: {}", circle.join(" -> "));
            }
        }
    }
    assert!(checked >= 5, "module folders not found");
}

/// A path of `graph` from the last of `path` back into `path`, if any.
fn circle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    let last = path.last()?.clone();
    for next in graph.get(&last).into_iter().flatten() {
        if let Some(at) = path.iter().position(|p| p == next) {
            let mut found = path[at..].to_vec();
            found.push(next.clone());
            return Some(found);
        }
        path.push(next.clone());
        if let Some(found) = circle_from(graph, path) {
            return Some(found);
        }
        path.pop();
    }
    None
}
