//! Helpers shared by the planner tests: parsing, options pinned to linux/amd64 so snapshots
//! do not depend on the machine, and a fake registry that resolves images deterministically.

use std::collections::BTreeMap;

use forge_parser::Dockerfile;
use forge_planner::{
    ContainerConfig, History, ImageConfig, ImageResolver, OpKind, Plan, PlanError, PlanOptions,
    Platform, ResolvedImage, RunOp,
};

pub(crate) fn parse(text: &str) -> Dockerfile {
    forge_parser::parse(text)
        .unwrap_or_else(|e| panic!("test Dockerfile does not parse: {e}\n{text}"))
}

pub(crate) fn amd64() -> Platform {
    Platform::parse("linux/amd64").unwrap()
}

pub(crate) fn opts(args: &[(&str, &str)]) -> PlanOptions {
    PlanOptions {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target: None,
        platform: amd64(),
        build_platform: amd64(),
        dockerignore: Vec::new(),
        named_contexts: BTreeMap::new(),
    }
}

/// Resolves every image except `unresolved/...`, with a digest derived from the reference.
/// `onbuild/...` images carry ONBUILD triggers (`onbuild-from/...`: one reading stage `helper`); `nopath/...` images set no PATH.
#[derive(Debug, Default)]
pub(crate) struct FakeRegistry;

impl ImageResolver for FakeRegistry {
    fn resolve(&self, reference: &str, platform: &Platform) -> Option<ResolvedImage> {
        if reference.starts_with("unresolved/") {
            return None;
        }
        let mut config = ContainerConfig {
            env: vec![
                "PATH=/opt/base/bin:/usr/bin:/bin".to_string(),
                "BASE=1".to_string(),
            ],
            cmd: Some(vec!["/bin/sh".to_string()]),
            ..ContainerConfig::default()
        };
        if reference.starts_with("nopath/") {
            config.env.clear();
        }
        if reference.starts_with("onbuild-from/") {
            config.on_build = vec!["COPY --from=helper /helper.txt /helper.txt".to_string()];
        }
        if reference.starts_with("onbuild/") {
            config.on_build = vec![
                "COPY trigger.txt /trigger.txt".to_string(),
                "RUN echo triggered".to_string(),
            ];
        }
        Some(ResolvedImage {
            reference: format!("docker.io/library/{reference}"),
            digest: format!("sha256:{:064x}", fnv(reference)),
            config: ImageConfig {
                architecture: platform.architecture.clone(),
                os: platform.os.clone(),
                config,
                history: vec![History {
                    created_by: Some(format!("base layer of {reference}")),
                    ..History::default()
                }],
                ..ImageConfig::default()
            },
        })
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

pub(crate) fn try_plan(text: &str, opts: &PlanOptions) -> Result<Plan, PlanError> {
    forge_planner::plan(&parse(text), opts, &FakeRegistry)
}

pub(crate) fn plan(text: &str, opts: &PlanOptions) -> Plan {
    try_plan(text, opts).unwrap_or_else(|e| panic!("planning failed: {e}\n{text}"))
}

/// The RUN ops of a stage, in order.
pub(crate) fn runs(plan: &Plan, stage: usize) -> Vec<RunOp> {
    plan.stage(stage)
        .expect("stage planned")
        .ops
        .iter()
        .filter_map(|&id| match &plan.graph.op(id).kind {
            OpKind::Run(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

pub(crate) fn env_map(run: &RunOp) -> BTreeMap<String, String> {
    run.env
        .iter()
        .map(|e| {
            let (k, v) = e.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The `created_by` texts of a stage's history, base entries included.
pub(crate) fn history(plan: &Plan, stage: usize) -> Vec<String> {
    plan.stage(stage)
        .unwrap()
        .config
        .history
        .iter()
        .map(|h| h.created_by.clone().unwrap_or_default())
        .collect()
}
