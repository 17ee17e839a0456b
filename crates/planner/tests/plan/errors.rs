//! Bad input: each failure is a `PlanError` naming the instruction's line, before anything runs.

use crate::common::{opts, try_plan};
use forge_planner::{PlanError, PlanOptions, Platform};

fn err(df: &str, opts: &PlanOptions) -> PlanError {
    match try_plan(df, opts) {
        Ok(_) => panic!("planned without error:\n{df}"),
        Err(e) => e,
    }
}

#[test]
fn copy_from_itself() {
    let e = err("FROM alpine AS a\nCOPY --from=a /x /y\n", &opts(&[]));
    assert!(
        matches!(e, PlanError::SelfStageReference { line: 2, .. }),
        "{e:?}"
    );
    let e = err(
        "FROM alpine\nFROM alpine\nCOPY --from=1 /x /y\n",
        &opts(&[]),
    );
    assert!(
        matches!(e, PlanError::SelfStageReference { line: 3, .. }),
        "{e:?}"
    );
    assert!(e.to_string().starts_with("line 3: COPY --from=1"), "{e}");
}

#[test]
fn copy_from_a_later_stage() {
    let e = err(
        "FROM alpine AS a\nCOPY --from=B /x /y\nFROM alpine AS b\n",
        &opts(&[]),
    );
    assert!(
        matches!(
            e,
            PlanError::ForwardStageReference {
                line: 2,
                stage: 1,
                stage_line: 3,
                ..
            }
        ),
        "{e:?}"
    );
    let e = err(
        "FROM alpine\nRUN --mount=from=1,target=/m true\nFROM alpine\n",
        &opts(&[]),
    );
    assert!(
        matches!(e, PlanError::ForwardStageReference { line: 2, .. }),
        "{e:?}"
    );
}

#[test]
fn stage_index_out_of_range() {
    let e = err(
        "FROM alpine\nFROM alpine\nCOPY --from=5 /x /y\n",
        &opts(&[]),
    );
    assert!(
        matches!(
            e,
            PlanError::StageIndexOutOfRange {
                line: 3,
                index: 5,
                count: 2,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn errors_in_stages_the_target_does_not_need_still_count() {
    let mut o = opts(&[]);
    o.target = Some("ok".into());
    let e = err(
        "FROM alpine AS ok\nFROM alpine AS bad\nCOPY --from=9 /x /y\n",
        &o,
    );
    assert!(
        matches!(e, PlanError::StageIndexOutOfRange { line: 3, .. }),
        "{e:?}"
    );
}

#[test]
fn unknown_target() {
    let mut o = opts(&[]);
    o.target = Some("nope".into());
    let e = err("FROM alpine AS build\nFROM alpine AS final\n", &o);
    assert!(
        matches!(&e, PlanError::UnknownTarget { target, stages } if target == "nope" && stages.len() == 2),
        "{e:?}"
    );
    assert!(e.to_string().contains("build, final"), "{e}");
}

#[test]
fn undefined_variable_in_from() {
    let e = err("FROM alpine:$TAG\n", &opts(&[]));
    assert!(
        matches!(&e, PlanError::UndefinedVariable { line: 1, name, .. } if name == "TAG"),
        "{e:?}"
    );
    // Declared inside a stage does not count: only global ARGs reach FROM.
    let e = err("FROM alpine\nARG BASE=alpine\nFROM ${BASE}\n", &opts(&[]));
    assert!(
        matches!(&e, PlanError::UndefinedVariable { line: 3, name, .. } if name == "BASE"),
        "{e:?}"
    );
    // With a default in the reference, or declared globally, it is fine.
    assert!(try_plan("FROM alpine:${TAG:-3.20}\n", &opts(&[])).is_ok());
    assert!(try_plan("ARG TAG=3.20\nFROM alpine:$TAG\n", &opts(&[])).is_ok());
    let e = err("ARG EMPTY=\nFROM ${EMPTY}\n", &opts(&[]));
    assert!(
        matches!(e, PlanError::EmptyBaseName { line: 2, .. }),
        "{e:?}"
    );
}

#[test]
fn invalid_and_foreign_platforms() {
    let e = err("FROM --platform=linux/z80 alpine\n", &opts(&[]));
    assert!(
        matches!(&e, PlanError::InvalidPlatform { line: 1, platform } if platform == "linux/z80"),
        "{e:?}"
    );
    let e = err(
        "FROM alpine\nFROM --platform=linux/s390x alpine\n",
        &opts(&[]),
    );
    assert!(
        matches!(e, PlanError::UnsupportedPlatform { line: 2, .. }),
        "{e:?}"
    );
    let mut o = opts(&[]);
    o.platform = Platform::parse("linux/arm64").unwrap();
    assert!(matches!(
        err("FROM alpine\n", &o),
        PlanError::UnsupportedTargetPlatform { .. }
    ));
    // The build platform itself is fine, by name or through BUILDPLATFORM.
    assert!(try_plan("FROM --platform=linux/x86_64 alpine\n", &opts(&[])).is_ok());
    assert!(try_plan("FROM --platform=$BUILDPLATFORM alpine\n", &opts(&[])).is_ok());
}

#[test]
fn duplicate_stage_names() {
    let e = err(
        "FROM alpine AS build\nRUN true\nFROM alpine AS Build\n",
        &opts(&[]),
    );
    assert!(
        matches!(&e, PlanError::DuplicateStageName { line: 3, first_line: 1, name } if name == "build"),
        "{e:?}"
    );
}

#[test]
fn invalid_port() {
    let e = err("FROM alpine\nEXPOSE http\n", &opts(&[]));
    assert!(
        matches!(&e, PlanError::InvalidPort { line: 2, port } if port == "http"),
        "{e:?}"
    );
}

#[test]
fn from_that_expands_to_nothing() {
    // A stage ARG does not reach --from; only global ARGs do.
    let e = err(
        "FROM alpine\nARG SRC=build\nCOPY --from=$SRC /x /y\n",
        &opts(&[]),
    );
    assert!(
        matches!(
            e,
            PlanError::EmptyValue {
                line: 3,
                what: "--from",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(try_plan(
        "ARG SRC=build\nFROM alpine AS build\nFROM alpine\nCOPY --from=$SRC /x /y\n",
        &opts(&[])
    )
    .is_ok());
}

#[test]
fn invalid_stop_signal() {
    let e = err("FROM alpine\nSTOPSIGNAL SIGNOPE\n", &opts(&[]));
    assert!(
        matches!(&e, PlanError::InvalidSignal { line: 2, signal } if signal == "SIGNOPE"),
        "{e:?}"
    );
    assert!(try_plan("FROM alpine\nSTOPSIGNAL 9\n", &opts(&[])).is_ok());
}
