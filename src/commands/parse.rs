//! `forge parse`: parse a Dockerfile and print its instructions, as text or as the stable JSON
//! schema of docs/parse-json.md.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::Globals;

#[derive(Debug, clap::Args)]
pub(crate) struct ParseArgs {
    /// The Dockerfile to parse (`-` reads standard input).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "Dockerfile"
    )]
    file: PathBuf,
    /// Print the JSON schema documented in docs/parse-json.md instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(_globals: &Globals, args: ParseArgs) -> anyhow::Result<ExitCode> {
    let (name, text) = if args.file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the Dockerfile from standard input")?;
        ("Dockerfile".to_string(), text)
    } else {
        let bytes = std::fs::read(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?;
        let text = String::from_utf8(bytes)
            .with_context(|| format!("{} is not UTF-8 text", args.file.display()))?;
        (args.file.display().to_string(), text)
    };
    let dockerfile = match forge_parser::parse(&text) {
        Ok(d) => d,
        Err(err) => {
            eprint!("{}", err.render(&name));
            return Ok(ExitCode::from(1));
        }
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &forge_parser::json_document(&dockerfile))?;
        writeln!(out)?;
    } else {
        out.write_all(forge_parser::text_listing(&dockerfile).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
