//! The scheduler: solves the planner's graph with a few worker threads. Each op's cache key
//! is computed from its definition digest, its inputs' keys and the content it reads; a hit
//! reuses the recorded snapshot, a miss runs the op (RUN in the sandbox, COPY/ADD/WORKDIR as
//! file operations on an overlay) and records the result. The first failure stops the
//! scheduling of new ops; running ones finish, and their mounts are undone on every path.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use forge_cache::{
    CacheKey, CacheMount, CacheRecord, ContextTree, SnapshotId, SnapshotMeta, Store,
};
use forge_executor::{ChmodSpec, CopySource, CopySpec, MountSpec as SandboxMount, SandboxSpec};
use forge_parser::{CacheSharing, MountType, NetworkMode, SecurityMode};
use forge_planner::{FileAction, FileOp, InputRole, Op, OpKind, Plan, RunOp, SourceRef};

use crate::error::BuildError;
use crate::fetch::{download_all, is_http, parse_checksum, Downloads, FetchFailure, Remote};
use crate::images::{image_snapshots, lock, LocalImage};
use crate::memory::{Ingredients, Memory};
use crate::overlay::OverlayMount;
use crate::progress::{Event, Progress};
use crate::request::BuildRequest;
use crate::rootfs::{mkdir_in_root, resolve_owner};

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
}

/// Identical operations run once: the first op with a key claims it; another op with the same
/// key (an identical step in another stage) waits for the claim to end, then finds the result
/// in the cache.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    keys: Mutex<BTreeSet<CacheKey>>,
    released: Condvar,
    /// Set at the first failure: running sandboxes are killed.
    pub(crate) cancel: Arc<std::sync::atomic::AtomicBool>,
}

struct Claim<'a> {
    in_flight: &'a InFlight,
    key: CacheKey,
}

impl InFlight {
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
                    if s.failed.is_some() || s.finished == total {
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
                        s.failed = Some(err);
                        // Running RUN steps stop now; nothing new starts.
                        self.in_flight
                            .cancel
                            .store(true, std::sync::atomic::Ordering::SeqCst);
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
        let bypass = self.req.no_cache || self.no_cache_stages.contains(&op.stage);
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
        self.memory.observe(op, ingredients);
        match exec(key) {
            Ok(snapshot) => {
                self.store.put_record(
                    &key,
                    &CacheRecord {
                        snapshot: Some(snapshot.clone()),
                        description: op.name.clone(),
                        ..CacheRecord::default()
                    },
                )?;
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
        let layer = self.store.snapshot_fs(&snapshot)?;
        let draft = self.store.prepare_snapshot()?;
        let spec = CopySpec {
            sources: vec![CopySource::Path(".".to_owned())],
            dest: "/".to_owned(),
            keep_source_owner: true,
            ..CopySpec::default()
        };
        forge_executor::copy(&spec, &layer, &draft.fs_dir())
            .map_err(|source| self.fileop_error(op, source))?;
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

    fn fail(&self, op: &Op, start: Instant, err: BuildError) -> BuildError {
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
        // A record whose snapshot chain was pruned away is a miss, not an error.
        match self.store.snapshot_chain(&snapshot) {
            Ok(_) => Ok(Some(snapshot)),
            Err(_) => Ok(None),
        }
    }

    /// The op's cache key with everything that went into it, for explaining misses.
    fn full_key(&self, op: &Op, inputs: &[State]) -> Result<(CacheKey, Ingredients), BuildError> {
        let mut builder = self.key_builder(op, inputs);
        let mut files = BTreeMap::new();
        let mut detail = BTreeMap::new();
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
                        detail_below(tree, &rel, &mut detail);
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
                        detail_below(tree, &path, &mut detail);
                        files.insert(path, d.to_string());
                    }
                }
            }
        }
        let key = builder.finish();
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

    fn chain_dirs(&self, top: Option<&SnapshotId>) -> Result<Vec<PathBuf>, BuildError> {
        let Some(top) = top else {
            return Ok(Vec::new());
        };
        let chain = self.store.snapshot_chain(top)?;
        chain
            .iter()
            .map(|id| self.store.snapshot_fs(id).map_err(BuildError::from))
            .collect()
    }

    fn scratch_dir(&self, what: &str) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.store
            .staging_dir()
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// A read-only view of another op's filesystem (a `--from` stage or image).
    fn view_of(&self, state: &State) -> Result<OverlayMount, BuildError> {
        let lowers = self.chain_dirs(state.top.as_ref())?;
        OverlayMount::readonly(&lowers, &self.scratch_dir("view"))
    }

