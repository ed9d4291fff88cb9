//! Repository rules checked as a test: every Rust file starts with a `//!` purpose line, no test is
//! ignored or expected to panic, and docs/ARCHITECTURE.md names every module of the agent.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
    {
        if entry.is_dir() {
            rust_files(&entry, out);
        } else if entry.extension().is_some_and(|e| e == "rs") {
            out.push(entry);
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn every_file_has_a_module_doc_and_no_test_is_skipped() {
    let mut files = Vec::new();
    for dir in [
        "common",
        "edge",
        "tests/src",
        "tests/tests",
        "tests/benches",
    ] {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(files.len() > 20);
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        if !text.starts_with("//!") {
            problems.push(format!(
                "{}: does not start with a //! module doc",
                file.display()
            ));
        }
        for banned in [concat!("#[", "ignore"), concat!("#[", "should_panic")] {
            if text.contains(banned) {
                problems.push(format!("{}: uses {banned}]", file.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_architecture_map_names_every_agent_module() {
    let map =
        std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut files = Vec::new();
    rust_files(&root().join("edge"), &mut files);
    rust_files(&root().join("common"), &mut files);
    let missing: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let name = f.file_stem()?.to_str()?;
            let shown = if name == "lib" || name == "main" {
                return None;
            } else if name == "mod" {
                f.parent()?.file_name()?.to_str()?.to_string() + "/"
            } else {
                name.to_string() + ".rs"
            };
            (!map.contains(&shown)).then_some(shown)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md does not mention: {missing:?}"
    );
}
