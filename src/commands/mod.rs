//! One module per subcommand; each has its clap arguments and a `run` function.

pub(crate) mod build;
pub(crate) mod check;
pub(crate) mod images;
pub(crate) mod import;
pub(crate) mod login;
pub(crate) mod parse;
pub(crate) mod plan;
pub(crate) mod prune;
pub(crate) mod pull;
pub(crate) mod run;
pub(crate) mod system;
