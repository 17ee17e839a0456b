//! Golden fixtures: every `fixtures/dockerfiles/<case>/Dockerfile` is parsed; a case named
//! `err-*` must fail and its rendered error is compared with `error.snap` beside it, any other
//! case must parse and its `forge parse --json` document is compared with `parse.snap`.

use std::path::{Path, PathBuf};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/dockerfiles")
}

#[test]
fn dockerfile_fixtures() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures/dockerfiles exists")
        .map(|e| e.expect("readable fixture entry").path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "only {} fixture cases", cases.len());

    for dir in cases {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(dir.join("Dockerfile")).unwrap();
        let text = String::from_utf8(bytes).expect("fixture is UTF-8");
        let result = forge_parser::parse(&text);
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(&dir);
        settings.set_prepend_module_to_snapshot(false);
        settings.set_input_file(dir.join("Dockerfile"));
        settings.set_description(format!("fixture {name}"));
        settings.bind(|| match (name.starts_with("err-"), result) {
            (true, Err(err)) => insta::assert_snapshot!("error", err.render("Dockerfile")),
            (false, Ok(dockerfile)) => {
                insta::assert_json_snapshot!("parse", forge_parser::json_document(&dockerfile))
            }
            (true, Ok(_)) => panic!("fixture {name} should fail to parse but parsed"),
            (false, Err(err)) => panic!("fixture {name} failed:\n{}", err.render("Dockerfile")),
        });
    }
}
