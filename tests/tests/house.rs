//! The house stays walkable: layers only look down (domain, then configuration and
//! mapping, then the adapters, then the core, then the edges), no two modules import each
//! other, and no function or file outgrows a screen or two.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lower layers never import higher ones.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "domain",
        &[
            "domain", "retry", "progress", "report", "keys", "aws", "events", "metrics",
        ],
    ),
    ("configuration and mapping", &["config", "mapping"]),
    (
        "adapters",
        &["okta", "port", "queue", "secrets", "hooks", "state"],
    ),
    ("core", &["sync"]),
    ("edges", &["app", "webhook", "telemetry", "status_line"]),
];
const MAX_FUNCTION_LINES: usize = 80;
const MAX_FILE_LINES: usize = 500;

fn src() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent");
    root.join("shared").join("src")
}

/// Every source file of the library but its entry points (`lib.rs`, `bin/`), with its
/// top-level module and its code without the unit tests at its end.
fn sources() -> Vec<(String, PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&src(), &mut files);
    files.sort();
    files
        .into_iter()
        .filter_map(|path| {
            let relative = path.strip_prefix(src()).unwrap().to_string_lossy().into_owned();
            let module = relative
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_owned();
            if module == "lib" || module == "bin" {
                return None;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = match text.find("#[cfg(test)]\nmod tests") {
                Some(at) => text[..at].to_owned(),
                None => text,
            };
            Some((module, path, code))
        })
        .collect()
}

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
        .unwrap_or_else(|| panic!("module {module} has no layer: add it to LAYERS"))
}

/// `crate::x` paths in the code, comments left out.
fn imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name.chars().next().is_some_and(char::is_lowercase) {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn layers_only_look_down_and_no_modules_import_each_other() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, _, code) in sources() {
        for target in imports(&code) {
            if target != module && target != "json_type" {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    let upward: Vec<String> = edges
        .iter()
        .flat_map(|(from, targets)| targets.iter().map(move |to| (from, to)))
        .filter(|(from, to)| layer_of(to) > layer_of(from))
        .map(|(from, to)| {
            format!(
                "{from} ({}) -> {to} ({})",
                LAYERS[layer_of(from)].0,
                LAYERS[layer_of(to)].0
            )
        })
        .collect();
    assert!(upward.is_empty(), "imports that go up a layer: {upward:#?}");
    let circles: Vec<String> = edges
        .iter()
        .flat_map(|(from, targets)| targets.iter().map(move |to| (from, to)))
        .filter(|(from, to)| edges.get(*to).is_some_and(|back| back.contains(*from)))
        .map(|(from, to)| format!("{from} <-> {to}"))
        .collect();
    assert!(circles.is_empty(), "modules that import each other: {circles:?}");
    assert!(edges.len() >= 10, "the scan found the modules: {edges:?}");
}

/// Lines from each function's signature to its closing brace (rustfmt's layout).
fn function_lengths(code: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let mut rest = line.trim_start();
        for prefix in [
            "pub(crate) ",
            "pub(super) ",
            "pub ",
            "async ",
            "const ",
            "unsafe ",
        ] {
            rest = rest.strip_prefix(prefix).unwrap_or(rest);
            rest = rest.strip_prefix("async ").unwrap_or(rest);
        }
        let Some(signature) = rest.strip_prefix("fn ") else {
            continue;
        };
        if line.trim_end().ends_with(';') || line.trim_end().ends_with('}') {
            continue; // a trait method without a body, or a one-line function
        }
        let name: String = signature
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let closing = format!("{indent}}}");
        if let Some(end) = lines[start..].iter().position(|l| *l == closing) {
            found.push((name, start + 1, end + 1));
        }
    }
    found
}

#[test]
fn functions_and_files_stay_a_screen_long() {
    let mut long_functions = Vec::new();
    let mut long_files = Vec::new();
    let mut functions = 0;
    for (_, path, code) in sources() {
        let relative = path.strip_prefix(src()).unwrap().display().to_string();
        for (name, line, length) in function_lengths(&code) {
            functions += 1;
            if length > MAX_FUNCTION_LINES {
                long_functions.push(format!("{relative}:{line} {name} ({length} lines)"));
            }
        }
        let lines = code.lines().count();
        if lines > MAX_FILE_LINES {
            long_files.push(format!("{relative} ({lines} lines before its tests)"));
        }
    }
    assert!(functions > 300, "the scan found the functions: {functions}");
    assert!(
        long_functions.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines: {long_functions:#?}"
    );
    assert!(
        long_files.is_empty(),
        "files over {MAX_FILE_LINES} lines: {long_files:#?}"
    );
}

#[test]
fn the_length_scan_sees_a_long_function() {
    let body = "        x();\n".repeat(MAX_FUNCTION_LINES);
    let code =
        format!("impl A {{\n    pub async fn long(&self) {{\n{body}    }}\n\n    fn short() {{}}\n}}\n");
    let found = function_lengths(&code);
    assert_eq!(found[0], ("long".to_owned(), 2, MAX_FUNCTION_LINES + 2));
    assert_eq!(
        found.len(),
        1,
        "a one-line function closes on its own line: {found:?}"
    );
}
