//! Focused checks of `parse` on small inputs: the typed values and the located errors.

use forge_parser::{
    parse, Args, CacheSharing, Chmod, CommandLine, Healthcheck, InstructionKind, MountType,
    NetworkMode,
};

fn kinds(text: &str) -> Vec<InstructionKind> {
    parse(text)
        .unwrap_or_else(|e| panic!("{}", e.render("Dockerfile")))
        .instructions
        .into_iter()
        .map(|i| i.kind)
        .collect()
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(d) => panic!("expected an error, got {d:#?}"),
        Err(e) => format!("{}:{}: {}", e.line, e.column, e.message()),
    }
}

#[test]
fn continuation_joins_lines_and_drops_comments_and_blank_lines() {
    let d = parse("FROM a\nRUN echo a \\\n  # comment\n\n   && echo b \\\n").unwrap();
    let run = &d.instructions[1];
    assert_eq!(run.node.args, Args::Shell("echo a    && echo b".into()));
    assert_eq!(run.node.empty_continuation_lines, vec![4]);
    assert_eq!(run.node.span.start.line, 2);
    assert_eq!(run.node.span.end.line, 5);
}

#[test]
fn exec_form_only_for_json_string_arrays() {
    let k = kinds("FROM a\nCMD [\"a\", \"b\"]\nCMD [\"a\", 1]\nENTRYPOINT [a]\n");
    assert_eq!(
        k[1],
        InstructionKind::Cmd(CommandLine::Exec(vec!["a".into(), "b".into()]))
    );
    assert_eq!(
        k[2],
        InstructionKind::Cmd(CommandLine::Shell("[\"a\", 1]".into()))
    );
    assert_eq!(
        k[3],
        InstructionKind::Entrypoint(CommandLine::Shell("[a]".into()))
    );
}

#[test]
fn run_mount_flags_are_typed() {
    let k = kinds(
        "FROM a\nRUN --mount=type=cache,target=/root/.cache,sharing=locked,id=x,mode=0755,uid=1 \
         --mount=type=tmpfs,dst=/t,size=64m --network=none echo\n",
    );
    let InstructionKind::Run(run) = &k[1] else {
        panic!("{k:?}")
    };
    assert_eq!(run.mounts.len(), 2);
    assert_eq!(run.mounts[0].kind, MountType::Cache);
    assert_eq!(run.mounts[0].target.as_deref(), Some("/root/.cache"));
    assert_eq!(run.mounts[0].sharing, Some(CacheSharing::Locked));
    assert_eq!(run.mounts[0].mode, Some(0o755));
    assert_eq!(run.mounts[1].size, Some(64 << 20));
    assert_eq!(run.network, Some(NetworkMode::None));
}

#[test]
fn heredocs_follow_the_instruction() {
    let d = parse("FROM a\nRUN <<EOF cat <<-'B'\necho $x\nEOF\n\tliteral\n\tB\nUSER me\n").unwrap();
    let node = &d.instructions[1].node;
    assert_eq!(node.heredocs.len(), 2);
    assert_eq!(node.heredocs[0].body, "echo $x\n");
    assert!(node.heredocs[0].expand);
    assert_eq!(node.heredocs[1].body, "literal\n");
    assert!(!node.heredocs[1].expand && node.heredocs[1].strip_tabs);
    assert_eq!(node.span.end.line, 6);
    assert_eq!(d.instructions[2].kind, InstructionKind::User("me".into()));
}

#[test]
fn copy_and_healthcheck_flags() {
    let k = kinds(
        "FROM a\nCOPY --chmod=u+x,g-w --link --exclude=a --exclude=b x y /d/\n\
         HEALTHCHECK --interval=1m30s --retries=3 CMD curl -f http://localhost/\n",
    );
    let InstructionKind::Copy(c) = &k[1] else {
        panic!()
    };
    assert_eq!(c.chmod, Some(Chmod::Symbolic("u+x,g-w".into())));
    assert!(c.link);
    assert_eq!(c.exclude, ["a", "b"]);
    assert_eq!(c.sources, ["x", "y"]);
    assert_eq!(c.dest, "/d/");
    let InstructionKind::Healthcheck(Healthcheck::Check {
        interval, retries, ..
    }) = &k[2]
    else {
        panic!()
    };
    assert_eq!(*interval, Some(90_000_000_000));
    assert_eq!(*retries, Some(3));
}

#[test]
fn flags_buildkit_never_reads_are_accepted() {
    let k = kinds("FROM a\nHEALTHCHECK --interval=5s NONE\nSTOPSIGNAL --x SIGTERM\n");
    assert_eq!(k[1], InstructionKind::Healthcheck(Healthcheck::None));
    assert_eq!(k[2], InstructionKind::Stopsignal("SIGTERM".into()));
    assert!(parse("FROM a\nHEALTHCHECK --x=1 CMD true\n").is_err());
}

