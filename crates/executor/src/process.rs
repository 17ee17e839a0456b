//! The step's process: the last moves before exec (rlimits, no leaked descriptors, bounding
//! set, user and groups, capabilities, no_new_privs, cwd) and the lookup of argv[0] in the
//! step's own PATH (not forge's).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::resource::Resource;

use crate::error::ExecError;
use crate::spec::DEFAULT_PATH;
use crate::syscall::{Syscall, LAST_CAP};
use crate::user::Identity;

/// Docker's default capability set: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID,
/// SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
pub(crate) const DEFAULT_CAPS: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 7)
    | (1 << 8)
    | (1 << 10)
    | (1 << 13)
    | (1 << 18)
    | (1 << 27)
    | (1 << 29)
    | (1 << 31);

/// Every capability (for `--security=insecure`).
pub(crate) const ALL_CAPS: u64 = (1u64 << (LAST_CAP + 1)) - 1;

/// The names runc wants in config.json, by capability number.
pub(crate) const CAP_NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities this process holds (CapPrm): a sandbox cannot grant more than that.
pub(crate) fn current_permitted_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapPrm:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(DEFAULT_CAPS)
}

/// The open-files limit steps get: containerd's 1048576, or less when the host's hard limit
/// is lower (raising it needs CAP_SYS_RESOURCE).
pub(crate) fn nofile_limit() -> u64 {
    let hard = nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024);
    hard.min(1_048_576)
}

/// The step as the helper will exec it.
#[derive(Debug)]
pub(crate) struct StepProcess<'a> {
    pub(crate) argv: &'a [String],
    pub(crate) env: &'a [String],
    pub(crate) cwd: &'a str,
    pub(crate) identity: &'a Identity,
    pub(crate) caps: u64,
}

/// Becomes the step. Returns only on failure.
pub(crate) fn exec_step(sys: &dyn Syscall, step: &StepProcess<'_>) -> ExecError {
    match prepare(sys, step) {
        Ok(program) => ExecError::Exec {
            program: step.argv[0].clone(),
            err: sys.exec(&program, step.argv, step.env),
        },
        Err(e) => e,
    }
}

fn prepare(sys: &dyn Syscall, step: &StepProcess<'_>) -> Result<PathBuf, ExecError> {
    let nofile = nofile_limit();
    sys.set_rlimit(Resource::RLIMIT_NOFILE, nofile, nofile)
        .map_err(|e| ExecError::syscall("setrlimit(RLIMIT_NOFILE)", e))?;
    sys.cloexec_from(3)
        .map_err(|e| ExecError::syscall("close_range(3.., CLOEXEC)", e))?;
    sys.reset_signals()
        .map_err(|e| ExecError::syscall("reset signal dispositions", e))?;
    let caps = step.caps & current_permitted_caps();
    sys.drop_bounding_caps(caps)
        .map_err(|e| ExecError::syscall("prctl(PR_CAPBSET_DROP)", e))?;
    let id = step.identity;
    sys.set_ids(id.uid, id.gid, &id.groups).map_err(|e| {
        ExecError::syscall(
            &format!("setgroups/setgid/setuid({}:{})", id.uid, id.gid),
            e,
        )
    })?;
    // setuid to a non-root user already cleared permitted and effective caps, as Docker
    // leaves them; root keeps exactly the chosen set.
    if id.uid == 0 {
        sys.set_caps(caps)
            .map_err(|e| ExecError::syscall("capset", e))?;
    }
    sys.set_no_new_privs()
        .map_err(|e| ExecError::syscall("prctl(PR_SET_NO_NEW_PRIVS)", e))?;
    sys.chdir(Path::new(step.cwd))
        .map_err(|e| ExecError::fs("change directory to", step.cwd, e))?;
    find_program(&step.argv[0], step.env, Path::new("/")).map_err(|err| ExecError::Exec {
        program: step.argv[0].clone(),
        err,
    })
}

/// Looks `program` up in the PATH of `env` under `root`, as execvp would in the sandbox.
pub(crate) fn find_program(program: &str, env: &[String], root: &Path) -> std::io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        let on_host = root.join(candidate.strip_prefix("/").unwrap_or(&candidate));
        if let Ok(meta) = std::fs::metadata(&on_host) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::ENOENT))
}

/// Creates the working directory when missing, each new component owned by the step's user
/// (BuildKit's behaviour). `root` is where the rootfs is mounted.
pub(crate) fn create_workdir(
    sys: &dyn Syscall,
    root: &Path,
    cwd: &str,
    identity: &Identity,
) -> Result<(), ExecError> {
    let rel = crate::mounts::resolve_in_root(sys, root, cwd)?;
    let mut current = root.to_path_buf();
    for part in rel.components() {
        current.push(part);
        let exists = sys
            .kind(&current)
            .map_err(|e| ExecError::fs("inspect", &current, e))?
            .is_some();
        if !exists {
            sys.mkdir(&current, 0o755)
                .map_err(|e| ExecError::fs("create working directory", &current, e))?;
            sys.chown(&current, identity.uid, identity.gid)
                .map_err(|e| ExecError::fs("chown", &current, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::fake::RecordingSyscall;

    #[test]
    fn default_caps_match_docker() {
        assert_eq!(DEFAULT_CAPS, 0xa80425fb);
        assert_eq!(CAP_NAMES.len() as u32, LAST_CAP + 1);
    }

    #[test]
    fn non_root_step_sets_ids_without_capset() {
        let fake = RecordingSyscall::default();
        let identity = Identity {
            uid: 1000,
            gid: 1000,
            groups: vec![1000, 50],
            home: "/home/app".into(),
        };
        let argv = vec!["/bin/true".to_owned()];
        let env = vec!["PATH=/bin".to_owned()];
        let step = StepProcess {
            argv: &argv,
            env: &env,
            cwd: "/work",
            identity: &identity,
            caps: DEFAULT_CAPS,
        };
        let err = exec_step(&fake, &step);
        assert!(matches!(err, ExecError::Exec { ref program, .. } if program == "/bin/true"));
        let calls = fake.calls();
        let names: Vec<&str> = calls.iter().map(|c| c.split(' ').next().unwrap()).collect();
        assert_eq!(
            names,
            [
                "rlimit",
                "cloexec_from",
                "reset_signals",
                "capbset",
                "set_ids",
                "no_new_privs",
                "chdir",
                "exec"
            ]
        );
        assert_eq!(calls[4], "set_ids 1000:1000 [1000, 50]");
    }

    #[test]
    fn workdir_components_are_owned_by_the_user() {
        let fake = RecordingSyscall::with_dirs(&["/r", "/r/srv"]);
        let identity = Identity {
            uid: 7,
            gid: 8,
            groups: vec![8],
            home: "/".into(),
        };
        create_workdir(&fake, Path::new("/r"), "/srv/app/x", &identity).unwrap();
        assert_eq!(
            fake.calls(),
            [
                "mkdir /r/srv/app 755",
                "chown /r/srv/app 7:8",
                "mkdir /r/srv/app/x 755",
                "chown /r/srv/app/x 7:8"
            ]
        );
    }
}
