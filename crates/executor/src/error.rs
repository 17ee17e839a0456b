//! `ExecError`: everything that can go wrong while running a step, each variant carrying the
//! path, mount or syscall a person needs. The helper process reports its errors to the parent
//! as JSON, so the enum is serialisable (io errors travel as their errno).

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::spec::ExitKind;

/// An error from the sandbox or a step it ran.
#[derive(Debug, thiserror::Error, Serialize, Deserialize)]
pub enum ExecError {
    /// The step ran and failed.
    #[error("step `{command}` failed with {exit}; last output:\n{output_tail}")]
    StepFailed {
        /// The command as the user wrote it (argv joined).
        command: String,
        /// How it ended.
        exit: ExitKind,
        /// The last lines of its stdout and stderr.
        output_tail: String,
    },
    /// `--security=insecure` without `--allow security.insecure`.
    #[error("RUN --security=insecure is not allowed: pass --allow security.insecure to the build")]
    InsecureNotAllowed,
    /// A step with no command.
    #[error("the step has an empty command")]
    EmptyCommand,
    /// The step was stopped because the build was cancelled (another step failed).
    #[error("cancelled: another step failed")]
    Cancelled,
    /// A mount target or working directory that is not an absolute path.
    #[error("`{path}` must be an absolute path inside the sandbox")]
    RelativePath {
        /// The offending path.
        path: String,
    },
    /// Starting the helper process failed.
    #[error("cannot start the sandbox helper {exe}: {err}")]
    SpawnHelper {
        /// The helper executable.
        exe: PathBuf,
        /// The cause.
        #[serde(with = "errno")]
        err: io::Error,
    },
    /// The helper died or spoke nonsense before reporting a result.
    #[error("the sandbox helper ended without a result ({detail})")]
    HelperLost {
        /// What the parent saw (its exit status, or a protocol error).
        detail: String,
    },
    /// A mount failed.
    #[error("cannot mount {fstype} `{from}` on {target}: {err}")]
    Mount {
        /// The mount source (a path, or the filesystem's name).
        from: String,
        /// Where it was to be mounted.
        target: PathBuf,
        /// The filesystem type (`bind` for bind mounts).
        fstype: String,
        /// The cause.
        #[serde(with = "errno")]
        err: io::Error,
    },
    /// An unmount failed.
    #[error("cannot unmount {target}: {err}")]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The cause.
        #[serde(with = "errno")]
        err: io::Error,
    },
    /// pivot_root into the new root failed.
    #[error("cannot pivot_root into {root}: {err}")]
    PivotRoot {
        /// The new root.
        root: PathBuf,
        /// The cause.
        #[serde(with = "errno")]
        err: io::Error,
    },
    /// A process-level syscall failed (unshare, sethostname, capset, setuid, ...).
    #[error("{call} failed: {err}")]
    Syscall {
        /// The call and what it was for.
        call: String,
        /// The cause.
        #[serde(with = "errno")]
        err: io::Error,
    },
    /// A filesystem operation on a path failed.
    #[error("cannot {op} {path}: {err}")]
    Fs {
        /// The operation (`create directory`, `write`, ...).
        op: String,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[serde(with = "errno")]
        err: io::Error,
    },
    /// Resolving a path inside the rootfs met too many symlinks.
    #[error("too many levels of symbolic links resolving {path} inside the sandbox")]
    SymlinkLoop {
        /// The path being resolved.
        path: String,
    },
    /// USER names a user missing from the rootfs's /etc/passwd.
    #[error("user `{user}` not found in the image's /etc/passwd")]
    UserNotFound {
        /// The user as given.
        user: String,
    },
    /// USER names a group missing from the rootfs's /etc/group.
    #[error("group `{group}` not found in the image's /etc/group")]
    GroupNotFound {
        /// The group as given.
        group: String,
    },
    /// The step's program could not be executed.
    #[error("cannot execute `{program}` in the sandbox: {err}")]
    Exec {
        /// `argv[0]`.
        program: String,
        /// The cause (ENOENT: not found in PATH).
        #[serde(with = "errno")]
        err: io::Error,
    },
    /// A cgroup could not be created, configured or joined.
    #[error("cgroup {path}: {err}")]
    Cgroup {
        /// The cgroup file or directory.
        path: PathBuf,
        /// The cause.
        #[serde(with = "errno")]
        err: io::Error,
    },
    /// The lock of a `sharing=locked` cache mount could not be taken.
    #[error("cannot lock {path}: {err}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[serde(with = "errno")]
        err: io::Error,
    },
    /// The overlay mount options are longer than the kernel accepts (one page).
    #[error("{count} lower layers make overlay options of {len} bytes, over the kernel's 4095")]
    TooManyLayers {
        /// Number of lowerdirs.
        count: usize,
        /// Length of the option string.
        len: usize,
    },
    /// The OCI runtime config could not be built.
    #[error("cannot build the OCI runtime config: {reason}")]
    RuntimeConfig {
        /// oci-spec's message.
        reason: String,
    },
    /// The OCI runtime itself failed (not the step).
    #[error("{runtime} failed ({status}): {stderr}")]
    Runtime {
        /// The runtime binary.
        runtime: PathBuf,
        /// Its exit status.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
}

/// io::Error over the wire: its errno.
mod errno {
    use std::io;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(err: &io::Error, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(err.raw_os_error().unwrap_or(libc::EIO))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<io::Error, D::Error> {
        Ok(io::Error::from_raw_os_error(i32::deserialize(d)?))
    }
}

impl ExecError {
    /// Shorthand for [`ExecError::Fs`].
    pub(crate) fn fs(op: &str, path: impl Into<PathBuf>, err: io::Error) -> Self {
        ExecError::Fs {
            op: op.to_owned(),
            path: path.into(),
            err,
        }
    }

    /// Shorthand for [`ExecError::Syscall`].
    pub(crate) fn syscall(call: &str, err: impl Into<io::Error>) -> Self {
        ExecError::Syscall {
            call: call.to_owned(),
            err: err.into(),
        }
    }
}
