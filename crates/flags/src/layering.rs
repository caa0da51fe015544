//! Test only: the package's module graph, read from the `crate::…` paths in `src/`.
//!
//! Within each crate (the engine, `src/lib.rs`, and the command line, `src/main.rs`) the
//! top-level modules must form no cycle, and no module but `main.rs` may name `cli`: the
//! command line is a leaf. (The engine cannot name the binary's modules at all; the compiler
//! sees to that.) Modules name each other by module path (`crate::report::Record`), never
//! through the root's re-exports, so that every edge shows here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules a crate root declares (`mod x;`, `pub mod x;`).
fn declared_modules(root: &str) -> BTreeSet<String> {
    root.lines()
        .filter_map(|line| {
            let line = line.trim();
            let line = line.strip_prefix("pub ").unwrap_or(line);
            line.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_owned)
        })
        .collect()
}

/// The code of a file without its comments (doc comments included).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| line.find("//").map_or(line, |at| &line[..at]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first identifier of each path after `crate::`: `crate::a::b` gives `a`,
/// `crate::{a::b, c}` gives `a` and `c`.
fn crate_paths(code: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `my_crate::`, not `crate::`.
        }
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut start) = (0, 0);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        names.push(ident(&group[start..i]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.push(ident(&group[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            names.push(ident(rest));
        }
    }
    names.retain(|n| !n.is_empty() && n != "self");
    names
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(files)
}

/// Whether `start` can be reached from itself.
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = graph
        .get(start)
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    while let Some(module) = stack.pop() {
        if module == start {
            return true;
        }
        if seen.insert(module) {
            stack.extend(graph.get(module).into_iter().flatten().map(String::as_str));
        }
    }
    false
}

#[test]
fn modules_form_no_cycle_and_cli_is_a_leaf() -> std::io::Result<()> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for root in ["lib.rs", "main.rs"] {
        let modules = declared_modules(&std::fs::read_to_string(src.join(root))?);
        assert!(!modules.is_empty(), "{root} declares no module");
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in rust_files(&src)? {
            let relative = file.strip_prefix(&src).unwrap_or(&file);
            let Some(first) = relative.components().next() else {
                continue;
            };
            let module = first.as_os_str().to_string_lossy();
            let module = module.strip_suffix(".rs").unwrap_or(&module).to_owned();
            // This file's own strings are full of `crate::`.
            if !modules.contains(&module) || module == "layering" {
                continue;
            }
            for name in crate_paths(&code(&std::fs::read_to_string(&file)?)) {
                assert!(
                    modules.contains(&name),
                    "{}: crate::{name} is not a module of {root}; name items by their module",
                    relative.display()
                );
                if name != module {
                    graph.entry(module.clone()).or_default().insert(name);
                }
            }
        }
        for module in graph.keys() {
            assert!(
                !cycle_through(&graph, module),
                "{root}: {module} is on a cycle: {graph:?}"
            );
        }
        let importers: Vec<&String> = graph
            .iter()
            .filter(|(_, names)| names.contains("cli"))
            .map(|(module, _)| module)
            .collect();
        assert!(importers.is_empty(), "{root}: {importers:?} import cli");
    }
    Ok(())
}

#[test]
fn paths_are_read_as_written() {
    assert_eq!(
        crate_paths("use crate::a::b;\nuse crate::{c, d::{e, f}, self};\nmy_crate::x"),
        ["a", "c", "d"]
    );
    assert_eq!(
        code("let x = 1; // crate::a\n/// [`crate::b`]"),
        "let x = 1; \n"
    );
}
