//! The crate arrows of ARCHITECTURE.md, read from `cargo metadata`: who may depend on whom.

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
}
