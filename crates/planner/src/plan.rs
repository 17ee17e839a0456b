//! From a parsed Dockerfile to a [`Plan`]: stages, ARG/ENV scoping, `--target` pruning,
//! ONBUILD triggers, the ops of every needed stage and the image config each stage produces.
//!
//! Planning runs in two passes. The outline pass looks at every stage's FROM and `--from`
//! references (which only global ARGs can feed), so bad references are reported whatever the
//! target, and learns which stages the target needs. The second pass walks the needed stages
//! in order, which is a topological order because a stage may only use earlier stages.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use forge_parser::{
    expand_word, expand_word_with, expand_words, CacheSharing, Chmod, CommandLine, Copy,
    Dockerfile, ExpandOptions, Healthcheck, Heredoc, Instruction, InstructionKind, MountType,
    NetworkMode, Run, SecurityMode,
};
use serde::Serialize;

use crate::config::{
    EmptyObject, HealthConfig, History, ImageConfig, ImageResolver, ResolvedImage, DEFAULT_PATH,
};
use crate::error::PlanError;
use crate::gofmt;
use crate::graph::{
    BuildGraph, FileAction, FileOp, InlineFile, Input, InputRole, MountSpec, OpId, OpKind, RunOp,
    SourceRef,
};
use crate::platform::Platform;
use crate::scope::{self, is_proxy_arg};

const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// What a build asks for besides the Dockerfile.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// `--build-arg K=V` (the binary resolves `--build-arg K` from its environment).
    pub build_args: BTreeMap<String, String>,
    /// `--target`; the last stage when `None`.
    pub target: Option<String>,
    /// The platform the image is for (TARGETPLATFORM).
    pub platform: Platform,
    /// The platform steps run on (BUILDPLATFORM): the host.
    pub build_platform: Platform,
    /// `.dockerignore` patterns (see [`crate::dockerignore_patterns`]), applied to every
    /// read of the build context.
    pub dockerignore: Vec<String>,
    /// `--build-context NAME=...`: what a name means in `FROM NAME`, `COPY --from=NAME` and
    /// `RUN --mount=from=NAME` when no stage of the Dockerfile has that name (a stage wins).
    pub named_contexts: BTreeMap<String, NamedContext>,
}

/// What a named build context stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory (`NAME=PATH`): a source of files, not a base image.
    Dir,
    /// An image (`NAME=docker-image://REF`, or an imported OCI layout): `FROM NAME` and
    /// `--from=NAME` mean this reference.
    Image(String),
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            build_args: BTreeMap::new(),
            target: None,
            platform: Platform::host(),
            build_platform: Platform::host(),
            dockerignore: Vec::new(),
            named_contexts: BTreeMap::new(),
        }
    }
}

/// The planned build: the graph of ops, the stages in it and what each produces.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub graph: BuildGraph,
    /// The stages the target needs, in Dockerfile order (pruned stages are absent).
    pub stages: Vec<StagePlan>,
    /// The Dockerfile index of the target stage.
    pub target: usize,
    pub warnings: Vec<PlanWarning>,
}

impl Plan {
    /// The planned stage with this Dockerfile index, if the target needs it.
    pub fn stage(&self, index: usize) -> Option<&StagePlan> {
        self.stages.iter().find(|s| s.index == index)
    }

    /// The stage the build produces.
    pub fn target_stage(&self) -> &StagePlan {
        self.stage(self.target)
            .expect("the target stage is always planned")
    }
}

/// One stage of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct StagePlan {
    /// Position among the Dockerfile's stages (what `--from=N` counts).
    pub index: usize,
    /// The `AS` name as written.
    pub name: Option<String>,
    /// The FROM line.
    pub line: usize,
    pub base: StageBase,
    pub platform: Platform,
    /// The ops this stage added, in order (its base image or scratch first when it has one).
    pub ops: Vec<OpId>,
    /// The op whose result is the stage's filesystem.
    pub result: OpId,
    /// The image config as Docker computes it. When the base is unresolved, this holds only
    /// what the Dockerfile itself sets (on top of Docker's defaults).
    pub config: ImageConfig,
    pub base_unresolved: bool,
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StageBase {
    Scratch,
    Image {
        reference: String,
        /// The resolver's canonical reference and manifest digest, when it knew the image.
        resolved: Option<ResolvedRef>,
    },
    Stage {
        index: usize,
    },
}

/// A resolved base: canonical reference and manifest digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedRef {
    pub reference: String,
    pub digest: String,
}

/// Something worth telling the user that does not stop the build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "warning", rename_all = "snake_case")]
pub enum PlanWarning {
    /// A `--build-arg` that no ARG in the planned stages (or the global scope) declares.
    UnusedBuildArg { name: String },
}

impl fmt::Display for PlanWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanWarning::UnusedBuildArg { name } => {
                write!(
                    f,
                    "build arg {name:?} was not consumed by any ARG of the planned stages"
                )
            }
        }
    }
}

/// Plan a parsed Dockerfile. Base images are looked up through `resolver`; nothing runs.
pub fn plan(
    df: &Dockerfile,
    opts: &PlanOptions,
    resolver: &dyn ImageResolver,
) -> Result<Plan, PlanError> {
    Planner::new(df, opts, resolver)?.run()
}

/// Where a FROM points.
#[derive(Debug, Clone)]
enum BaseRef {
    Scratch,
    Stage(usize),
    Image(String),
}

/// A stage as the outline pass sees it.
#[derive(Debug)]
struct Outline<'a> {
    index: usize,
    name: Option<String>,
    line: usize,
    platform: Platform,
    base: BaseRef,
    resolved: Option<ResolvedImage>,
    /// Whether the resolver was asked about an image base yet.
    looked_up: bool,
    /// ONBUILD triggers of the base, run right after FROM.
    triggers: Vec<Instruction>,
    body: &'a [Instruction],
    deps: BTreeSet<usize>,
}

struct Planner<'a> {
    escape: char,
    opts: &'a PlanOptions,
    resolver: &'a dyn ImageResolver,
    instructions: &'a [Instruction],
    /// Global ARG values (build args applied) plus the automatic platform args.
    global_vars: BTreeMap<String, String>,
    /// Names of the ARGs declared before the first FROM.
    global_declared: BTreeSet<String>,
    builtin_platform: BTreeMap<String, String>,
    consumed: BTreeSet<String>,
    created: Option<String>,
    graph: BuildGraph,
    planned: BTreeMap<usize, StagePlan>,
}