    fn run_step(
        &self,
        op: &Op,
        run: &RunOp,
        inputs: &[State],
        base: Option<&State>,
        _key: CacheKey,
    ) -> Result<SnapshotId, BuildError> {
        let base = base.expect("RUN has a base");
        let lowerdirs = self.chain_dirs(base.top.as_ref())?;
        let draft = self.store.prepare_snapshot()?;
        let mut spec = SandboxSpec::new(
            lowerdirs,
            draft.fs_dir(),
            draft.work_dir(),
            run.argv.clone(),
        );
        spec.env = run
            .env
            .iter()
            .chain(
                run.proxy_env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .iter(),
            )
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (kv.clone(), String::new()),
            })
            .collect();
        spec.cwd = run.cwd.clone();
        spec.user = run.user.clone().unwrap_or_default();
        spec.network = match run.network {
            NetworkMode::Default => self
                .req
                .network
                .unwrap_or(forge_executor::NetworkMode::Default),
            NetworkMode::None => forge_executor::NetworkMode::None,
            NetworkMode::Host => forge_executor::NetworkMode::Host,
        };
        spec.security = match run.security {
            SecurityMode::Sandbox => forge_executor::SecurityMode::Sandbox,
            SecurityMode::Insecure => forge_executor::SecurityMode::Insecure,
        };
        spec.allow_insecure = self.req.allow_insecure;
        spec.limits = self.req.limits;

        // Held until the step ends: views of other stages and cache-mount locks.
        let mut views = Vec::new();
        let mut caches: Vec<CacheMount> = Vec::new();
        for m in &run.mounts {
            match m.kind {
                MountType::Bind => {
                    let source_root = match (&m.from, m.input) {
                        (
                            Some(SourceRef::Stage { .. }) | Some(SourceRef::Image { .. }),
                            Some(i),
                        ) => {
                            let view = self.view_of(&inputs[i])?;
                            let path = view.path().to_path_buf();
                            views.push(view);
                            path
                        }
                        (Some(SourceRef::Named { name }), _)
                            if self.named_trees.contains_key(name) =>
                        {
                            self.named_trees[name].root().to_path_buf()
                        }
                        _ => self.context_dir(op)?,
                    };
                    spec.mounts.push(SandboxMount::Bind {
                        source_root,
                        source: m.source.clone().unwrap_or_else(|| "/".to_owned()),
                        target: m.target.clone(),
                        readwrite: !m.readonly,
                    });
                }
                MountType::Cache => {
                    let id = m.id.clone().unwrap_or_else(|| m.target.clone());
                    let sharing = match m.sharing.unwrap_or(CacheSharing::Shared) {
                        CacheSharing::Shared => forge_cache::CacheSharing::Shared,
                        CacheSharing::Private => forge_cache::CacheSharing::Private,
                        CacheSharing::Locked => forge_cache::CacheSharing::Locked,
                    };
                    let cache = self.store.cache_mount(&id, sharing)?;
                    let (mode, uid, gid) = (
                        m.mode.unwrap_or(0o755),
                        m.uid.unwrap_or(0),
                        m.gid.unwrap_or(0),
                    );
                    // The store creates the directory, so the sandbox never sees it missing and
                    // would not apply uid/gid/mode; an empty cache is as good as a new one.
                    init_cache_dir(cache.path(), mode, uid, gid)?;
                    spec.mounts.push(SandboxMount::Cache {
                        host_dir: cache.path().to_path_buf(),
                        target: m.target.clone(),
                        readonly: m.readonly,
                        mode,
                        uid,
                        gid,
                        lock_file: None,
                    });
                    caches.push(cache);
                }
                MountType::Tmpfs => spec.mounts.push(SandboxMount::Tmpfs {
                    target: m.target.clone(),
                    size_bytes: m.size,
                }),
                MountType::Secret => {
                    let id = m.id.clone().unwrap_or_else(|| base_name(&m.target));
                    let Some(content) = self.req.secrets.get(&id) else {
                        if m.required.unwrap_or(false) {
                            return Err(BuildError::MissingSecret {
                                file: self.req.dockerfile_name.clone(),
                                line: op.line,
                                id,
                            });
                        }
                        continue;
                    };
                    let target = (!m.target.is_empty()).then(|| m.target.clone());
                    spec.mounts.push(SandboxMount::Secret {
                        id,
                        content: content.clone(),
                        target: if m.env.is_some() && target.as_deref() == Some("") {
                            None
                        } else {
                            target
                        },
                        env: m.env.clone(),
                        mode: m.mode.unwrap_or(0o400),
                        uid: m.uid.unwrap_or(0),
                        gid: m.gid.unwrap_or(0),
                    });
                }
                MountType::Ssh => {
                    let id = m.id.clone().unwrap_or_else(|| "default".to_owned());
                    let Some(socket) = self.req.ssh.get(&id) else {
                        if m.required.unwrap_or(false) {
                            return Err(BuildError::MissingSsh {
                                file: self.req.dockerfile_name.clone(),
                                line: op.line,
                                id,
                            });
                        }
                        continue;
                    };
                    spec.mounts.push(SandboxMount::Ssh {
                        socket: socket.clone(),
                        target: (!m.target.is_empty()).then(|| m.target.clone()),
                    });
                }
            }
        }
        // `RUN <<EOF` scripts with a `#!` line run from /dev/pipes/, as BuildKit runs them.
        let pipes_dir = if run.pipes.is_empty() {
            None
        } else {
            let dir = self.scratch_dir("pipes");
            std::fs::create_dir_all(&dir).map_err(|e| BuildError::io(&dir, e))?;
            for pipe in &run.pipes {
                let path = dir.join(&pipe.name);
                std::fs::write(&path, pipe.content.as_bytes())
                    .map_err(|e| BuildError::io(&path, e))?;
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )
                .map_err(|e| BuildError::io(&path, e))?;
            }
            spec.mounts.push(SandboxMount::Bind {
                source_root: dir.clone(),
                source: "/".to_owned(),
                target: "/dev/pipes".to_owned(),
                readwrite: false,
            });
            Some(dir)
        };
        let step = op.id;
        let progress = self.progress;
        // The step is stopped (its pid namespace killed) as soon as another step fails.
        let mut sandbox = self.req.sandbox.clone();
        sandbox.cancel = Some(self.in_flight.cancel.clone());
        forge_executor::run(&sandbox, &spec, &mut |stream, data| {
            progress.event(Event::Output { step, stream, data })
        })
        .map_err(|source| BuildError::Step {
            file: self.req.dockerfile_name.clone(),
            line: op.line,
            name: op.name.clone(),
            source: Box::new(source),
        })?;
        drop(views);
        drop(caches);
        if let Some(dir) = pipes_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        let meta = SnapshotMeta {
            parent: base.top.clone(),
            description: op.name.clone(),
            ..SnapshotMeta::default()
        };
        Ok(self.store.commit_snapshot(draft, meta)?)
    }

    fn context_dir(&self, op: &Op) -> Result<PathBuf, BuildError> {
        self.req.context.clone().ok_or_else(|| BuildError::FileOp {
            file: self.req.dockerfile_name.clone(),
            line: op.line,
            name: op.name.clone(),
            source: Box::new(forge_executor::FileOpError::SourceNotFound {
                instruction: "COPY",
                source_path: "(no build context was given)".to_owned(),
            }),
        })
    }

    fn copy_spec(&self, op: &Op, file: &FileOp) -> Result<CopySpec, BuildError> {
        let mut sources = Vec::new();
        for s in &file.sources {
            // Downloaded and copied on their own (see `remote_spec`).
            if file.action == FileAction::Add && is_http(s) {
                continue;
            }
            if is_remote(s) {
                return Err(BuildError::RemoteSource {
                    file: self.req.dockerfile_name.clone(),
                    line: op.line,
                    name: op.name.clone(),
                    source_text: s.clone(),
                });
            }
            sources.push(CopySource::Path(s.clone()));
        }
        for inline in &file.inline {
            sources.push(CopySource::Inline {
                name: inline.name.clone(),
                content: inline.content.clone().into_bytes(),
            });
        }
        let chmod = file
            .chmod
            .as_deref()
            .map(ChmodSpec::parse)
            .transpose()
            .map_err(|source| self.fileop_error(op, source))?;
        Ok(CopySpec {
            sources,
            dest: file.dest.clone(),
            workdir: "/".to_owned(),
            chown: file.chown.clone(),
            chmod,
            parents: file.parents,
            exclude: file.exclude.clone(),
            follow_top_symlink: true,
            unpack_archives: file.action == FileAction::Add && file.unpack != Some(false),
            keep_source_owner: !matches!(file.from, SourceRef::Context | SourceRef::Named { .. }),
            ignore: match file.from {
                SourceRef::Context => self.ignore_patterns.clone(),
                _ => Vec::new(),
            },
        })
    }

    /// `--checksum` as hex, checked for form.
    fn checksum(&self, op: &Op, file: &FileOp) -> Result<Option<String>, BuildError> {
        let Some(checksum) = &file.checksum else {
            return Ok(None);
        };
        match parse_checksum(checksum) {
            Some(hex) => Ok(Some(hex)),
            None => Err(BuildError::BadChecksum {
                file: self.req.dockerfile_name.clone(),
                line: op.line,
                name: op.name.clone(),
                checksum: checksum.clone(),
            }),
        }
    }

    /// Downloads the step's URL sources into a scratch directory, verifying `--checksum`.
    fn download(&self, op: &Op, file: &FileOp) -> Result<Downloads, BuildError> {
        let checksum = self.checksum(op, file)?;
        let fail = |url: &str, failure: FetchFailure| match failure {
            FetchFailure::Fetch(source) => BuildError::Fetch {
                file: self.req.dockerfile_name.clone(),
                line: op.line,
                name: op.name.clone(),
                url: url.to_owned(),
                source,
            },
            FetchFailure::Checksum { expected, actual } => BuildError::ChecksumMismatch {
                file: self.req.dockerfile_name.clone(),
                line: op.line,
                url: url.to_owned(),
                expected,
                actual,
            },
        };
        download_all(
            self.remote.fetcher,
            &remote_urls(file),
            self.scratch_dir("fetch"),
            checksum.as_deref(),
            &fail,
        )
    }

    fn fileop_error(&self, op: &Op, source: forge_executor::FileOpError) -> BuildError {
        BuildError::FileOp {
            file: self.req.dockerfile_name.clone(),
            line: op.line,
            name: op.name.clone(),
            source: Box::new(source),
        }
    }

    fn file_step(
        &self,
        op: &Op,
        file: &FileOp,
        inputs: &[State],
        base: Option<&State>,
        _key: CacheKey,
    ) -> Result<SnapshotId, BuildError> {
        let base = base.expect("COPY has a base");
        let spec = self.copy_spec(op, file)?;
        let urls = remote_urls(file);
        let downloads = match self.remote.take(op.id) {
            Some(d) => Some(d),
            None if !urls.is_empty() => Some(self.download(op, file)?),
            None => None,
        };
        let remote = downloads.as_ref().map(|d| (remote_spec(file, &spec, d), d));
        // The two copies below would each see one source; several, a URL among them, need a
        // directory destination (a downloaded file is never a directory).
        if !urls.is_empty()
            && file.sources.len() + file.inline.len() > 1
            && !file.dest.ends_with('/')
        {
            return Err(self.fileop_error(
                op,
                forge_executor::FileOpError::DestinationNotDirectory {
                    instruction: "ADD",
                    dest: file.dest.clone(),
                },
            ));
        }
        let no_local = spec.sources.is_empty() && remote.is_some();
        let mut _view = None;
        let src_root = match (&file.from, file.input) {
            _ if no_local => PathBuf::new(),
            (SourceRef::Context | SourceRef::Named { .. }, _) => match &file.input {
                Some(i) => match &self.plan.graph.op(op.inputs[*i].op).kind {
                    OpKind::Context { name, .. } if self.named_trees.contains_key(name) => {
                        self.named_trees[name].root().to_path_buf()
                    }
                    _ => self.context_dir(op)?,
                },
                None => self.context_dir(op)?,
            },
            (_, Some(i)) => {
                let view = self.view_of(&inputs[i])?;
                let path = view.path().to_path_buf();
                _view = Some(view);
                path
            }
            (_, None) => self.context_dir(op)?,
        };
        let draft = self.store.prepare_snapshot()?;
        let copy_all = |target: &Path| -> Result<(), forge_executor::FileOpError> {
            if !no_local {
                forge_executor::copy(&spec, &src_root, target)?;
            }
            if let Some((remote_spec, downloads)) = &remote {
                forge_executor::copy(remote_spec, &downloads.dir, target)?;
            }
            Ok(())
        };
        let result = if file.link {
            copy_all(&draft.fs_dir())
        } else {
            let lowers = self.chain_dirs(base.top.as_ref())?;
            let merged = OverlayMount::writable(
                &lowers,
                &draft.fs_dir(),
                &draft.work_dir(),
                &self.scratch_dir("copy"),
            )?;
            let r = copy_all(merged.path());
            drop(merged);
            r
        };
        result.map_err(|source| self.fileop_error(op, source))?;
        drop(_view);
        drop(downloads);
        let meta = SnapshotMeta {
            parent: base.top.clone(),
            description: op.name.clone(),
            ..SnapshotMeta::default()
        };
        Ok(self.store.commit_snapshot(draft, meta)?)
    }

    fn mkdir_step(
        &self,
        op: &Op,
        path: &str,
        mode: u32,
        user: Option<&str>,
        base: Option<&State>,
        _key: CacheKey,
    ) -> Result<SnapshotId, BuildError> {
        let base = base.expect("WORKDIR has a base");
        let lowers = self.chain_dirs(base.top.as_ref())?;
        let draft = self.store.prepare_snapshot()?;
        {
            let merged = OverlayMount::writable(
                &lowers,
                &draft.fs_dir(),
                &draft.work_dir(),
                &self.scratch_dir("mkdir"),
            )?;
            let (uid, gid) = match user {
                Some(u) if !u.is_empty() => resolve_owner(merged.path(), u)?,
                _ => (0, 0),
            };
            mkdir_in_root(merged.path(), Path::new(path), mode, uid, gid)?;
        }
        let meta = SnapshotMeta {
            parent: base.top.clone(),
            description: op.name.clone(),
            ..SnapshotMeta::default()
        };
        Ok(self.store.commit_snapshot(draft, meta)?)
    }
}

