//! `forge parse`.

use std::process::ExitCode;

use crate::Globals;

#[derive(Debug, clap::Args)]
pub(crate) struct ParseArgs {}

pub(crate) fn run(_globals: &Globals, _args: ParseArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("forge parse is not built yet")
}