/// The evolving state of the stage being planned.
struct StageState {
    index: usize,
    label: String,
    platform: Platform,
    config: ImageConfig,
    /// ARGs declared in this stage, in order, with their values.
    args: Vec<(String, Option<String>)>,
    last: OpId,
    cmd_set: bool,
    ops: Vec<OpId>,
    step: usize,
    total: usize,
}

impl StageState {
    /// The variables an instruction's words expand against: the stage's ARGs, then ENV on top
    /// (ENV always wins over an ARG of the same name).
    fn vars(&self) -> BTreeMap<String, String> {
        let mut vars: BTreeMap<String, String> = self
            .args
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
            .collect();
        for entry in &self.config.config.env {
            let (k, v) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
            vars.insert(k.to_string(), v.to_string());
        }
        vars
    }

    fn workdir(&self) -> Option<&str> {
        self.config
            .config
            .working_dir
            .as_deref()
            .filter(|w| !w.is_empty())
    }

    fn shell(&self) -> Vec<String> {
        self.config
            .config
            .shell
            .clone()
            .unwrap_or_else(|| vec!["/bin/sh".to_string(), "-c".to_string()])
    }
}

impl<'a> Planner<'a> {
    fn new(
        df: &'a Dockerfile,
        opts: &'a PlanOptions,
        resolver: &'a dyn ImageResolver,
    ) -> Result<Self, PlanError> {
        if opts.platform != opts.build_platform {
            return Err(PlanError::UnsupportedTargetPlatform {
                platform: opts.platform.to_string(),
                host: opts.build_platform.to_string(),
            });
        }
        let created = match opts.build_args.get("SOURCE_DATE_EPOCH") {
            Some(v) => match v.trim().parse::<i64>() {
                Ok(secs) if secs >= 0 => Some(scope::rfc3339(secs)),
                _ => return Err(PlanError::InvalidSourceDateEpoch { value: v.clone() }),
            },
            None => None,
        };
        let builtin_platform = scope::platform_args(&opts.platform, &opts.build_platform);
        Ok(Planner {
            escape: df.escape,
            opts,
            resolver,
            instructions: &df.instructions,
            global_vars: builtin_platform.clone(),
            global_declared: BTreeSet::new(),
            builtin_platform,
            consumed: BTreeSet::new(),
            created,
            graph: BuildGraph::default(),
            planned: BTreeMap::new(),
        })
    }

    fn run(mut self) -> Result<Plan, PlanError> {
        let instructions = self.instructions;
        let first_from = instructions
            .iter()
            .position(|i| matches!(i.kind, InstructionKind::From(_)))
            .ok_or(PlanError::NoStages)?;
        self.global_args(&instructions[..first_from])?;
        let mut outlines = self.outline(&instructions[first_from..])?;
        let target = self.target_index(&outlines)?;
        let needed = self.resolve_needed(&mut outlines, target)?;

        for outline in outlines.iter().filter(|o| needed.contains(&o.index)) {
            let stage = self.plan_stage(outline, &outlines)?;
            self.planned.insert(outline.index, stage);
        }

        let warnings = self
            .opts
            .build_args
            .keys()
            .filter(|k| !self.consumed.contains(*k) && !scope::is_predefined_arg(k))
            .map(|k| PlanWarning::UnusedBuildArg { name: k.clone() })
            .collect();
        Ok(Plan {
            graph: self.graph,
            stages: self.planned.into_values().collect(),
            target,
            warnings,
        })
    }

