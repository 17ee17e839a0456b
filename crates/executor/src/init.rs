//! The helper process (a re-exec of forge with argv[1] == [`SANDBOX_INIT_ARG`]). It reads an
//! [`InitRequest`] as one JSON line from its stdin, which is a socket to the parent, and
//! answers [`Report`]s on the same socket. It unshares the namespaces, forks pid 1 of the new
//! pid namespace, which builds the rootfs, pivots, and forks the step; pid 1 reaps until the
//! step's main process exits and then exits itself, and the kernel kills whatever the step
//! left behind with the namespace.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::error::ExecError;
use crate::mounts::{setup_rootfs, EtcFiles, MountTrace, RunLayout};
use crate::process::{create_workdir, exec_step, StepProcess, ALL_CAPS, DEFAULT_CAPS};
use crate::spec::{ExitKind, NetworkMode, SandboxSpec, SecurityMode};
use crate::syscall::{LinuxSyscall, Syscall};
use crate::user::resolve_user;

/// `argv[1]` that turns the forge binary into the sandbox helper.
pub const SANDBOX_INIT_ARG: &str = "__forge-sandbox-init";

/// What the parent sends.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InitRequest {
    pub(crate) spec: SandboxSpec,
    pub(crate) run_dir: PathBuf,
    /// The step's environment as `KEY=VALUE`, HOME still to be added from /etc/passwd.
    pub(crate) env: Vec<String>,
    /// /etc/hosts, /etc/hostname and /etc/resolv.conf for the sandbox.
    pub(crate) etc_files: EtcFiles,
}

/// What the helper reports, in order: `Prepared` once the rootfs is ready, then `Exited`;
/// `Failed` instead when setup or exec fails.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report {
    Prepared(MountTrace),
    Failed(ExecError),
    Exited(ExitKind),
}

/// The helper's entry point: the forge binary calls it first thing in `main` when `argv[1]` is
/// [`SANDBOX_INIT_ARG`]. Never returns.
pub fn sandbox_init_main() -> ! {
    let code = match connect() {
        Ok(status) => {
            let status = &status;
            match helper(&LinuxSyscall, status) {
                Ok(code) => code,
                Err(err) => {
                    send(status, &Report::Failed(err));
                    1
                }
            }
        }
        Err(err) => {
            eprintln!("forge sandbox helper: {err}");
            1
        }
    };
    std::process::exit(code)
}

/// Takes the status socket off fd 0 (as a close-on-exec descriptor) and puts /dev/null there,
/// so the step never reads the protocol.
fn connect() -> std::io::Result<UnixStream> {
    let owned = std::io::stdin().as_fd().try_clone_to_owned()?;
    let devnull = std::fs::File::open("/dev/null")?;
    nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&devnull), 0)?;
    Ok(UnixStream::from(owned))
}

fn send(status: &UnixStream, report: &Report) {
    if let Ok(mut line) = serde_json::to_vec(report) {
        line.push(b'\n');
        // The parent gone means nobody is left to tell.
        let _ = (&*status).write_all(&line);
    }
}

fn read_request(status: &UnixStream) -> Result<InitRequest, ExecError> {
    let mut line = String::new();
    BufReader::new(status)
        .read_line(&mut line)
        .map_err(|e| ExecError::syscall("read the sandbox request", e))?;
    serde_json::from_str(&line).map_err(|e| {
        ExecError::syscall(
            &format!("decode the sandbox request ({e})"),
            std::io::Error::from_raw_os_error(libc::EINVAL),
        )
    })
}

fn helper(sys: &dyn Syscall, status: &UnixStream) -> Result<i32, ExecError> {
    // forge killed outright must not leave a step running: the helper dies with it, and pid 1
    // (and so the whole namespace) with the helper.
    sys.set_parent_death_kill()
        .map_err(|e| ExecError::syscall("prctl(PR_SET_PDEATHSIG)", e))?;
    // Docker's umask, whatever forge's is: mount points, WORKDIR and the step's files.
    sys.set_umask(0o022);
    let request = read_request(status)?;
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWCGROUP;
    if !request.spec.network.is_host() {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    sys.unshare(flags)
        .map_err(|e| ExecError::syscall(&format!("unshare({flags:?})"), e))?;
    match sys
        .fork()
        .map_err(|e| ExecError::syscall("fork (pid 1)", e))?
    {
        ForkResult::Parent { child } => Ok(wait_exit_code(child)),
        ForkResult::Child => {
            let code = match pid1(sys, status, &request) {
                Ok(()) => 0,
                Err(err) => {
                    send(status, &Report::Failed(err));
                    1
                }
            };
            std::process::exit(code)
        }
    }
}

fn wait_exit_code(pid: Pid) -> i32 {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return 1,
        }
    }
}

/// pid 1 of the step's pid namespace.
fn pid1(sys: &dyn Syscall, status: &UnixStream, request: &InitRequest) -> Result<(), ExecError> {
    let spec = &request.spec;
    sys.set_parent_death_kill()
        .map_err(|e| ExecError::syscall("prctl(PR_SET_PDEATHSIG)", e))?;
    sys.setsid().map_err(|e| ExecError::syscall("setsid", e))?;
    let layout = RunLayout {
        dir: request.run_dir.clone(),
    };
    let trace = setup_rootfs(sys, spec, &layout, &request.etc_files)?;
    send(status, &Report::Prepared(trace));
    sys.sethostname(&spec.hostname)
        .map_err(|e| ExecError::syscall("sethostname", e))?;
    if spec.network == NetworkMode::None {
        sys.loopback_up()
            .map_err(|e| ExecError::syscall("bring loopback up", e))?;
    }
    let identity = resolve_user(Path::new("/"), &spec.user)?;
    create_workdir(sys, Path::new("/"), &spec.cwd, &identity)?;
    let mut env = request.env.clone();
    if !env.iter().any(|kv| kv.starts_with("HOME=")) {
        env.push(format!("HOME={}", identity.home));
    }
    let caps = match spec.security {
        SecurityMode::Sandbox => DEFAULT_CAPS,
        SecurityMode::Insecure => ALL_CAPS,
    };
    match sys
        .fork()
        .map_err(|e| ExecError::syscall("fork (step)", e))?
    {
        ForkResult::Child => {
            let err = exec_step(
                sys,
                &StepProcess {
                    argv: &spec.argv,
                    env: &env,
                    cwd: &spec.cwd,
                    identity: &identity,
                    caps,
                },
            );
            send(status, &Report::Failed(err));
            std::process::exit(127)
        }
        ForkResult::Parent { child } => {
            let exit = reap_until(child);
            send(status, &Report::Exited(exit));
            Ok(())
        }
    }
}

/// Reaps every child (orphans re-parent to pid 1) until `main` exits.
fn reap_until(main: Pid) -> ExitKind {
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == main => return ExitKind::Code(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == main => {
                return ExitKind::Signal(sig as i32)
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            // No children left at all: the main process is gone without a status.
            Err(_) => return ExitKind::Code(-1),
        }
    }
}
