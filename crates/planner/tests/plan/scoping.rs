//! ARG and ENV scoping, one test per rule of Docker's Dockerfile reference, using its examples.

use crate::common::{env_map, history, opts, plan, runs, try_plan};
use forge_planner::{PlanWarning, StageBase};

/// "An ARG instruction goes out of scope at the end of the build stage where it was defined",
/// and a variable used before its ARG line expands to its default (Dockerfile reference, ARG "Scope").
#[test]
fn arg_used_before_declaration_is_empty_then_set() {
    let df = "FROM busybox\nUSER ${username:-some_user}\nARG username\nUSER $username\n";
    let p = plan(df, &opts(&[("username", "what_user")]));
    let h = history(&p, 0);
    assert!(h.contains(&"USER some_user".to_string()), "{h:?}");
    assert!(h.contains(&"USER what_user".to_string()), "{h:?}");
    assert_eq!(
        p.stage(0).unwrap().config.config.user.as_deref(),
        Some("what_user")
    );
}

/// "Environment variables defined using the ENV instruction always override an ARG
/// instruction of the same name."
#[test]
fn env_overrides_arg_of_the_same_name() {
    let df = "FROM ubuntu\nARG CONT_IMG_VER\nENV CONT_IMG_VER=v1.0.0\nRUN echo $CONT_IMG_VER\n";
    let p = plan(df, &opts(&[("CONT_IMG_VER", "v2.0.1")]));
    let run = &runs(&p, 0)[0];
    assert_eq!(
        env_map(run).get("CONT_IMG_VER").map(String::as_str),
        Some("v1.0.0")
    );
    assert_eq!(
        run.env
            .iter()
            .filter(|e| e.starts_with("CONT_IMG_VER="))
            .count(),
        1
    );
    // An ARG declared after the ENV does not take the value back either.
    let df = "FROM ubuntu\nENV V=env\nARG V=arg\nRUN echo $V\nUSER $V\n";
    let p = plan(df, &opts(&[]));
    assert_eq!(
        env_map(&runs(&p, 0)[0]).get("V").map(String::as_str),
        Some("env")
    );
    assert_eq!(
        p.stage(0).unwrap().config.config.user.as_deref(),
        Some("env")
    );
}

/// The reference's `ENV CONT_IMG_VER=${CONT_IMG_VER:-v1.0.0}` example: the ARG feeds the ENV
/// when given, the default applies otherwise, and the value persists in the image.
#[test]
fn env_from_arg_with_default() {
    let df = "FROM ubuntu\nARG CONT_IMG_VER\nENV CONT_IMG_VER=${CONT_IMG_VER:-v1.0.0}\nRUN echo $CONT_IMG_VER\n";
    let without = plan(df, &opts(&[]));
    assert_eq!(
        without
            .stage(0)
            .unwrap()
            .config
            .config
            .env_value("CONT_IMG_VER"),
        Some("v1.0.0")
    );
    let with = plan(df, &opts(&[("CONT_IMG_VER", "v2.0.2")]));
    assert_eq!(
        with.stage(0)
            .unwrap()
            .config
            .config
            .env_value("CONT_IMG_VER"),
        Some("v2.0.2")
    );
    assert_eq!(
        env_map(&runs(&with, 0)[0])
            .get("CONT_IMG_VER")
            .map(String::as_str),
        Some("v2.0.2")
    );
}

/// "An ARG declared before a FROM is outside of a build stage, so it can't be used in any
/// instruction after a FROM. To use the default value of an ARG declared before the first
/// FROM use an ARG instruction without a value inside of a build stage."
#[test]
fn global_arg_is_visible_in_a_stage_only_when_redeclared() {
    let df = "ARG SETTINGS=global\nFROM busybox AS first\nRUN ./run/setup $SETTINGS\n\nFROM busybox\nARG SETTINGS\nRUN ./run/other $SETTINGS\n";
    let mut first = opts(&[]);
    first.target = Some("first".into());
    let p = plan(df, &first);
    assert!(!env_map(&runs(&p, 0)[0]).contains_key("SETTINGS"));
    let p = plan(df, &opts(&[]));
    assert!(
        p.stage(0).is_none(),
        "stage 0 is pruned from the default target"
    );
    assert_eq!(
        env_map(&runs(&p, 1)[0]).get("SETTINGS").map(String::as_str),
        Some("global")
    );
    // A build arg overrides the global default, and the redeclaration sees the override.
    let p = plan(df, &opts(&[("SETTINGS", "cli")]));
    assert_eq!(
        env_map(&runs(&p, 1)[0]).get("SETTINGS").map(String::as_str),
        Some("cli")
    );
}

