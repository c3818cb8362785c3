//! The invariants of ARCHITECTURE.md: the crate arrows, read from `cargo metadata` (who may
//! depend on whom), and no import cycle between the files of a crate, read from the sources.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Each workspace package's dependencies (normal ones, not dev or build), by name.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|package| {
            let normal = package["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|dependency| dependency["kind"].is_null())
                .map(|dependency| dependency["name"].as_str().expect("a name").to_string())
                .collect();
            (package["name"].as_str().expect("a name").to_string(), normal)
        })
        .collect()
}

#[test]
fn dependencies_point_one_way() {
    let dependencies = dependencies();
    let of = |name: &str| dependencies.get(name).unwrap_or_else(|| panic!("no package {name}"));
    let weft_crates = |name: &str| -> BTreeSet<String> {
        of(name).iter().filter(|dependency| dependency.starts_with("weft")).cloned().collect()
    };
    assert!(weft_crates("weft-ir").is_empty(), "weft-ir depends on {:?}", weft_crates("weft-ir"));
    assert_eq!(weft_crates("weft-ipvm"), BTreeSet::from(["weft-ir".to_string()]));
    assert_eq!(weft_crates("weft-engine"), BTreeSet::from(["weft-ir".to_string()]));
    assert_eq!(weft_crates("weft-sql"), BTreeSet::from(["weft-ir".to_string()]));
    for crate_name in ["weft-ir", "weft-sql", "weft-ipvm"] {
        for heavy in ["timely", "differential-dataflow", "wasmtime"] {
            assert!(!of(crate_name).contains(heavy), "{crate_name} depends on {heavy}");
        }
    }
    for crate_name in ["weft-ir", "weft-ipvm", "weft-engine"] {
        assert!(!of(crate_name).contains("datafusion"), "{crate_name} depends on DataFusion");
    }
    assert!(!of("weft-engine").contains("weft-wasm") && !of("weft-sql").contains("weft-wasm"));
    // The database knows no front end; the server is one.
    assert!(!of("weft-core").contains("weft-server"), "weft-core depends on weft-server");
    assert!(of("weft-server").contains("weft-core"));
    // Only the command line parses arguments, draws progress bars, chooses the allocator and
    // reports with anyhow; libraries report through `tracing` and their own error types.
    for (package, dependencies) in &dependencies {
        if package != "weft" && package.starts_with("weft") {
            for cli_only in ["clap", "indicatif", "mimalloc", "anyhow", "tracing-subscriber"] {
                assert!(!dependencies.contains(cli_only), "{package} depends on {cli_only}");
            }
        }
    }
}

/// A library's files as modules: `src/a.rs` and `src/a/b.rs` are `a` and `a::b`; `lib.rs` is the
/// root (the empty path). `main.rs` is another crate (the binary), which uses the library by name.
fn modules(source: &std::path::Path) -> BTreeMap<Vec<String>, String> {
    let mut modules = BTreeMap::new();
    let mut folders = vec![source.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("a source folder") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs")
                && path.file_name().is_some_and(|name| name != "main.rs")
            {
                let relative = path.strip_prefix(source).expect("under src").with_extension("");
                let mut segments: Vec<String> =
                    relative.components().map(|part| part.as_os_str().to_string_lossy().into_owned()).collect();
                if segments.last().is_some_and(|last| last == "mod") {
                    segments.pop();
                }
                if segments == ["lib"] {
                    segments.clear();
                }
                let text = std::fs::read_to_string(&path).expect("a source file");
                modules.insert(segments, text);
            }
        }
    }
    modules
}

/// The code of a file that imports: without its tests and comments (and, for the crate root,
/// without its `mod` and `use` declarations, which only name the modules).
fn importing_code(text: &str, root: bool) -> String {
    text.lines()
        .take_while(|line| !(line.trim_start().starts_with("#[cfg(") && line.contains("test")))
        .map(|line| line.split("//").next().unwrap_or_default())
        .filter(|line| {
            let line = line.trim_start();
            !(root
                && ["mod ", "pub mod ", "pub(crate) mod ", "use ", "pub use ", "#["]
                    .iter()
                    .any(|start| line.starts_with(start)))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifiers a path names after `crate::` or `super::`: one, or each first segment of
/// a `{...}` group.
fn named_after(rest: &str) -> Vec<String> {
    let identifier =
        |text: &str| -> String { text.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    match rest.strip_prefix('{') {
        Some(group) => {
            let mut depth = 0;
            let end = group
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => return true,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    false
                })
                .map_or(group.len(), |(index, _)| index);
            let mut names = Vec::new();
            let mut depth = 0;
            let mut start = 0;
            for (index, c) in group[..end].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.push(identifier(&group[start..index]));
                        start = index + 1;
                    }
                    _ => {}
                }
            }
            names.push(identifier(&group[start..end]));
            names.into_iter().filter(|name| !name.is_empty()).collect()
        }
        None => vec![identifier(rest)],
    }
}

