//! [`run`]: one step, start to finish, on either backend. The parts both backends share live
//! here: checking the spec, the per-run directory with the /etc files, cache directories and
//! their locks, the step's environment, the cgroup, and cleaning mount points out of the layer.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use crate::cgroups::StepCgroup;
use crate::error::ExecError;
use crate::layer::remove_mount_traces;
use crate::mounts::{EtcFiles, RunLayout, ETC_FILES};
use crate::native::{run_native, BackendResult};
use crate::spec::{
    ExitKind, MountSpec, RunOutcome, Runtime, SandboxConfig, SandboxSpec, SecurityMode, Stream,
    DEFAULT_PATH,
};
use crate::syscall::LinuxSyscall;

/// Runs one step in a sandbox: its stdout and stderr go to `output` as they come. On success
/// the upperdir holds the step's layer (whiteouts and opaque directories included, mount-point
/// traces removed). A step that exits non-zero gives [`ExecError::StepFailed`].
pub fn run(
    config: &SandboxConfig,
    spec: &SandboxSpec,
    output: &mut dyn FnMut(Stream, &[u8]),
) -> Result<RunOutcome, ExecError> {
    validate(spec)?;
    let etc_files = etc_files(spec);
    let _locks = prepare_caches(spec)?;
    let env = step_env(spec);
    let result = match &config.runtime {
        Runtime::Native => {
            // The helper mounts a private tmpfs over the state directory, so every native run
            // can use the same path and nothing of it reaches the disk.
            std::fs::create_dir_all(&config.state_dir)
                .map_err(|e| ExecError::fs("create directory", &config.state_dir, e))?;
            let layout = RunLayout {
                dir: config.state_dir.clone(),
            };
            let cgroup = StepCgroup::create(&unique_name(), &spec.limits)?;
            run_native(
                config,
                spec,
                &layout,
                env,
                etc_files,
                cgroup.as_ref(),
                output,
            )?
        }
        Runtime::Runc { binary } => {
            // runc needs its bundle on the host.
            let run_dir = RunDir::create(&config.state_dir)?;
            let layout = RunLayout {
                dir: run_dir.path.clone(),
            };
            write_etc_files(&layout, &etc_files)?;
            crate::runc::run_runc(binary, config, spec, &layout, &run_dir.name, env, output)?
        }
    };
    let BackendResult { trace, exit, tail } = result;
    remove_mount_traces(&LinuxSyscall, &spec.upperdir, &spec.lowerdirs, &trace)?;
    if exit != ExitKind::Code(0) {
        return Err(ExecError::StepFailed {
            command: spec.argv.join(" "),
            exit,
            output_tail: tail,
        });
    }
    Ok(RunOutcome {
        upperdir: spec.upperdir.clone(),
    })
}

fn validate(spec: &SandboxSpec) -> Result<(), ExecError> {
    if spec.argv.is_empty() {
        return Err(ExecError::EmptyCommand);
    }
    if spec.security == SecurityMode::Insecure && !spec.allow_insecure {
        return Err(ExecError::InsecureNotAllowed);
    }
    let mut ssh = 0;
    let targets = spec.mounts.iter().filter_map(|m| {
        let t = m.target(ssh);
        if matches!(m, MountSpec::Ssh { .. }) {
            ssh += 1;
        }
        t
    });
    for path in std::iter::once(spec.cwd.clone()).chain(targets) {
        if !path.starts_with('/') {
            return Err(ExecError::RelativePath { path });
        }
    }
    Ok(())
}

/// A name no other run of this host uses at the same time (cgroups, runc containers).
fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "forge-{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A private directory for one run, removed afterwards unless something is still mounted
/// under it (better to leak a directory than to delete through a mount).
#[derive(Debug)]
pub(crate) struct RunDir {
    pub(crate) path: PathBuf,
    pub(crate) name: String,
}

impl RunDir {
    fn create(state_dir: &Path) -> Result<Self, ExecError> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| ExecError::fs("create directory", state_dir, e))?;
        let name = unique_name();
        let path = state_dir.join(&name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| ExecError::fs("create directory", &path, e))?;
        for sub in ["rootfs", "empty", "etc", "secrets"] {
            let p = path.join(sub);
            std::fs::create_dir(&p).map_err(|e| ExecError::fs("create directory", &p, e))?;
        }
        Ok(RunDir { path, name })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = self.path.display().to_string();
        let busy = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|mount_point| mount_point.starts_with(&prefix));
        if !busy {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The sandbox's /etc/hosts, /etc/hostname and /etc/resolv.conf (the host's).
