//! forge-build: solves a Dockerfile into an image. It parses and plans (forge-parser,
//! forge-planner), hashes the build context, schedules the graph's ops concurrently with a
//! cache key per op (forge-cache), runs RUN steps in the sandbox and COPY/ADD/WORKDIR as file
//! operations (forge-executor), and writes the image (forge-export). Base images come through
//! an [`ImageProvider`], so this crate never talks to a registry itself.

mod assemble;
mod error;
mod fetch;
mod images;
mod memory;
mod overlay;
mod progress;
mod request;
mod reuse;
mod rootfs;
mod solve;
mod steps;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use forge_cache::{ContextHasher, ContextTree, PathFilter, PendingMemo, Store};
use forge_parser::IgnoreMatcher;
use forge_planner::{NamedContext, OpKind, PlanOptions, Platform};

pub use error::BuildError;
pub use fetch::{FetchError, FetchedFile, NoFetcher, RemoteFetcher};
pub use images::{image_snapshots, load_image, ImageProvider, LocalImage, ProvidedImage};
pub use overlay::isolate_mounts;
pub use progress::{Event, NoProgress, Progress, Stream};
pub use request::{BuildOutput, BuildRequest, ContextSource};

use crate::images::{lock, StoreResolver};
use crate::memory::{is_step, Memory};
use crate::solve::Solver;

/// `.dockerignore` as the store's context walker wants it.
struct IgnoreFilter<'a>(&'a IgnoreMatcher);

impl PathFilter for IgnoreFilter<'_> {
    fn is_excluded(&self, rel: &str) -> bool {
        self.0.is_excluded(rel)
    }
    fn may_include_under(&self, rel_dir: &str) -> bool {
        self.0.may_include_under(rel_dir)
    }
}

/// Builds the image `req` describes: parse, plan, solve, export, tag.
///
/// `req.sandbox.cancel`, when given, is the build's cancel flag: the caller sets it (on
/// Ctrl-C) to stop the build, which then starts no more steps, kills the running ones (their
/// progress ends in `Failed` with "cancelled"), undoes its mounts and returns
/// [`BuildError::Cancelled`]. The build raises the same flag itself at its first failure.
pub fn build(
    req: &BuildRequest,
    store: &Store,
    provider: &dyn ImageProvider,
    fetcher: &dyn RemoteFetcher,
    progress: &dyn Progress,
) -> Result<BuildOutput, BuildError> {
    let df = forge_parser::parse(&req.dockerfile).map_err(|e| BuildError::Parse {
        rendered: e.render(&req.dockerfile_name),
    })?;
    let ignore_text = match &req.context {
        Some(dir) => read_dockerignore(dir, &req.dockerfile_name)?,
        None => String::new(),
    };
    let matcher = IgnoreMatcher::parse(&ignore_text).map_err(|e| BuildError::Parse {
        rendered: format!(".dockerignore: {e}"),
    })?;
    let opts = PlanOptions {
        build_args: req.build_args.clone(),
        target: req.target.clone(),
        platform: req.platform.clone().unwrap_or_else(Platform::host),
        build_platform: Platform::host(),
        dockerignore: forge_planner::dockerignore_patterns(&ignore_text),
        named_contexts: req
            .named_contexts
            .iter()
            .map(|(name, source)| {
                let planned = match source {
                    ContextSource::Dir(_) => NamedContext::Dir,
                    ContextSource::Image(reference) => NamedContext::Image(reference.clone()),
                };
                (name.clone(), planned)
            })
            .collect(),
    };
    let resolver = StoreResolver {
        store,
        provider,
        pull: req.pull,
        found: Mutex::new(BTreeMap::new()),
        errors: Mutex::new(Vec::new()),
    };
    let plan = forge_planner::plan(&df, &opts, &resolver).map_err(|source| BuildError::Plan {
        file: req.dockerfile_name.clone(),
        source,
    })?;
    if let Some(err) = lock(&resolver.errors).drain(..).next() {
        return Err(err);
    }
    let images = resolver
        .found
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    for op in plan.graph.ops() {
        if let OpKind::Image { reference, .. } = &op.kind {
            if !images.contains_key(reference) {
                return Err(BuildError::ImageNotFound {
                    reference: reference.clone(),
                });
            }
        }
    }
    for warning in &plan.warnings {
        progress.event(Event::Warning {
            message: &warning.to_string(),
        });
    }
    progress.event(Event::Planned {
        steps: plan.graph.ops().iter().filter(|op| is_step(op)).count(),
    });

    let uses_context = plan
        .graph
        .ops()
        .iter()
        .any(|op| matches!(&op.kind, OpKind::Context { name, .. } if name == "context"));
    // The last build's step memory is read while the context is hashed: neither needs the other.
    let memory = std::thread::scope(|scope| {
        let memory = scope.spawn(|| Memory::load(Some(memory_path(store, req))));
        hash_context(req, store, &matcher, uses_context).map(|hashed| {
            (
                memory
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p)),
                hashed,
            )
        })
    });
    let (memory, (tree, memo)) = memory?;

    // Each directory named context a COPY or mount reads, hashed whole (no ignore file).
    let mut named_trees = BTreeMap::new();
    for op in plan.graph.ops() {
        let OpKind::Context { name, .. } = &op.kind else {
            continue;
        };
        let Some(ContextSource::Dir(dir)) = req.named_contexts.get(name) else {
            continue;
        };
        if named_trees.contains_key(name) {
            continue;
        }
        let tree = ContextHasher::new(dir)
            .memo(store)
            .hash()
            .map_err(|source| BuildError::Context {
                path: dir.clone(),
                source,
            })?;
        named_trees.insert(name.clone(), tree);
    }

    let no_cache_stages = stage_indexes(&plan, &req.no_cache_filter);
    let in_flight = solve::InFlight::new(req.sandbox.cancel.clone());
    let cancel = Arc::clone(&in_flight.cancel);
    let (early_layers, early_queue) = assemble::EarlyLayers::new(&plan);
    let solver = Solver {
        req,
        store,
        plan: &plan,
        images,
        tree,
        named_trees,
        progress,
        no_cache_stages,
        memory,
        ignore_patterns: opts.dockerignore.clone(),
        remote: fetch::Remote::new(fetcher),
        in_flight,
        early_layers: &early_layers,
        after_commit: Mutex::new(Vec::new()),
    };
    let (solved, memo_written) = std::thread::scope(|scope| {
        let exporter = scope.spawn(|| {
            assemble::EarlyLayers::export(store, early_queue, req.source_date_epoch, &cancel)
        });
        let memo_writer = scope.spawn(|| match memo {
            Some((dir, memo)) => memo
                .write()
                .map_err(|source| BuildError::Context { path: dir, source }),
            None => Ok(()),
        });
        let solved = solver.run();
        early_layers.close();
        // Written while the last layers are still being exported, not after.
        solver.memory.save();
        exporter
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let written = memo_writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (solved, written)
    });
    let (states, tally) = solved?;
    memo_written?;
    // Cancelled after the last step: no image is written.
    if req
        .sandbox
        .cancel
        .as_ref()
        .is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst))
    {
        return Err(BuildError::Cancelled);
    }
    let stage = plan.target_stage();
    assemble::assemble(store, req, stage, &states[stage.result], tally, progress)
}

