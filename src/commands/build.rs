//! `forge build`: the command people type. Flags follow `docker build`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use forge_build::{BuildRequest, ContextSource, Event, Progress};
use forge_cache::Store;
use forge_executor::{NetworkMode, ResourceLimits, Runtime, SandboxConfig};
use forge_planner::Platform;

use crate::images::{canonical_name, familiar_name};
use crate::progress::{renderer, ProgressMode};
use crate::registry_store::{PullingProvider, RegistryArgs};
use crate::Globals;

#[derive(Debug, clap::Args)]
pub(crate) struct BuildArgs {
    /// Name and optionally tag the image (`name:tag`); repeatable.
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile); `-` reads it from stdin.
    #[arg(short = 'f', long = "file")]
    file: Option<String>,
    /// A build-time variable, `K=V`, or `K` to take the value from the environment.
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// The stage to build.
    #[arg(long)]
    target: Option<String>,
    /// Do not use the cache.
    #[arg(long)]
    no_cache: bool,
    /// Do not use the cache for these stages.
    #[arg(long = "no-cache-filter")]
    no_cache_filter: Vec<String>,
    /// Always re-resolve base image tags.
    #[arg(long)]
    pull: bool,
    /// A secret for RUN --mount=type=secret: `id=ID,src=FILE` or `id=ID,env=VAR`.
    #[arg(long)]
    secret: Vec<String>,
    /// An SSH agent for RUN --mount=type=ssh: `default` or `ID=SOCKET`.
    #[arg(long)]
    ssh: Vec<String>,
    /// The network of RUN steps: default, none or host.
    #[arg(long)]
    network: Option<String>,
    /// Progress output: auto, tty, plain, json or quiet.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressMode,
    /// Print only the image id.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Write the image id to this file.
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Set a label on the image, `K=V`.
    #[arg(long)]
    label: Vec<String>,
    /// The platform to build for (only the host's until emulation exists).
    #[arg(long)]
    platform: Option<String>,
    /// An extra build context, `NAME=PATH`.
    #[arg(long = "build-context")]
    build_context: Vec<String>,
    /// Extra privileges: `security.insecure` allows RUN --security=insecure.
    #[arg(long)]
    allow: Vec<String>,
    /// The runtime of RUN steps: native (forge's own sandbox) or runc.
    #[arg(long, default_value = "native")]
    runtime: String,
    /// Memory limit of each RUN step (e.g. 512m).
    #[arg(long)]
    memory: Option<String>,
    /// Most processes in each RUN step.
    #[arg(long)]
    pids_limit: Option<u64>,
    /// CPUs for each RUN step (e.g. 1.5).
    #[arg(long)]
    cpus: Option<f64>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// The build context: a directory, or `-` for a Dockerfile or a tar on stdin.
    context: String,
}

fn key_value(text: &str, what: &str) -> anyhow::Result<(String, String)> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .with_context(|| format!("{what} {text:?}: expected KEY=VALUE"))
}

/// `--build-context NAME=DIR|docker-image://REF|oci-layout://DIR[:TAG|@DIGEST]`. An OCI
/// layout is imported into the store here, so the build sees it as one more local image.
fn parse_build_context(store: &Store, text: &str) -> anyhow::Result<(String, ContextSource)> {
    let (name, value) = key_value(text, "--build-context")?;
    if name.is_empty() {
        bail!("--build-context {text:?}: the name before '=' is empty");
    }
    if let Some(reference) = value.strip_prefix("docker-image://") {
        canonical_name(reference).with_context(|| {
            format!("--build-context {name}={value}: {reference:?} is not an image reference")
        })?;
        return Ok((name, ContextSource::Image(reference.to_owned())));
    }
    if let Some(layout) = value.strip_prefix("oci-layout://") {
        let imported = crate::oci_layout::import(store, layout)
            .with_context(|| format!("--build-context {name}={value}"))?;
        return Ok((name, ContextSource::Image(imported)));
    }
    if let Some((scheme, _)) = value.split_once("://") {
        bail!(
            "--build-context {name}={value}: unsupported source {scheme:?}; use a directory, \
             docker-image://REF or oci-layout://DIR[:TAG]"
        );
    }
    let dir = PathBuf::from(&value);
    if !dir.is_dir() {
        bail!("--build-context {name}={value}: {value:?} is not a directory");
    }
    Ok((name, ContextSource::Dir(dir)))
}

