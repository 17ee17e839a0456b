//! The scheduler: solves the planner's graph with a few worker threads. Each op's cache key
//! is computed from its definition digest, its inputs' keys and the content it reads; a hit
//! reuses the recorded snapshot, a miss runs the op (RUN in the sandbox, COPY/ADD/WORKDIR as
//! file operations on an overlay, see `steps`) and records the result. The first failure, or
//! the caller's cancel flag (Ctrl-C), stops the scheduling of new ops and cancels running RUN
//! steps; mounts are undone on every path.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use forge_cache::{CacheKey, CacheRecord, ContextTree, SnapshotId, SnapshotMeta, Store};
use forge_executor::{CopySource, CopySpec};
use forge_parser::MountType;
use forge_planner::{FileAction, FileOp, InputRole, Op, OpKind, Plan, SourceRef};

use crate::assemble::EarlyLayers;
use crate::error::BuildError;
use crate::fetch::Remote;
use crate::images::{image_snapshots, lock, LocalImage};
use crate::memory::{Ingredients, Memory};
use crate::progress::{Event, Progress};
use crate::request::BuildRequest;
use crate::reuse::PendingIndex;
use crate::steps::{action_name, is_remote, remote_urls};

/// What an op leaves for the ops that use it.
#[derive(Debug, Clone)]
pub(crate) struct State {
    pub(crate) key: CacheKey,
    /// The top snapshot of the filesystem; `None` for an empty one.
    pub(crate) top: Option<SnapshotId>,
    /// The image at the bottom of this filesystem, if any: its layers are exported as they
    /// are, and its config and history start the result's.
    pub(crate) root: Option<Arc<LocalImage>>,
}

/// Counts for the closing summary.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    pub(crate) steps: usize,
    pub(crate) cached: usize,
}

pub(crate) struct Solver<'a> {
    pub(crate) req: &'a BuildRequest,
    pub(crate) store: &'a Store,
    pub(crate) plan: &'a Plan,
    pub(crate) images: BTreeMap<String, Arc<LocalImage>>,
    pub(crate) tree: Option<ContextTree>,
    pub(crate) named_trees: BTreeMap<String, ContextTree>,
    pub(crate) progress: &'a dyn Progress,
    pub(crate) no_cache_stages: BTreeSet<usize>,
    pub(crate) memory: Memory,
    /// `.dockerignore` patterns: what they match is not part of the build context.
    pub(crate) ignore_patterns: Vec<String>,
    /// Downloads `ADD <url>` sources.
    pub(crate) remote: Remote<'a>,
    /// Cache keys being solved right now: an identical op waits and then hits the cache.
    pub(crate) in_flight: InFlight,
    /// Takes each new snapshot that will be a layer of the image, to export it right away.
    pub(crate) early_layers: &'a EarlyLayers,
    /// Records a step made for later builds (a COPY's reuse index), made and written once its
    /// snapshot has been handed to `early_layers`: the export need not wait for them.
    pub(crate) after_commit: Mutex<Vec<(CacheKey, PendingIndex)>>,
}

/// Identical operations run once: the first op with a key claims it; another op with the same
/// key (an identical step in another stage) waits for the claim to end, then finds the result
/// in the cache.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    keys: Mutex<BTreeSet<CacheKey>>,
    released: Condvar,
    /// Set at the first failure, or by the caller (Ctrl-C): running sandboxes are killed and
    /// no op starts.
    pub(crate) cancel: Arc<AtomicBool>,
    /// Whether a step failed (and so raised `cancel`); otherwise a raised `cancel` came from
    /// the caller, and the steps it stops are reported as cancelled rather than failed.
    step_failed: AtomicBool,
}

struct Claim<'a> {
    in_flight: &'a InFlight,
    key: CacheKey,
}

