//! Golden plans (JSON, insta) for every positive case under fixtures/dockerfiles/, digests
//! included: they must be stable, so nothing is filtered out of the snapshots.

use std::path::PathBuf;

use crate::common::{opts, FakeRegistry};

#[test]
fn fixture_plans_match_snapshots() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/dockerfiles");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("reading {}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").is_file() && !is_negative(p))
        .collect();
    cases.sort();
    assert!(
        !cases.is_empty(),
        "no positive fixtures under {}",
        root.display()
    );
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(case.join("Dockerfile")).unwrap();
        let df = forge_parser::parse(&text)
            .unwrap_or_else(|e| panic!("fixture {name} has no error.txt but does not parse: {e}"));
        let value = match forge_planner::plan(&df, &opts(&[]), &FakeRegistry) {
            Ok(plan) => serde_json::to_value(&plan).unwrap(),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        insta::with_settings!({
            snapshot_path => "../snapshots",
            prepend_module_to_snapshot => false,
            description => format!("forge plan of fixtures/dockerfiles/{name}"),
        }, {
            insta::assert_json_snapshot!(name, value);
        });
    }
}

/// A snapshot whose fixture is gone (or turned negative) would pass silently forever.
#[test]
fn no_stale_fixture_snapshots() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fixtures = manifest.join("../../fixtures/dockerfiles");
    let snapshots = manifest.join("tests/snapshots");
    for entry in std::fs::read_dir(&snapshots).unwrap() {
        let path = entry.unwrap().path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".snap"))
        else {
            continue;
        };
        let case = fixtures.join(name);
        assert!(
            case.join("Dockerfile").is_file() && !is_negative(&case),
            "{} has no positive fixture fixtures/dockerfiles/{name}; delete it",
            path.display()
        );
    }
}

/// Negative parser cases carry their expected error beside the Dockerfile.
fn is_negative(case: &std::path::Path) -> bool {
    case.join("error.txt").exists() || case.join("error.snap").exists()
}
