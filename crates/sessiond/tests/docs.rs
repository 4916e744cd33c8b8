//! Cheap checks that the docs inside the code stay true as the code moves.
//!
//! - Every crate's `# Layout` section (its crate doc) names every module the crate declares at
//!   its root, so a reader who starts from the crate doc finds every part.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a check that cannot read a source file fails loudly"
)]

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The crate roots of the workspace's crates under `crates/`.
fn crate_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for entry in std::fs::read_dir(workspace().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        for root in ["src/lib.rs", "src/main.rs"] {
            let path = dir.join(root);
            if path.is_file() {
                roots.push(path);
            }
        }
    }
    roots.sort();
    roots
}

/// The `# Layout` section of a crate doc: its `//!` lines from the heading to the next
/// heading or the end of the doc.
fn layout_section(source: &str) -> Option<String> {
    let doc: Vec<&str> = source
        .lines()
        .take_while(|l| l.starts_with("//!") || l.trim().is_empty())
        .filter_map(|l| l.strip_prefix("//!"))
        .map(str::trim)
        .collect();
    let start = doc.iter().position(|l| *l == "# Layout")?;
    Some(
        doc[start + 1..]
            .iter()
            .take_while(|l| !l.starts_with("# "))
            .copied()
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// The modules declared at the crate root (`mod x;`, `pub mod x;`, `pub mod x {`), tests
/// aside.
fn root_modules(source: &str) -> Vec<String> {
    source
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
            let rest = l.strip_prefix("mod ")?;
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty() && name != "tests").then_some(name)
        })
        .collect()
}

#[test]
fn every_crates_layout_section_names_every_module() {
    let roots = crate_roots();
    assert!(roots.len() >= 7, "found the crates: {roots:?}");
    let mut missing = Vec::new();
    for root in &roots {
        let source = std::fs::read_to_string(root).unwrap();
        let Some(layout) = layout_section(&source) else {
            missing.push(format!("{}: no `# Layout` section", root.display()));
            continue;
        };
        for module in root_modules(&source) {
            if !layout.contains(&format!("`{module}`")) {
                missing.push(format!("{}: `{module}`", root.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "modules missing from their crate's Layout section:\n{}",
        missing.join("\n")
    );
}
