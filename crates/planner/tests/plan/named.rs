//! `--build-context NAME=...`: a name that no stage defines resolves to the named context.

use crate::common::{opts, plan, try_plan};
use forge_planner::{FileOp, NamedContext, OpKind, PlanError, PlanOptions, SourceRef, StageBase};

fn with(named: &[(&str, NamedContext)]) -> PlanOptions {
    let mut o = opts(&[]);
    o.named_contexts = named
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    o
}

fn files(p: &forge_planner::Plan) -> Vec<&FileOp> {
    p.graph
        .ops()
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::File(f) => Some(f),
            _ => None,
        })
        .collect()
}

#[test]
fn copy_from_a_directory_context_reads_a_context_op_of_that_name_without_dockerignore() {
    let mut o = with(&[("assets", NamedContext::Dir)]);
    o.dockerignore = vec!["*.log".into()];
    let p = plan("FROM busybox\nCOPY --from=assets a.txt /a\n", &o);
    let copy = files(&p)[0];
    assert_eq!(
        copy.from,
        SourceRef::Named {
            name: "assets".into()
        }
    );
    let source = copy.input.expect("the copy reads an input");
    let op = p.graph.op(p
        .graph
        .ops()
        .iter()
        .find(|op| matches!(op.kind, OpKind::File(_)))
        .unwrap()
        .inputs[source]
        .op);
    match &op.kind {
        OpKind::Context {
            name,
            include,
            exclude,
        } => {
            assert_eq!(name, "assets");
            assert_eq!(include, &vec!["a.txt".to_string()]);
            assert!(exclude.is_empty(), "the main .dockerignore does not apply");
        }
        other => panic!("expected a context op, got {other:?}"),
    }
}

#[test]
fn an_image_context_replaces_the_name_in_from_and_copy_from() {
    let o = with(&[("alpine", NamedContext::Image("busybox:latest".into()))]);
    let p = plan("FROM alpine\nCOPY --from=alpine /bin/sh /sh\n", &o);
    match &p.target_stage().base {
        StageBase::Image { reference, .. } => assert_eq!(reference, "busybox:latest"),
        other => panic!("expected an image base, got {other:?}"),
    }
    assert_eq!(
        files(&p)[0].from,
        SourceRef::Image {
            reference: "busybox:latest".into()
        }
    );
    let without = plan("FROM alpine\n", &opts(&[]));
    assert!(matches!(
        &without.target_stage().base,
        StageBase::Image { reference, .. } if reference == "alpine"
    ));
}

#[test]
fn a_stage_of_the_same_name_wins_over_a_named_context() {
    let o = with(&[("build", NamedContext::Dir)]);
    let p = plan(
        "FROM busybox AS build\nRUN true\nFROM busybox\nCOPY --from=build /x /x\n",
        &o,
    );
    assert_eq!(files(&p)[0].from, SourceRef::Stage { index: 0 });
}

#[test]
fn mount_from_a_directory_context_reads_it() {
    let o = with(&[("src", NamedContext::Dir)]);
    let p = plan(
        "FROM busybox\nRUN --mount=from=src,source=lib,target=/lib2 ls /lib2\n",
        &o,
    );
    let named = p.graph.ops().iter().any(|op| {
        matches!(&op.kind, OpKind::Context { name, include, .. }
            if name == "src" && include == &vec!["lib".to_string()])
    });
    assert!(named, "a context op named src reading lib");
}

#[test]
fn from_a_directory_context_is_an_error_naming_it() {
    let o = with(&[("assets", NamedContext::Dir)]);
    let err = try_plan("FROM busybox\nRUN true\nFROM assets\n", &o).unwrap_err();
    assert!(
        matches!(&err, PlanError::NamedContextNotImage { line: 3, name } if name == "assets"),
        "{err:?}"
    );
    assert!(err.to_string().contains("COPY --from=assets"), "{err}");
}