fn action_name(action: FileAction) -> &'static str {
    match action {
        FileAction::Copy => "COPY",
        FileAction::Add => "ADD",
    }
}

/// An ADD's `http(s)://` sources, which are downloaded rather than read from a source tree.
fn remote_urls(file: &FileOp) -> Vec<&str> {
    if file.action != FileAction::Add {
        return Vec::new();
    }
    file.sources
        .iter()
        .map(String::as_str)
        .filter(|s| is_http(s))
        .collect()
}

/// The copy of downloaded files: as the step's own copy, from the download directory, and
/// never unpacked (BuildKit does not extract remote archives).
fn remote_spec(file: &FileOp, local: &CopySpec, downloads: &Downloads) -> CopySpec {
    CopySpec {
        sources: downloads
            .files
            .iter()
            .map(|d| CopySource::Path(d.rel.clone()))
            .collect(),
        dest: file.dest.clone(),
        workdir: "/".to_owned(),
        chown: file.chown.clone(),
        chmod: local.chmod.clone(),
        follow_top_symlink: true,
        unpack_archives: false,
        keep_source_owner: false,
        ..CopySpec::default()
    }
}

fn is_remote(source: &str) -> bool {
    source.starts_with("http://")
        || source.starts_with("https://")
        || source.starts_with("git@")
        || source.starts_with("git://")
        || source.starts_with("ssh://")
}