#[test]
fn errors_are_located() {
    assert_eq!(
        error("FROM a\n  FOO bar\n"),
        "2:3: unknown instruction: FOO"
    );
    assert_eq!(error("FROM a\nRUN --foo echo\n"), "2:5: unknown flag: foo");
    assert_eq!(
        error("FROM a\nRUN --mout=type=cache,target=/x echo\n"),
        "2:5: unknown flag: mout (did you mean mount?)"
    );
    assert_eq!(
        error("FROM a\ncpoy a b\n"),
        "2:1: unknown instruction: cpoy (did you mean COPY?)"
    );
    assert_eq!(
        error("FROM a\nCOPY onlyone\n"),
        "2:6: COPY requires at least two arguments, but only one was provided. Destination could not be determined"
    );
    assert_eq!(
        error("FROM a AS\n"),
        "1:6: FROM requires either one or three arguments"
    );
    assert_eq!(
        error("FROM a\nSHELL /bin/sh -c\n"),
        "2:7: SHELL requires the arguments to be in JSON form"
    );
    assert_eq!(
        error("# escape=x\nFROM a\n"),
        "1:10: invalid escape token 'x' does not match ` or \\"
    );
    assert_eq!(
        error("# syntax=a\n# SYNTAX=b\nFROM a\n"),
        "2:1: only one syntax parser directive can be used"
    );
    assert_eq!(
        error("FROM a\nRUN <<EOF\nx\n"),
        "2:1: unterminated heredoc \"EOF\""
    );
    assert_eq!(
        error("FROM a\nONBUILD ONBUILD RUN x\n"),
        "2:9: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    assert_eq!(error("\n\n"), "1:1: file with no instructions");
}

#[test]
fn env_label_arg_forms() {
    let k = kinds(
        "ARG A=1 B \"C\"=\"x y\"\nFROM a\nENV k v w\nENV a=\"b c\" d=e\\ f\nLABEL \"x y\"=z\n",
    );
    let InstructionKind::Arg(args) = &k[0] else {
        panic!()
    };
    let names: Vec<_> = args
        .iter()
        .map(|a| (a.name.as_str(), a.default.as_deref()))
        .collect();
    assert_eq!(
        names,
        [("A", Some("1")), ("B", None), ("\"C\"", Some("\"x y\""))]
    );
    let InstructionKind::Env(env) = &k[2] else {
        panic!()
    };
    assert_eq!(
        (env[0].key.as_str(), env[0].value.as_str(), env[0].legacy),
        ("k", "v w", true)
    );
    let InstructionKind::Env(env) = &k[3] else {
        panic!()
    };
    assert_eq!(env[0].value, "\"b c\"");
    assert_eq!(env[1].value, "e\\ f");
    let InstructionKind::Label(label) = &k[4] else {
        panic!()
    };
    assert_eq!(
        (label[0].key.as_str(), label[0].value.as_str()),
        ("x y", "z")
    );
}

#[test]
fn onbuild_volume_healthcheck_shell_from() {
    let k = kinds(
        "FROM --platform=linux/arm64 img AS Build\nONBUILD COPY --from=x a b\nVOLUME [\"/a\", \"/b\"]\n\
         HEALTHCHECK NONE\nSHELL [\"pwsh\", \"-c\"]\nCOPY --chmod=0640 a b\n",
    );
    let InstructionKind::From(from) = &k[0] else {
        panic!()
    };
    assert_eq!(from.image, "img");
    assert_eq!(from.platform.as_deref(), Some("linux/arm64"));
    let alias = from.alias.as_ref().unwrap();
    assert_eq!(alias.value, "Build");
    assert_eq!((alias.span.start.line, alias.span.start.column), (1, 36));
    let InstructionKind::Onbuild(inner) = &k[1] else {
        panic!()
    };
    let InstructionKind::Copy(c) = &inner.kind else {
        panic!()
    };
    assert_eq!(c.from.as_deref(), Some("x"));
    assert_eq!(
        k[2],
        InstructionKind::Volume(vec!["/a".into(), "/b".into()])
    );
    assert_eq!(k[3], InstructionKind::Healthcheck(Healthcheck::None));
    assert_eq!(
        k[4],
        InstructionKind::Shell(vec!["pwsh".into(), "-c".into()])
    );
    let InstructionKind::Copy(c) = &k[5] else {
        panic!()
    };
    assert_eq!(c.chmod, Some(Chmod::Octal(0o640)));
}

#[test]
fn directives_bom_crlf_and_unicode_columns() {
    let d = parse("\u{feff}# escape=`\r\nFROM é\r\nRUN --bad=`\r\n  x\r\n").unwrap_err();
    assert_eq!((d.line, d.column), (3, 5));
    let d = parse("\u{feff}# escape=`\r\nFROM alpine\r\nLABEL é=1 x=\\ `\r\n  b=2 `\r\n  c=3\r\n")
        .unwrap();
    assert_eq!(d.escape, '`');
    assert_eq!(d.directives.escape.as_ref().unwrap().value, '`');
    let label = &d.instructions[1];
    let InstructionKind::Label(pairs) = &label.kind else {
        panic!()
    };
    assert_eq!(
        pairs[1].value, "\\",
        "a backslash is literal when the escape is a backtick"
    );
    assert_eq!(pairs.len(), 4);
    assert_eq!(label.node.span.start.line, 3);
    assert_eq!(label.node.span.end.line, 5);
    let e = parse("FROM a\nLABEL é=1 ü=2 x\n").unwrap_err();
    assert_eq!(
        (e.line, e.column),
        (2, 15),
        "columns count characters, not bytes"
    );
}

#[test]
fn text_listing_and_json_agree_on_lines() {
    let d = parse("FROM a\nRUN <<EOF\nx\nEOF\n").unwrap();
    assert_eq!(
        forge_parser::text_listing(&d),
        "1:1-1:7 FROM words: [\"a\"]\n2:1-4:4 RUN shell: <<EOF\n    heredoc EOF (lines 3-4): \"x\\n\"\n"
    );
    let json = serde_json::to_value(forge_parser::json_document(&d)).unwrap();
    assert_eq!(json["instructions"][1]["end_line"], 4);
    assert_eq!(json["instructions"][1]["heredocs"][0]["body"], "x\n");
}
