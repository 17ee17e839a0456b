//! One module per subcommand; each has its clap arguments and a `run` function.

pub(crate) mod check;
pub(crate) mod parse;
pub(crate) mod plan;
