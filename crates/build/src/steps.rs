//! How each kind of step runs on a miss: RUN in the sandbox (with its mounts), COPY/ADD and
//! WORKDIR as file operations on an overlay of the parent snapshots, and the views of other
//! stages they read from. The scheduler and the cache keys are in `solve`.

use std::path::{Path, PathBuf};

use forge_cache::{CacheKey, CacheMount, SnapshotId, SnapshotMeta};
use forge_executor::{
    ChmodSpec, CopyOptions, CopyReport, CopySource, CopySpec, MountSpec as SandboxMount,
    SandboxSpec, Staged,
};
use forge_parser::{CacheSharing, MountType, NetworkMode, SecurityMode};
use forge_planner::{FileAction, FileOp, Op, OpKind, RunOp, SourceRef};

use crate::error::BuildError;
use crate::fetch::{download_all, is_http, parse_checksum, Downloads, FetchFailure};
use crate::images::lock;
use crate::overlay::OverlayMount;
use crate::progress::Event;
use crate::reuse::{self, CopyReuse, Settled};
use crate::rootfs::mkdir_in_root;

use crate::solve::{Solver, State};

impl Solver<'_> {
    pub(crate) fn chain_dirs(&self, top: Option<&SnapshotId>) -> Result<Vec<PathBuf>, BuildError> {
        let Some(top) = top else {
            return Ok(Vec::new());
        };
        Ok(self.store.chain_dirs(top)?)
    }

    pub(crate) fn scratch_dir(&self, what: &str) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.store
            .staging_dir()
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// A read-only view of another op's filesystem (a `--from` stage or image).
    pub(crate) fn view_of(&self, state: &State) -> Result<OverlayMount, BuildError> {
        let lowers = self.chain_dirs(state.top.as_ref())?;
        OverlayMount::readonly(&lowers, &self.scratch_dir("view"))
    }

    pub(crate) fn run_step(
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
                    spec.mounts.push(SandboxMount::Secret {
                        id,
                        content: content.clone(),
                        target: (!m.target.is_empty()).then(|| m.target.clone()),
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

    pub(crate) fn context_dir(&self, op: &Op) -> Result<PathBuf, BuildError> {
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

    pub(crate) fn copy_spec(&self, op: &Op, file: &FileOp) -> Result<CopySpec, BuildError> {
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
    pub(crate) fn checksum(&self, op: &Op, file: &FileOp) -> Result<Option<String>, BuildError> {
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
    pub(crate) fn download(&self, op: &Op, file: &FileOp) -> Result<Downloads, BuildError> {
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

    pub(crate) fn fileop_error(&self, op: &Op, source: forge_executor::FileOpError) -> BuildError {
        BuildError::FileOp {
            file: self.req.dockerfile_name.clone(),
            line: op.line,
            name: op.name.clone(),
            source: Box::new(source),
        }
    }

    pub(crate) fn file_step(
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
        // A copy from a context tree can hardlink what the last run of this COPY copied.
        let tree = match (&file.from, no_local) {
            (_, true) => None,
            (SourceRef::Context, _) => self.tree.as_ref(),
            (SourceRef::Named { name }, _) => self.named_trees.get(name),
            _ => None,
        }
        .filter(|t| t.root() == src_root);
        let family = reuse::family_key(&op.kind, &src_root);
        // --no-cache means nothing from earlier builds, linked files included.
        let link = !self.cache_bypassed(op);
        let reuse =
            tree.map(|t| CopyReuse::load(self.store, &family, t, link, file.chown.as_deref()));
        let opts = CopyOptions {
            cancel: Some(&self.in_flight.cancel),
            reuse: reuse.as_ref().map(|r| r as &dyn forge_executor::Reuse),
        };
        let copy_all = |target: &Path| -> Result<Staged, forge_executor::FileOpError> {
            if remote.is_none() {
                return forge_executor::copy_or_defer(&spec, &src_root, target, &opts);
            }
            let mut report = CopyReport::default();
            if !no_local {
                report = forge_executor::copy(&spec, &src_root, target)?;
            }
            if let Some((remote_spec, downloads)) = &remote {
                forge_executor::copy(remote_spec, &downloads.dir, target)?;
            }
            Ok(Staged::Done(report))
        };
        let staged = if file.link {
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
        // A deferred copy writes into the upperdir itself, now that no overlay is mounted on it.
        let result = staged.and_then(|staged| match staged {
            Staged::Done(report) => Ok(report),
            Staged::Deferred(deferred) => deferred.finish(&draft.fs_dir(), &opts),
        });
        let report = result.map_err(|source| self.fileop_error(op, source))?;
        let settled = match &reuse {
            Some(reuse) => reuse.settle(&draft.fs_dir())?,
            None => Settled::Alone { linked: 0 },
        };
        let (linked, below) = match settled {
            Settled::Over(below) => (report.reused, Some(below)),
            Settled::Alone { linked } => (report.reused + linked, None),
        };
        let note = match &below {
            Some(_) => format!(
                "{} unchanged files kept from the last run of this step (laid over it), {} copied\n",
                report.kept, report.files
            ),
            None => format!(
                "{linked} unchanged files linked from the last run of this step, {} copied\n",
                report.files
            ),
        };
        if linked > 0 || below.is_some() {
            self.progress.event(Event::Output {
                step: op.id,
                stream: forge_executor::Stream::Stdout,
                data: note.as_bytes(),
            });
        }
        drop(_view);
        drop(downloads);
        let meta = SnapshotMeta {
            parent: base.top.clone(),
            below,
            description: op.name.clone(),
            ..SnapshotMeta::default()
        };
        let snapshot = self.store.commit_snapshot(draft, meta)?;
        if let Some(index) = reuse.and_then(|r| r.index(&snapshot, &op.name)) {
            lock(&self.after_commit).push((family, index));
        }
        Ok(snapshot)
    }

    pub(crate) fn mkdir_step(
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
                Some(u) if !u.is_empty() => forge_executor::resolve_owner(u, merged.path())
                    .map_err(|source| self.fileop_error(op, source))?,
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

pub(crate) fn action_name(action: FileAction) -> &'static str {
    match action {
        FileAction::Copy => "COPY",
        FileAction::Add => "ADD",
    }
}

/// An ADD's `http(s)://` sources, which are downloaded rather than read from a source tree.
pub(crate) fn remote_urls(file: &FileOp) -> Vec<&str> {
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
pub(crate) fn remote_spec(file: &FileOp, local: &CopySpec, downloads: &Downloads) -> CopySpec {
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

pub(crate) fn is_remote(source: &str) -> bool {
    source.starts_with("http://")
        || source.starts_with("https://")
        || source.starts_with("git@")
        || source.starts_with("git://")
        || source.starts_with("ssh://")
}

pub(crate) fn base_name(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
        .to_owned()
}

/// Gives a cache mount's directory the owner and mode its first RUN asks for, while it is
/// still empty (BuildKit creates the cache with `uid`, `gid` and `mode`).
pub(crate) fn init_cache_dir(dir: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), BuildError> {
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
