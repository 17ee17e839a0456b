//! Build checks: one Dockerfile per rule showing it fires (with BuildKit's message), a clean
//! file on which none fire, and the `# check=` directive's skip and error behaviour.

use forge_parser::{check, check_with, parse, CheckConfig, Finding, RULES};

fn lint(text: &str) -> Vec<Finding> {
    let df = parse(text).unwrap_or_else(|e| panic!("{}", e.render("Dockerfile")));
    check(&df, text)
}

/// The findings of one rule, as `(line, message)`.
fn of(findings: &[Finding], rule: &str) -> Vec<(usize, String)> {
    findings
        .iter()
        .filter(|f| f.rule == rule)
        .map(|f| (f.line, f.message.clone()))
        .collect()
}

fn only(findings: &[Finding], rule: &str) -> Vec<(usize, String)> {
    let others: Vec<&Finding> = findings.iter().filter(|f| f.rule != rule).collect();
    assert!(
        others.is_empty(),
        "unexpected findings besides {rule}: {others:#?}"
    );
    of(findings, rule)
}

#[test]
fn clean_file_has_no_findings() {
    let text = r#"# syntax=docker/dockerfile:1
ARG BASE=alpine:3.20
ARG VERSION
FROM --platform=$BUILDPLATFORM golang:1.22 AS build
ARG TARGETOS TARGETARCH
ARG VERSION
ENV CGO_ENABLED=0 \
    GOOS=${TARGETOS}
WORKDIR /src
COPY --chown=1000:1000 go.* ./
RUN --mount=type=cache,target=/root/.cache/go-build \
    go build -o /out/app -ldflags "-X main.version=$VERSION" .

FROM ${BASE} AS runtime
ENV PATH=/app:$PATH
LABEL org.opencontainers.image.title="app"
COPY --from=build /out/app /app/app
WORKDIR /app
WORKDIR data
USER 1000
EXPOSE 8080
HEALTHCHECK CMD ["/app/app", "health"]
ENTRYPOINT ["/app/app"]
CMD ["serve"]
"#;
    let findings = lint(text);
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn json_args_recommended() {
    let f = lint("FROM alpine\nENTRYPOINT my-app --serve\nCMD [\"x\"]\n");
    assert_eq!(
        only(&f, "JSONArgsRecommended"),
        vec![(
            2,
            "JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals"
                .to_string()
        )]
    );
    assert_eq!(f[0].fix, r#"write ENTRYPOINT ["my-app", "--serve"]"#);
    assert_eq!(f[0].column, 1);
    // A SHELL instruction in the stage, or in a stage it builds on, makes shell form deliberate.
    assert!(lint("FROM alpine\nSHELL [\"/bin/bash\", \"-c\"]\nCMD run\n").is_empty());
    assert!(
        lint("FROM alpine AS base\nSHELL [\"/bin/bash\", \"-c\"]\nFROM base\nCMD run\n").is_empty()
    );
    assert_eq!(
        of(
            &lint("FROM alpine AS base\nSHELL [\"/bin/bash\", \"-c\"]\nFROM alpine\nCMD run\n"),
            "JSONArgsRecommended"
        )
        .len(),
        1
    );
    // A command using shell syntax keeps the shell in the suggestion.
    let f = lint("FROM alpine\nCMD echo \"$HOME\" && run\n");
    assert_eq!(
        f[0].fix,
        r#"write CMD ["/bin/sh", "-c", "echo \"$HOME\" && run"]"#
    );
}

#[test]
fn consistent_instruction_casing() {
    let f = lint("FROM alpine\nRUN echo a\nrun echo b\nCopy a /b\n");
    assert_eq!(
        only(&f, "ConsistentInstructionCasing"),
        vec![
            (
                3,
                "Command 'run' should match the case of the command majority (uppercase)"
                    .to_string()
            ),
            (
                4,
                "Command 'Copy' should match the case of the command majority (uppercase)"
                    .to_string()
            ),
        ]
    );
    // A lowercase majority flags the uppercase ones.
    let f = lint("from alpine\nrun echo a\nRUN echo b\n");
    assert_eq!(
        only(&f, "ConsistentInstructionCasing"),
        vec![(
            3,
            "Command 'RUN' should match the case of the command majority (lowercase)".to_string()
        )]
    );
}

#[test]
fn from_as_casing() {
    let f = lint("FROM alpine as base\nRUN true\n");
    assert_eq!(
        only(&f, "FromAsCasing"),
        vec![(
            1,
            "'as' and 'FROM' keywords' casing do not match".to_string()
        )]
    );
    let f = lint("from alpine AS base\nrun true\n");
    assert_eq!(
        only(&f, "FromAsCasing"),
        vec![(
            1,
            "'AS' and 'from' keywords' casing do not match".to_string()
        )]
    );
}

#[test]
fn stage_name_casing() {
    let f = lint("FROM alpine AS BuildStage\nRUN true\n");
    assert_eq!(
        only(&f, "StageNameCasing"),
        vec![(1, "Stage name 'BuildStage' should be lowercase".to_string())]
    );
    // The finding points at the name itself.
    assert_eq!(f[0].column, 16);
}

#[test]
fn duplicate_stage_name() {
    let f = lint("FROM alpine AS base\nFROM busybox AS base\nRUN true\n");
    assert_eq!(
        only(&f, "DuplicateStageName"),
        vec![(
            2,
            "Duplicate stage name \"base\", stage names should be unique".to_string()
        )]
    );
}

#[test]
fn reserved_stage_name() {
    let f = lint("FROM alpine AS scratch\nFROM alpine AS context\n");
    assert_eq!(
        only(&f, "ReservedStageName"),
        vec![
            (
                1,
                "Stage name should not use the same name as reserved stage \"scratch\"".to_string()
            ),
            (
                2,
                "Stage name should not use the same name as reserved stage \"context\"".to_string()
            ),
        ]
    );
}

#[test]
fn undefined_var() {
    let f = lint("FROM alpine\nCOPY $SRC /dst\n");
    assert_eq!(
        only(&f, "UndefinedVar"),
        vec![(2, "Usage of undefined variable '$SRC'".to_string())]
    );
    // The docs' example, with a suggestion; PATH is always defined.
    let f = lint("FROM alpine\nENV PATH=$PAHT:/app/bin\n");
    assert_eq!(
        only(&f, "UndefinedVar"),
        vec![(
            2,
            "Usage of undefined variable '$PAHT' (did you mean $PATH?)".to_string()
        )]
    );
    // Shell commands are not expanded by the builder, so they are not checked.
    assert!(lint("FROM alpine\nRUN echo $NOPE\nCMD echo $NOPE2\n")
        .iter()
        .all(|f| f.rule != "UndefinedVar"));
}

#[test]
fn undefined_var_follows_buildkit_scoping() {
    // A global ARG is not visible in a stage until it is redeclared there.
    let f = lint("ARG V=1\nFROM alpine\nWORKDIR /$V\nARG V\nWORKDIR /$V\n");
    assert_eq!(
        only(&f, "UndefinedVar"),
        vec![(3, "Usage of undefined variable '$V'".to_string())]
    );
    // An ARG without a value still declares the name.
    assert!(lint("FROM alpine\nARG X\nWORKDIR /$X\n").is_empty());
    // All words of one ENV see the values from before it.
    let f = lint("FROM alpine\nENV A=1 B=$A\nENV C=$A\n");
    assert_eq!(
        only(&f, "UndefinedVar"),
        vec![(2, "Usage of undefined variable '$A'".to_string())]
    );
    // ENV is inherited from a named base stage; ARG is not.
    let f = lint(
        "FROM alpine AS base\nENV FROM_ENV=1\nARG FROM_ARG=2\nFROM base\nCOPY $FROM_ENV $FROM_ARG /x\n",
    );
    assert_eq!(
        only(&f, "UndefinedVar"),
        vec![(5, "Usage of undefined variable '$FROM_ARG'".to_string())]
    );
    // Inside a stage, platform and proxy args are empty until an ARG brings them in, so BuildKit
    // reports them; declared, they are fine.
    let f = lint("FROM alpine\nWORKDIR /$TARGETARCH/$HTTP_PROXY\n");
    assert_eq!(
        only(&f, "UndefinedVar"),
        vec![
            (2, "Usage of undefined variable '$HTTP_PROXY'".to_string()),
            (2, "Usage of undefined variable '$TARGETARCH'".to_string()),
        ]
    );
    assert!(
        lint("FROM alpine\nARG TARGETARCH HTTP_PROXY\nWORKDIR /$TARGETARCH/$HTTP_PROXY\n")
            .is_empty()
    );
    // Variables in RUN --mount options are expanded by the builder and so checked.
    let f = lint("FROM alpine\nRUN --mount=type=cache,target=$CACHE true\n");
    assert_eq!(
        only(&f, "UndefinedVar"),
        vec![(2, "Usage of undefined variable '$CACHE'".to_string())]
    );
}

#[test]
fn undefined_arg_in_from() {
    // (`node:` with the undeclared arg empty is also an invalid name.)
    let f = lint("ARG VERSION=1\nFROM node:$VERSON\n");
    assert_eq!(of(&f, "InvalidDefaultArgInFrom").len(), 1);
    assert_eq!(
        of(&f, "UndefinedArgInFrom"),
        vec![(
            2,
            "FROM argument 'VERSON' is not declared (did you mean VERSION?)".to_string()
        )]
    );
    // An ARG declared after the first FROM is not global.
    let f = lint("FROM alpine\nARG TAG=1\nFROM alpine:${TAG}\n");
    assert_eq!(
        of(&f, "UndefinedArgInFrom"),
        vec![(3, "FROM argument 'TAG' is not declared".to_string())]
    );
    // Platform args need no declaration.
    assert!(lint("FROM --platform=$BUILDPLATFORM alpine\n").is_empty());
}

#[test]
fn invalid_default_arg_in_from() {
    let f = lint("ARG TAG\nFROM busybox:${TAG}\n");
    assert_eq!(
        only(&f, "InvalidDefaultArgInFrom"),
        vec![(
            2,
            "Default value for ARG busybox:${TAG} results in empty or invalid base image name"
                .to_string()
        )]
    );
    let f = lint("ARG IMAGE\nFROM $IMAGE\n");
    assert_eq!(of(&f, "InvalidDefaultArgInFrom").len(), 1);
    let f = lint("ARG IMAGE=Upper/Case\nFROM $IMAGE\n");
    assert_eq!(of(&f, "InvalidDefaultArgInFrom").len(), 1);
    // Every FROM is checked, as in BuildKit, variables or not.
    let f = lint("FROM Alpine\n");
    assert_eq!(
        only(&f, "InvalidDefaultArgInFrom"),
        vec![(
            1,
            "Default value for ARG Alpine results in empty or invalid base image name".to_string()
        )]
    );
    // Global ARG defaults may use ARGs declared before them on the same line.
    assert!(lint("ARG REPO=library IMAGE=${REPO}/alpine\nFROM $IMAGE\n").is_empty());
    // Valid defaults, with registry, port, tag and digest.
    for image in [
        "busybox:${TAG}",
        "registry.example.com:5000/team/app:${TAG}",
        "alpine@sha256:${DIGEST}",
        "${TARGETARCH}/alpine",
    ] {
        let text = format!(
            "ARG TAG=1.36\nARG DIGEST={}\nFROM {image}\n",
            "a".repeat(64)
        );
        assert!(lint(&text).is_empty(), "{image}: {:#?}", lint(&text));
    }
}

#[test]
fn maintainer_deprecated() {
    let f = lint("FROM alpine\nMAINTAINER me@example.com\n");
    assert_eq!(
        only(&f, "MaintainerDeprecated"),
        vec![(
            2,
            "Maintainer instruction is deprecated in favor of using label".to_string()
        )]
    );
}

#[test]
fn legacy_key_value_format() {
    let f = lint("FROM alpine\nENV A 1\nLABEL maintainer me\nENV B=2\n");
    assert_eq!(
        only(&f, "LegacyKeyValueFormat"),
        vec![
            (
                2,
                "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format"
                    .to_string()
            ),
            (
                3,
                "\"LABEL key=value\" should be used instead of legacy \"LABEL key value\" format"
                    .to_string()
            ),
        ]
    );
    assert_eq!(f[0].fix, "write ENV A=1");
}

#[test]
fn workdir_relative_path() {
    let f = lint("FROM alpine\nWORKDIR app\nWORKDIR /srv\nWORKDIR data\n");
    assert_eq!(
        only(&f, "WorkdirRelativePath"),
        vec![(
            2,
            "Relative workdir \"app\" can have unexpected results if the base image changes"
                .to_string()
        )]
    );
    // Only the first WORKDIR of a stage is judged.
    let f = lint("FROM alpine\nWORKDIR a\nWORKDIR b\n");
    assert_eq!(of(&f, "WorkdirRelativePath").len(), 1);
    // An absolute WORKDIR in the named base stage counts.
    assert!(lint("FROM alpine AS base\nWORKDIR /srv\nFROM base\nWORKDIR data\n").is_empty());
}

#[test]
fn multiple_instructions_disallowed() {
    let f = lint(
        "FROM alpine\nCMD [\"a\"]\nENTRYPOINT [\"e\"]\nCMD [\"b\"]\nHEALTHCHECK NONE\nHEALTHCHECK CMD [\"c\"]\nFROM alpine\nCMD [\"c\"]\n",
    );
    assert_eq!(
        only(&f, "MultipleInstructionsDisallowed"),
        vec![
            (2, "Multiple CMD instructions should not be used in the same stage because only the last one will be used".to_string()),
            (5, "Multiple HEALTHCHECK instructions should not be used in the same stage because only the last one will be used".to_string()),
        ]
    );
}

#[test]
fn secrets_used_in_arg_or_env() {
    let f = lint(
        "FROM alpine\nARG GITHUB_TOKEN\nENV DB_PASSWORD=x AWS_REGION=eu PUBLIC_KEY=k apikey=1\n",
    );
    assert_eq!(
        only(&f, "SecretsUsedInArgOrEnv"),
        vec![
            (
                2,
                "Do not use ARG or ENV instructions for sensitive data (ARG \"GITHUB_TOKEN\")"
                    .to_string()
            ),
            (
                3,
                "Do not use ARG or ENV instructions for sensitive data (ENV \"DB_PASSWORD\")"
                    .to_string()
            ),
            (
                3,
                "Do not use ARG or ENV instructions for sensitive data (ENV \"apikey\")"
                    .to_string()
            ),
        ]
    );
}

#[test]
fn no_empty_continuation() {
    let f = lint("FROM alpine\nRUN echo a \\\n\n    && echo b\n");
    assert_eq!(
        only(&f, "NoEmptyContinuation"),
        vec![(3, "Empty continuation line".to_string())]
    );
    // A comment line inside a continuation is not an empty line, nor are heredoc blank lines.
    assert!(lint("FROM alpine\nRUN echo a \\\n# note\n    && echo b\n").is_empty());
    assert!(lint("FROM alpine\nRUN <<EOF\necho a\n\necho b\nEOF\n").is_empty());
}

#[test]
fn every_rule_has_a_test_above() {
    // Keeps this file honest when a rule is added: each listed rule fires somewhere below.
    let samples = [
        "FROM alpine\nCMD x\n",
        "FROM alpine\nrun x\n",
        "FROM alpine as b\n",
        "FROM alpine AS B\n",
        "FROM alpine AS b\nFROM alpine AS b\n",
        "FROM alpine AS scratch\n",
        "FROM alpine\nCOPY $X /\n",
        "FROM $X\n",
        "ARG X\nFROM alpine:$X\n",
        "FROM alpine\nMAINTAINER me\n",
        "FROM alpine\nENV a b\n",
        "FROM alpine\nWORKDIR a\n",
        "FROM alpine\nCMD [\"a\"]\nCMD [\"b\"]\n",
        "FROM alpine\nARG MY_SECRET\n",
        "FROM alpine\nRUN a \\\n\n b\n",
    ];
    let mut fired = std::collections::BTreeSet::new();
    for s in samples {
        fired.extend(lint(s).into_iter().map(|f| f.rule));
    }
    let all: std::collections::BTreeSet<&str> = RULES.iter().copied().collect();
    assert_eq!(fired, all);
}

#[test]
fn check_directive_skips_rules() {
    let body = "FROM alpine as Base\nMAINTAINER me\nCMD run\n";
    let all = lint(body);
    assert_eq!(all.len(), 4, "{all:#?}");

    let f = lint(&format!(
        "# check=skip=FromAsCasing,MaintainerDeprecated\n{body}"
    ));
    let rules: Vec<&str> = f.iter().map(|f| f.rule).collect();
    assert_eq!(rules, vec!["StageNameCasing", "JSONArgsRecommended"]);
    assert!(f.iter().all(|f| !f.error));

    assert!(lint(&format!("# check=skip=all\n{body}")).is_empty());
}

#[test]
fn check_directive_error_true_makes_findings_errors() {
    let f = lint("# check=error=true\nFROM alpine\nMAINTAINER me\n");
    assert_eq!(f.len(), 1);
    assert!(f[0].error);
    let f =
        lint("# check=skip=JSONArgsRecommended;error=true\nFROM alpine\nCMD run\nMAINTAINER me\n");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].rule, "MaintainerDeprecated");
    assert!(f[0].error);
    // Without error=true nothing is an error.
    assert!(lint("FROM alpine\nMAINTAINER me\n")
        .iter()
        .all(|f| !f.error));
}

