//! `forge check`.

use std::process::ExitCode;

use crate::Globals;

#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {}

pub(crate) fn run(_globals: &Globals, _args: CheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("forge check is not built yet")
}
