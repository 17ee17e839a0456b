//! `forge prune`: removes build cache (never named images, never what a running build leases).

use std::process::ExitCode;

use anyhow::Context;
use forge_cache::{parse_prune_filter, parse_size, PruneOptions, Store};

use crate::Globals;

#[derive(Debug, clap::Args)]
pub(crate) struct PruneArgs {
    /// Also remove cache records whose layers named images use, and all unused cache mounts.
    #[arg(short, long)]
    all: bool,
    /// Only remove what matches: `until=DURATION` (unused for at least, e.g. 24h, 7d, 1h30m).
    #[arg(long, value_name = "FILTER")]
    filter: Vec<String>,
    /// Remove least recently used cache only until the cache uses at most SIZE (e.g. 10GB).
    #[arg(long, value_name = "SIZE")]
    keep_storage: Option<String>,
}

pub(crate) fn run(globals: &Globals, args: PruneArgs) -> anyhow::Result<ExitCode> {
    let mut opts = PruneOptions {
        all: args.all,
        ..PruneOptions::default()
    };
    for f in &args.filter {
        parse_prune_filter(f, &mut opts)?;
    }
    if let Some(s) = &args.keep_storage {
        opts.keep_storage = Some(parse_size(s)?);
    }
    let store = Store::open(&globals.root)
        .with_context(|| format!("opening the store at {}", globals.root.display()))?;
    let r = store.prune(&opts)?;
    println!(
        "Deleted {} cache records, {} snapshots, {} blobs, {} cache mounts",
        r.records, r.snapshots, r.blobs, r.cache_mounts
    );
    println!(
        "Total reclaimed space: {}",
        super::system::human_size(r.reclaimed)
    );
    Ok(ExitCode::SUCCESS)
}
