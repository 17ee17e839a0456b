//! `forge login` and `forge logout`: credentials in Docker's config.json (or its credential
//! helper), checked against the registry first, as `docker login` does.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use forge_registry::{registry_host, ClientConfig, Credentials, DockerConfig, RegistryClient};

use crate::Globals;

#[derive(Debug, clap::Args)]
pub(crate) struct LoginArgs {
    /// User name.
    #[arg(short, long)]
    username: Option<String>,
    /// Password (visible to other users of this machine: prefer --password-stdin).
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long, conflicts_with = "password")]
    password_stdin: bool,
    /// Extra CA certificates (PEM) to trust for this registry.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// The registry (default: docker.io).
    registry: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct LogoutArgs {
    /// The registry (default: docker.io).
    registry: Option<String>,
}

fn prompt(label: &str) -> anyhow::Result<String> {
    let mut err = std::io::stderr();
    write!(err, "{label}: ")?;
    err.flush()?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub(crate) fn run_login(_globals: &Globals, args: LoginArgs) -> anyhow::Result<ExitCode> {
    let host = registry_host(args.registry.as_deref().unwrap_or("docker.io"));
    let username = match args.username {
        Some(u) => u,
        None => prompt("Username")?,
    };
    if username.is_empty() {
        anyhow::bail!("login to {host}: a user name is required (-u USER)");
    }
    let password = if args.password_stdin {
        let mut text = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut text)
            .context("reading the password from standard input")?;
        text.trim_end_matches(['\r', '\n']).to_string()
    } else if let Some(p) = args.password {
        eprintln!(
            "WARNING! Using --password on the command line is insecure. Use --password-stdin."
        );
        p
    } else {
        if std::io::stdin().is_terminal() {
            eprintln!("(the password is echoed; --password-stdin avoids that)");
        }
        prompt("Password")?
    };
    if password.is_empty() {
        anyhow::bail!("login to {host}: a password is required");
    }
    let credentials = Credentials::Basic { username, password };
    let client = RegistryClient::new(ClientConfig {
        tls_ca: args.tls_ca,
        ..ClientConfig::default()
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(client.verify_credentials(&host, &credentials))?;
    let mut config = DockerConfig::load(&DockerConfig::default_dir())?;
    config.store(&host, &credentials)?;
    match config.helper_for(&host) {
        Some(helper) => {
            println!("Login Succeeded (credentials stored by docker-credential-{helper})")
        }
        None => println!(
            "Login Succeeded (credentials stored in {})",
            config.path().display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run_logout(_globals: &Globals, args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let host = registry_host(args.registry.as_deref().unwrap_or("docker.io"));
    let mut config = DockerConfig::load(&DockerConfig::default_dir())?;
    if config.erase(&host)? {
        println!("Removing login credentials for {host}");
    } else {
        println!("Not logged in to {host}");
    }
    Ok(ExitCode::SUCCESS)
}
