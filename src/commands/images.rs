//! `forge images` and `forge inspect`: what the store holds under names.

use std::process::ExitCode;

use anyhow::Context;
use forge_build::load_image;
use forge_cache::Store;
use forge_planner::Platform;

use crate::commands::build::human_size;
use crate::images::{canonical_name, familiar_name};
use crate::Globals;

#[derive(Debug, clap::Args)]
pub(crate) struct ImagesArgs {
    /// Print full image ids.
    #[arg(long)]
    no_trunc: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct InspectArgs {
    /// The image name (`name:tag`).
    name: String,
}

pub(crate) fn run_images(globals: &Globals, args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&globals.root)?;
    let mut rows = vec![[
        "REPOSITORY".to_owned(),
        "TAG".to_owned(),
        "IMAGE ID".to_owned(),
        "CREATED".to_owned(),
        "SIZE".to_owned(),
    ]];
    for entry in store.list_images()? {
        let familiar = familiar_name(&entry.name);
        let (repo, tag) = match familiar.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_owned(), t.to_owned()),
            _ => (familiar.clone(), "<none>".to_owned()),
        };
        let (id, created, size) =
            match load_image(&store, &entry.name, &entry.descriptor, &Platform::host()) {
                Ok(image) => {
                    let id = image.id();
                    let id = id.trim_start_matches("sha256:");
                    let id = if args.no_trunc {
                        id.to_owned()
                    } else {
                        id.chars().take(12).collect()
                    };
                    (
                        id,
                        image.config.created().clone().unwrap_or_default(),
                        human_size(image.size()),
                    )
                }
                Err(e) => ("<unreadable>".to_owned(), e.to_string(), String::new()),
            };
        rows.push([repo, tag, id, created, size]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run_inspect(globals: &Globals, args: InspectArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&globals.root)?;
    let name = canonical_name(&args.name)?;
    let descriptor = store
        .resolve_image(&name)?
        .with_context(|| format!("no such image: {}", args.name))?;
    let image = load_image(&store, &name, &descriptor, &Platform::host())?;
    let config: serde_json::Value = serde_json::from_slice(&image.config_json)?;
    let out = serde_json::json!({
        "Id": image.id(),
        "RepoTags": [familiar_name(&name)],
        "Name": name,
        "Digest": image.manifest_descriptor.digest().to_string(),
        "Size": image.size(),
        "Config": config,
        "Manifest": image.manifest,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}