impl InFlight {
    /// Watches `cancel`, the caller's flag when it gave one.
    pub(crate) fn new(cancel: Option<Arc<AtomicBool>>) -> Self {
        InFlight {
            cancel: cancel.unwrap_or_default(),
            ..InFlight::default()
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// Whether the caller cancelled the build (no step failed first).
    fn cancelled_by_caller(&self) -> bool {
        self.cancelled() && !self.step_failed.load(Ordering::SeqCst)
    }

    fn claim(&self, key: CacheKey) -> Claim<'_> {
        let mut keys = lock(&self.keys);
        while keys.contains(&key) {
            keys = self.released.wait(keys).unwrap_or_else(|e| e.into_inner());
        }
        keys.insert(key);
        Claim {
            in_flight: self,
            key,
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        lock(&self.in_flight.keys).remove(&self.key);
        self.in_flight.released.notify_all();
    }
}

struct Schedule {
    results: Vec<Option<State>>,
    waiting_on: Vec<usize>,
    ready: VecDeque<usize>,
    finished: usize,
    failed: Option<BuildError>,
    tally: Tally,
}

impl Solver<'_> {
    /// Solves every op of the graph; returns each op's state.
    pub(crate) fn run(&self) -> Result<(Vec<State>, Tally), BuildError> {
        let ops = self.plan.graph.ops();
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); ops.len()];
        let mut waiting_on = vec![0; ops.len()];
        for op in ops {
            let distinct: BTreeSet<usize> = op.inputs.iter().map(|i| i.op).collect();
            waiting_on[op.id] = distinct.len();
            for input in distinct {
                users[input].push(op.id);
            }
        }
        let ready = (0..ops.len()).filter(|&i| waiting_on[i] == 0).collect();
        let schedule = Mutex::new(Schedule {
            results: vec![None; ops.len()],
            waiting_on,
            ready,
            finished: 0,
            failed: None,
            tally: Tally::default(),
        });
        let wake = Condvar::new();
        let jobs = self.req.jobs.max(1);
        std::thread::scope(|scope| {
            for _ in 0..jobs {
                scope.spawn(|| self.worker(&schedule, &wake, &users));
            }
        });
        let schedule = schedule.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(err) = schedule.failed {
            return Err(err);
        }
        let states = schedule
            .results
            .into_iter()
            .map(|s| s.ok_or(BuildError::Cancelled))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((states, schedule.tally))
    }

    fn worker(&self, schedule: &Mutex<Schedule>, wake: &Condvar, users: &[Vec<usize>]) {
        let total = users.len();
        loop {
            let (id, inputs) = {
                let mut s = lock(schedule);
                loop {
                    // A raised flag stops the scheduling even when no step failed (Ctrl-C).
                    if s.failed.is_some() || s.finished == total || self.in_flight.cancelled() {
                        wake.notify_all();
                        return;
                    }
                    if let Some(id) = s.ready.pop_front() {
                        let op = self.plan.graph.op(id);
                        let inputs: Vec<State> = op
                            .inputs
                            .iter()
                            .map(|i| s.results[i.op].clone().expect("inputs finish first"))
                            .collect();
                        break (id, inputs);
                    }
                    s = wake.wait(s).unwrap_or_else(|e| e.into_inner());
                }
            };
            let op = self.plan.graph.op(id);
            let outcome = self.solve_op(op, &inputs);
            let mut s = lock(schedule);
            match outcome {
                Ok((state, shown, cached)) => {
                    if shown {
                        s.tally.steps += 1;
                        if cached {
                            s.tally.cached += 1;
                        }
                    }
                    s.results[id] = Some(state);
                    s.finished += 1;
                    for &user in &users[id] {
                        s.waiting_on[user] -= 1;
                        if s.waiting_on[user] == 0 {
                            s.ready.push_back(user);
                        }
                    }
                }
                Err(err) => {
                    if s.failed.is_none() {
                        if self.in_flight.cancelled_by_caller() {
                            // Whatever this step died of (killed, or the helper lost to the
                            // terminal's SIGINT), the caller stopped the build.
                            s.failed = Some(BuildError::Cancelled);
                        } else {
                            s.failed = Some(err);
                            // Running RUN steps stop now; nothing new starts.
                            self.in_flight.step_failed.store(true, Ordering::SeqCst);
                            self.in_flight.cancel.store(true, Ordering::SeqCst);
                        }
                    }
                }
            }
            wake.notify_all();
        }
    }

    /// Solves one op: returns its state, whether it is a step progress shows, and whether it
    /// came from the cache.
    fn solve_op(&self, op: &Op, inputs: &[State]) -> Result<(State, bool, bool), BuildError> {
        let base = op
            .inputs
            .iter()
            .position(|i| i.role == InputRole::Base)
            .map(|i| &inputs[i]);
        match &op.kind {
            OpKind::Scratch => Ok((
                State {
                    key: CacheKey::builder(&op.digest).finish(),
                    top: None,
                    root: None,
                },
                false,
                false,
            )),
            OpKind::Config { .. } => {
                let base = base.expect("config ops continue from a base");
                let key = self.key_builder(op, inputs).finish();
                Ok((
                    State {
                        key,
                        top: base.top.clone(),
                        root: base.root.clone(),
                    },
                    false,
                    false,
                ))
            }
            OpKind::Context { name, include, .. } => {
                let mut builder = self.key_builder(op, inputs);
                // A mount of `source=dir` reads only that part of the context: key it by that
                // part, so an unrelated file does not rerun the RUN (BuildKit does the same).
                if let Some(tree) = self.context_tree(name) {
                    if include.is_empty() {
                        builder = builder.content("context", &tree.root_digest());
                    }
                    for path in include {
                        builder = match tree.digest(path) {
                            Some(d) => builder.content(path, &d),
                            None => builder.extra(path, b"(missing)"),
                        };
                    }
                }
                Ok((
                    State {
                        key: builder.finish(),
                        top: None,
                        root: None,
                    },
                    false,
                    false,
                ))
            }
            OpKind::Image { reference, .. } => {
                self.solve_image(op, reference).map(|s| (s, true, true))
            }
            OpKind::Run(run) => self.cached_or(op, inputs, base, |key| {
                self.run_step(op, run, inputs, base, key)
            }),
            OpKind::File(file) => self.cached_or(op, inputs, base, |key| {
                self.file_step(op, file, inputs, base, key)
            }),
            OpKind::Mkdir { path, mode, user } => self.cached_or(op, inputs, base, |key| {
                self.mkdir_step(op, path, *mode, user.as_deref(), base, key)
            }),
        }
    }

    fn key_builder(&self, op: &Op, inputs: &[State]) -> forge_cache::CacheKeyBuilder {
        let link = is_link(op);
        // The planner's digest covers the inputs' digests, the base image's included; a
        // --link layer is keyed by its own definition and its non-base inputs instead.
        let definition = if link {
            format!(
                "link/v1 {}",
                serde_json::to_string(&op.kind).unwrap_or_else(|_| op.digest.clone())
            )
        } else {
            op.digest.clone()
        };
        let mut builder = CacheKey::builder(&definition);
        for (input, state) in op.inputs.iter().zip(inputs) {
            // A COPY --link layer does not depend on what it lands on (BuildKit rebases it).
            if link && input.role == InputRole::Base {
                continue;
            }
            // A COPY from the context is keyed by the files it selects, not the whole context.
            if input.role == InputRole::CopySource {
                if let OpKind::File(FileOp {
                    from: SourceRef::Context | SourceRef::Named { .. },
                    ..
                }) = &op.kind
                {
                    continue;
                }
            }
            builder = builder.input(&state.key);
        }
        builder
    }

    fn context_tree(&self, name: &str) -> Option<&ContextTree> {
        self.named_trees.get(name).or(self.tree.as_ref())
    }

    fn solve_image(&self, op: &Op, reference: &str) -> Result<State, BuildError> {
        self.progress.event(Event::Started {
            step: op.id,
            name: &op.name,
        });
        let start = Instant::now();
        let image =
            self.images
                .get(reference)
                .cloned()
                .ok_or_else(|| BuildError::ImageNotFound {
                    reference: reference.to_owned(),
                })?;
        let top = image_snapshots(self.store, &image)?;
        let key = CacheKey::builder(&op.digest)
            .extra(
                "manifest",
                image.manifest_descriptor.digest().to_string().as_bytes(),
            )
            .finish();
        self.memory.observe(
            op,
            Ingredients {
                image: Some(image.manifest_descriptor.digest().to_string()),
                ..Ingredients::new(key)
            },
        );
        self.progress.event(Event::Done {
            step: op.id,
            elapsed: start.elapsed(),
        });
        Ok(State {
            key,
            top,
            root: Some(image),
        })
    }

    /// Looks the op up by its cache key; on a miss runs `exec`, which returns the new snapshot.
    fn cached_or(
        &self,
        op: &Op,
        inputs: &[State],
        base: Option<&State>,
        exec: impl FnOnce(CacheKey) -> Result<SnapshotId, BuildError>,
    ) -> Result<(State, bool, bool), BuildError> {
        let base = base.expect("filesystem ops continue from a base");
        self.progress.event(Event::Started {
            step: op.id,
            name: &op.name,
        });
        let start = Instant::now();
        let (key, ingredients) = match self.full_key(op, inputs) {
            Ok(k) => k,
            Err(e) => return Err(self.fail(op, start, e)),
        };
        // What later ops see: a --link layer's key is its own, its state's is on its base.
        let state_key = if is_link(op) {
            CacheKey::builder("link-on-base/v1")
                .input(&base.key)
                .input(&key)
                .finish()
        } else {
            key
        };
        let bypass = self.cache_bypassed(op);
        let _claim = (!bypass).then(|| self.in_flight.claim(key));
        if !bypass {
            // A --link layer already rebased onto this base is recorded under the state key.
            let hit = if is_link(op) {
                match self.lookup(&state_key)? {
                    Some(s) => Some(s),
                    None => self.lookup(&key)?,
                }
            } else {
                self.lookup(&key)?
            };
            if let Some(snapshot) = hit {
                // An ADD URL fetched for its key is not copied after all.
                drop(self.remote.take(op.id));
                let snapshot = match self.rebase(op, snapshot, base, &state_key) {
                    Ok(s) => s,
                    Err(e) => return Err(self.fail(op, start, e)),
                };
                self.memory.observe(op, ingredients);
                self.progress.event(Event::Cached { step: op.id });
                return Ok((
                    State {
                        key: state_key,
                        top: Some(snapshot),
                        root: base.root.clone(),
                    },
                    true,
                    true,
                ));
            }
        }
        let reason = if bypass {
            "cache disabled (--no-cache)".to_owned()
        } else {
            self.memory.explain_miss(op, &ingredients)
        };
        self.progress.event(Event::Miss {
            step: op.id,
            reason: &reason,
        });
        match exec(key) {
            Ok(snapshot) => {
                // The layer export goes first: after a big COPY it is the longest thing left,
                // and it needs none of the records below.
                self.early_layers.committed(op, &snapshot);
                // Only a step that finished is remembered: after a failed or cancelled run the
                // next build explains its miss against the last one that produced a result
                // (not "its cache record was pruned").
                self.memory.observe(op, ingredients);
                self.store.put_record(
                    &key,
                    &CacheRecord {
                        snapshot: Some(snapshot.clone()),
                        description: op.name.clone(),
                        ..CacheRecord::default()
                    },
                )?;
                let records = std::mem::take(&mut *lock(&self.after_commit));
                for (key, index) in records {
                    self.store.put_record(&key, &index.record())?;
                }
                self.progress.event(Event::Done {
                    step: op.id,
                    elapsed: start.elapsed(),
                });
                Ok((
                    State {
                        key: state_key,
                        top: Some(snapshot),
                        root: base.root.clone(),
                    },
                    true,
                    false,
                ))
            }
            Err(e) => Err(self.fail(op, start, e)),
        }
    }

    /// A cached --link layer recorded on another base: the same files as a new snapshot on
    /// this base (the layer was written into an empty directory, so it holds no whiteouts
    /// and copies as it is). Other snapshots are used as they are.
    fn rebase(
        &self,
        op: &Op,
        snapshot: SnapshotId,
        base: &State,
        state_key: &CacheKey,
    ) -> Result<SnapshotId, BuildError> {
        if !is_link(op) || self.store.snapshot_meta(&snapshot)?.parent == base.top {
            return Ok(snapshot);
        }
        let tree = self.store.snapshot_tree(&snapshot)?;
        let draft = self.store.prepare_snapshot()?;
        let spec = CopySpec {
            sources: vec![CopySource::Path(".".to_owned())],
            dest: "/".to_owned(),
            keep_source_owner: true,
            ..CopySpec::default()
        };
        // A tree laid over earlier ones is copied bottom first: what a higher level has
        // replaces what is below it, and its directories' metadata wins.
        for level in tree.iter().rev() {
            forge_executor::copy(&spec, level, &draft.fs_dir())
                .map_err(|source| self.fileop_error(op, source))?;
        }
        let meta = SnapshotMeta {
            parent: base.top.clone(),
            description: op.name.clone(),
            ..SnapshotMeta::default()
        };
        let rebased = self.store.commit_snapshot(draft, meta)?;
        self.store.put_record(
            state_key,
            &CacheRecord {
                snapshot: Some(rebased.clone()),
                description: op.name.clone(),
                ..CacheRecord::default()
            },
        )?;
        Ok(rebased)
    }

    /// Whether `--no-cache` (or `--no-cache-filter` naming its stage) keeps `op` from anything
    /// earlier builds made.
    pub(crate) fn cache_bypassed(&self, op: &Op) -> bool {
        self.req.no_cache || self.no_cache_stages.contains(&op.stage)
    }

    fn fail(&self, op: &Op, start: Instant, err: BuildError) -> BuildError {
        // A step the caller stopped shows as cancelled, not as failed with its kill's error.
        let err = if self.in_flight.cancelled_by_caller() {
            BuildError::Cancelled
        } else {
            err
        };
        self.progress.event(Event::Failed {
            step: op.id,
            elapsed: start.elapsed(),
            error: &err.to_string(),
        });
        err
    }

    fn lookup(&self, key: &CacheKey) -> Result<Option<SnapshotId>, BuildError> {
        let Some(record) = self.store.get_record(key)? else {
            return Ok(None);
        };
        let Some(snapshot) = record.snapshot else {
            return Ok(None);
        };
        // A record whose snapshot chain (or a tree one of them is laid over) was pruned away is
        // a miss, not an error.
        match self.store.chain_dirs(&snapshot) {
            Ok(_) => Ok(Some(snapshot)),
            Err(_) => Ok(None),
        }
    }

    /// The op's cache key with everything that went into it, for explaining misses.
    fn full_key(&self, op: &Op, inputs: &[State]) -> Result<(CacheKey, Ingredients), BuildError> {
        let mut builder = self.key_builder(op, inputs);
        let mut files = BTreeMap::new();
        // Directories read from a context: what is below them is listed for the memory.
        let mut detailed: Vec<(&ContextTree, String)> = Vec::new();
        if let OpKind::File(file) = &op.kind {
            // A directory named context is keyed by its files the same way.
            let tree_name = match &file.from {
                SourceRef::Context => Some("context"),
                SourceRef::Named { name } => Some(name.as_str()),
                _ => None,
            };
            if let Some(tree_name) = tree_name {
                if let Some(tree) = self.context_tree(tree_name) {
                    let spec = self.copy_spec(op, file)?;
                    // An ADD of URLs alone reads nothing from the context.
                    let url_only = spec.sources.is_empty() && !remote_urls(file).is_empty();
                    let sources = if url_only {
                        Vec::new()
                    } else {
                        forge_executor::resolve_sources(&spec, tree.root())
                            .map_err(|source| self.fileop_error(op, source))?
                    };
                    for rel in sources {
                        let digest = tree.digest(&rel).ok_or_else(|| BuildError::FileOp {
                            file: self.req.dockerfile_name.clone(),
                            line: op.line,
                            name: op.name.clone(),
                            source: Box::new(forge_executor::FileOpError::SourceNotFound {
                                instruction: action_name(file.action),
                                source_path: rel.clone(),
                            }),
                        })?;
                        builder = builder.content(&rel, &digest);
                        detailed.push((tree, rel.clone()));
                        files.insert(rel, digest.to_string());
                    }
                }
            }
        }
        // An ADD URL is keyed by its --checksum, with no download (BuildKit's cache hit without
        // a fetch), or else by what it serves now, so every build fetches it as BuildKit does.
        if let OpKind::File(file) = &op.kind {
            let urls = remote_urls(file);
            // BuildKit refuses a checksum it could not verify.
            let local = file.sources.iter().find(|s| !is_remote(s));
            if let (Some(_), Some(local), FileAction::Add) = (&file.checksum, local, file.action) {
                return Err(BuildError::ChecksumNeedsUrl {
                    file: self.req.dockerfile_name.clone(),
                    line: op.line,
                    name: op.name.clone(),
                    source_text: local.clone(),
                });
            }
            if !urls.is_empty() {
                match self.checksum(op, file)? {
                    Some(hex) => {
                        for url in &urls {
                            let digest = format!("sha256:{hex}");
                            builder = builder.extra(url, digest.as_bytes());
                            files.insert((*url).to_owned(), digest);
                        }
                    }
                    None => {
                        let downloads = self.download(op, file)?;
                        for d in &downloads.files {
                            let digest = format!("sha256:{}", d.file.sha256);
                            builder = builder.extra(&d.url, digest.as_bytes());
                            files.insert(d.url.clone(), digest);
                        }
                        self.remote.keep(op.id, downloads);
                    }
                }
            }
        }
        // The context parts a RUN mounts, so a miss can name the file that changed.
        if let (OpKind::Run(run), Some(tree)) = (&op.kind, self.context_tree("context")) {
            for m in &run.mounts {
                let from_context = matches!(m.from, Some(SourceRef::Context));
                if m.kind == MountType::Bind && from_context {
                    let path = m
                        .source
                        .clone()
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| ".".to_owned());
                    if let Some(d) = tree.digest(&path) {
                        detailed.push((tree, path.clone()));
                        files.insert(path, d.to_string());
                    }
                }
            }
        }
        let key = builder.finish();
        // Listing every file below a big directory costs milliseconds: unneeded when the
        // memory already holds this very key (then the files are the ones it lists).
        let mut detail = String::new();
        if !self.memory.remembers(op, &key) {
            let mut below = Vec::new();
            for (tree, path) in &detailed {
                detail_below(tree, path, &mut below);
            }
            detail = crate::memory::detail_pairs(below);
        }
        let env = match &op.kind {
            OpKind::Run(run) => run.env.clone(),
            _ => Vec::new(),
        };
        Ok((
            key,
            Ingredients {
                key,
                files,
                detail,
                env,
                inputs: inputs.iter().map(|s| s.key.to_hex()).collect(),
                image: None,
            },
        ))
    }
}

/// `COPY --link` / `ADD --link`.
fn is_link(op: &Op) -> bool {
    matches!(&op.kind, OpKind::File(file) if file.link)
}

/// Most files remembered below one copied directory, to explain a miss; a bigger tree is
/// explained by its top directory alone.
const DETAIL_LIMIT: usize = 20_000;

/// Adds the files and symlinks below `path`, when it is a directory of the context, to `out`
/// as (path, entry), in path order.
fn detail_below<'t>(
    tree: &'t ContextTree,
    path: &str,
    out: &mut Vec<(&'t str, &'t forge_cache::ContextEntry)>,
) {
    let is_dir = tree
        .entry(path)
        .is_some_and(|e| e.kind == forge_cache::EntryKind::Dir);
    if !is_dir {
        return;
    }
    let start = out.len();
    out.extend(
        tree.entries_under(path)
            .filter(|(_, e)| e.kind != forge_cache::EntryKind::Dir)
            .take(DETAIL_LIMIT + 1),
    );
    if out.len() - start > DETAIL_LIMIT {
        out.truncate(start);
    }
}
