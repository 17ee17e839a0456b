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

/// Line endings and a BOM change nothing but heredoc bodies' `\r`: every parsing fixture, rewritten
/// with CRLF endings and a BOM, gives the same document.
#[test]
fn crlf_and_bom_variants_of_every_fixture_parse_the_same() {
    let mut checked = 0;
    for entry in std::fs::read_dir(fixtures_dir()).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let Ok(text) = std::fs::read_to_string(dir.join("Dockerfile")) else {
            continue;
        };
        if name.starts_with("err-") || text.starts_with('\u{feff}') || text.contains('\r') {
            continue;
        }
        let lf = forge_parser::json_document(&forge_parser::parse(&text).unwrap());
        let crlf_text = format!("\u{feff}{}", text.replace('\n', "\r\n"));
        let mut crlf = forge_parser::json_document(
            &forge_parser::parse(&crlf_text)
                .unwrap_or_else(|e| panic!("{name} with CRLF: {}", e.render("Dockerfile"))),
        );
        fn strip_cr(i: &mut forge_parser::JsonInstruction) {
            for h in &mut i.heredocs {
                h.body = h.body.replace("\r\n", "\n");
            }
            if let Some(nested) = i.nested.as_deref_mut() {
                strip_cr(nested);
            }
        }
        crlf.instructions.iter_mut().for_each(strip_cr);
        assert_eq!(
            lf, crlf,
            "fixture {name} differs with CRLF line endings and a BOM"
        );
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} fixtures checked");
}
