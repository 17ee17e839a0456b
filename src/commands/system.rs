//! `forge system df`: what the store uses, by kind, and what prune could free.

use std::process::ExitCode;

use anyhow::Context;
use forge_cache::Store;

use crate::Globals;

#[derive(Debug, clap::Args)]
pub(crate) struct SystemArgs {
    #[command(subcommand)]
    command: SystemCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SystemCommand {
    /// Show the store's disk usage.
    Df(DfArgs),
}

#[derive(Debug, clap::Args)]
struct DfArgs {
    /// Also list images, cache records and cache mounts one by one.
    #[arg(short, long)]
    verbose: bool,
}

pub(crate) fn run(globals: &Globals, args: SystemArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        SystemCommand::Df(df) => run_df(globals, df),
    }
}

fn run_df(globals: &Globals, args: DfArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&globals.root)
        .with_context(|| format!("opening the store at {}", globals.root.display()))?;
    let usage = store.disk_usage()?;
    println!(
        "{:<20}{:<10}{:<10}{:<12}RECLAIMABLE",
        "TYPE", "TOTAL", "ACTIVE", "SIZE"
    );
    for r in &usage.rows {
        let pct = (r.reclaimable * 100).checked_div(r.size).unwrap_or(0);
        println!(
            "{:<20}{:<10}{:<10}{:<12}{} ({pct}%)",
            r.kind,
            r.total,
            r.active,
            human_size(r.size),
            human_size(r.reclaimable)
        );
    }
    if args.verbose {
        println!("\nImages:\n{:<50}{:<20}SIZE", "NAME", "DIGEST");
        for (img, size) in &usage.images {
            let d = img.descriptor.digest().digest();
            println!(
                "{:<50}{:<20}{}",
                img.name,
                &d[..d.len().min(12)],
                human_size(*size)
            );
        }
        println!(
            "\nBuild cache:\n{:<16}{:<10}{:<12}{:<14}DESCRIPTION",
            "KEY", "IN USE", "SIZE", "LAST USED"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        for r in &usage.records {
            println!(
                "{:<16}{:<10}{:<12}{:<14}{}",
                &r.key.to_hex()[..12],
                if r.in_use { "yes" } else { "no" },
                human_size(r.size),
                format!("{} ago", human_age(now.saturating_sub(r.last_used))),
                r.description
            );
        }
        println!("\nCache mounts:\n{:<50}{:<10}SIZE", "ID", "IN USE");
        for (id, size, busy) in &usage.cache_mounts {
            println!(
                "{:<50}{:<10}{}",
                id,
                if *busy { "yes" } else { "no" },
                human_size(*size)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Sizes as docker prints them: decimal units, up to four significant digits (`12.35MB`).
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < UNITS.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        return format!("{bytes}B");
    }
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{}", UNITS[i])
}

fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
