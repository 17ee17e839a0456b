//! Plans for people: a text listing and a Graphviz DOT picture (stages as clusters, steps in
//! order, `--from` and mount edges, sources outside the clusters).

use std::fmt::Write as _;

use crate::graph::{InputRole, Op, OpKind};
use crate::plan::{Plan, StageBase};

/// The plan as an indented listing: stages, their ops with digests and inputs, each stage's
/// config, and the warnings.
pub fn render_text(plan: &Plan) -> String {
    let mut out = String::new();
    let target = plan.target_stage();
    let _ = writeln!(
        out,
        "target: {} (line {})",
        stage_title(target.index, target.name.as_deref()),
        target.line
    );
    for stage in &plan.stages {
        let base = match &stage.base {
            StageBase::Scratch => "scratch".to_string(),
            StageBase::Stage { index } => {
                let name = plan.stage(*index).and_then(|s| s.name.clone());
                format!("stage {}", stage_title(*index, name.as_deref()))
            }
            StageBase::Image {
                reference,
                resolved,
            } => match resolved {
                Some(r) => format!("{reference} ({}@{})", r.reference, r.digest),
                None => format!("{reference} (unresolved)"),
            },
        };
        let _ = writeln!(
            out,
            "\nstage {} FROM {base} [{}] line {}",
            stage_title(stage.index, stage.name.as_deref()),
            stage.platform,
            stage.line
        );
        for &id in &stage.ops {
            let op = plan.graph.op(id);
            let inputs: Vec<String> = op
                .inputs
                .iter()
                .map(|i| format!("#{} {}", i.op, role_name(i.role)))
                .collect();
            let _ = write!(
                out,
                "  #{:<3} {}  {}",
                op.id,
                short_digest(&op.digest),
                truncate(&op_title(op), 100)
            );
            if !inputs.is_empty() {
                let _ = write!(out, "  <- {}", inputs.join(", "));
            }
            out.push('\n');
            for i in op.inputs.iter().filter(|i| i.role != InputRole::Base) {
                let src = plan.graph.op(i.op);
                if src.stage != stage.index
                    || matches!(src.kind, OpKind::Context { .. } | OpKind::Image { .. })
                {
                    let _ = writeln!(
                        out,
                        "        {} #{}: {}",
                        role_name(i.role),
                        src.id,
                        truncate(&op_title(src), 80)
                    );
                }
            }
        }
        let c = &stage.config.config;
        let _ = writeln!(out, "  config:");
        let _ = writeln!(out, "    Env: {:?}", c.env);
        if let Some(e) = &c.entrypoint {
            let _ = writeln!(out, "    Entrypoint: {e:?}");
        }
        if let Some(cmd) = &c.cmd {
            let _ = writeln!(out, "    Cmd: {cmd:?}");
        }
        if let Some(w) = &c.working_dir {
            let _ = writeln!(out, "    WorkingDir: {w}");
        }
        if let Some(u) = &c.user {
            let _ = writeln!(out, "    User: {u}");
        }
        if !c.exposed_ports.is_empty() {
            let ports: Vec<&str> = c.exposed_ports.keys().map(String::as_str).collect();
            let _ = writeln!(out, "    ExposedPorts: {}", ports.join(" "));
        }
        if !c.labels.is_empty() {
            let _ = writeln!(out, "    Labels: {:?}", c.labels);
        }
        let layers = stage
            .config
            .history
            .iter()
            .filter(|h| !h.empty_layer)
            .count();
        let _ = writeln!(
            out,
            "    history: {} entries, {layers} with layers",
            stage.config.history.len()
        );
    }
    if !plan.warnings.is_empty() {
        let _ = writeln!(out, "\nwarnings:");
        for w in &plan.warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    out
}

/// The plan as Graphviz DOT (`dot -Tsvg`).
pub fn render_dot(plan: &Plan) -> String {
    let mut out = String::new();
    let target = plan.target_stage();
    out.push_str("digraph plan {\n");
    let _ = writeln!(
        out,
        "  graph [rankdir=TB, fontname=\"Helvetica\", fontsize=12, nodesep=0.35, ranksep=0.4, labelloc=t, label=\"{}\"];",
        esc(&format!("forge plan: target {}", stage_title(target.index, target.name.as_deref())))
    );
    out.push_str("  node [shape=box, style=\"rounded,filled\", fillcolor=\"#ffffff\", color=\"#475569\", fontname=\"Helvetica\", fontsize=10];\n");
    out.push_str("  edge [color=\"#475569\", fontname=\"Helvetica\", fontsize=9];\n");

    // Sources (images, scratch, build context) stand outside the stages that share them.
    for op in plan.graph.ops() {
        let (label, attrs) = match &op.kind {
            OpKind::Image {
                reference,
                resolved,
                ..
            } => (
                format!(
                    "image {reference}\n{}",
                    if resolved.is_some() {
                        "resolved"
                    } else {
                        "unresolved"
                    }
                ),
                "shape=box3d, fillcolor=\"#dbeafe\"",
            ),
            OpKind::Scratch => ("scratch".to_string(), "shape=box, style=\"dashed,rounded\""),
            OpKind::Context { include, .. } => (
                format!(
                    "build context\n{}",
                    if include.is_empty() {
                        "(all)".to_string()
                    } else {
                        truncate(&include.join(" "), 40)
                    }
                ),
                "shape=folder, fillcolor=\"#fef3c7\"",
            ),
            _ => continue,
        };
        let _ = writeln!(out, "  op{} [label=\"{}\", {attrs}];", op.id, esc(&label));
    }

    for stage in &plan.stages {
        let is_target = stage.index == plan.target;
        let _ = writeln!(out, "  subgraph cluster_stage{} {{", stage.index);
        let _ = writeln!(
            out,
            "    label=\"{}\"; style=\"rounded\"; color=\"{}\"; penwidth={}; fontname=\"Helvetica\";",
            esc(&format!(
                "stage {}{}",
                stage_title(stage.index, stage.name.as_deref()),
                if is_target { " (target)" } else { "" }
            )),
            if is_target { "#16a34a" } else { "#64748b" },
            if is_target { 2 } else { 1 }
        );
        for &id in &stage.ops {
            let op = plan.graph.op(id);
            if matches!(
                op.kind,
                OpKind::Image { .. } | OpKind::Scratch | OpKind::Context { .. }
            ) {
                continue;
            }
            let mut label = truncate(&without_flags(&step_text(op)), 48);
            // Mounts with no source op (cache, tmpfs, secret, ssh) have no edge: list them.
            if let OpKind::Run(run) = &op.kind {
                for m in run.mounts.iter().filter(|m| m.input.is_none()) {
                    let kind = serde_json::to_value(m.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string));
                    label.push_str(&format!(
                        "\n{} {}",
                        kind.unwrap_or_default(),
                        truncate(&m.target, 40)
                    ));
                }
            }
            let label = format!("{label}\n{}", short_digest(&op.digest));
            let fill = match op.kind {
                OpKind::Config { .. } => "fillcolor=\"#f1f5f9\", fontcolor=\"#475569\"",
                OpKind::Run(_) => "fillcolor=\"#dcfce7\"",
                OpKind::File(_) => "fillcolor=\"#ffedd5\"",
                _ => "fillcolor=\"#ffffff\"",
            };
            let _ = writeln!(out, "    op{} [label=\"{}\", {fill}];", op.id, esc(&label));
        }
        out.push_str("  }\n");
    }

    for op in plan.graph.ops() {
        for input in &op.inputs {
            let attrs = match input.role {
                InputRole::Base => String::new(),
                InputRole::CopySource => {
                    let src = plan.graph.op(input.op);
                    let label = if matches!(src.kind, OpKind::Context { .. }) {
                        "COPY"
                    } else {
                        "COPY --from"
                    };
                    format!(" [style=dashed, color=\"#2563eb\", fontcolor=\"#2563eb\", label=\"{label}\"]")
                }
                InputRole::Mount => {
                    let target = match &op.kind {
                        OpKind::Run(run) => run
                            .mounts
                            .iter()
                            .find(|m| {
                                m.input.map(|i| op.inputs.get(i).map(|x| x.op))
                                    == Some(Some(input.op))
                            })
                            .map(|m| m.target.clone())
                            .unwrap_or_default(),
                        _ => String::new(),
                    };
                    format!(
                        " [style=dotted, penwidth=1.5, color=\"#7c3aed\", fontcolor=\"#7c3aed\", label=\"{}\"]",
                        esc(&format!("mount {target}"))
                    )
                }
            };
            let _ = writeln!(out, "  op{} -> op{}{attrs};", input.op, op.id);
        }
    }
    out.push_str("}\n");
    out
}

