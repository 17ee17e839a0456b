//! Text and DOT output; the DOT must render with graphviz.

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::common::{opts, plan};

const DF: &str = "\
FROM alpine AS build
RUN echo build > /out
FROM alpine AS unused
RUN echo nobody needs me
FROM alpine AS final
RUN --mount=type=cache,target=/cache --mount=type=bind,from=build,source=/out,target=/in cat /in
COPY --from=build /out /out
COPY app.conf /etc/app.conf
CMD [\"/bin/true\"]
";

#[test]
fn dot_renders_with_graphviz() {
    let p = plan(DF, &opts(&[]));
    let dot = forge_planner::render_dot(&p);
    assert!(dot.contains("subgraph cluster_stage0"), "{dot}");
    assert!(dot.contains("subgraph cluster_stage2"), "{dot}");
    assert!(
        !dot.contains("cluster_stage1"),
        "a pruned stage is drawn:\n{dot}"
    );
    assert!(dot.contains("label=\"COPY --from\""), "{dot}");
    assert!(dot.contains("label=\"mount /in\""), "{dot}");
    assert!(!dot.contains("nobody needs me"));

    let mut child = match Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            panic!("graphviz `dot` is needed for this test (scripts/install-deps installs it): {e}")
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dot.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = String::from_utf8(out.stdout).unwrap();
    assert!(svg.contains("<svg"), "no svg produced");
    assert!(
        svg.contains("stage 2 &quot;final&quot; (target)"),
        "target cluster label missing"
    );
}

#[test]
fn text_lists_stages_ops_and_config() {
    let p = plan(DF, &opts(&[("UNUSED_ARG", "1")]));
    let text = forge_planner::render_text(&p);
    assert!(text.starts_with("target: 2 \"final\" (line 5)"), "{text}");
    assert!(text.contains("RUN echo build > /out"), "{text}");
    assert!(!text.contains("nobody needs me"), "{text}");
    assert!(text.contains("Cmd: [\"/bin/true\"]"), "{text}");
    assert!(
        text.contains("warnings:\n  build arg \"UNUSED_ARG\""),
        "{text}"
    );
}

#[test]
fn json_has_graph_stages_and_target() {
    let p = plan(DF, &opts(&[]));
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["target"], 2);
    assert_eq!(json["stages"].as_array().unwrap().len(), 2);
    let ops = json["graph"]["ops"].as_array().unwrap();
    assert_eq!(ops.len(), p.graph.len());
    assert!(ops
        .iter()
        .all(|op| op["digest"].as_str().unwrap().starts_with("blake3:")));
    assert_eq!(json["stages"][1]["config"]["config"]["Cmd"][0], "/bin/true");
}

/// docs/plan-multistage.svg (shown in README) must be regenerated when digests change:
/// `forge plan --format dot -f crates/planner/tests/data/multistage.Dockerfile crates/planner/tests/data | dot -Tsvg`.
#[test]
fn readme_picture_is_current() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("tests/data/multistage.Dockerfile")).unwrap();
    let df = forge_parser::parse(&text).unwrap();
    let p = forge_planner::plan(&df, &opts(&[]), &forge_planner::OfflineResolver).unwrap();
    let svg = std::fs::read_to_string(root.join("../../docs/plan-multistage.svg")).unwrap();
    assert!(
        p.stage(2).is_none(),
        "the test stage is pruned from the picture"
    );
    for op in p.graph.ops() {
        if matches!(
            op.kind,
            forge_planner::OpKind::Image { .. }
                | forge_planner::OpKind::Scratch
                | forge_planner::OpKind::Context { .. }
        ) {
            continue;
        }
        let short = &op.digest["blake3:".len().."blake3:".len() + 12];
        assert!(
            svg.contains(short),
            "docs/plan-multistage.svg lacks op {} ({short}); regenerate it",
            op.name
        );
    }
}
