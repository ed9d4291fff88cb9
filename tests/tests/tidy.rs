//! Repository rules checked as a test, so docs/ARCHITECTURE.md stays true:
//! - every Rust file starts with a `//!` purpose line, and no test is ignored or expected to panic;
//! - the architecture map names every crate and every module file;
//! - the sans-IO and `no_std` crates carry no tokio (`cargo tree`);
//! - the agent's modules import each other without cycles;
//! - HTTP lives only in the files the map says know it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

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

fn architecture() -> String {
    std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).expect("ARCHITECTURE.md")
}

/// Every crate of the workspace: `common/*`, `edge/*`.
fn crates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for layer in ["common", "edge"] {
        for entry in std::fs::read_dir(root().join(layer)).expect("layer dir") {
            let path = entry.expect("entry").path();
            if path.join("Cargo.toml").exists() {
                out.push(path);
            }
        }
    }
    out.sort();
    out
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
fn the_architecture_map_names_every_crate_and_module() {
    let map = architecture();
    let mut missing = Vec::new();
    for krate in crates() {
        let relative = krate
            .strip_prefix(root())
            .expect("inside the workspace")
            .display()
            .to_string();
        if !map.contains(&format!("`{relative}`")) {
            missing.push(relative);
        }
        let mut files = Vec::new();
        rust_files(&krate.join("src"), &mut files);
        for file in files {
            let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let shown = match name {
                "lib" | "main" => continue,
                "mod" => {
                    let dir = file.parent().and_then(|p| p.file_name());
                    format!("{}/", dir.and_then(|d| d.to_str()).unwrap_or(""))
                }
                _ => format!("{name}.rs"),
            };
            if !map.contains(&shown) {
                missing.push(shown);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md does not mention: {missing:?}"
    );
}

#[test]
fn the_cores_carry_no_tokio() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for package in [
        "constella-kub1063",
        "constella-modbus",
        "constella-api",
        "constella-cluster",
    ] {
        let out = Command::new(&cargo)
            .args([
                "tree", "--quiet", "-e", "normal", "--prefix", "none", "-p", package,
            ])
            .arg("--manifest-path")
            .arg(root().join("Cargo.toml"))
            .output()
            .expect("cargo tree runs");
        assert!(out.status.success(), "cargo tree -p {package} failed");
        let tree = String::from_utf8_lossy(&out.stdout);
        let tokio: Vec<&str> = tree.lines().filter(|l| l.starts_with("tokio ")).collect();
        assert!(tokio.is_empty(), "{package} depends on tokio: {tokio:?}");
    }
}

/// The overlay crate links tokio for its shell; its sans-IO core modules must not use it.
#[test]
fn the_overlay_core_modules_use_no_tokio() {
    let src = root().join("edge/overlay/src");
    for core in [
        "router.rs",
        "stack.rs",
        "device.rs",
        "allowed_ips.rs",
        "keys.rs",
    ] {
        let text = std::fs::read_to_string(src.join(core)).expect("a core module of the overlay");
        assert!(
            !text.contains("tokio"),
            "edge/overlay/src/{core} is part of the sans-IO core but mentions tokio"
        );
    }
}

/// The agent's top-level modules and the ones each imports (`crate::name`).
fn agent_imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("edge/agent/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("inside src");
        let first = relative.components().next().expect("a path");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read");
        let imports = graph.entry(module.clone()).or_default();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                imports.insert(name);
            }
        }
        // `use crate::{a, b}` lists.
        for list in text.split("crate::{").skip(1) {
            let inner = list.split('}').next().unwrap_or("");
            for name in inner.split(',') {
                let name = name.trim().split("::").next().unwrap_or("").trim();
                if !name.is_empty() && name != module && name != "self" {
                    imports.insert(name.to_string());
                }
            }
        }
    }
    graph
        .values_mut()
        .for_each(|deps| deps.retain(|d| !d.is_empty()));
    graph
}

#[test]
fn the_agent_modules_import_each_other_without_cycles() {
    let graph = agent_imports();
    assert!(graph.len() > 10, "{graph:?}");
    // Depth-first search; a module met again on the current path closes a cycle.
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut cycle = path[at..].to_vec();
            cycle.push(module.to_string());
            return Some(cycle);
        }
        if !done.insert(module.to_string()) {
            return None;
        }
        path.push(module.to_string());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        let found = visit(module, &graph, &mut Vec::new(), &mut done);
        assert!(
            found.is_none(),
            "import cycle: {}",
            found.unwrap_or_default().join(" → ")
        );
    }
}

#[test]
fn http_lives_only_where_the_map_says() {
    // The HTTP server (api/), the cluster's listener and transport, the speed-test client, the
    // in-process calls into the router (agent.rs), and the bot's Telegram client.
    let allowed = [
        "api/mod.rs",
        "api/nodes.rs",
        "api/history.rs",
        "api/speedtest.rs",
        "api/prometheus.rs",
        "api/overlay.rs",
        "agent.rs",
        "speedtest.rs",
        "listener.rs",
        "cluster/mod.rs",
        "cluster/server.rs",
        "cluster/transport.rs",
        "bot/mod.rs",
    ];
    let src = root().join("edge/agent/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut offenders = Vec::new();
    for file in files {
        let relative = file
            .strip_prefix(&src)
            .expect("inside src")
            .display()
            .to_string();
        let text = std::fs::read_to_string(&file).expect("read");
        let knows_http = ["axum", "hyper", "reqwest"].iter().any(|name| {
            text.contains(&format!("{name}::")) || text.contains(&format!("use {name}"))
        });
        if knows_http && !allowed.contains(&relative.as_str()) {
            offenders.push(relative);
        }
    }
    assert!(
        offenders.is_empty(),
        "HTTP outside its modules: {offenders:?}"
    );
    let map = architecture();
    for file in allowed {
        let dir = file.split_once('/').map(|(dir, _)| format!("`{dir}/`"));
        assert!(
            map.contains(file) || dir.is_some_and(|d| map.contains(&d)),
            "ARCHITECTURE.md does not name {file}"
        );
    }
    for core in [
        "common/kub1063",
        "common/modbus",
        "common/api",
        "edge/cluster",
        "edge/sim",
    ] {
        let mut files = Vec::new();
        rust_files(&root().join(core).join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read");
            assert!(
                !text.contains("axum::") && !text.contains("use axum"),
                "{} serves HTTP",
                file.display()
            );
        }
    }
}