/// `--secret id=ID,src=FILE|env=VAR` (BuildKit also accepts `source=` and `type=`).
fn parse_secret(text: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    for field in text.split(',') {
        let (k, v) = key_value(field, "--secret")?;
        match k.as_str() {
            "id" => id = Some(v),
            "src" | "source" => src = Some(v),
            "env" => env = Some(v),
            "type" => {}
            other => bail!("--secret {text:?}: unknown key {other:?}"),
        }
    }
    let id = id.with_context(|| format!("--secret {text:?}: id= is required"))?;
    let content = match (src, env) {
        (Some(path), _) => {
            std::fs::read(&path).with_context(|| format!("--secret {id}: reading {path}"))?
        }
        (None, Some(var)) => std::env::var(&var)
            .with_context(|| format!("--secret {id}: environment variable {var} is not set"))?
            .into_bytes(),
        (None, None) => std::env::var(&id)
            .with_context(|| format!("--secret {id}: give src=FILE or env=VAR"))?
            .into_bytes(),
    };
    Ok((id, content))
}

fn parse_network(text: &str) -> anyhow::Result<NetworkMode> {
    Ok(match text {
        "default" => NetworkMode::Default,
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        other => bail!("--network {other:?}: expected default, none or host"),
    })
}

pub(crate) fn sandbox_config(store: &Store, runtime: &str) -> anyhow::Result<SandboxConfig> {
    let runtime = match runtime {
        "native" => Runtime::Native,
        "runc" => Runtime::Runc {
            binary: PathBuf::from("runc"),
        },
        other => bail!("--runtime {other:?}: expected native or runc"),
    };
    Ok(SandboxConfig {
        helper_exe: std::env::current_exe().context("finding the forge executable")?,
        state_dir: store.staging_dir().join("sandbox"),
        runtime,
        cancel: None,
    })
}

fn parse_memory(text: &str) -> anyhow::Result<u64> {
    Ok(forge_cache::parse_size(text)?)
}

