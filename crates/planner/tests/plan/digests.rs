//! Digest stability, as a property: the same Dockerfile and arguments always give the same
//! digests, and editing one instruction changes exactly the ops of that instruction and
//! their descendants.

use std::collections::BTreeSet;

use proptest::prelude::*;

use crate::common::{opts, plan};

/// One generated instruction; `token` is what an edit changes.
#[derive(Debug, Clone)]
enum Step {
    Run,
    Env,
    Label,
    Arg,
    Workdir,
    User,
    CopyContext,
    CopyFrom(usize),
    MountFrom(usize),
    Cmd,
}

#[derive(Debug, Clone)]
struct Stage {
    /// `Some(j)`: FROM an earlier stage j; `None`: FROM an image.
    base: Option<usize>,
    steps: Vec<(Step, u32)>,
}

fn render(stages: &[Stage]) -> String {
    let mut out = String::from("ARG GLOBAL=1\n");
    for (i, stage) in stages.iter().enumerate() {
        match stage.base {
            Some(j) => out.push_str(&format!("FROM s{j} AS s{i}\n")),
            None => out.push_str(&format!("FROM alpine:3.{i} AS s{i}\n")),
        }
        for (n, (step, token)) in stage.steps.iter().enumerate() {
            let t = format!("t{token}");
            let line = match step {
                Step::Run => format!("RUN echo {t}"),
                Step::Env => format!("ENV E{n}={t}"),
                Step::Label => format!("LABEL l{n}={t}"),
                Step::Arg => format!("ARG A{n}={t}"),
                Step::Workdir => format!("WORKDIR /w/{t}"),
                Step::User => format!("USER {t}"),
                // Stage and step in the path keep every context read distinct.
                Step::CopyContext => format!("COPY src{i}_{n}/{t} /dst/"),
                Step::CopyFrom(j) => format!("COPY --from=s{j} /{t} /from{j}/"),
                Step::MountFrom(j) => format!("RUN --mount=type=bind,from=s{j},target=/m echo {t}"),
                Step::Cmd => format!("CMD [\"{t}\"]"),
            };
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

fn step(stage: usize) -> BoxedStrategy<Step> {
    let mut options: Vec<BoxedStrategy<Step>> = vec![
        Just(Step::Run).boxed(),
        Just(Step::Env).boxed(),
        Just(Step::Label).boxed(),
        Just(Step::Arg).boxed(),
        Just(Step::Workdir).boxed(),
        Just(Step::User).boxed(),
        Just(Step::CopyContext).boxed(),
        Just(Step::Cmd).boxed(),
    ];
    if stage > 0 {
        options.push((0..stage).prop_map(Step::CopyFrom).boxed());
        options.push((0..stage).prop_map(Step::MountFrom).boxed());
    }
    proptest::strategy::Union::new(options).boxed()
}

fn stages() -> impl Strategy<Value = Vec<Stage>> {
    (1usize..=4).prop_flat_map(|count| {
        let per_stage: Vec<BoxedStrategy<Stage>> = (0..count)
            .map(|i| {
                let base = if i == 0 {
                    Just(None).boxed()
                } else {
                    prop_oneof![Just(None), (0..i).prop_map(Some)].boxed()
                };
                (base, proptest::collection::vec((step(i), 0u32..50), 1..6))
                    .prop_map(|(base, steps)| Stage { base, steps })
                    .boxed()
            })
            .collect();
        per_stage
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn same_input_same_digests(stages in stages(), arg in "[a-z]{0,4}") {
        let text = render(&stages);
        let o = opts(&[("GLOBAL", arg.as_str())]);
        let a = plan(&text, &o);
        let b = plan(&text, &o);
        let digests = |p: &forge_planner::Plan| p.graph.ops().iter().map(|op| op.digest.clone()).collect::<Vec<_>>();
        prop_assert_eq!(digests(&a), digests(&b));
        prop_assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
    }

    #[test]
    fn an_edit_changes_exactly_that_op_and_its_descendants(
        stages in stages(),
        pick in any::<prop::sample::Index>(),
    ) {
        // Choose one instruction (stage, step) and change its token.
        let all: Vec<(usize, usize)> = stages
            .iter()
            .enumerate()
            .flat_map(|(i, s)| (0..s.steps.len()).map(move |n| (i, n)))
            .collect();
        let (si, ni) = all[pick.index(all.len())];
        let mut edited = stages.clone();
        edited[si].steps[ni].1 += 1000;

        let text = render(&stages);
        let edited_text = render(&edited);
        // Line of the edited instruction: 1 global ARG line, then FROM + steps per stage.
        let line = 2 + stages[..si].iter().map(|s| 1 + s.steps.len()).sum::<usize>() + 1 + ni;
        prop_assert!(edited_text.lines().nth(line - 1) != text.lines().nth(line - 1));

        let before = plan(&text, &opts(&[]));
        let after = plan(&edited_text, &opts(&[]));
        prop_assert_eq!(before.graph.len(), after.graph.len());

        let mut expected = BTreeSet::new();
        for op in before.graph.ops().iter().filter(|op| op.line == line) {
            expected.insert(op.id);
            expected.extend(before.graph.descendants(op.id));
        }
        let changed: BTreeSet<usize> = before
            .graph
            .ops()
            .iter()
            .zip(after.graph.ops())
            .filter(|(a, b)| a.digest != b.digest)
            .map(|(a, _)| a.id)
            .collect();
        // An edit in a stage the target does not need touches no planned op at all.
        prop_assert_eq!(changed, expected, "edited line {}:\n{}", line, edited_text);
    }
}