/// The reference's FROM example: `ARG VERSION=latest` / `FROM busybox:$VERSION` / `ARG VERSION`.
#[test]
fn global_arg_in_from_and_redeclared_for_run() {
    let df = "ARG VERSION=latest\nFROM busybox:$VERSION\nARG VERSION\nRUN echo $VERSION > image_version\n";
    let p = plan(df, &opts(&[]));
    assert_eq!(
        p.stage(0).unwrap().base,
        StageBase::Image {
            reference: "busybox:latest".into(),
            resolved: p.stage(0).and_then(|s| match &s.base {
                StageBase::Image { resolved, .. } => resolved.clone(),
                _ => None,
            }),
        }
    );
    assert_eq!(
        env_map(&runs(&p, 0)[0]).get("VERSION").map(String::as_str),
        Some("latest")
    );
    let p = plan(df, &opts(&[("VERSION", "1.36")]));
    assert!(
        matches!(&p.stage(0).unwrap().base, StageBase::Image { reference, .. } if reference == "busybox:1.36")
    );
}

/// "An ARG instruction goes out of scope at the end of the build stage where it was defined."
#[test]
fn arg_scope_ends_with_its_stage() {
    let df = "FROM busybox AS one\nARG X=1\nRUN echo $X\nFROM one\nRUN echo $X\n";
    let p = plan(df, &opts(&[]));
    assert_eq!(
        env_map(&runs(&p, 0)[0]).get("X").map(String::as_str),
        Some("1")
    );
    assert!(!env_map(&runs(&p, 1)[0]).contains_key("X"));
    // ENV, in contrast, is part of the image and carries over to a stage built on it.
    let df = "FROM busybox AS one\nENV X=1\nFROM one\nRUN echo $X\n";
    let p = plan(df, &opts(&[]));
    assert_eq!(
        env_map(&runs(&p, 1)[0]).get("X").map(String::as_str),
        Some("1")
    );
}

/// Default values and their override by `--build-arg` (the reference's `ARG user1=someuser`).
#[test]
fn build_arg_defaults_and_overrides() {
    let df = "FROM busybox\nARG user1=someuser\nARG buildno=1\nRUN echo $user1 $buildno\n";
    let p = plan(df, &opts(&[]));
    let env = env_map(&runs(&p, 0)[0]);
    assert_eq!(env.get("user1").map(String::as_str), Some("someuser"));
    assert_eq!(env.get("buildno").map(String::as_str), Some("1"));
    let p = plan(df, &opts(&[("user1", "what_user")]));
    let env = env_map(&runs(&p, 0)[0]);
    assert_eq!(env.get("user1").map(String::as_str), Some("what_user"));
    assert_eq!(env.get("buildno").map(String::as_str), Some("1"));
    // The history records the values as BuildKit does: ARG lines and the `|N` prefix of RUN.
    let h = history(&p, 0);
    assert!(h.contains(&"ARG user1=what_user".to_string()), "{h:?}");
    assert!(
        h.contains(
            &"RUN |2 user1=what_user buildno=1 /bin/sh -c echo $user1 $buildno # buildkit"
                .to_string()
        ),
        "{h:?}"
    );
    // Without a default or a value the ARG is declared but unset.
    let p = plan("FROM busybox\nARG unset\nRUN echo $unset\n", &opts(&[]));
    assert!(!env_map(&runs(&p, 0)[0]).contains_key("unset"));
    assert!(history(&p, 0).contains(&"RUN |1 unset= /bin/sh -c echo $unset # buildkit".to_string()));
}