fn stage_title(index: usize, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("{index} \"{n}\""),
        None => index.to_string(),
    }
}

fn role_name(role: InputRole) -> &'static str {
    match role {
        InputRole::Base => "base",
        InputRole::CopySource => "copy-source",
        InputRole::Mount => "mount",
    }
}

fn short_digest(digest: &str) -> String {
    let hex = digest.split_once(':').map(|(_, h)| h).unwrap_or(digest);
    hex[..hex.len().min(12)].to_string()
}

fn op_title(op: &Op) -> String {
    match &op.kind {
        OpKind::Image {
            reference,
            resolved,
            ..
        } => format!(
            "image {reference}{}",
            if resolved.is_some() {
                ""
            } else {
                " (unresolved)"
            }
        ),
        OpKind::Context { include, .. } if !include.is_empty() => {
            format!("context {}", include.join(" "))
        }
        OpKind::Context { .. } => "context (all)".to_string(),
        _ => op.name.clone(),
    }
}

/// `[build 2/4] RUN make` -> `2/4 RUN make`: the stage is already the cluster's label.
fn step_text(op: &Op) -> String {
    if let Some(rest) = op.name.strip_prefix('[') {
        if let Some((prefix, text)) = rest.split_once("] ") {
            let step = prefix.rsplit(' ').next().unwrap_or(prefix);
            return format!("{step} {text}");
        }
    }
    op.name.clone()
}

/// `2/4 RUN --mount=... cargo build` -> `2/4 RUN cargo build`: flags become edges and lines.
fn without_flags(text: &str) -> String {
    let mut words = text.split(' ').peekable();
    let mut kept: Vec<&str> = Vec::new();
    // The step number and the keyword come first.
    kept.extend(words.next());
    kept.extend(words.next());
    while words.peek().is_some_and(|w| w.starts_with("--")) {
        words.next();
    }
    kept.extend(words);
    kept.join(" ")
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}
