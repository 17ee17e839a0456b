//! `forge check`: run the build checks on a Dockerfile and print one line per finding.
//! Exit status 1 when a finding is an error (`# check=error=true`) or the file does not parse.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::Globals;

#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// The Dockerfile to check.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "Dockerfile"
    )]
    file: PathBuf,
}

pub(crate) fn run(_globals: &Globals, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let name = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {name}"))?;
    let df = match forge_parser::parse(&text) {
        Ok(df) => df,
        Err(err) => {
            eprint!("{}", err.render(&name));
            return Ok(ExitCode::from(1));
        }
    };
    let findings = forge_parser::check(&df, &text);
    for finding in &findings {
        println!("{}", finding.render(&name));
    }
    let failed = findings.iter().any(|f| f.error);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