/// The build context's tree (when a step reads it), and the stat memo's update for the context
/// directory, if any.
type HashedContext = (Option<ContextTree>, Option<(PathBuf, PendingMemo)>);

/// The build context's tree, hashed through the stat memo when a step reads it, and the memo's
/// update: written while the build runs, as it means an fsync and nothing in the build reads it.
fn hash_context(
    req: &BuildRequest,
    store: &Store,
    matcher: &IgnoreMatcher,
    uses_context: bool,
) -> Result<HashedContext, BuildError> {
    let (Some(dir), true) = (&req.context, uses_context) else {
        return Ok((None, None));
    };
    let filter = IgnoreFilter(matcher);
    let (tree, memo) = ContextHasher::new(dir)
        .filter(&filter)
        .memo(store)
        .hash_deferring_memo()
        .map_err(|source| BuildError::Context {
            path: dir.clone(),
            source,
        })?;
    Ok((Some(tree), memo.map(|m| (dir.clone(), m))))
}

/// `.dockerignore` for this Dockerfile: `<Dockerfile>.dockerignore` beside it wins over the
/// context's `.dockerignore`.
fn read_dockerignore(
    context: &std::path::Path,
    dockerfile_name: &str,
) -> Result<String, BuildError> {
    let name = std::path::Path::new(dockerfile_name)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".to_owned());
    let dockerfile_dir = std::path::Path::new(dockerfile_name)
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    for candidate in forge_parser::ignore_file_candidates(&name) {
        let beside = if candidate == ".dockerignore" {
            context.join(&candidate)
        } else {
            dockerfile_dir.join(&candidate)
        };
        match std::fs::read_to_string(&beside) {
            Ok(text) => return Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(BuildError::io(beside, e)),
        }
    }
    Ok(String::new())
}

/// `--no-cache-filter` names (or indexes) to stage indexes.
fn stage_indexes(plan: &forge_planner::Plan, names: &[String]) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    for name in names {
        for stage in &plan.stages {
            let by_name = stage
                .name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(name));
            if by_name || name.parse::<usize>().ok() == Some(stage.index) {
                out.insert(stage.index);
            }
        }
    }
    out
}

/// Where the last build of this (context, Dockerfile, target) left its step memory.
fn memory_path(store: &Store, req: &BuildRequest) -> std::path::PathBuf {
    let mut hasher = blake3::Hasher::new();
    let context = req
        .context
        .as_ref()
        .and_then(|c| c.canonicalize().ok())
        .map(|c| c.display().to_string())
        .unwrap_or_default();
    hasher.update(context.as_bytes());
    hasher.update(b"\0");
    hasher.update(req.dockerfile_name.as_bytes());
    hasher.update(b"\0");
    hasher.update(req.target.as_deref().unwrap_or("").as_bytes());
    store
        .dir()
        .join("build-memory")
        .join(format!("{}.json", &hasher.finalize().to_hex()[..32]))
}
