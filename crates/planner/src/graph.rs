//! The build graph: operations with stable definition digests, in a petgraph DAG.
//!
//! An op's digest is blake3 over the canonical JSON of its definition (its [`OpKind`] with
//! everything that must not affect caching left out) followed by the digests of its inputs,
//! so a change to one instruction changes its op and every op downstream, and nothing else.
//! Op ids, stage names, display names and line numbers are presentation, not definition.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use forge_parser::{CacheSharing, MountType, NetworkMode, SecurityMode};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, EdgeRef};
use serde::Serialize;

use crate::platform::Platform;

/// An op's index in [`BuildGraph::ops`]; inputs always have smaller ids than their users.
pub type OpId = usize;

/// Bumped whenever the definition encoding changes, so old cache keys can never match.
const DIGEST_VERSION: u32 = 1;

/// One operation of the build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Op {
    pub id: OpId,
    /// `blake3:<hex>` of the definition and the input digests.
    pub digest: String,
    pub kind: OpKind,
    pub inputs: Vec<Input>,
    /// The Dockerfile index of the stage this op belongs to (the first stage that needed it,
    /// for shared sources).
    pub stage: usize,
    /// The 1-based line of the instruction (the FROM line for ONBUILD triggers).
    pub line: usize,
    /// What a progress display shows, e.g. `[build 2/4] RUN make`.
    pub name: String,
}

/// An edge into an op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Input {
    pub op: OpId,
    pub role: InputRole,
}

/// What an input is to the op that uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputRole {
    /// The filesystem (and config) this op continues from.
    Base,
    /// The files a COPY/ADD reads.
    CopySource,
    /// A RUN `--mount` that has a source (context, stage or image).
    Mount,
}

/// What an op does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OpKind {
    /// The empty filesystem of `FROM scratch`.
    Scratch,
    /// A base image or `--from` image. `resolved` is the manifest digest when the resolver
    /// knew it; `None` is an unresolved source that the executor must pull.
    Image {
        reference: String,
        platform: Platform,
        resolved: Option<String>,
    },
    /// Files from the build context: only paths under `include` (all of it when empty),
    /// minus `.dockerignore`'s `exclude` patterns.
    Context {
        name: String,
        include: Vec<String>,
        exclude: Vec<String>,
    },
    Run(RunOp),
    /// COPY or ADD.
    File(FileOp),
    /// The directory a WORKDIR creates.
    Mkdir {
        path: String,
        mode: u32,
        user: Option<String>,
    },
    /// A config-only change that makes no layer (ENV, LABEL, CMD, ...); `change` is the
    /// history text of the instruction after expansion.
    Config {
        change: String,
    },
}

/// A RUN step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunOp {
    /// The command after SHELL (shell form) or as written (exec form).
    pub argv: Vec<String>,
    /// `KEY=value`: the config's Env, then the stage's ARGs that have values (ENV wins).
    pub env: Vec<String>,
    pub cwd: String,
    pub user: Option<String>,
    pub mounts: Vec<MountSpec>,
    pub network: NetworkMode,
    pub security: SecurityMode,
    pub platform: Platform,
    /// Undeclared predefined proxy args (`HTTP_PROXY`, ...): given to the step but kept out of
    /// the digest and the history, as BuildKit does.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub proxy_env: BTreeMap<String, String>,
    /// Files the step sees read-only (mode 0755) under `/dev/pipes/`: a `RUN <<EOF` script
    /// that starts with `#!` is run from there, as BuildKit does, so its interpreter is used.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pipes: Vec<InlineFile>,
}

/// A RUN `--mount`, with BuildKit's defaults filled in and paths resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountSpec {
    pub kind: MountType,
    /// Absolute (relative targets are resolved against WORKDIR).
    pub target: String,
    pub source: Option<String>,
    pub from: Option<SourceRef>,
    /// Index into the op's `inputs` of the op this mount reads, when it reads one.
    pub input: Option<usize>,
    pub readonly: bool,
    pub id: Option<String>,
    pub sharing: Option<CacheSharing>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub required: Option<bool>,
    pub env: Option<String>,
}

/// Where COPY --from or a mount's from= points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceRef {
    Context,
    /// A directory named context (`--build-context NAME=DIR`): read like the build context,
    /// but with no `.dockerignore`.
    Named {
        name: String,
    },
    Stage {
        index: usize,
    },
    Image {
        reference: String,
    },
}

