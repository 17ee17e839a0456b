//! forge-run: containers from images. `forge run` (first form) runs an image's process in the
//! sandbox in the foreground, with the image's Entrypoint, Cmd, Env, WorkingDir and User as
//! Docker combines them, and exits with the process's status; the signals forge receives meanwhile
//! go to that process ([`forward_signal`]).

mod signals;

use std::path::PathBuf;

use forge_build::{image_snapshots, load_image, LocalImage};
use forge_cache::Store;
use forge_executor::{ExecError, ExitKind, NetworkMode, SandboxConfig, SandboxSpec, Stream};
use forge_planner::Platform;
use oci_spec::image::Descriptor;

pub use signals::forward_signal;

/// A failure of forge itself (Docker's exit status 125), as opposed to the container's.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Build(#[from] forge_build::BuildError),
    #[error(transparent)]
    Store(#[from] forge_cache::StoreError),
    #[error("{0}")]
    Sandbox(ExecError),
    #[error("image {name} has no command to run (give one after the image name)")]
    NoCommand { name: String },
}

/// What `forge run` asks for on top of the image's config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `-e K=V`, added to (and overriding) the image's Env.
    pub env: Vec<(String, String)>,
    /// `-w DIR`.
    pub workdir: Option<String>,
    /// `-u USER`.
    pub user: Option<String>,
    /// `--entrypoint`: replaces the image's Entrypoint and drops its Cmd.
    pub entrypoint: Option<String>,
    /// The command after the image name: replaces the image's Cmd.
    pub command: Vec<String>,
    /// `--network`.
    pub network: Option<NetworkMode>,
    /// `--hostname`.
    pub hostname: Option<String>,
}

/// How the container ended, as `docker run` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerExit {
    /// The process exited with this status.
    Code(i32),
    /// The command could not be invoked (126) or was not found (127).
    CannotInvoke(i32),
}

impl ContainerExit {
    /// The exit status `forge run` itself exits with.
    pub fn status(self) -> i32 {
        match self {
            ContainerExit::Code(c) | ContainerExit::CannotInvoke(c) => c,
        }
    }
}

/// The argv Docker runs: Entrypoint + Cmd, with `--entrypoint` and a command overriding them.
pub fn container_argv(image: &LocalImage, opts: &RunOptions) -> Vec<String> {
    let config = image.config.config().clone().unwrap_or_default();
    let (entrypoint, cmd) = match &opts.entrypoint {
        Some(ep) if ep.is_empty() => (Vec::new(), opts.command.clone()),
        Some(ep) => (vec![ep.clone()], opts.command.clone()),
        None => {
            let ep = config.entrypoint().clone().unwrap_or_default();
            let cmd = if opts.command.is_empty() {
                config.cmd().clone().unwrap_or_default()
            } else {
                opts.command.clone()
            };
            (ep, cmd)
        }
    };
    entrypoint.into_iter().chain(cmd).collect()
}

/// Runs `image` (already in the store) in the foreground; its output goes to `output`.
pub fn run_image(
    store: &Store,
    name: &str,
    descriptor: &Descriptor,
    opts: &RunOptions,
    sandbox: &SandboxConfig,
    output: &mut dyn FnMut(Stream, &[u8]),
) -> Result<ContainerExit, RunError> {
    let image = load_image(store, name, descriptor, &Platform::host())?;
    let argv = container_argv(&image, opts);
    if argv.is_empty() {
        return Err(RunError::NoCommand {
            name: name.to_owned(),
        });
    }
    let top = image_snapshots(store, &image)?;
    let lowerdirs: Vec<PathBuf> = match &top {
        Some(top) => store.chain_dirs(top)?,
        None => Vec::new(),
    };
    // The container's writable layer: a draft that is never committed, so it vanishes (--rm).
    let draft = store.prepare_snapshot()?;
    let config = image.config.config().clone().unwrap_or_default();
    let mut spec = SandboxSpec::new(lowerdirs, draft.fs_dir(), draft.work_dir(), argv);
    let mut env: Vec<(String, String)> = config
        .env()
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (kv.clone(), String::new()),
        })
        .collect();
    for (k, v) in &opts.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    spec.env = env;
    spec.cwd = opts
        .workdir
        .clone()
        .or_else(|| config.working_dir().clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_owned());
    spec.user = opts
        .user
        .clone()
        .or_else(|| config.user().clone())
        .unwrap_or_default();
    spec.network = opts.network.unwrap_or(NetworkMode::Default);
    if let Some(h) = &opts.hostname {
        spec.hostname = h.clone();
    }
    match forge_executor::run(sandbox, &spec, output) {
        Ok(_) => Ok(ContainerExit::Code(0)),
        Err(ExecError::StepFailed { exit, .. }) => Ok(match exit {
            ExitKind::Code(c) => ContainerExit::Code(c),
            ExitKind::Signal(s) => ContainerExit::Code(128 + s),
        }),
        Err(ExecError::Exec { err, .. }) => Ok(ContainerExit::CannotInvoke(
            if err.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            },
        )),
        Err(e) => Err(RunError::Sandbox(e)),
    }
}