#[test]
fn check_config_parse_and_render() {
    let c = CheckConfig::parse("skip=A, B ;error=true;experimental=all");
    assert!(c.error);
    assert!(!c.skip_all);
    assert_eq!(
        c.skip.iter().map(String::as_str).collect::<Vec<_>>(),
        vec!["A", "B"]
    );
    assert!(CheckConfig::parse("skip=all").skip_all);
    assert!(!CheckConfig::parse("error=false").error);

    // An explicit config overrides the directive.
    let text = "# check=skip=all\nFROM alpine\nMAINTAINER me\n";
    let df = parse(text).unwrap();
    let f = check_with(&df, text, &CheckConfig::default());
    assert_eq!(f.len(), 1);
    assert_eq!(
        f[0].render("Dockerfile"),
        "Dockerfile:3:1: MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (fix: use LABEL org.opencontainers.image.authors=\"...\" instead)"
    );
}

#[test]
fn backtick_escape_files_are_checked_with_their_escape() {
    // With the backtick escape, `$X is literal and so not an undefined variable.
    let f = lint("# escape=`\nFROM alpine\nWORKDIR C:\\`$X\\$Y\n");
    assert_eq!(
        of(&f, "UndefinedVar"),
        vec![(3, "Usage of undefined variable '$Y'".to_string())]
    );
}