pub(crate) fn run(globals: &Globals, args: BuildArgs) -> anyhow::Result<ExitCode> {
    // Mounts made for COPY and WORKDIR must vanish with this process, however it ends.
    forge_build::isolate_mounts().context("forge build needs root (mount namespaces)")?;
    // Steps a SIGKILLed forge left running (runc containers outlive `runc run`) go now.
    forge_executor::reap_orphans();
    let store = std::sync::Arc::new(
        Store::open(&globals.root)
            .with_context(|| format!("opening the store at {}", globals.root.display()))?,
    );

    // A tar context on stdin is unpacked for the build and removed when `stdin_guard` drops.
    let Inputs {
        context,
        dockerfile,
        dockerfile_name,
        stdin_guard,
    } = read_inputs(&args, &store)?;

    let mut build_args = BTreeMap::new();
    for arg in &args.build_args {
        match arg.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_owned(), v.to_owned());
            }
            None => {
                if let Ok(v) = std::env::var(arg) {
                    build_args.insert(arg.clone(), v);
                }
            }
        }
    }
    let mut secrets = BTreeMap::new();
    for s in &args.secret {
        let (id, content) = parse_secret(s)?;
        secrets.insert(id, content);
    }
    let mut ssh = BTreeMap::new();
    for s in &args.ssh {
        let (id, socket) = match s.split_once('=') {
            Some((id, path)) => (id.to_owned(), PathBuf::from(path)),
            None => (
                s.clone(),
                PathBuf::from(std::env::var("SSH_AUTH_SOCK").with_context(|| {
                    format!("--ssh {s}: SSH_AUTH_SOCK is not set; give {s}=SOCKET")
                })?),
            ),
        };
        ssh.insert(id, socket);
    }
    let mut labels = BTreeMap::new();
    for l in &args.label {
        let (k, v) = key_value(l, "--label")?;
        labels.insert(k, v);
    }
    let mut named_contexts = BTreeMap::new();
    for c in &args.build_context {
        let (name, source) = parse_build_context(&store, c)?;
        named_contexts.insert(name, source);
    }
    let tags = args
        .tags
        .iter()
        .map(|t| canonical_name(t).with_context(|| format!("invalid tag {t:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let platform = args
        .platform
        .as_deref()
        .map(|p| {
            Platform::parse(p)
                .with_context(|| format!("--platform {p:?}: not a platform like linux/amd64"))
        })
        .transpose()?;
    let allow_insecure = args.allow.iter().any(|a| a == "security.insecure");
    if let Some(bad) = args.allow.iter().find(|a| *a != "security.insecure") {
        bail!("--allow {bad:?}: the only entitlement is security.insecure");
    }
    let limits = ResourceLimits {
        memory_bytes: args.memory.as_deref().map(parse_memory).transpose()?,
        pids: args.pids_limit,
        cpu_millis: args.cpus.map(|c| (c * 1000.0).round() as u64),
    };
    let source_date_epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
        .or_else(|| {
            build_args
                .get("SOURCE_DATE_EPOCH")
                .and_then(|v| v.parse().ok())
        });

    // Raised by Ctrl-C or SIGTERM (see `Interrupts`), and by the build at its first failure.
    let cancel = Arc::new(AtomicBool::new(false));
    let req = BuildRequest {
        dockerfile,
        dockerfile_name,
        context,
        named_contexts,
        build_args,
        target: args.target.clone(),
        platform,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        pull: args.pull,
        secrets,
        ssh,
        network: args.network.as_deref().map(parse_network).transpose()?,
        allow_insecure,
        labels,
        tags,
        sandbox: SandboxConfig {
            cancel: Some(cancel.clone()),
            ..sandbox_config(&store, &args.runtime)?
        },
        limits,
        jobs: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        source_date_epoch,
    };
    let mode = if args.quiet {
        ProgressMode::Quiet
    } else {
        args.progress
    };
    let progress = renderer(mode);
    // Build checks, as `docker build` runs them: warnings, or a failure before any step
    // under `# check=error=true`. A Dockerfile that does not parse fails in the build.
    if let Ok(df) = forge_parser::parse(&req.dockerfile) {
        let findings = forge_parser::check(&df, &req.dockerfile);
        for finding in &findings {
            progress.event(Event::Warning {
                message: &finding.render(&req.dockerfile_name),
            });
        }
        if findings.iter().any(|f| f.error) {
            progress.finish();
            let rules: Vec<&str> = findings.iter().map(|f| f.rule).collect();
            eprintln!(
                "error: {}: build checks failed (check=error=true): {}",
                req.dockerfile_name,
                rules.join(", ")
            );
            return Ok(ExitCode::from(1));
        }
    }
    let began = std::time::Instant::now();
    let provider = PullingProvider::new(
        store.clone(),
        &args.registry,
        mode == ProgressMode::Quiet,
        Some(cancel.clone()),
    )?;
    let fetcher = crate::fetch::HttpFetcher {
        tls_ca: args.registry.tls_ca.clone(),
        cancel: Some(cancel.clone()),
    };
    // Installed only now: until here the default action (forge ends at once) loses nothing.
    let interrupts = Interrupts::install(&cancel)?;
    let result = forge_build::build(
        &req,
        &store,
        &provider,
        &fetcher,
        progress.as_ref() as &dyn Progress,
    );
    progress.finish();
    drop(stdin_guard);
    let output = match result {
        Ok(o) => o,
        Err(e) => {
            // Whatever error the interrupted build unwound with, the user stopped it.
            if let Some(signal) = interrupts.caught() {
                eprintln!("forge: build cancelled");
                return Ok(ExitCode::from(128 + signal));
            }
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    // Keep the build cache within its budget (least recently used records first).
    if let Err(e) = store.auto_prune() {
        eprintln!("warning: pruning the build cache: {e}");
    }
    if let Some(path) = &args.iidfile {
        std::fs::write(path, &output.image_id)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if progress.summary() {
        let tags: Vec<String> = output.tags.iter().map(|t| familiar_name(t)).collect();
        eprintln!(
            "forge: {} steps, {} cached, {:.1}s; image {} ({}){}",
            output.steps,
            output.cached,
            began.elapsed().as_secs_f64(),
            output.image_id,
            human_size(output.size),
            if tags.is_empty() {
                String::new()
            } else {
                format!(" tagged {}", tags.join(", "))
            }
        );
    } else {
        println!("{}", output.image_id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C and SIGTERM during a build, as the shell expects them: the first raises the build's
/// cancel flag, so the build kills its running steps, starts no more, undoes its mounts and
/// returns, and forge exits with 128 + the signal; a second one ends forge at once with that
/// status (its mounts vanish with its private mount namespace anyway).
struct Interrupts {
    /// The signal that arrived (0 while none did).
    signal: Arc<AtomicUsize>,
}

impl Interrupts {
    fn install(cancel: &Arc<AtomicBool>) -> anyhow::Result<Interrupts> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let signal = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM] {
            // The handlers only store to atomics (async-signal-safe) and run in the order they
            // are registered: the shutdown checks `seen` before this signal sets it, so only a
            // second signal exits (with `_exit`, also async-signal-safe).
            let registered =
                signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, seen.clone())
                    .and_then(|_| signal_hook::flag::register(sig, seen.clone()))
                    .and_then(|_| {
                        signal_hook::flag::register_usize(sig, signal.clone(), sig as usize)
                    })
                    .and_then(|_| signal_hook::flag::register(sig, cancel.clone()));
            registered.with_context(|| format!("installing the handler of signal {sig}"))?;
        }
        Ok(Interrupts { signal })
    }

    /// The signal that interrupted the build, if one did.
    fn caught(&self) -> Option<u8> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            sig => u8::try_from(sig).ok(),
        }
    }
}

pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// Whether stdin holds a (possibly compressed) tar rather than a Dockerfile.
fn is_archive(bytes: &[u8]) -> bool {
    const MAGICS: [&[u8]; 4] = [
        &[0x1f, 0x8b],
        b"BZh",
        &[0xfd, b'7', b'z', b'X', b'Z', 0],
        &[0x28, 0xb5, 0x2f, 0xfd],
    ];
    MAGICS.iter().any(|m| bytes.starts_with(m)) || bytes.get(257..262) == Some(b"ustar".as_slice())
}

/// The directory a stdin tar was unpacked into; removed when dropped.
struct StdinContext(PathBuf);

impl Drop for StdinContext {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The build context and the Dockerfile: a directory and its Dockerfile (or `-f FILE|-`), a
/// Dockerfile on stdin with no context, or a context tar on stdin, unpacked into the store's
/// staging space and removed when the returned guard drops.
fn read_inputs(args: &BuildArgs, store: &Store) -> anyhow::Result<Inputs> {
    let mut stdin_context: Option<StdinContext> = None;
    let (context, dockerfile, dockerfile_name) = if args.context == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading the build context from stdin")?;
        if is_archive(&bytes) {
            let dir = store
                .staging_dir()
                .join(format!("stdin-context-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let guard = StdinContext(dir.clone());
            forge_export::apply_layer(&bytes[..], &dir, &forge_export::UnpackOptions::default())
                .context("unpacking the build context tar from stdin")?;
            let name = args.file.clone().unwrap_or_else(|| "Dockerfile".to_owned());
            let path = dir.join(name.trim_start_matches('/'));
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {name} from the context tar on stdin"))?;
            stdin_context = Some(guard);
            let dir = dir
                .canonicalize()
                .with_context(|| format!("build context {}", dir.display()))?;
            (Some(dir), text, name)
        } else {
            let text = String::from_utf8(bytes)
                .context("the Dockerfile on stdin is not UTF-8 (nor a tar of a context)")?;
            (None, text, "Dockerfile".to_owned())
        }
    } else {
        let dir = PathBuf::from(&args.context);
        if !dir.is_dir() {
            bail!("build context {}: not a directory", dir.display());
        }
        // Absolute and free of symlinks: file operations resolve sources inside it.
        let dir = dir
            .canonicalize()
            .with_context(|| format!("build context {}", dir.display()))?;
        let (text, name) = match args.file.as_deref() {
            Some("-") => {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading the Dockerfile from stdin")?;
                (text, "Dockerfile".to_owned())
            }
            Some(path) => (
                std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
                path.to_owned(),
            ),
            None => {
                let path = dir.join("Dockerfile");
                (
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?,
                    path.display().to_string(),
                )
            }
        };
        (Some(dir), text, name)
    };
    Ok(Inputs {
        context,
        dockerfile,
        dockerfile_name,
        stdin_guard: stdin_context,
    })
}

/// What [`read_inputs`] found.
struct Inputs {
    context: Option<PathBuf>,
    dockerfile: String,
    dockerfile_name: String,
    stdin_guard: Option<StdinContext>,
}
