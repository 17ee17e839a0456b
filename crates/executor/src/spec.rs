//! What a caller asks for: one step to run in a sandbox ([`SandboxSpec`]) and where the
//! sandbox machinery lives on this host ([`SandboxConfig`]). Plain paths only: the store and
//! the planner are not this crate's business.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Docker's default PATH, used when the step's env has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Host-level settings that stay the same across steps.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The executable re-executed as the sandbox helper; it must call
    /// [`crate::sandbox_init_main`] when `argv[1]` is [`crate::SANDBOX_INIT_ARG`].
    pub helper_exe: PathBuf,
    /// Scratch space for per-run files. Native runs mount a tmpfs private to their sandbox
    /// over it (so concurrent runs share it and nothing reaches the disk); runc runs put their
    /// bundle in a subdirectory that they remove afterwards.
    pub state_dir: PathBuf,
    /// Which backend runs the step.
    pub runtime: Runtime,
    /// Set to `true` to stop a running step: the native backend kills its helper, and with it
    /// the step's whole pid namespace; the runc backend runs `runc kill NAME KILL` (and
    /// `runc delete --force`). [`crate::run`] then returns [`crate::ExecError::Cancelled`].
    pub cancel: Option<Arc<AtomicBool>>,
}

/// The backend that runs a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runtime {
    /// forge's own sandbox (the default).
    Native,
    /// An OCI runtime driven through a generated config.json (`runc run`).
    Runc {
        /// The runc binary, e.g. `/usr/bin/runc`.
        binary: PathBuf,
    },
}

/// One step to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Read-only layers, top-most first. Empty means `FROM scratch`.
    pub lowerdirs: Vec<PathBuf>,
    /// A fresh, empty directory that receives the step's changes and becomes its snapshot.
    pub upperdir: PathBuf,
    /// overlayfs's work directory: empty, on the same filesystem as `upperdir`.
    pub workdir: PathBuf,
    /// The command, already shell-wrapped by the caller when needed (SHELL + command).
    pub argv: Vec<String>,
    /// The step's environment (ENV and ARGs); PATH defaults to [`DEFAULT_PATH`], HOME to the
    /// user's home from /etc/passwd.
    pub env: Vec<(String, String)>,
    /// Absolute working directory inside the rootfs; created (owned by the user) when missing.
    pub cwd: String,
    /// USER: `name`, `uid`, `name:group`, `uid:gid`; empty means root.
    pub user: String,
    /// The sandbox's hostname, also written to /etc/hostname.
    pub hostname: String,
    /// RUN --mount entries, applied in order.
    pub mounts: Vec<MountSpec>,
    /// RUN --network.
    pub network: NetworkMode,
    /// RUN --security.
    pub security: SecurityMode,
    /// cgroup limits for this step.
    pub limits: ResourceLimits,
    /// Whether the build allows `--security=insecure` (`--allow security.insecure`).
    pub allow_insecure: bool,
    /// Extra /etc/hosts lines (`--add-host`), after the localhost entries.
    pub extra_hosts: Vec<(String, String)>,
}

impl SandboxSpec {
    /// A spec with Docker's defaults: root, `/` as cwd, default network, no mounts, no limits.
    pub fn new(
        lowerdirs: Vec<PathBuf>,
        upperdir: PathBuf,
        workdir: PathBuf,
        argv: Vec<String>,
    ) -> Self {
        SandboxSpec {
            lowerdirs,
            upperdir,
            workdir,
            argv,
            env: Vec::new(),
            cwd: "/".to_owned(),
            user: String::new(),
            hostname: "forge".to_owned(),
            mounts: Vec::new(),
            network: NetworkMode::Default,
            security: SecurityMode::Sandbox,
            limits: ResourceLimits::default(),
            allow_insecure: false,
            extra_hosts: Vec::new(),
        }
    }
}

/// RUN --network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkMode {
    /// The default: host networking on this machine, because a private network namespace has
    /// no route to the package mirrors here.
    Default,
    /// A new network namespace with only loopback, up.
    None,
    /// The host's network namespace.
    Host,
}

impl NetworkMode {
    /// Whether the step shares the host's network namespace.
    pub fn is_host(self) -> bool {
        matches!(self, NetworkMode::Default | NetworkMode::Host)
    }
}

