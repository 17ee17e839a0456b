//! The graph and the stage configs: pruning, edges, ONBUILD, history texts, Docker's config rules.

use std::collections::BTreeSet;

use crate::common::{history, opts, parse, plan, runs, try_plan, FakeRegistry};
use forge_planner::{InputRole, OfflineResolver, OpKind, SourceRef, StageBase, DEFAULT_PATH};

const MULTI: &str = "\
FROM golang:1.22 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/root/.cache/go-build go mod download
COPY . .
RUN go build -o /out/app ./cmd/app

FROM alpine:3.20 AS test
COPY --from=build /out/app /app
RUN /app --self-test

FROM build AS docs
RUN make docs

FROM gcr.io/distroless/static AS final
COPY --from=build /out/app /app
ENTRYPOINT [\"/app\"]
";

#[test]
fn target_prunes_stages_it_does_not_need() {
    let p = plan(MULTI, &opts(&[]));
    let indexes: Vec<usize> = p.stages.iter().map(|s| s.index).collect();
    assert_eq!(indexes, vec![0, 3], "final needs build only");
    assert_eq!(p.target, 3);
    assert!(p
        .graph
        .ops()
        .iter()
        .all(|op| op.stage == 0 || op.stage == 3));

    let mut o = opts(&[]);
    o.target = Some("TEST".into()); // stage names compare case-insensitively
    let p = plan(MULTI, &o);
    assert_eq!(
        p.stages.iter().map(|s| s.index).collect::<Vec<_>>(),
        vec![0, 1]
    );

    o.target = Some("docs".into());
    let p = plan(MULTI, &o);
    assert_eq!(
        p.stages.iter().map(|s| s.index).collect::<Vec<_>>(),
        vec![0, 2]
    );
    assert_eq!(p.stage(2).unwrap().base, StageBase::Stage { index: 0 });
    // The docs stage continues from build's last op.
    let first_docs = p.stage(2).unwrap().ops[0];
    assert_eq!(
        p.graph.op(first_docs).inputs[0].op,
        p.stage(0).unwrap().result
    );
}

#[test]
fn ops_are_topologically_ordered_and_match_petgraph() {
    let p = plan(MULTI, &opts(&[]));
    for op in p.graph.ops() {
        for input in &op.inputs {
            assert!(
                input.op < op.id,
                "input {} of op {} comes later",
                input.op,
                op.id
            );
        }
        let from_dag: BTreeSet<_> = p.graph.inputs_of(op.id).map(|(i, _)| i).collect();
        let listed: BTreeSet<_> = op.inputs.iter().map(|i| i.op).collect();
        assert_eq!(from_dag, listed);
    }
    assert!(!petgraph::algo::is_cyclic_directed(p.graph.dag()));
    assert_eq!(p.graph.dag().node_count(), p.graph.len());
}

#[test]
fn copy_from_and_mounts_are_edges() {
    let df = "FROM alpine AS a\nRUN echo a > /a\nFROM alpine AS b\nRUN --mount=type=bind,from=a,source=/a,target=/mnt/a cat /mnt/a\nCOPY --from=0 /a /copied\nCOPY --from=nginx:latest /etc/nginx /nginx\n";
    let p = plan(df, &opts(&[]));
    let a_result = p.stage(0).unwrap().result;
    let b = p.stage(1).unwrap();
    let run = p.graph.op(b.ops[1]);
    let mount = run
        .inputs
        .iter()
        .find(|i| i.role == InputRole::Mount)
        .unwrap();
    assert_eq!(mount.op, a_result);
    let OpKind::Run(r) = &run.kind else {
        panic!("not a run")
    };
    assert_eq!(r.mounts[0].target, "/mnt/a");
    assert!(r.mounts[0].readonly, "bind mounts default to read-only");
    assert_eq!(r.mounts[0].from, Some(SourceRef::Stage { index: 0 }));
    assert_eq!(r.mounts[0].input, Some(1));

    let copy = p.graph.op(b.ops[2]);
    assert_eq!(copy.inputs[1].op, a_result);
    assert_eq!(copy.inputs[1].role, InputRole::CopySource);
    let image_copy = p.graph.op(b.ops[3]);
    let src = p.graph.op(image_copy.inputs[1].op);
    assert!(
        matches!(&src.kind, OpKind::Image { reference, .. } if reference == "docker.io/library/nginx:latest"),
        "a resolved image is named canonically in the graph"
    );
}

#[test]
fn context_reads_only_what_each_copy_needs() {
    let mut o = opts(&[]);
    o.dockerignore = vec!["target".into(), "*.log".into()];
    let p = plan("FROM alpine\nWORKDIR /app\nCOPY ./src/ lib/*.rs ./\nCOPY README.md docs/\nRUN --mount=type=bind,source=scripts,target=s ./s/x\n", &o);
    let ctx: Vec<(Vec<String>, Vec<String>)> = p
        .graph
        .ops()
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::Context {
                include, exclude, ..
            } => Some((include.clone(), exclude.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(ctx.len(), 3);
    assert_eq!(ctx[0].0, vec!["lib/*.rs".to_string(), "src".to_string()]);
    assert_eq!(ctx[1].0, vec!["README.md".to_string()]);
    assert_eq!(ctx[2].0, vec!["scripts".to_string()]);
    assert!(ctx
        .iter()
        .all(|(_, ex)| ex == &vec!["target".to_string(), "*.log".to_string()]));
    let files: Vec<String> = p
        .graph
        .ops()
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::File(f) => Some(f.dest.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(files, vec!["/app/", "/app/docs/"]);
    assert_eq!(
        runs(&p, 0)[0].mounts[0].target,
        "/app/s",
        "relative mount targets follow WORKDIR"
    );
}

#[test]
fn onbuild_triggers_run_after_from() {
    // From a base image's config, through the resolver.
    let p = plan("FROM onbuild/app\nRUN echo own\n", &opts(&[]));
    let s = p.stage(0).unwrap();
    let kinds: Vec<&str> = s
        .ops
        .iter()
        .map(|&id| match &p.graph.op(id).kind {
            OpKind::Image { .. } => "image",
            OpKind::File(_) => "copy",
            OpKind::Run(_) => "run",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, vec!["image", "copy", "run", "run"]);
    assert_eq!(runs(&p, 0)[0].argv, vec!["/bin/sh", "-c", "echo triggered"]);
    assert!(
        s.config.config.on_build.is_empty(),
        "triggers are consumed, not inherited"
    );
    assert_eq!(
        p.graph.op(s.ops[1]).line,
        1,
        "trigger ops point at the FROM line"
    );

    // From an earlier stage's ONBUILD instructions.
    let p = plan(
        "FROM alpine AS base\nONBUILD RUN echo from-base\nFROM base\nRUN echo child\n",
        &opts(&[]),
    );
    assert_eq!(
        p.stage(0).unwrap().config.config.on_build,
        vec!["RUN echo from-base"]
    );
    let child = runs(&p, 1);
    assert_eq!(child[0].argv.last().unwrap(), "echo from-base");
    assert_eq!(child[1].argv.last().unwrap(), "echo child");
    assert!(p.stage(1).unwrap().config.config.on_build.is_empty());
}

#[test]
fn history_texts_match_buildkit() {
    let df = "FROM alpine\nARG X=1\nENV A=b C=\"d e\"\nLABEL version=1.0\nWORKDIR /app\nCOPY --chown=1000:1000 --chmod=755 file /dst\nRUN apt-get update\nRUN [\"echo\", \"hi\"]\nEXPOSE 80 53/udp\nVOLUME /data /logs\nUSER nobody\nSTOPSIGNAL SIGTERM\nSHELL [\"/bin/bash\", \"-c\"]\nHEALTHCHECK --interval=5m --timeout=3s --retries=3 CMD curl -f http://localhost/ || exit 1\nCMD [\"x\"]\nENTRYPOINT echo hi\n";
    let p = plan(df, &opts(&[]));
    let h = history(&p, 0);
    let expected = [
        "base layer of alpine",
        "ARG X=1",
        "ENV A=b C=d e",
        "LABEL version=1.0",
        "WORKDIR /app",
        "COPY --chown=1000:1000 --chmod=755 file /dst # buildkit",
        "RUN |1 X=1 /bin/sh -c apt-get update # buildkit",
        "RUN |1 X=1 echo hi # buildkit",
        "EXPOSE map[53/udp:{} 80/tcp:{}]",
        "VOLUME [/data /logs]",
        "USER nobody",
        "STOPSIGNAL SIGTERM",
        "SHELL [/bin/bash -c]",
        "HEALTHCHECK &{[\"CMD-SHELL\" \"curl -f http://localhost/ || exit 1\"] \"5m0s\" \"3s\" \"0s\" \"0s\" '\\x03'}",
        "CMD [\"x\"]",
        "ENTRYPOINT [\"/bin/bash\" \"-c\" \"echo hi\"]",
    ];
    assert_eq!(h, expected);
    let config = &p.stage(0).unwrap().config;
    let layers: Vec<bool> = config
        .history
        .iter()
        .skip(1)
        .map(|e| !e.empty_layer)
        .collect();
    assert_eq!(
        layers,
        vec![
            false, false, false, true, true, true, true, false, false, false, false, false, false,
            false, false
        ]
    );
    assert!(config
        .history
        .iter()
        .skip(1)
        .all(|e| e.comment.as_deref() == Some("buildkit.dockerfile.v0")));
}

#[test]
fn image_config_follows_docker() {
    let df = "FROM alpine\nEXPOSE 80 8000-8001/TCP 53/udp\nVOLUME [\"/data\"]\nLABEL a=1 b=\"two words\"\nWORKDIR app\nWORKDIR ../srv\nUSER 1000:1000\nCMD [\"serve\"]\nENTRYPOINT [\"/entry\"]\nHEALTHCHECK NONE\n";
    let p = plan(df, &opts(&[]));
    let c = &p.stage(0).unwrap().config.config;
    assert_eq!(
        c.exposed_ports.keys().cloned().collect::<Vec<_>>(),
        vec!["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]
    );
    assert!(c.volumes.contains_key("/data"));
    assert_eq!(c.labels.get("b").map(String::as_str), Some("two words"));
    assert_eq!(c.working_dir.as_deref(), Some("/srv"));
    assert_eq!(c.user.as_deref(), Some("1000:1000"));
    // CMD set in this stage survives a later ENTRYPOINT.
    assert_eq!(c.cmd.as_deref(), Some(&["serve".to_string()][..]));
    assert_eq!(c.entrypoint.as_deref(), Some(&["/entry".to_string()][..]));
    assert_eq!(c.healthcheck.as_ref().unwrap().test, vec!["NONE"]);
    // The base image's PATH is kept (the fake registry sets one).
    assert_eq!(c.env_value("PATH"), Some("/opt/base/bin:/usr/bin:/bin"));

    // ENTRYPOINT resets an inherited CMD.
    let p = plan("FROM alpine\nENTRYPOINT [\"/entry\"]\n", &opts(&[]));
    assert_eq!(p.stage(0).unwrap().config.config.cmd, None);
    // Shell form goes through SHELL.
    let p = plan(
        "FROM alpine\nSHELL [\"/bin/bash\", \"-eu\", \"-c\"]\nCMD echo $HOME\n",
        &opts(&[]),
    );
    assert_eq!(
        p.stage(0).unwrap().config.config.cmd.as_deref().unwrap(),
        &["/bin/bash", "-eu", "-c", "echo $HOME"]
    );
}

#[test]
fn default_path_when_the_base_sets_none() {
    for df in ["FROM scratch\nCOPY a /a\n", "FROM nopath/busybox\n"] {
        let p = plan(df, &opts(&[]));
        assert_eq!(
            p.stage(0).unwrap().config.config.env_value("PATH"),
            Some(DEFAULT_PATH),
            "{df}"
        );
    }
}

#[test]
fn offline_resolver_leaves_bases_unresolved() {
    let p = forge_planner::plan(
        &parse("FROM alpine:3.20\nRUN true\n"),
        &opts(&[]),
        &OfflineResolver,
    )
    .unwrap();
    let s = p.stage(0).unwrap();
    assert!(s.base_unresolved);
    assert!(matches!(&s.base, StageBase::Image { resolved: None, .. }));
    assert!(matches!(
        &p.graph.op(s.ops[0]).kind,
        OpKind::Image { resolved: None, .. }
    ));
    assert_eq!(s.config.config.env_value("PATH"), Some(DEFAULT_PATH));
    // A resolved base changes the image op's digest (the manifest digest is part of it).
    let resolved = forge_planner::plan(
        &parse("FROM alpine:3.20\nRUN true\n"),
        &opts(&[]),
        &FakeRegistry,
    )
    .unwrap();
    assert_ne!(resolved.graph.op(0).digest, p.graph.op(0).digest);
}

#[test]
fn independent_stages_are_independent_branches() {
    let df = "FROM alpine AS a\nRUN echo a\nFROM alpine AS b\nRUN echo b\nFROM scratch\nCOPY --from=a /x /a\nCOPY --from=b /x /b\n";
    let p = plan(df, &opts(&[]));
    let a = p.stage(0).unwrap().result;
    let b = p.stage(1).unwrap().result;
    assert!(!p.graph.descendants(a).contains(&b));
    assert!(!p.graph.descendants(b).contains(&a));
    let last = p.stage(2).unwrap().result;
    assert!(p.graph.descendants(a).contains(&last) && p.graph.descendants(b).contains(&last));
}

#[test]
fn editing_one_instruction_changes_only_it_and_its_descendants() {
    let edited = MULTI.replace(
        "RUN go build -o /out/app ./cmd/app",
        "RUN go build -o /out/app ./cmd/other",
    );
    let mut o = opts(&[]);
    o.target = Some("test".into());
    let before = plan(MULTI, &o);
    let after = plan(&edited, &o);
    assert_eq!(before.graph.len(), after.graph.len());
    let edited_op = before
        .graph
        .ops()
        .iter()
        .find(|op| op.line == 6)
        .unwrap()
        .id;
    let mut expected = before.graph.descendants(edited_op);
    expected.insert(edited_op);
    let changed: BTreeSet<usize> = before
        .graph
        .ops()
        .iter()
        .zip(after.graph.ops())
        .filter(|(a, b)| a.digest != b.digest)
        .map(|(a, _)| a.id)
        .collect();
    assert_eq!(changed, expected);
    assert!(
        changed.len() >= 3,
        "the test stage's ops are downstream: {changed:?}"
    );
}

#[test]
fn heredocs_in_run_and_copy() {
    let df = "FROM alpine\nENV NAME=world\nRUN <<EOF\necho hello\nEOF\nCOPY <<greeting.txt /greeting.txt\nhello $NAME\nEOF\n";
    let df = df
        .replace("<<greeting.txt", "<<EOT")
        .replace("hello $NAME\nEOF", "hello $NAME\nEOT");
    let p = plan(&df, &opts(&[]));
    let r = &runs(&p, 0)[0];
    assert_eq!(r.argv, vec!["/bin/sh", "-c", "echo hello\n"]);
    let s = p.stage(0).unwrap();
    let file = s
        .ops
        .iter()
        .find_map(|&id| match &p.graph.op(id).kind {
            OpKind::File(f) => Some(f.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(file.inline.len(), 1);
    assert_eq!(file.inline[0].content, "hello world\n");
    assert_eq!(file.input, None, "a heredoc needs no source op");
    assert!(history(&p, 0).contains(&"COPY <<EOT /greeting.txt # buildkit".to_string()));
}

#[test]
fn try_plan_reports_errors_not_panics_on_odd_input() {
    // Not errors: an unknown --from name is an image; a stage named like its image is the image.
    assert!(try_plan("FROM alpine\nCOPY --from=nginx:latest /a /b\n", &opts(&[])).is_ok());
    let p = plan("FROM golang AS golang\nRUN true\n", &opts(&[]));
    assert!(
        matches!(&p.stage(0).unwrap().base, StageBase::Image { reference, .. } if reference == "golang")
    );
}

/// Records which images the planner asks about.
#[derive(Default)]
struct Recording(std::cell::RefCell<Vec<String>>);

impl forge_planner::ImageResolver for Recording {
    fn resolve(
        &self,
        reference: &str,
        platform: &forge_planner::Platform,
    ) -> Option<forge_planner::ResolvedImage> {
        self.0.borrow_mut().push(reference.to_string());
        FakeRegistry.resolve(reference, platform)
    }
}

#[test]
fn only_needed_images_are_resolved() {
    let rec = Recording::default();
    let df = parse("FROM pruned/image AS unused\nFROM alpine AS final\nCOPY --from=busybox /bin/busybox /bin/\n");
    forge_planner::plan(&df, &opts(&[]), &rec).unwrap();
    assert_eq!(
        *rec.0.borrow(),
        vec!["alpine".to_string(), "busybox".to_string()]
    );
}

#[test]
fn a_trigger_can_pull_in_another_stage() {
    let p = plan(
        "FROM alpine AS helper\nRUN echo > /helper.txt\nFROM onbuild-from/app\nRUN true\n",
        &opts(&[]),
    );
    assert_eq!(
        p.stages.iter().map(|s| s.index).collect::<Vec<_>>(),
        vec![0, 1]
    );
    let s = p.stage(1).unwrap();
    let copy = p.graph.op(s.ops[1]);
    assert_eq!(copy.inputs[1].op, p.stage(0).unwrap().result);
    assert_eq!(copy.line, 3);
}

#[test]
fn heredoc_script_with_shebang_runs_from_dev_pipes() {
    let p = plan(
        "FROM python:3.12\nRUN <<EOF\n#!/usr/bin/env python3\nprint('hi')\nEOF\n",
        &opts(&[]),
    );
    let r = &runs(&p, 0)[0];
    assert_eq!(r.argv, vec!["/bin/sh", "-c", "/dev/pipes/EOF"]);
    assert_eq!(r.pipes.len(), 1);
    assert_eq!(r.pipes[0].name, "EOF");
    assert_eq!(r.pipes[0].content, "#!/usr/bin/env python3\nprint('hi')\n");
}
