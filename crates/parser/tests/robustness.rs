//! `parse` never panics or hangs: arbitrary bytes (lossy UTF-8) and Dockerfile-shaped text
//! built from keywords, flags, quotes, escapes, heredoc markers and JSON fragments all give
//! `Ok` or `Err`, and every error points at a line that exists.

use proptest::prelude::*;

fn check(text: &str) {
    match forge_parser::parse(text) {
        Ok(d) => {
            for i in &d.instructions {
                assert!(i.node.span.start.line >= 1);
                assert!(i.node.span.end.line >= i.node.span.start.line);
            }
            // The JSON schema and text listing must not panic either.
            let _ = serde_json::to_string(&forge_parser::json_document(&d)).unwrap();
            let _ = forge_parser::text_listing(&d);
        }
        Err(e) => {
            let lines = text
                .strip_prefix('\u{feff}')
                .unwrap_or(text)
                .lines()
                .count();
            assert!(
                e.line >= 1 && e.line <= lines.max(1),
                "{e:?} in {lines} lines"
            );
            assert!(e.column >= 1);
            let _ = e.render("Dockerfile");
        }
    }
}

const FRAGMENTS: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
    "run",
    "NONE",
    "CMD",
    "AS",
    "as",
    " ",
    " ",
    " ",
    "\t",
    "\n",
    "\n",
    "\r\n",
    "\\",
    "\\\n",
    "`",
    "`\n",
    "#",
    "# escape=`\n",
    "# syntax=x\n",
    "# check=a\n",
    "\u{feff}",
    "\"",
    "'",
    "=",
    "a",
    "b=c",
    "$x",
    "${y:-z}",
    "<<EOF",
    "<<-EOF",
    "<<'EOF'",
    "<<\"E\"",
    "EOF\n",
    "\tEOF\n",
    "E\n",
    "2<<X",
    "[",
    "]",
    "[\"a\"",
    ", ",
    "1",
    "[\"x\", 1]",
    "[]",
    "--",
    "--mount=",
    "type=cache",
    ",target=/x",
    ",size=1m",
    ",ro",
    "--network=host",
    "--security=x",
    "--chmod=u+x",
    "--chmod=0755",
    "--link",
    "--link=false",
    "--from=a",
    "--exclude=*",
    "--interval=1m30s",
    "--retries=3",
    "--timeout=1.5h",
    "--platform=$P",
    "µ",
    "é",
    "\u{a0}",
    "\u{85}",
    "--x",
];

proptest! {
    #![proptest_config(ProptestConfig {
        // At least 2000 cases; PROPTEST_CASES can ask for more.
        cases: ProptestConfig::default().cases.max(2000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn dockerfile_shaped_text_never_panics(
        parts in proptest::collection::vec(proptest::sample::select(FRAGMENTS), 0..80)
    ) {
        check(&parts.concat());
    }

    #[test]
    fn instruction_lines_never_panic(
        lines in proptest::collection::vec(
            (proptest::sample::select(&FRAGMENTS[..20]), proptest::collection::vec(proptest::sample::select(FRAGMENTS), 0..8)),
            0..20,
        )
    ) {
        let text: String = lines
            .iter()
            .map(|(kw, rest)| format!("{kw} {}\n", rest.join(" ")))
            .collect();
        check(&text);
    }
}

#[test]
fn regression_inputs_do_not_panic() {
    for text in [
        "",
        "\u{feff}",
        "\\",
        "FROM a\n\\",
        "FROM a\nRUN <<",
        "FROM a\nRUN <<-",
        "FROM a\nRUN <<''\n\n",
        "FROM a\nONBUILD",
        "FROM a\nONBUILD ONBUILD",
        "FROM a\nHEALTHCHECK CMD",
        "FROM a\nHEALTHCHECK",
        "FROM a\nCOPY --chmod= a b",
        "FROM a\nRUN --mount= x",
        "FROM a\nRUN --mount=\" x",
        "FROM a\nENV \"",
        "FROM a\nENV a\\",
        "FROM a\nLABEL 'é'=\u{a0}x",
        "# escape=`\nFROM a\nRUN x`",
        "FROM a\u{85}AS b",
        "FROM a\nRUN --=x y",
        "FROM a\nEXPOSE \u{a0}",
        "FROM a\nHEALTHCHECK --interval=9999999999999999999999h CMD x",
        "FROM a\nHEALTHCHECK --interval=.h CMD x",
    ] {
        check(text);
    }
}
