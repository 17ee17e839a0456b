//! `forge run`: an image's process in the sandbox, in the foreground; forge exits with the
//! process's status (125 when forge itself fails, 126 and 127 as Docker uses them). Signals
//! forge receives meanwhile (Ctrl-C, SIGTERM, ...) go to the container's process, as
//! `docker run` proxies them.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use forge_cache::Store;
use forge_executor::{NetworkMode, Stream};
use forge_run::{run_image, RunOptions};

use crate::commands::build::sandbox_config;
use crate::images::canonical_name;
use crate::Globals;

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Remove the container when it exits (forge's containers are always removed for now).
    #[arg(long)]
    rm: bool,
    /// Set an environment variable, `K=V` (or `K` to take it from forge's environment).
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// The working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// The user (`name`, `uid`, `name:group`, `uid:gid`).
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// Replace the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// The network: none or host.
    #[arg(long)]
    network: Option<String>,
    /// The container's hostname.
    #[arg(long)]
    hostname: Option<String>,
    /// The runtime: native or runc.
    #[arg(long, default_value = "native")]
    runtime: String,
    /// The image.
    image: String,
    /// The command and its arguments (replace the image's Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub(crate) fn run(globals: &Globals, args: RunArgs) -> anyhow::Result<ExitCode> {
    match run_inner(globals, args) {
        Ok(code) => Ok(ExitCode::from(code.clamp(0, 255) as u8)),
        Err(e) => {
            eprintln!("forge run: {e:#}");
            Ok(ExitCode::from(125))
        }
    }
}

fn run_inner(globals: &Globals, args: RunArgs) -> anyhow::Result<i32> {
    // The runc backend mounts the container's rootfs in forge's own namespace: private, so
    // those mounts vanish with forge however it ends, as `forge build`'s do.
    forge_build::isolate_mounts().context("forge run needs root (mount namespaces)")?;
    // Steps a SIGKILLed forge left running (runc containers outlive `runc run`) go now.
    forge_executor::reap_orphans();
    let store = Store::open(&globals.root)?;
    let name = canonical_name(&args.image)
        .with_context(|| format!("invalid image name {:?}", args.image))?;
    let descriptor = store.resolve_image(&name)?.with_context(|| {
        format!(
            "no such image: {} (build it, import it or pull it first)",
            args.image
        )
    })?;
    let mut env = Vec::new();
    for e in &args.env {
        match e.split_once('=') {
            Some((k, v)) => env.push((k.to_owned(), v.to_owned())),
            None => {
                if let Ok(v) = std::env::var(e) {
                    env.push((e.clone(), v));
                }
            }
        }
    }
    let network = match args.network.as_deref() {
        None => None,
        Some("none") => Some(NetworkMode::None),
        Some("host") | Some("default") => Some(NetworkMode::Host),
        Some(other) => anyhow::bail!("--network {other:?}: expected none or host"),
    };
    let opts = RunOptions {
        env,
        workdir: args.workdir,
        user: args.user,
        entrypoint: args.entrypoint,
        command: args.command,
        network,
        hostname: args.hostname,
    };
    let sandbox = sandbox_config(&store, &args.runtime)?;
    forward_signals()?;
    let exit = run_image(
        &store,
        &name,
        &descriptor,
        &opts,
        &sandbox,
        &mut |stream, data| {
            let _ = match stream {
                Stream::Stdout => std::io::stdout().write_all(data),
                Stream::Stderr => std::io::stderr().write_all(data),
            };
        },
    )?;
    let _ = std::io::stdout().flush();
    Ok(exit.status())
}

/// The signals `docker run` passes on to its container (all but the ones a process cannot or
/// should not get from a terminal's user: KILL, STOP, CHLD, WINCH, URG, PIPE).
const FORWARDED: [i32; 6] = [
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGHUP,
    signal_hook::consts::SIGQUIT,
    signal_hook::consts::SIGUSR1,
    signal_hook::consts::SIGUSR2,
];

/// From now on forge does not die of these signals: a thread passes each to the container's
/// process, and forge ends when the container does, with its status.
fn forward_signals() -> anyhow::Result<()> {
    let mut signals =
        signal_hook::iterator::Signals::new(FORWARDED).context("installing the signal handlers")?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            // A signal that comes while the container is still starting waits for it a while.
            for _ in 0..100 {
                if forge_run::forward_signal(signal) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    });
    Ok(())
}