/// Which top-level modules (by name; `""` is the crate root) each top-level module's files
/// use. A module's own submodules count as part of it.
fn module_imports(source: &std::path::Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(source);
    let units: BTreeSet<String> = modules.keys().filter_map(|path| path.first().cloned()).collect();
    // Names the root re-exports from a module (`pub use module::{A, B}`) stand for that module.
    let root = modules.get(&Vec::new()).cloned().unwrap_or_default();
    let mut reexported = BTreeMap::new();
    for line in root.lines().filter_map(|line| line.trim_start().strip_prefix("pub use ")) {
        let Some((module, rest)) = line.split_once("::") else { continue };
        if units.contains(module) {
            for name in named_after(rest) {
                reexported.insert(name, module.to_string());
            }
        }
    }
    let unit_of = |name: &str| -> String {
        if units.contains(name) {
            name.to_string()
        } else {
            reexported.get(name).cloned().unwrap_or_default()
        }
    };
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in &modules {
        let unit = path.first().cloned().unwrap_or_default();
        let code = importing_code(text, path.is_empty());
        let mut used = BTreeSet::new();
        for (index, _) in code.match_indices("crate::") {
            for name in named_after(&code[index + "crate::".len()..]) {
                used.insert(unit_of(&name));
            }
        }
        // `super::` from a top-level module is the root; deeper, it stays inside the module.
        if path.len() == 1 {
            for (index, _) in code.match_indices("super::") {
                for name in named_after(&code[index + "super::".len()..]) {
                    used.insert(unit_of(&name));
                }
            }
        }
        if path.is_empty() {
            for name in &units {
                if code.contains(&format!("{name}::")) {
                    used.insert(name.clone());
                }
            }
        }
        used.remove(&unit);
        imports.entry(unit).or_default().extend(used);
    }
    imports
}

/// A cycle among `imports`, if there is one, as the modules along it.
fn find_cycle(imports: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        imports: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|on_path| on_path == module) {
            let mut cycle = path[start..].to_vec();
            cycle.push(module.to_string());
            return Some(cycle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_string());
        for next in imports.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, imports, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(module.to_string());
        None
    }
    let mut done = BTreeSet::new();
    imports.keys().find_map(|module| visit(module, imports, &mut done, &mut Vec::new()))
}

#[test]
fn no_crate_has_an_import_cycle_between_its_files() {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for crate_folder in ["ir", "ipvm", "engine", "sql", "wasm", "effects", "connectors", "core", "server", "."] {
        let imports = module_imports(&workspace.join(crate_folder).join("src"));
        if let Some(cycle) = find_cycle(&imports) {
            let names: Vec<&str> = cycle.iter().map(|name| if name.is_empty() { "lib" } else { name }).collect();
            panic!("{crate_folder}: files import each other in a circle: {}", names.join(" -> "));
        }
    }
}

#[test]
fn the_cycle_check_sees_a_cycle() {
    let folder = std::env::temp_dir().join(format!("weft-cycle-{}", std::process::id()));
    std::fs::create_dir_all(folder.join("a")).unwrap();
    std::fs::write(folder.join("lib.rs"), "mod a;\nmod b;\npub use b::Thing;\n").unwrap();
    std::fs::write(folder.join("a.rs"), "mod inner;\nuse crate::{Thing, c};\n").unwrap();
    std::fs::write(folder.join("a/inner.rs"), "use super::*;\n").unwrap();
    std::fs::write(folder.join("b.rs"), "pub struct Thing;\n").unwrap();
    std::fs::write(folder.join("c.rs"), "fn f() { crate::a::g() }\n").unwrap();
    let imports = module_imports(&folder);
    assert_eq!(imports["a"], BTreeSet::from(["b".to_string(), "c".to_string()]));
    assert!(imports["b"].is_empty());
    assert_eq!(find_cycle(&imports), Some(vec!["a".to_string(), "c".to_string(), "a".to_string()]));
    std::fs::write(folder.join("c.rs"), "// crate::a::g()\n#[cfg(all(test, unix))]\nmod tests { use crate::a; }\n")
        .unwrap();
    assert_eq!(find_cycle(&module_imports(&folder)), None);
    let _ = std::fs::remove_dir_all(&folder);
}

/// Type names (structs, enums, traits, aliases) defined at the top level of a library crate's
/// files, and the files' names, with where each is defined.
fn defined_names() -> BTreeMap<String, BTreeSet<String>> {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for crate_folder in ["ir", "ipvm", "engine", "sql", "wasm", "effects", "connectors", "core", "server", "."] {
        for (path, text) in modules(&workspace.join(crate_folder).join("src")) {
            let place = format!("{crate_folder}/{}", if path.is_empty() { "lib".to_string() } else { path.join("/") });
            if let Some(file) = path.last() {
                names.entry(format!("{file}.rs")).or_default().insert(place.clone());
            }
            for line in importing_code(&text, false).lines() {
                let line = line.strip_prefix("pub ").or_else(|| line.strip_prefix("pub(crate) ")).unwrap_or(line);
                for keyword in ["struct ", "enum ", "trait ", "type "] {
                    if let Some(rest) = line.strip_prefix(keyword) {
                        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                        names.entry(name).or_default().insert(place.clone());
                    }
                }
            }
        }
    }
    names
}

#[test]
fn one_name_per_concept() {
    // Names two crates use for the same concept (ARCHITECTURE.md's glossary): a row's change with
    // its multiplicity, user-defined functions (abstract in ir, Wasm in core), and the HTTP side
    // of a crate (the connector's requests, the server's API).
    let shared = ["Change", "functions.rs", "http.rs"];
    for (name, places) in defined_names() {
        if places.len() > 1 && !shared.contains(&name.as_str()) {
            panic!("{name} is defined in {places:?}: give each concept its own name");
        }
    }
}