/// COPY or ADD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileAction {
    Copy,
    Add,
}

/// A COPY/ADD step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileOp {
    pub action: FileAction,
    /// Sources after expansion, as written (paths in the source, URLs or git refs for ADD).
    pub sources: Vec<String>,
    /// Heredoc sources: file name and (expanded) contents.
    pub inline: Vec<InlineFile>,
    /// Absolute destination; a trailing `/` means "into this directory".
    pub dest: String,
    pub from: SourceRef,
    /// Index into the op's `inputs` of the source op, when there is one.
    pub input: Option<usize>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    pub unpack: Option<bool>,
}

/// A file written from a heredoc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InlineFile {
    pub name: String,
    pub content: String,
}

/// The DAG of a plan. Ops are stored in topological order (every input before its user);
/// `dag()` gives the same graph as petgraph, with edges from input to user.
#[derive(Debug, Clone, Default)]
pub struct BuildGraph {
    ops: Vec<Op>,
    dag: DiGraph<OpId, InputRole>,
    by_digest: HashMap<String, OpId>,
}

impl Serialize for BuildGraph {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Ops<'a> {
            ops: &'a [Op],
        }
        Ops { ops: &self.ops }.serialize(serializer)
    }
}

impl BuildGraph {
    /// All ops, inputs before users.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub fn op(&self, id: OpId) -> &Op {
        &self.ops[id]
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The petgraph view: node weights are op ids, edges run from an input to its user.
    pub fn dag(&self) -> &DiGraph<OpId, InputRole> {
        &self.dag
    }

    /// Every op that (transitively) uses `id`, not including `id` itself.
    pub fn descendants(&self, id: OpId) -> BTreeSet<OpId> {
        let mut out = BTreeSet::new();
        let mut dfs = Dfs::new(&self.dag, NodeIndex::new(id));
        while let Some(n) = dfs.next(&self.dag) {
            if n.index() != id {
                out.insert(n.index());
            }
        }
        out
    }

    /// The ops `id` uses directly, with their roles.
    pub fn inputs_of(&self, id: OpId) -> impl Iterator<Item = (OpId, InputRole)> + '_ {
        self.dag
            .edges_directed(NodeIndex::new(id), petgraph::Direction::Incoming)
            .map(|e| (e.source().index(), *e.weight()))
    }

    /// Add an op, computing its digest. Source ops with identical definitions are shared
    /// (as content-addressed LLB would share them); other ops are always new.
    pub(crate) fn add(
        &mut self,
        kind: OpKind,
        inputs: Vec<Input>,
        stage: usize,
        line: usize,
        name: String,
    ) -> OpId {
        let digest = self.digest_of(&kind, &inputs);
        let shareable = matches!(
            kind,
            OpKind::Scratch | OpKind::Image { .. } | OpKind::Context { .. }
        );
        if shareable {
            if let Some(&id) = self.by_digest.get(&digest) {
                return id;
            }
        }
        let id = self.ops.len();
        let node = self.dag.add_node(id);
        debug_assert_eq!(node.index(), id);
        for input in &inputs {
            self.dag
                .add_edge(NodeIndex::new(input.op), node, input.role);
        }
        self.by_digest.entry(digest.clone()).or_insert(id);
        self.ops.push(Op {
            id,
            digest,
            kind,
            inputs,
            stage,
            line,
            name,
        });
        id
    }

    fn digest_of(&self, kind: &OpKind, inputs: &[Input]) -> String {
        #[derive(Serialize)]
        struct Definition<'a> {
            version: u32,
            kind: &'a OpKind,
            inputs: Vec<(&'a str, InputRole)>,
        }
        // Proxy values are credentials-bearing and machine-specific: never part of the key.
        let stripped;
        let kind = match kind {
            OpKind::Run(run) if !run.proxy_env.is_empty() => {
                let mut run = run.clone();
                run.proxy_env.clear();
                stripped = OpKind::Run(run);
                &stripped
            }
            other => other,
        };
        let definition = Definition {
            version: DIGEST_VERSION,
            kind,
            inputs: inputs
                .iter()
                .map(|i| (self.ops[i.op].digest.as_str(), i.role))
                .collect(),
        };
        // Serialising plain structs of strings, numbers and BTreeMaps cannot fail.
        let bytes = serde_json::to_vec(&definition).expect("op definitions serialise to JSON");
        format!("blake3:{}", blake3::hash(&bytes).to_hex())
    }
}