/// RUN --security.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecurityMode {
    /// Docker's default capabilities, masked /proc paths, read-only /sys.
    Sandbox,
    /// All capabilities, nothing masked, /sys writable; needs `allow_insecure`.
    Insecure,
}

/// cgroup limits; `None` leaves a resource unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLimits {
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// Most tasks (processes and threads) at once.
    pub pids: Option<u64>,
    /// CPU bandwidth in thousandths of a CPU (1500 = one and a half cores).
    pub cpu_millis: Option<u64>,
}

impl ResourceLimits {
    /// Whether any limit is set (no cgroup is created otherwise).
    pub fn is_empty(&self) -> bool {
        self.memory_bytes.is_none() && self.pids.is_none() && self.cpu_millis.is_none()
    }
}

/// One RUN --mount.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MountSpec {
    /// `type=bind`: `source` is resolved inside `source_root` (`..` and symlinks cannot leave
    /// it). Read-only unless `readwrite`, in which case writes land in a throwaway overlay.
    Bind {
        /// The tree the source lives in (the context, a stage's rootfs, an image).
        source_root: PathBuf,
        /// The path inside `source_root`.
        source: String,
        /// Absolute target inside the sandbox.
        target: String,
        /// `rw`: writable, with writes discarded after the step.
        readwrite: bool,
    },
    /// `type=cache`: a host directory the caller keeps across builds.
    Cache {
        /// The host directory (created with `mode`, `uid`, `gid` when missing).
        host_dir: PathBuf,
        /// Absolute target inside the sandbox.
        target: String,
        /// Read-only cache mount.
        readonly: bool,
        /// Mode for a new cache directory.
        mode: u32,
        /// Owner for a new cache directory.
        uid: u32,
        /// Group for a new cache directory.
        gid: u32,
        /// `sharing=locked`: an exclusive flock on this file is held for the whole step.
        lock_file: Option<PathBuf>,
    },
    /// `type=tmpfs`.
    Tmpfs {
        /// Absolute target inside the sandbox.
        target: String,
        /// Size limit in bytes.
        size_bytes: Option<u64>,
    },
    /// `type=secret`: never written to the layer.
    Secret {
        /// The secret's id (default target `/run/secrets/<id>`).
        id: String,
        /// The secret's content.
        content: Vec<u8>,
        /// Target file; `None` with `env` set means env only; both `None` means the default.
        target: Option<String>,
        /// `env=NAME`: expose the content as this environment variable.
        env: Option<String>,
        /// File mode (BuildKit's default is 0400).
        mode: u32,
        /// File owner.
        uid: u32,
        /// File group.
        gid: u32,
    },
    /// `type=ssh`: an agent socket forwarded at `/run/buildkit/ssh_agent.<index>` (or `target`).
    Ssh {
        /// The host's agent socket.
        socket: PathBuf,
        /// Target socket path; `None` means `/run/buildkit/ssh_agent.<n>`.
        target: Option<String>,
    },
}

impl MountSpec {
    /// The target inside the sandbox, when the mount has one (an env-only secret has none).
    pub fn target(&self, ssh_index: usize) -> Option<String> {
        match self {
            MountSpec::Bind { target, .. }
            | MountSpec::Cache { target, .. }
            | MountSpec::Tmpfs { target, .. } => Some(target.clone()),
            MountSpec::Secret {
                id, target, env, ..
            } => match (target, env) {
                (Some(t), _) => Some(t.clone()),
                (None, Some(_)) => None,
                (None, None) => Some(format!("/run/secrets/{id}")),
            },
            MountSpec::Ssh { target, .. } => Some(
                target
                    .clone()
                    .unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{ssh_index}")),
            ),
        }
    }
}

/// Which of the step's output streams a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The step's stdout.
    Stdout,
    /// The step's stderr.
    Stderr,
}

/// How a step's main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitKind {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl std::fmt::Display for ExitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitKind::Code(c) => write!(f, "exit code {c}"),
            ExitKind::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// A step that ran and succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// The upperdir, now the step's layer (mount-point traces removed).
    pub upperdir: PathBuf,
}