fn base_name(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
        .to_owned()
}

/// Gives a cache mount's directory the owner and mode its first RUN asks for, while it is
/// still empty (BuildKit creates the cache with `uid`, `gid` and `mode`).
fn init_cache_dir(dir: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt;
    let empty = std::fs::read_dir(dir)
        .map_err(|e| BuildError::io(dir, e))?
        .next()
        .is_none();
    if empty {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| BuildError::io(dir, e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(|e| BuildError::io(dir, e))?;
    }
    Ok(())
}

/// `COPY --link` / `ADD --link`.
fn is_link(op: &Op) -> bool {
    matches!(&op.kind, OpKind::File(file) if file.link)
}

/// Most files remembered below one copied directory, to explain a miss; a bigger tree is
/// explained by its top directory alone.
const DETAIL_LIMIT: usize = 20_000;

/// Records the files and symlinks below `path` when it is a directory of the context.
fn detail_below(tree: &ContextTree, path: &str, detail: &mut BTreeMap<String, String>) {
    let is_dir = tree
        .entry(path)
        .is_some_and(|e| e.kind == forge_cache::EntryKind::Dir);
    if !is_dir {
        return;
    }
    let leaves: Vec<(&str, &forge_cache::ContextEntry)> = tree
        .entries_under(path)
        .filter(|(_, e)| e.kind != forge_cache::EntryKind::Dir)
        .take(DETAIL_LIMIT + 1)
        .collect();
    if leaves.len() > DETAIL_LIMIT {
        return;
    }
    for (p, e) in leaves {
        detail.insert(p.to_owned(), e.digest.to_string());
    }
}
