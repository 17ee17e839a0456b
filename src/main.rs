//! The `forge` command line: parses arguments, dispatches to the library crates, renders
//! errors and progress, and maps failures to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cancel;
mod commands;
mod fetch;
mod images;
mod oci_layout;
mod progress;
mod registry_store;

/// forge: a daemonless Dockerfile build engine.
#[derive(Debug, Parser)]
#[command(name = "forge", version, about)]
pub(crate) struct Cli {
    /// The store's root directory (default: /var/lib/forge for root, $XDG_DATA_HOME/forge otherwise).
    #[arg(long, global = true, env = "FORGE_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse a Dockerfile and print its instructions.
    Parse(commands::parse::ParseArgs),
    /// Run build checks (lints) on a Dockerfile.
    Check(commands::check::CheckArgs),
    /// Log in to a registry: check the credentials, then store them in Docker's config.json.
    Login(commands::login::LoginArgs),
    /// Log out of a registry: remove its credentials.
    Logout(commands::login::LogoutArgs),
    /// Remove build cache (least recently used first); named images are kept.
    Prune(commands::prune::PruneArgs),
    /// Store-wide commands (`forge system df`).
    System(commands::system::SystemArgs),
    /// Plan a build: the graph of steps and the image config of each stage (text, JSON or DOT).
    Plan(commands::plan::PlanArgs),
    /// Build an image from a Dockerfile.
    Build(Box<commands::build::BuildArgs>),
    /// Run a command in a new container from an image.
    Run(commands::run::RunArgs),
    /// List the images in the store.
    Images(commands::images::ImagesArgs),
    /// Print an image's config and manifest as JSON.
    Inspect(commands::images::InspectArgs),
    /// Make an image from a root filesystem tarball.
    Import(commands::import::ImportArgs),
    /// Pull an image from a registry into the store.
    Pull(commands::pull::PullArgs),
    /// Push an image from the store to a registry.
    Push(commands::pull::PushArgs),
}

/// The global options every command may need.
#[derive(Debug, Clone)]
pub(crate) struct Globals {
    /// The store root in force.
    #[allow(dead_code)]
    pub(crate) root: PathBuf,
}

fn default_root() -> PathBuf {
    if nix_is_root() {
        return PathBuf::from("/var/lib/forge");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("forge");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".local/share/forge")
}

fn nix_is_root() -> bool {
    // /proc/self/status is always there on Linux; avoid unsafe geteuid in the binary.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn main() -> ExitCode {
    // The sandbox re-executes forge as its helper; that process must do nothing else first.
    let init_arg = std::ffi::OsStr::new(forge_executor::SANDBOX_INIT_ARG);
    if std::env::args_os().nth(1).as_deref() == Some(init_arg) {
        forge_executor::sandbox_init_main();
    }
    let cli = Cli::parse();
    let globals = Globals {
        root: cli.root.clone().unwrap_or_else(default_root),
    };
    let result = match cli.command {
        Command::Parse(args) => commands::parse::run(&globals, args),
        Command::Check(args) => commands::check::run(&globals, args),
        Command::Login(args) => commands::login::run_login(&globals, args),
        Command::Logout(args) => commands::login::run_logout(&globals, args),
        Command::Prune(args) => commands::prune::run(&globals, args),
        Command::System(args) => commands::system::run(&globals, args),
        Command::Plan(args) => commands::plan::run(&globals, args),
        Command::Build(args) => commands::build::run(&globals, *args),
        Command::Run(args) => commands::run::run(&globals, args),
        Command::Images(args) => commands::images::run_images(&globals, args),
        Command::Inspect(args) => commands::images::run_inspect(&globals, args),
        Command::Import(args) => commands::import::run(&globals, args),
        Command::Pull(args) => commands::pull::run_pull(&globals, args),
        Command::Push(args) => commands::pull::run_push(&globals, args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