fn etc_files(spec: &SandboxSpec) -> EtcFiles {
    let mut hosts = format!(
        "127.0.0.1\tlocalhost {}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        spec.hostname
    );
    for (name, ip) in &spec.extra_hosts {
        hosts.push_str(&format!("{ip}\t{name}\n"));
    }
    let resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    ETC_FILES
        .iter()
        .map(|name| {
            let content = match *name {
                "hosts" => hosts.clone().into_bytes(),
                "hostname" => format!("{}\n", spec.hostname).into_bytes(),
                _ => resolv.clone(),
            };
            (name.to_string(), content)
        })
        .collect()
}

fn write_etc_files(layout: &RunLayout, files: &EtcFiles) -> Result<(), ExecError> {
    for (name, content) in files {
        let path = layout.etc_file(name);
        std::fs::write(&path, content).map_err(|e| ExecError::fs("write", &path, e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| ExecError::fs("chmod", &path, e))?;
    }
    Ok(())
}

/// Creates missing cache directories (with their mode and owner) and takes the locks of
/// `sharing=locked` caches, held until the returned guards drop. Locks are taken in path
/// order, so two steps sharing two locked caches cannot deadlock.
fn prepare_caches(spec: &SandboxSpec) -> Result<Vec<Flock<std::fs::File>>, ExecError> {
    let mut lock_paths = Vec::new();
    for mount in &spec.mounts {
        let MountSpec::Cache {
            host_dir,
            mode,
            uid,
            gid,
            lock_file,
            ..
        } = mount
        else {
            continue;
        };
        if let Some(lock) = lock_file {
            lock_paths.push(lock);
        }
        if !host_dir.exists() {
            if let Some(parent) = host_dir.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| ExecError::fs("create directory", parent, e))?;
            }
            match std::fs::create_dir(host_dir) {
                Ok(()) => {}
                // A concurrent step sharing the cache made it first, with the same options.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(ExecError::fs("create cache directory", host_dir, e)),
            }
            std::fs::set_permissions(host_dir, std::fs::Permissions::from_mode(*mode))
                .map_err(|e| ExecError::fs("chmod", host_dir, e))?;
            std::os::unix::fs::chown(host_dir, Some(*uid), Some(*gid))
                .map_err(|e| ExecError::fs("chown", host_dir, e))?;
        }
    }
    lock_paths.sort();
    lock_paths.dedup();
    lock_paths
        .into_iter()
        .map(|lock| {
            let lock_err = |err| ExecError::Lock {
                path: lock.clone(),
                err,
            };
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(lock)
                .map_err(lock_err)?;
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| lock_err(errno.into()))
        })
        .collect()
}

/// The step's environment: its own variables, Docker's PATH when it has none, secrets given
/// as env, and SSH_AUTH_SOCK for the first ssh mount. Nothing of forge's environment.
pub(crate) fn step_env(spec: &SandboxSpec) -> Vec<String> {
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let has = |env: &[String], key: &str| env.iter().any(|kv| kv.split('=').next() == Some(key));
    if !has(&env, "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    let mut ssh = 0;
    for mount in &spec.mounts {
        match mount {
            MountSpec::Secret {
                env: Some(name),
                content,
                ..
            } => env.push(format!("{name}={}", String::from_utf8_lossy(content))),
            MountSpec::Ssh { .. } => {
                if ssh == 0 && !has(&env, "SSH_AUTH_SOCK") {
                    if let Some(t) = mount.target(0) {
                        env.push(format!("SSH_AUTH_SOCK={t}"));
                    }
                }
                ssh += 1;
            }
            _ => {}
        }
    }
    env
}

/// Watches a step's cancel flag on its own thread until the step is `finished`: once `cancel`
/// is set, calls `stop` every 20 ms until it reports success (a runc container may not exist
/// yet when the flag is set) or the step finishes. Joining the handle says whether the step was
/// cancelled. Shared by both backends, so they stop steps the same way.
pub(crate) fn watch_cancel(
    cancel: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
    mut stop: impl FnMut() -> bool + Send + 'static,
) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        let mut cancelled = false;
        while !finished.load(Ordering::SeqCst) {
            if cancel.load(Ordering::SeqCst) {
                cancelled = true;
                if stop() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        cancelled
    })
}
