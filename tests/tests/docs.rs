//! The documentation stands on its own: every link resolves inside the repository, the
//! configuration table is one table naming exactly the variables the code reads, the event
//! types listed are the ones handled, and the README stays a short guide.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// README.md and every page under docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut found = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            found.insert(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

/// `[text](target)` links outside code blocks and code spans.
fn links(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut found = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // Drop code spans: `[x](y)` inside backticks is an example, not a link.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    found
}

#[test]
fn every_link_resolves_inside_the_repository() {
    let (mut broken, mut checked) = (Vec::new(), 0);
    for page in pages() {
        let text = read(&page);
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            checked += 1;
            let (file, fragment) = link.split_once('#').unwrap_or((&link, ""));
            let target = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            let resolved = target.canonicalize();
            let inside = resolved
                .as_ref()
                .is_ok_and(|p| p.starts_with(root().canonicalize().unwrap()));
            if !inside {
                broken.push(format!(
                    "{}: {link} (no such file in the repository)",
                    page.display()
                ));
                continue;
            }
            if !fragment.is_empty() && !anchors(&read(&target)).contains(fragment) {
                broken.push(format!("{}: {link} (no such heading)", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(
        checked >= 10,
        "only {checked} links found: is the parser still right?"
    );
}

#[test]
fn nothing_points_outside_the_repository() {
    // The design and the reference notes the project started from are not part of it.
    let mut files = pages();
    files.extend([".ci/run", "scripts/test", "template.yaml"].map(|f| root().join(f)));
    for dir in ["shared/src", "functions", "tests/src", "tests/tests"] {
        collect_rs(&root().join(dir), &mut files);
    }
    let this_file = root().join("tests/tests/docs.rs");
    for file in files.iter().filter(|f| **f != this_file) {
        let text = read(file);
        for needle in ["design §", "design (§", "shared/reference", "../shared/"] {
            assert!(
                !text.contains(needle),
                "{} mentions {needle:?}, which is not in the repository",
                file.display()
            );
        }
    }
}

fn collect_rs(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rs(&path, into);
        } else if path.extension().is_some_and(|x| x == "rs") {
            into.push(path);
        }
    }
}

/// The variables the code reads: names of our own prefixes that appear as string literals
/// in the library and the functions, plus the standard ones read through libraries.
fn variables_in_code() -> BTreeSet<String> {
    const PREFIXES: [&str; 10] = [
        "OKTA_",
        "PORT_",
        "SECRETS_",
        "EVENTS_",
        "WEBHOOK_",
        "INSTALLATION_",
        "DELETION_",
        "ALLOW_",
        "STATE_",
        "RESYNC_",
    ];
    let mut files = Vec::new();
    collect_rs(&root().join("shared/src"), &mut files);
    collect_rs(&root().join("functions"), &mut files);
    let mut found = BTreeSet::new();
    // Unit tests name variables too; only what the product reads counts.
    files.retain(|f| !f.ends_with("tests.rs"));
    for file in files {
        let text = read(&file);
        let product = text.split("#[cfg(test)]").next().unwrap();
        for literal in product.split('"').skip(1).step_by(2) {
            let is_name = literal.len() > 4
                && literal
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                && PREFIXES.iter().any(|p| literal.starts_with(p));
            // Okta's own constants that look like names.
            if is_name && !["OKTA_GROUP"].contains(&literal) {
                found.insert(literal.to_owned());
            }
        }
    }
    found
}

#[test]
fn the_configuration_table_is_one_table_of_every_variable_the_code_reads() {
    let text = read(&root().join("docs/configuration.md"));
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("| variable |"))
        .expect("docs/configuration.md has the table");
    let rows: Vec<&str> = lines[start + 2..]
        .iter()
        .take_while(|l| l.starts_with('|'))
        .copied()
        .collect();
    // One table: no other variable row further down (a blank line would have cut it).
    let later = lines[start + 2 + rows.len()..]
        .iter()
        .filter(|l| l.starts_with("| `"))
        .count();
    assert_eq!(later, 0, "the configuration table is cut in two");

    let mut documented = BTreeSet::new();
    for row in &rows {
        let first_cell = row.split('|').nth(1).unwrap();
        for name in first_cell.split('`').skip(1).step_by(2) {
            documented.insert(name.to_owned());
        }
    }
    let in_code = variables_in_code();
    let undocumented: Vec<&String> = in_code.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "read by the code, not in the table: {undocumented:?}"
    );
    let standard = ["AWS_ENDPOINT_URL", "AWS_REGION", "RUST_LOG"];
    let unknown: Vec<&String> = documented
        .difference(&in_code)
        .filter(|v| !standard.contains(&v.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "in the table, never read by the code: {unknown:?}"
    );
}

#[test]
fn the_event_types_documented_are_the_ones_handled() {
    let text = read(&root().join("docs/architecture.md"));
    let section = text
        .split("## Event types")
        .nth(1)
        .expect("docs/architecture.md has an Event types section");
    let section = section.split("\n## ").next().unwrap();
    let listed: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("- `")?.strip_suffix('`'))
        .collect();
    assert_eq!(listed, okta_port::events::HANDLED_EVENT_TYPES);
}

#[test]
fn the_readme_is_a_short_guide() {
    let readme = read(&root().join("README.md"));
    let lines = readme.lines().count();
    assert!(lines <= 250, "README.md has {lines} lines; move detail to docs/");
    // The two quick-start commands.
    assert!(readme.contains("cargo run -p okta-port-tests --bin demo"));
    assert!(readme.contains("scripts/test"));
}
