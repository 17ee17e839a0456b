//! The native backend, parent side: spawn the helper (a re-exec of forge), put it in the
//! step's cgroup, hand it the request, stream the step's output and collect its reports.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::cgroups::StepCgroup;
use crate::error::ExecError;
use crate::init::{InitRequest, Report, SANDBOX_INIT_ARG};
use crate::mounts::{EtcFiles, MountTrace, RunLayout};
use crate::output::pump;
use crate::sandbox::watch_cancel;
use crate::spec::{ExitKind, SandboxConfig, SandboxSpec, Stream};

/// What a backend hands back: the mount points it made and how the step ended.
#[derive(Debug)]
pub(crate) struct BackendResult {
    pub(crate) trace: MountTrace,
    pub(crate) exit: ExitKind,
    pub(crate) tail: String,
}

pub(crate) fn run_native(
    config: &SandboxConfig,
    spec: &SandboxSpec,
    layout: &RunLayout,
    env: Vec<String>,
    etc_files: EtcFiles,
    cgroup: Option<&StepCgroup>,
    output: &mut dyn FnMut(Stream, &[u8]),
) -> Result<BackendResult, ExecError> {
    let spawn_err = |err| ExecError::SpawnHelper {
        exe: config.helper_exe.clone(),
        err,
    };
    let (ours, theirs) = UnixStream::pair().map_err(spawn_err)?;
    let mut command = Command::new(&config.helper_exe);
    // A process group of its own: a terminal's Ctrl-C reaches forge alone, which decides what
    // it means (a build cancels, `forge run` passes it to the container's process).
    command
        .process_group(0)
        .arg(SANDBOX_INIT_ARG)
        .env_clear()
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(spawn_err)?;
    // The Command holds the helper's end of the socket; without dropping it we never see EOF.
    drop(command);
    let request = InitRequest {
        spec: spec.clone(),
        run_dir: layout.dir.clone(),
        env,
        etc_files,
    };
    let finished = Arc::new(AtomicBool::new(false));
    let watcher = config.cancel.clone().map(|cancel| {
        // The helper is not reaped before `finished` is set, so its pid cannot have been
        // reused; pid 1 of the step's namespace dies with it (PDEATHSIG).
        let helper = nix::unistd::Pid::from_raw(child.id() as i32);
        watch_cancel(cancel, finished.clone(), move || {
            let _ = nix::sys::signal::kill(helper, nix::sys::signal::Signal::SIGKILL);
            true
        })
    });
    let result = drive(&mut child, ours, &request, cgroup, output);
    finished.store(true, Ordering::SeqCst);
    let cancelled = watcher.is_some_and(|w| w.join().unwrap_or(false));
    if result.is_err() || cancelled {
        let _ = child.kill();
    }
    let status = child.wait();
    if cancelled {
        return Err(ExecError::Cancelled);
    }
    let (reports, tail) = result?;
    interpret(reports, tail, status)
}

type Driven = (Vec<Report>, String);

fn drive(
    child: &mut std::process::Child,
    socket: UnixStream,
    request: &InitRequest,
    cgroup: Option<&StepCgroup>,
    output: &mut dyn FnMut(Stream, &[u8]),
) -> Result<Driven, ExecError> {
    // Join the cgroup before the helper forks anything: it blocks on the request until then.
    if let Some(cg) = cgroup {
        cg.add(child.id())?;
    }
    let mut line = serde_json::to_vec(request).map_err(|e| ExecError::HelperLost {
        detail: format!("cannot encode the request: {e}"),
    })?;
    line.push(b'\n');
    (&socket)
        .write_all(&line)
        .map_err(|e| ExecError::HelperLost {
            detail: format!("cannot send the request: {e}"),
        })?;
    let reader = std::thread::spawn(move || {
        let mut reports = Vec::new();
        for line in BufReader::new(socket).lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Report>(&line) {
                Ok(r) => reports.push(r),
                Err(e) => {
                    return Err(ExecError::HelperLost {
                        detail: format!("unreadable report {line:?}: {e}"),
                    })
                }
            }
        }
        Ok(reports)
    });
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let tail = pump(stdout, stderr, output);
    let reports = reader.join().map_err(|_| ExecError::HelperLost {
        detail: "the report reader panicked".into(),
    })??;
    Ok((reports, tail))
}

fn interpret(
    reports: Vec<Report>,
    tail: String,
    status: std::io::Result<std::process::ExitStatus>,
) -> Result<BackendResult, ExecError> {
    let mut trace = None;
    let mut exit = None;
    for report in reports {
        match report {
            Report::Failed(err) => return Err(err),
            Report::Prepared(t) => trace = Some(t),
            Report::Exited(e) => exit = Some(e),
        }
    }
    match (trace, exit) {
        (Some(trace), Some(exit)) => Ok(BackendResult { trace, exit, tail }),
        _ => Err(ExecError::HelperLost {
            detail: match status {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            },
        }),
    }
}