/// "Docker has a set of predefined ARG variables that you can use without a corresponding
/// ARG instruction": the proxy args reach RUN but stay out of the cache key and the history
/// unless declared.
#[test]
fn proxy_args_are_predefined_and_kept_out_of_keys() {
    let df = "FROM ubuntu\nRUN apt-get update\n";
    let plain = plan(df, &opts(&[]));
    let proxied = plan(
        df,
        &opts(&[
            ("HTTP_PROXY", "http://user:pass@proxy:3128"),
            ("no_proxy", "localhost"),
        ]),
    );
    let run = &runs(&proxied, 0)[0];
    assert_eq!(
        run.proxy_env.get("HTTP_PROXY").map(String::as_str),
        Some("http://user:pass@proxy:3128")
    );
    assert_eq!(
        run.proxy_env.get("no_proxy").map(String::as_str),
        Some("localhost")
    );
    assert!(!env_map(run).contains_key("HTTP_PROXY"));
    let digests = |p: &forge_planner::Plan| {
        p.graph
            .ops()
            .iter()
            .map(|o| o.digest.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        digests(&plain),
        digests(&proxied),
        "proxy values changed a digest"
    );
    assert!(history(&proxied, 0).iter().all(|h| !h.contains("proxy")));
    assert!(proxied.warnings.is_empty(), "{:?}", proxied.warnings);

    // Declared, a proxy arg is an ordinary ARG: in the env, the history and the digest.
    let declared = plan(
        "FROM ubuntu\nARG HTTP_PROXY\nRUN apt-get update\n",
        &opts(&[("HTTP_PROXY", "http://p:1")]),
    );
    let run = &runs(&declared, 0)[0];
    assert!(run.proxy_env.is_empty());
    assert_eq!(
        env_map(run).get("HTTP_PROXY").map(String::as_str),
        Some("http://p:1")
    );
    assert!(history(&declared, 0).contains(
        &"RUN |1 HTTP_PROXY=http://p:1 /bin/sh -c apt-get update # buildkit".to_string()
    ));
}

/// TARGETPLATFORM and friends are in the global scope automatically, and in a stage only when
/// declared with ARG (as BuildKit does).
#[test]
fn platform_args_global_automatically_stage_when_declared() {
    let df = "FROM --platform=$BUILDPLATFORM alpine AS build\nRUN echo $TARGETPLATFORM\nARG TARGETPLATFORM\nARG TARGETOS TARGETARCH TARGETVARIANT BUILDARCH\nRUN echo $TARGETPLATFORM\n";
    let p = plan(df, &opts(&[]));
    let r = runs(&p, 0);
    assert!(!env_map(&r[0]).contains_key("TARGETPLATFORM"));
    let env = env_map(&r[1]);
    assert_eq!(
        env.get("TARGETPLATFORM").map(String::as_str),
        Some("linux/amd64")
    );
    assert_eq!(env.get("TARGETOS").map(String::as_str), Some("linux"));
    assert_eq!(env.get("TARGETARCH").map(String::as_str), Some("amd64"));
    assert_eq!(env.get("TARGETVARIANT").map(String::as_str), Some(""));
    assert_eq!(env.get("BUILDARCH").map(String::as_str), Some("amd64"));
    // In FROM (global scope) without any declaration.
    let p = plan("FROM alpine:$TARGETARCH\n", &opts(&[]));
    assert!(
        matches!(&p.stage(0).unwrap().base, StageBase::Image { reference, .. } if reference == "alpine:amd64")
    );
}

/// SOURCE_DATE_EPOCH sets the history and config timestamps and is never "unused".
#[test]
fn source_date_epoch_sets_timestamps() {
    let p = plan(
        "FROM alpine\nRUN true\n",
        &opts(&[("SOURCE_DATE_EPOCH", "1700000000")]),
    );
    let config = &p.stage(0).unwrap().config;
    assert_eq!(config.created.as_deref(), Some("2023-11-14T22:13:20Z"));
    assert_eq!(
        config.history.last().unwrap().created.as_deref(),
        Some("2023-11-14T22:13:20Z")
    );
    assert!(p.warnings.is_empty());
    assert!(try_plan(
        "FROM alpine\n",
        &opts(&[("SOURCE_DATE_EPOCH", "yesterday")])
    )
    .is_err());
}

/// A build arg that no ARG declares earns a warning; one declared anywhere planned does not.
#[test]
fn unused_build_arg_warns() {
    let p = plan(
        "ARG USED_GLOBALLY\nFROM alpine\nARG USED\nRUN true\n",
        &opts(&[("USED", "1"), ("USED_GLOBALLY", "1"), ("NOBODY", "2")]),
    );
    assert_eq!(
        p.warnings,
        vec![PlanWarning::UnusedBuildArg {
            name: "NOBODY".into()
        }]
    );
}

/// BuildKit expands every word of one instruction against the values from before it:
/// `ENV a=2 b=$a` gives b the old a.
#[test]
fn one_instruction_expands_against_the_same_values() {
    let p = plan("FROM alpine\nENV a=1\nENV a=2 b=$a\n", &opts(&[]));
    let c = &p.stage(0).unwrap().config.config;
    assert_eq!(c.env_value("a"), Some("2"));
    assert_eq!(c.env_value("b"), Some("1"));
    assert!(history(&p, 0).contains(&"ENV a=2 b=1".to_string()));
}