    /// ARGs before the first FROM: visible to FROM lines and, when redeclared, to stages.
    fn global_args(&mut self, globals: &[Instruction]) -> Result<(), PlanError> {
        for instr in globals {
            let line = instr.node.span.start.line;
            let InstructionKind::Arg(decls) = &instr.kind else {
                return Err(PlanError::InstructionBeforeFrom {
                    line,
                    keyword: instr.kind.keyword(),
                });
            };
            for decl in decls {
                self.global_declared.insert(decl.name.clone());
                self.consumed.insert(decl.name.clone());
                let value = match (self.opts.build_args.get(&decl.name), &decl.default) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(default)) => {
                        Some(self.expand(default, &self.global_vars, line, "ARG")?)
                    }
                    (None, None) => None,
                };
                if let Some(value) = value {
                    self.global_vars.insert(decl.name.clone(), value);
                }
            }
        }
        Ok(())
    }

    /// The outline pass: every stage's base, platform, triggers and stage dependencies.
    fn outline(&self, rest: &'a [Instruction]) -> Result<Vec<Outline<'a>>, PlanError> {
        let mut starts: Vec<usize> = rest
            .iter()
            .enumerate()
            .filter(|(_, i)| matches!(i.kind, InstructionKind::From(_)))
            .map(|(n, _)| n)
            .collect();
        starts.push(rest.len());
        let names: Vec<(Option<String>, usize)> = starts
            .windows(2)
            .map(|w| {
                let instr = &rest[w[0]];
                let InstructionKind::From(from) = &instr.kind else {
                    unreachable!("split on FROM")
                };
                (
                    from.alias.as_ref().map(|a| a.value.to_ascii_lowercase()),
                    instr.node.span.start.line,
                )
            })
            .collect();
        for (i, (name, line)) in names.iter().enumerate() {
            if let Some(name) = name {
                if let Some((_, first_line)) =
                    names[..i].iter().find(|(n, _)| n.as_ref() == Some(name))
                {
                    return Err(PlanError::DuplicateStageName {
                        line: *line,
                        name: name.clone(),
                        first_line: *first_line,
                    });
                }
            }
        }

        let mut outlines: Vec<Outline<'a>> = Vec::new();
        for (index, w) in starts.windows(2).enumerate() {
            let from_instr = &rest[w[0]];
            let InstructionKind::From(from) = &from_instr.kind else {
                unreachable!("split on FROM")
            };
            let line = from_instr.node.span.start.line;
            let body = &rest[w[0] + 1..w[1]];

            for name in scope::plain_references(&from.image, self.escape) {
                if !self.global_vars.contains_key(&name) {
                    return Err(PlanError::UndefinedVariable {
                        line,
                        instruction: "FROM",
                        name,
                    });
                }
            }
            let image = self.expand(&from.image, &self.global_vars, line, "FROM")?;
            if image.is_empty() {
                return Err(PlanError::EmptyBaseName {
                    line,
                    written: from.image.clone(),
                });
            }
            let platform = match &from.platform {
                Some(written) => {
                    for name in scope::plain_references(written, self.escape) {
                        if !self.global_vars.contains_key(&name) {
                            return Err(PlanError::UndefinedVariable {
                                line,
                                instruction: "FROM --platform",
                                name,
                            });
                        }
                    }
                    let text = self.expand(written, &self.global_vars, line, "FROM")?;
                    let platform = Platform::parse(&text).ok_or(PlanError::InvalidPlatform {
                        line,
                        platform: text,
                    })?;
                    if platform != self.opts.build_platform {
                        return Err(PlanError::UnsupportedPlatform {
                            line,
                            platform: platform.to_string(),
                            host: self.opts.build_platform.to_string(),
                        });
                    }
                    platform
                }
                None => self.opts.platform.clone(),
            };

            // BuildKit only looks for earlier stages here: `FROM alpine AS alpine` is the image.
            let lowered = image.to_ascii_lowercase();
            let base = match names[..index]
                .iter()
                .position(|(n, _)| n.as_deref() == Some(lowered.as_str()))
            {
                Some(j) => BaseRef::Stage(j),
                None => match self.named_context(&image) {
                    Some(NamedContext::Image(reference)) => BaseRef::Image(reference.clone()),
                    Some(NamedContext::Dir) => {
                        return Err(PlanError::NamedContextNotImage { line, name: image });
                    }
                    None if image == "scratch" => BaseRef::Scratch,
                    None => BaseRef::Image(image.clone()),
                },
            };

            let mut deps = BTreeSet::new();
            let (resolved, triggers) = match &base {
                BaseRef::Scratch => (None, Vec::new()),
                BaseRef::Stage(j) => {
                    deps.insert(*j);
                    let triggers = outlines[*j]
                        .body
                        .iter()
                        .filter_map(|i| match &i.kind {
                            InstructionKind::Onbuild(inner) => Some((**inner).clone()),
                            _ => None,
                        })
                        .collect::<Vec<_>>();
                    for t in &triggers {
                        check_trigger(
                            t,
                            &outlines[*j].display_name(),
                            line,
                            &onbuild_expression(t),
                        )?;
                    }
                    (None, triggers)
                }
                // Looked up later, and only when the target needs this stage.
                BaseRef::Image(_) => (None, Vec::new()),
            };

            // Trigger instructions are reported at the FROM that runs them.
            let lines = triggers.iter().map(|t| (t, line));
            for (instr, instr_line) in lines.chain(body.iter().map(|i| (i, i.node.span.start.line)))
            {
                for (word, keyword) in from_references(instr) {
                    if let SourceRef::Stage { index: j } =
                        self.source_ref(&names, index, &word, instr_line, keyword)?
                    {
                        deps.insert(j);
                    }
                }
            }

            outlines.push(Outline {
                index,
                name: from.alias.as_ref().map(|a| a.value.clone()),
                line,
                platform,
                base,
                resolved,
                looked_up: false,
                triggers,
                body,
                deps,
            });
        }
        Ok(outlines)
    }

    /// Resolve the image bases of the stages the target needs (and only those: resolving may
    /// mean a pull), adding their ONBUILD triggers. A trigger can name another stage with
    /// `--from`, so this repeats until the set of needed stages stops growing.
    fn resolve_needed(
        &self,
        outlines: &mut [Outline<'a>],
        target: usize,
    ) -> Result<BTreeSet<usize>, PlanError> {
        let names = stage_names(outlines);
        loop {
            let needed = needed_stages(outlines, target);
            let mut grew = false;
            for &i in &needed {
                let o = &mut outlines[i];
                let BaseRef::Image(reference) = &o.base else {
                    continue;
                };
                if o.looked_up {
                    continue;
                }
                o.looked_up = true;
                let resolved = self.resolver.resolve(reference, &o.platform);
                let mut triggers = Vec::new();
                for text in resolved
                    .iter()
                    .flat_map(|r| r.config.config.on_build.iter())
                {
                    let parsed =
                        forge_parser::parse(text).map_err(|source| PlanError::TriggerParse {
                            line: o.line,
                            base: reference.clone(),
                            trigger: text.clone(),
                            source: Box::new(source),
                        })?;
                    for t in parsed.instructions {
                        check_trigger(&t, reference, o.line, text)?;
                        for (word, keyword) in from_references(&t) {
                            if let SourceRef::Stage { index } =
                                self.source_ref(&names, i, &word, o.line, keyword)?
                            {
                                grew |= o.deps.insert(index) && !needed.contains(&index);
                            }
                        }
                        triggers.push(t);
                    }
                }
                o.resolved = resolved;
                o.triggers = triggers;
            }
            if !grew {
                return Ok(needed);
            }
        }
    }

    /// What a `--from` word names: an earlier stage (by name or index), or else an image.
    fn source_ref(
        &self,
        names: &[(Option<String>, usize)],
        current: usize,
        word: &str,
        line: usize,
        instruction: &'static str,
    ) -> Result<SourceRef, PlanError> {
        // Like FROM, --from sees only the global ARGs (it is resolved before any stage runs).
        let value = self.expand(word, &self.global_vars, line, instruction)?;
        if value.is_empty() {
            return Err(PlanError::EmptyValue {
                line,
                instruction,
                what: "--from",
            });
        }
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            let index: usize = value.parse().unwrap_or(usize::MAX);
            if index >= names.len() {
                return Err(PlanError::StageIndexOutOfRange {
                    line,
                    instruction,
                    index,
                    count: names.len(),
                });
            }
            return stage_ref(names, current, index, value, line, instruction);
        }
        let lowered = value.to_ascii_lowercase();
        match names
            .iter()
            .position(|(n, _)| n.as_deref() == Some(lowered.as_str()))
        {
            Some(index) => stage_ref(names, current, index, value, line, instruction),
            None => match self.named_context(&value) {
                Some(NamedContext::Dir) => Ok(SourceRef::Named { name: value }),
                Some(NamedContext::Image(reference)) => Ok(SourceRef::Image {
                    reference: reference.clone(),
                }),
                None => Ok(SourceRef::Image { reference: value }),
            },
        }
    }

    /// The named context a word names: an exact match first, then ignoring case (stage
    /// names are case-insensitive too).
    fn named_context(&self, word: &str) -> Option<&NamedContext> {
        let named = &self.opts.named_contexts;
        named.get(word).or_else(|| {
            named
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(word))
                .map(|(_, v)| v)
        })
    }

    fn target_index(&self, outlines: &[Outline<'_>]) -> Result<usize, PlanError> {
        let Some(target) = &self.opts.target else {
            return Ok(outlines.len() - 1);
        };
        let lowered = target.to_ascii_lowercase();
        outlines
            .iter()
            .find(|o| o.name.as_ref().map(|n| n.to_ascii_lowercase()) == Some(lowered.clone()))
            .map(|o| o.index)
            .ok_or_else(|| PlanError::UnknownTarget {
                target: target.clone(),
                stages: outlines.iter().filter_map(|o| o.name.clone()).collect(),
            })
    }

    fn expand(
        &self,
        word: &str,
        vars: &BTreeMap<String, String>,
        line: usize,
        instruction: &'static str,
    ) -> Result<String, PlanError> {
        expand_word(word, self.escape, vars)
            .map(|e| e.value)
            .map_err(|source| PlanError::Expand {
                line,
                instruction,
                word: word.to_string(),
                source: Box::new(source),
            })
    }

    fn plan_stage(
        &mut self,
        outline: &Outline<'a>,
        outlines: &[Outline<'a>],
    ) -> Result<StagePlan, PlanError> {
        let label = outline.display_name();
        let total = 1 + outline.triggers.len() + outline.body.len();
        let from_text = outline_from_text(outline, outlines);
        let mut ops = Vec::new();
        let (mut config, last, base, base_unresolved) = match &outline.base {
            BaseRef::Scratch => {
                let id = self.graph.add(
                    OpKind::Scratch,
                    Vec::new(),
                    outline.index,
                    outline.line,
                    format!("[{label} 1/{total}] {from_text}"),
                );
                ops.push(id);
                (
                    empty_config(&outline.platform),
                    id,
                    StageBase::Scratch,
                    false,
                )
            }
            BaseRef::Stage(j) => {
                let base = &self.planned[j];
                (
                    base.config.clone(),
                    base.result,
                    StageBase::Stage { index: *j },
                    base.base_unresolved,
                )
            }
            BaseRef::Image(reference) => {
                // A resolved image is named canonically (`busybox` and `busybox:latest` are one
                // image), so how the Dockerfile spells it does not change any digest.
                let id = self.graph.add(
                    OpKind::Image {
                        reference: outline
                            .resolved
                            .as_ref()
                            .map_or_else(|| reference.clone(), |r| r.reference.clone()),
                        platform: outline.platform.clone(),
                        resolved: outline.resolved.as_ref().map(|r| r.digest.clone()),
                    },
                    Vec::new(),
                    outline.index,
                    outline.line,
                    format!("[{label} 1/{total}] {from_text}"),
                );
                ops.push(id);
                let base = StageBase::Image {
                    reference: reference.clone(),
                    resolved: outline.resolved.as_ref().map(|r| ResolvedRef {
                        reference: r.reference.clone(),
                        digest: r.digest.clone(),
                    }),
                };
                match &outline.resolved {
                    Some(r) => (r.config.clone(), id, base, false),
                    None => (empty_config(&outline.platform), id, base, true),
                }
            }
        };
        if config.config.env_value("PATH").is_none() {
            config.config.env.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        // Triggers run once, in the stage that builds on the image; they are not inherited.
        config.config.on_build.clear();
        // The base's timestamp is not this image's: SOURCE_DATE_EPOCH or the exporter sets it.
        config.created = self.created.clone();

        let mut st = StageState {
            index: outline.index,
            label,
            platform: outline.platform.clone(),
            config,
            args: Vec::new(),
            last,
            cmd_set: false,
            ops,
            step: 1,
            total,
        };
        let names = stage_names(outlines);
        for trigger in &outline.triggers {
            st.step += 1;
            let text = format!("ONBUILD {}", collapse(&trigger.node.original));
            self.instruction(&mut st, &names, trigger, outline.line, &text)?;
        }
        for instr in outline.body {
            st.step += 1;
            let text = collapse(&instr.node.original);
            self.instruction(&mut st, &names, instr, instr.node.span.start.line, &text)?;
        }
        Ok(StagePlan {
            index: outline.index,
            name: outline.name.clone(),
            line: outline.line,
            base,
            platform: outline.platform.clone(),
            ops: st.ops,
            result: st.last,
            config: st.config,
            base_unresolved,
        })
    }

    /// Add an op that continues the stage's filesystem.
    fn push(
        &mut self,
        st: &mut StageState,
        kind: OpKind,
        extra: Vec<Input>,
        line: usize,
        text: &str,
    ) -> OpId {
        let mut inputs = vec![Input {
            op: st.last,
            role: InputRole::Base,
        }];
        inputs.extend(extra);
        let name = format!("[{} {}/{}] {}", st.label, st.step, st.total, text);
        let id = self.graph.add(kind, inputs, st.index, line, name);
        st.last = id;
        st.ops.push(id);
        id
    }

    fn history(&self, st: &mut StageState, created_by: String, empty_layer: bool) {
        st.config.history.push(History {
            created: self.created.clone(),
            created_by: Some(created_by),
            author: None,
            comment: Some(HISTORY_COMMENT.to_string()),
            empty_layer,
        });
    }

    /// A config-only change: a history entry (unless BuildKit writes none) and a Config op.
    fn config_change(
        &mut self,
        st: &mut StageState,
        change: String,
        history: bool,
        line: usize,
        text: &str,
    ) {
        if history {
            self.history(st, change.clone(), true);
        }
        self.push(st, OpKind::Config { change }, Vec::new(), line, text);
    }

    fn instruction(
        &mut self,
        st: &mut StageState,
        names: &[(Option<String>, usize)],
        instr: &Instruction,
        line: usize,
        text: &str,
    ) -> Result<(), PlanError> {
        let keyword = instr.kind.keyword();
        // BuildKit expands every word of one instruction against the same values.
        let vars = st.vars();
        match &instr.kind {
            InstructionKind::Arg(decls) => {
                let mut parts = Vec::new();
                for decl in decls {
                    self.consumed.insert(decl.name.clone());
                    let value = if let Some(v) = self.opts.build_args.get(&decl.name) {
                        Some(v.clone())
                    } else if let Some(default) = &decl.default {
                        // ARGs of one instruction are dispatched one after another.
                        Some(self.expand(default, &st.vars(), line, keyword)?)
                    } else if self.global_declared.contains(&decl.name) {
                        self.global_vars.get(&decl.name).cloned()
                    } else {
                        self.builtin_platform.get(&decl.name).cloned()
                    };
                    parts.push(match &value {
                        Some(v) => format!("{}={v}", decl.name),
                        None => decl.name.clone(),
                    });
                    match st.args.iter_mut().find(|(k, _)| *k == decl.name) {
                        Some(slot) => slot.1 = value,
                        None => st.args.push((decl.name.clone(), value)),
                    }
                }
                self.config_change(st, format!("ARG {}", parts.join(" ")), true, line, text);
            }
            InstructionKind::Env(pairs) => {
                let mut parts = Vec::new();
                for kv in pairs {
                    let key = self.expand(&kv.key, &vars, line, keyword)?;
                    let value = self.expand(&kv.value, &vars, line, keyword)?;
                    parts.push(format!("{key}={value}"));
                    st.config.config.set_env(&key, &value);
                }
                self.config_change(st, format!("ENV {}", parts.join(" ")), true, line, text);
            }
            InstructionKind::Label(pairs) => {
                let mut parts = Vec::new();
                for kv in pairs {
                    let key = self.expand(&kv.key, &vars, line, keyword)?;
                    let value = self.expand(&kv.value, &vars, line, keyword)?;
                    parts.push(format!("{key}={value}"));
                    st.config.config.labels.insert(key, value);
                }
                self.config_change(st, format!("LABEL {}", parts.join(" ")), true, line, text);
            }
            InstructionKind::Maintainer(name) => {
                st.config.author = Some(name.clone());
                self.config_change(st, format!("MAINTAINER {name}"), true, line, text);
            }
            InstructionKind::Expose(ports) => {
                let mut written = Vec::new();
                for port in ports {
                    let words = expand_words(port, self.escape, &vars).map_err(|source| {
                        PlanError::Expand {
                            line,
                            instruction: keyword,
                            word: port.clone(),
                            source: Box::new(source),
                        }
                    })?;
                    written.extend(words.words);
                }
                let mut exposed = BTreeSet::new();
                for port in &written {
                    for p in normalize_port(port).ok_or_else(|| PlanError::InvalidPort {
                        line,
                        port: port.clone(),
                    })? {
                        st.config
                            .config
                            .exposed_ports
                            .insert(p.clone(), EmptyObject {});
                        exposed.insert(p);
                    }
                }
                // BuildKit prints the parsed port set with Go's %v of a map: sorted, `map[80/tcp:{}]`.
                let printed: Vec<String> = exposed.iter().map(|p| format!("{p}:{{}}")).collect();
                self.config_change(
                    st,
                    format!("EXPOSE map[{}]", printed.join(" ")),
                    true,
                    line,
                    text,
                );
            }
            InstructionKind::Volume(volumes) => {
                let mut expanded = Vec::new();
                for v in volumes {
                    let v = self.expand(v, &vars, line, keyword)?;
                    if v.trim().is_empty() {
                        return Err(PlanError::EmptyValue {
                            line,
                            instruction: keyword,
                            what: "a volume path",
                        });
                    }
                    st.config.config.volumes.insert(v.clone(), EmptyObject {});
                    expanded.push(v);
                }
                self.config_change(
                    st,
                    format!("VOLUME [{}]", expanded.join(" ")),
                    true,
                    line,
                    text,
                );
            }
            InstructionKind::User(user) => {
                let user = self.expand(user, &vars, line, keyword)?;
                st.config.config.user = Some(user.clone());
                self.config_change(st, format!("USER {user}"), true, line, text);
            }
            InstructionKind::Stopsignal(signal) => {
                let signal = self.expand(signal, &vars, line, keyword)?;
                if !scope::is_signal(&signal) {
                    return Err(PlanError::InvalidSignal { line, signal });
                }
                st.config.config.stop_signal = Some(signal.clone());
                self.config_change(st, format!("STOPSIGNAL {signal}"), true, line, text);
            }
            InstructionKind::Shell(shell) => {
                st.config.config.shell = Some(shell.clone());
                self.config_change(st, format!("SHELL [{}]", shell.join(" ")), true, line, text);
            }
            InstructionKind::Cmd(command) => {
                let args = command_args(st, command);
                st.config.config.cmd = Some(args.clone());
                st.cmd_set = true;
                self.config_change(
                    st,
                    format!("CMD {}", gofmt::quote_list(&args)),
                    true,
                    line,
                    text,
                );
            }
            InstructionKind::Entrypoint(command) => {
                let args = command_args(st, command);
                st.config.config.entrypoint = Some(args.clone());
                // An inherited CMD was written for the old ENTRYPOINT; one set in this stage stays.
                if !st.cmd_set {
                    st.config.config.cmd = None;
                }
                self.config_change(
                    st,
                    format!("ENTRYPOINT {}", gofmt::quote_list(&args)),
                    true,
                    line,
                    text,
                );
            }
            InstructionKind::Healthcheck(check) => {
                let health = match check {
                    Healthcheck::None => HealthConfig {
                        test: vec!["NONE".to_string()],
                        ..HealthConfig::default()
                    },
                    Healthcheck::Check {
                        command,
                        interval,
                        timeout,
                        start_period,
                        start_interval,
                        retries,
                    } => HealthConfig {
                        test: match command {
                            CommandLine::Exec(args) => std::iter::once("CMD".to_string())
                                .chain(args.iter().cloned())
                                .collect(),
                            CommandLine::Shell(cmd) => vec!["CMD-SHELL".to_string(), cmd.clone()],
                        },
                        interval: interval.unwrap_or(0),
                        timeout: timeout.unwrap_or(0),
                        start_period: start_period.unwrap_or(0),
                        start_interval: start_interval.unwrap_or(0),
                        retries: retries.unwrap_or(0),
                    },
                };
                let change = format!(
                    "HEALTHCHECK &{{{} {} {} {} {} {}}}",
                    gofmt::quote_list(&health.test),
                    gofmt::quote(&gofmt::duration(health.interval)),
                    gofmt::quote(&gofmt::duration(health.timeout)),
                    gofmt::quote(&gofmt::duration(health.start_period)),
                    gofmt::quote(&gofmt::duration(health.start_interval)),
                    gofmt::quote_rune(health.retries),
                );
                st.config.config.healthcheck = Some(health);
                self.config_change(st, change, true, line, text);
            }
            InstructionKind::Onbuild(inner) => {
                let expression = onbuild_expression(inner);
                st.config.config.on_build.push(expression.clone());
                // BuildKit records ONBUILD in the config only, with no history entry.
                self.config_change(st, format!("ONBUILD {expression}"), false, line, text);
            }
            InstructionKind::Workdir(path) => {
                let path = self.expand(path, &vars, line, keyword)?;
                let wd = scope::resolve_against(st.workdir(), &path);
                st.config.config.working_dir = Some(wd.clone());
                if wd == "/" {
                    self.config_change(st, format!("WORKDIR {wd}"), true, line, text);
                } else {
                    let user = st.config.config.user.clone().filter(|u| !u.is_empty());
                    self.history(st, format!("WORKDIR {wd}"), false);
                    self.push(
                        st,
                        OpKind::Mkdir {
                            path: wd,
                            mode: 0o755,
                            user,
                        },
                        Vec::new(),
                        line,
                        text,
                    );
                }
            }
            InstructionKind::Run(run) => self.run_instruction(st, names, run, &vars, line, text)?,
            InstructionKind::Copy(copy) => {
                self.copy_instruction(st, names, instr, copy, FileAction::Copy, &vars, line, text)?
            }
            InstructionKind::Add(copy) => {
                self.copy_instruction(st, names, instr, copy, FileAction::Add, &vars, line, text)?
            }
            InstructionKind::From(_) => unreachable!("stages are split on FROM"),
        }
        Ok(())
    }

    fn run_instruction(
        &mut self,
        st: &mut StageState,
        names: &[(Option<String>, usize)],
        run: &Run,
        vars: &BTreeMap<String, String>,
        line: usize,
        text: &str,
    ) -> Result<(), PlanError> {
        let mut pipes = Vec::new();
        let argv = match &run.command {
            CommandLine::Exec(args) => args.clone(),
            CommandLine::Shell(cmd) => {
                let mut shell = st.shell();
                match single_heredoc(cmd, &run.heredocs) {
                    Some(doc) if doc.body.starts_with("#!") => {
                        pipes.push(InlineFile {
                            name: doc.name.clone(),
                            content: doc.body.clone(),
                        });
                        shell.push(format!("/dev/pipes/{}", doc.name));
                    }
                    _ => shell.push(shell_script(cmd, &run.heredocs)),
                }
                shell
            }
        };

        // The config's Env, then the stage's ARGs with values unless ENV has the name.
        let mut env = st.config.config.env.clone();
        for (k, v) in &st.args {
            if let Some(v) = v {
                if st.config.config.env_value(k).is_none() {
                    env.push(format!("{k}={v}"));
                }
            }
        }
        let proxy_env: BTreeMap<String, String> = self
            .opts
            .build_args
            .iter()
            .filter(|(k, _)| is_proxy_arg(k) && !st.args.iter().any(|(a, _)| a == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();

        let mut extra = Vec::new();
        let mut mounts = Vec::new();
        let mut ssh_count = 0;
        for m in &run.mounts {
            let target = match &m.target {
                Some(t) => Some(scope::resolve_against(
                    st.workdir(),
                    &self.expand(t, vars, line, "RUN --mount")?,
                )),
                None => None,
            };
            let source = m
                .source
                .as_ref()
                .map(|s| self.expand(s, vars, line, "RUN --mount"))
                .transpose()?;
            let id =
                m.id.as_ref()
                    .map(|s| self.expand(s, vars, line, "RUN --mount"))
                    .transpose()?;
            let from = match (&m.kind, &m.from) {
                (MountType::Bind | MountType::Cache, Some(word)) => {
                    Some(self.source_ref(names, st.index, word, line, "RUN --mount")?)
                }
                (MountType::Bind, None) => Some(SourceRef::Context),
                _ => None,
            };
            let input = match &from {
                Some(from) => {
                    let include = match (&from, &source) {
                        (SourceRef::Context | SourceRef::Named { .. }, Some(s)) => {
                            vec![scope::context_relative(s)]
                        }
                        _ => Vec::new(),
                    };
                    let op = self.source_op(from, include, st, line);
                    extra.push(Input {
                        op,
                        role: InputRole::Mount,
                    });
                    Some(extra.len()) // index into inputs; inputs[0] is the base
                }
                None => None,
            };
            let (target, id) = match m.kind {
                MountType::Secret => {
                    let id = id.or_else(|| {
                        target
                            .as_ref()
                            .map(|t| t.rsplit('/').next().unwrap_or_default().to_string())
                    });
                    let target = target.unwrap_or_else(|| {
                        format!("/run/secrets/{}", id.clone().unwrap_or_default())
                    });
                    (target, id)
                }
                MountType::Ssh => {
                    let target =
                        target.unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{ssh_count}"));
                    ssh_count += 1;
                    (target, Some(id.unwrap_or_else(|| "default".to_string())))
                }
                MountType::Cache => {
                    let target = target.unwrap_or_default();
                    let id = id.unwrap_or_else(|| target.clone());
                    (target, Some(id))
                }
                MountType::Bind | MountType::Tmpfs => (target.unwrap_or_default(), id),
            };
            let readonly = m.readonly.unwrap_or(matches!(
                m.kind,
                MountType::Bind | MountType::Secret | MountType::Ssh
            ));
            mounts.push(MountSpec {
                kind: m.kind,
                target,
                source,
                from,
                input,
                readonly,
                id,
                sharing: match m.kind {
                    MountType::Cache => Some(m.sharing.unwrap_or(CacheSharing::Shared)),
                    _ => m.sharing,
                },
                mode: m.mode.or(match m.kind {
                    MountType::Secret => Some(0o400),
                    MountType::Ssh => Some(0o600),
                    _ => None,
                }),
                uid: m.uid,
                gid: m.gid,
                size: m.size,
                required: m.required,
                env: m.env.clone(),
            });
        }

        // History shows the stage's declared ARGs as BuildKit's `|N K=V` prefix.
        let mut created_by = String::from("RUN ");
        let declared: Vec<String> = st
            .args
            .iter()
            .map(|(k, v)| {
                let value = st
                    .config
                    .config
                    .env_value(k)
                    .map(str::to_string)
                    .or_else(|| v.clone())
                    .unwrap_or_default();
                format!("{k}={value}")
            })
            .collect();
        if !declared.is_empty() {
            created_by.push_str(&format!("|{} {} ", declared.len(), declared.join(" ")));
        }
        created_by.push_str(&argv.join(" "));
        created_by.push_str(" # buildkit");

        let op = RunOp {
            argv,
            env,
            cwd: st.workdir().unwrap_or("/").to_string(),
            user: st.config.config.user.clone().filter(|u| !u.is_empty()),
            mounts,
            network: run.network.unwrap_or(NetworkMode::Default),
            security: run.security.unwrap_or(SecurityMode::Sandbox),
            platform: st.platform.clone(),
            proxy_env,
            pipes,
        };
        self.history(st, created_by, false);
        self.push(st, OpKind::Run(op), extra, line, text);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_instruction(
        &mut self,
        st: &mut StageState,
        names: &[(Option<String>, usize)],
        instr: &Instruction,
        copy: &Copy,
        action: FileAction,
        vars: &BTreeMap<String, String>,
        line: usize,
        text: &str,
    ) -> Result<(), PlanError> {
        let keyword = instr.kind.keyword();
        let mut sources = Vec::new();
        let mut inline = Vec::new();
        for src in &copy.sources {
            if let Some(doc) = heredoc_source(src, &copy.heredocs) {
                let content = if doc.expand {
                    expand_word_with(
                        &doc.body,
                        self.escape,
                        vars,
                        ExpandOptions {
                            raw_escapes: true,
                            skip_process_quotes: true,
                            ..ExpandOptions::default()
                        },
                    )
                    .map_err(|source| PlanError::Expand {
                        line,
                        instruction: keyword,
                        word: doc.body.clone(),
                        source: Box::new(source),
                    })?
                    .value
                } else {
                    doc.body.clone()
                };
                inline.push(InlineFile {
                    name: doc.name.clone(),
                    content,
                });
            } else {
                sources.push(self.expand(src, vars, line, keyword)?);
            }
        }
        let dest_written = self.expand(&copy.dest, vars, line, keyword)?;
        let dest = scope::resolve_dest(st.workdir(), &dest_written);
        let chown = copy
            .chown
            .as_ref()
            .map(|c| self.expand(c, vars, line, keyword))
            .transpose()?;
        let chmod_written = instr
            .node
            .flags
            .iter()
            .find(|f| f.name == "chmod")
            .and_then(|f| f.value.clone())
            .or_else(|| {
                copy.chmod.as_ref().map(|c| match c {
                    Chmod::Octal(mode) => format!("{mode:o}"),
                    Chmod::Symbolic(s) => s.clone(),
                })
            });
        let chmod = chmod_written
            .map(|c| self.expand(&c, vars, line, keyword))
            .transpose()?;
        let exclude = copy
            .exclude
            .iter()
            .map(|e| self.expand(e, vars, line, keyword))
            .collect::<Result<Vec<_>, _>>()?;
        let checksum = copy
            .checksum
            .as_ref()
            .map(|c| self.expand(c, vars, line, keyword))
            .transpose()?;

        let from = match &copy.from {
            Some(word) => self.source_ref(names, st.index, word, line, keyword)?,
            None => SourceRef::Context,
        };
        let local: Vec<String> = sources
            .iter()
            .filter(|s| !(action == FileAction::Add && scope::is_remote_source(s)))
            .cloned()
            .collect();
        let mut extra = Vec::new();
        let needs_source = !matches!(from, SourceRef::Context) || !local.is_empty();
        let input = if needs_source {
            let include = match from {
                SourceRef::Context | SourceRef::Named { .. } => {
                    local.iter().map(|s| scope::context_relative(s)).collect()
                }
                _ => Vec::new(),
            };
            let op = self.source_op(&from, include, st, line);
            extra.push(Input {
                op,
                role: InputRole::CopySource,
            });
            Some(1)
        } else {
            None
        };

        let mut created_by = String::from(match action {
            FileAction::Copy => "COPY",
            FileAction::Add => "ADD",
        });
        if copy.parents {
            created_by.push_str(" --parents");
        }
        if let Some(c) = &chown {
            created_by.push_str(&format!(" --chown={c}"));
        }
        if let Some(c) = &chmod {
            created_by.push_str(&format!(" --chmod={c}"));
        }
        for s in &sources {
            created_by.push(' ');
            created_by.push_str(s);
        }
        for f in &inline {
            created_by.push_str(&format!(" <<{}", f.name));
        }
        created_by.push_str(&format!(" {dest_written} # buildkit"));

        let op = FileOp {
            action,
            sources,
            inline,
            dest,
            from,
            input,
            chown,
            chmod,
            link: copy.link,
            parents: copy.parents,
            exclude,
            checksum,
            keep_git_dir: copy.keep_git_dir,
            unpack: copy.unpack,
        };
        self.history(st, created_by, false);
        self.push(st, OpKind::File(op), extra, line, text);
        Ok(())
    }

    /// The op a COPY --from / mount from= / context read takes files from.
    fn source_op(
        &mut self,
        from: &SourceRef,
        include: Vec<String>,
        st: &StageState,
        line: usize,
    ) -> OpId {
        let stage = st.index;
        match from {
            SourceRef::Stage { index } => self.planned[index].result,
            SourceRef::Image { reference } => {
                let resolved = self.resolver.resolve(reference, &st.platform);
                self.graph.add(
                    OpKind::Image {
                        reference: resolved
                            .as_ref()
                            .map_or_else(|| reference.clone(), |r| r.reference.clone()),
                        platform: st.platform.clone(),
                        resolved: resolved.map(|r| r.digest),
                    },
                    Vec::new(),
                    stage,
                    line,
                    format!("[internal] image {reference}"),
                )
            }
            SourceRef::Context => {
                let mut include: Vec<String> = include;
                include.sort();
                include.dedup();
                // An empty path is the whole context; then nothing narrows the read.
                if include.iter().any(String::is_empty) {
                    include.clear();
                }
                let name = if include.is_empty() {
                    "[internal] load build context".to_string()
                } else {
                    format!("[internal] load build context ({})", include.join(", "))
                };
                self.graph.add(
                    OpKind::Context {
                        name: "context".to_string(),
                        include,
                        exclude: self.opts.dockerignore.clone(),
                    },
                    Vec::new(),
                    stage,
                    line,
                    name,
                )
            }
            SourceRef::Named { name } => {
                let mut include: Vec<String> = include;
                include.sort();
                include.dedup();
                if include.iter().any(String::is_empty) {
                    include.clear();
                }
                let label = if include.is_empty() {
                    format!("[internal] load build context {name}")
                } else {
                    format!(
                        "[internal] load build context {name} ({})",
                        include.join(", ")
                    )
                };
                // No exclude: the main context's .dockerignore is not this directory's.
                self.graph.add(
                    OpKind::Context {
                        name: name.clone(),
                        include,
                        exclude: Vec::new(),
                    },
                    Vec::new(),
                    stage,
                    line,
                    label,
                )
            }
        }
    }
}

impl Outline<'_> {
    fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", self.index))
    }
}

/// Lower-cased stage names and FROM lines, for resolving `--from`.
fn stage_names(outlines: &[Outline<'_>]) -> Vec<(Option<String>, usize)> {
    outlines
        .iter()
        .map(|o| (o.name.as_ref().map(|n| n.to_ascii_lowercase()), o.line))
        .collect()
}

fn outline_from_text(outline: &Outline<'_>, outlines: &[Outline<'_>]) -> String {
    match &outline.base {
        BaseRef::Scratch => "FROM scratch".to_string(),
        BaseRef::Image(r) => format!("FROM {r}"),
        BaseRef::Stage(j) => format!("FROM {}", outlines[*j].display_name()),
    }
}

fn stage_ref(
    names: &[(Option<String>, usize)],
    current: usize,
    index: usize,
    reference: String,
    line: usize,
    instruction: &'static str,
) -> Result<SourceRef, PlanError> {
    if index == current {
        return Err(PlanError::SelfStageReference {
            line,
            instruction,
            reference,
        });
    }
    if index > current {
        return Err(PlanError::ForwardStageReference {
            line,
            instruction,
            reference,
            stage: index,
            stage_line: names[index].1,
        });
    }
    Ok(SourceRef::Stage { index })
}

/// The `--from` words an instruction carries, with the keyword to report them under.
fn from_references(instr: &Instruction) -> Vec<(String, &'static str)> {
    match &instr.kind {
        InstructionKind::Copy(c) | InstructionKind::Add(c) => c
            .from
            .iter()
            .map(|f| (f.clone(), instr.kind.keyword()))
            .collect(),
        InstructionKind::Run(run) => run
            .mounts
            .iter()
            .filter(|m| matches!(m.kind, MountType::Bind | MountType::Cache))
            .filter_map(|m| m.from.clone())
            .map(|f| (f, "RUN --mount"))
            .collect(),
        _ => Vec::new(),
    }
}

/// The stages the target needs, following FROM, `--from` and mount edges.
fn needed_stages(outlines: &[Outline<'_>], target: usize) -> BTreeSet<usize> {
    let mut needed = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if needed.insert(i) {
            todo.extend(outlines[i].deps.iter().copied());
        }
    }
    needed
}

fn check_trigger(t: &Instruction, base: &str, line: usize, text: &str) -> Result<(), PlanError> {
    match &t.kind {
        InstructionKind::From(_) | InstructionKind::Onbuild(_) | InstructionKind::Maintainer(_) => {
            Err(PlanError::TriggerForbidden {
                line,
                base: base.to_string(),
                trigger: text.to_string(),
                keyword: t.kind.keyword(),
            })
        }
        _ => Ok(()),
    }
}

/// The text Docker stores in `OnBuild`: the nested instruction as written.
fn onbuild_expression(inner: &Instruction) -> String {
    let original = inner.node.original.trim();
    match original.get(..8) {
        Some(head) if head.eq_ignore_ascii_case("ONBUILD ") => {
            original[8..].trim_start().to_string()
        }
        _ => original.to_string(),
    }
}

fn empty_config(platform: &Platform) -> ImageConfig {
    ImageConfig {
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        ..ImageConfig::default()
    }
}

/// CMD/ENTRYPOINT arguments: exec form as written, shell form through SHELL.
fn command_args(st: &StageState, command: &CommandLine) -> Vec<String> {
    match command {
        CommandLine::Exec(args) => args.clone(),
        CommandLine::Shell(cmd) => {
            let mut shell = st.shell();
            shell.push(cmd.clone());
            shell
        }
    }
}

/// The script a shell-form RUN hands to its shell. `RUN <<EOF` alone runs the heredoc body;
/// a command that also reads heredocs gets them appended, so the shell sees the whole text.
fn shell_script(cmd: &str, heredocs: &[Heredoc]) -> String {
    if heredocs.is_empty() {
        return cmd.to_string();
    }
    if let Some(doc) = single_heredoc(cmd, heredocs) {
        return doc.body.clone();
    }
    // Reconstituted as BuildKit does: the command line, then each body and its terminator.
    let mut script = cmd.to_string();
    for doc in heredocs {
        script.push('\n');
        script.push_str(&doc.body);
        script.push_str(&doc.name);
    }
    script
}

/// The heredoc that is the whole of a shell-form RUN (`RUN <<EOF`), if that is what it is.
fn single_heredoc<'h>(cmd: &str, heredocs: &'h [Heredoc]) -> Option<&'h Heredoc> {
    let [doc] = heredocs else { return None };
    let marker = cmd.trim().strip_prefix("<<")?.trim_start_matches('-');
    let marker = marker.trim_matches(|c| c == '"' || c == '\'');
    (marker == doc.name).then_some(doc)
}

/// The heredoc a COPY/ADD source names (`<<EOF`), if it is one.
fn heredoc_source<'h>(src: &str, heredocs: &'h [Heredoc]) -> Option<&'h Heredoc> {
    let name = src.strip_prefix("<<")?;
    let name = name
        .trim_start_matches('-')
        .trim_matches(|c| c == '"' || c == '\'');
    heredocs.iter().find(|h| h.name == name)
}

/// `80` -> `80/tcp`, `53/UDP` -> `53/udp`, `8000-8002` -> three ports (Docker's nat.ParsePortSpecs).
fn normalize_port(spec: &str) -> Option<Vec<String>> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return None;
    }
    let parse = |p: &str| p.parse::<u16>().ok().filter(|&n| n > 0);
    let (start, end) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if start > end {
        return None;
    }
    Some((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// An instruction's text on one line, for display names.
fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::normalize_port;

    #[test]
    fn ports_normalise_like_docker() {
        assert_eq!(normalize_port("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(normalize_port("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(
            normalize_port("8000-8002/tcp").unwrap(),
            vec!["8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert!(normalize_port("http").is_none());
        assert!(normalize_port("80/foo").is_none());
        assert!(normalize_port("0").is_none());
        assert!(normalize_port("9-1").is_none());
    }
}
