//! `forge pull REF` and `forge push NAME[:TAG] [DEST]`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use forge_cache::Store;
use forge_planner::Platform;
use forge_registry::{BlobPush, PushOptions, Reference};

use crate::images::familiar_name;
use crate::registry_store::{
    manifest_for_push, pull_into_store, PushCompression, RegistryArgs, StoreBlobs, TransferProgress,
};
use crate::Globals;

#[derive(Debug, clap::Args)]
pub(crate) struct PullArgs {
    /// The image to pull (`name[:tag]` or `name@digest`).
    reference: String,
    /// The platform to pull from a multi-platform image (default: the host's).
    #[arg(long)]
    platform: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PushArgs {
    /// The local image (`name[:tag]`).
    name: String,
    /// Where to push it (default: its own name).
    dest: Option<String>,
    /// How layers are compressed on the way out (each layer once; remembered).
    #[arg(long, value_enum, default_value = "gzip")]
    compression: PushCompression,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub(crate) fn run_pull(globals: &Globals, args: PullArgs) -> anyhow::Result<ExitCode> {
    let store = Arc::new(Store::open(&globals.root)?);
    let reference = Reference::parse(&args.reference)?;
    let platform = match &args.platform {
        Some(p) => Platform::parse(p)
            .with_context(|| format!("--platform {p:?}: not a platform like linux/amd64"))?,
        None => Platform::host(),
    };
    let client = args.registry.client()?;
    eprintln!("pulling {}", reference);
    let progress = Some(TransferProgress::new("pulled"));
    let (name, descriptor) =
        pull_into_store(&client, &store, &reference, &platform, progress, None)?;
    eprintln!("pulled {} ({})", familiar_name(&name), descriptor.digest());
    println!("{}", descriptor.digest());
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run_push(globals: &Globals, args: PushArgs) -> anyhow::Result<ExitCode> {
    let store = Arc::new(Store::open(&globals.root)?);
    let local = Reference::parse(&args.name)?;
    let descriptor = store
        .resolve_image(&local.to_string())?
        .with_context(|| format!("no such image: {}", args.name))?;
    let target = match &args.dest {
        Some(d) => Reference::parse(d)?,
        None => local.clone(),
    };
    // Other repositories of the same registry that this store pulled or pushed may already
    // hold the base layers: the registry is asked to mount them instead of an upload.
    let mut mount_from = Vec::new();
    for entry in store.list_images()? {
        if let Ok(r) = Reference::parse(&entry.name) {
            if r.registry() == target.registry()
                && r.repository() != target.repository()
                && !mount_from.iter().any(|m| m == r.repository())
            {
                mount_from.push(r.repository().to_owned());
            }
        }
    }
    let pushed = manifest_for_push(&store, &descriptor, args.compression)?;
    let client = args.registry.client()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let source = StoreBlobs {
        store: store.clone(),
        progress: Some(TransferProgress::new("pushed")),
    };
    eprintln!(
        "pushing {} to {}",
        familiar_name(&local.to_string()),
        target
    );
    let report = runtime.block_on(client.push(
        &source,
        pushed.digest().as_ref(),
        &target,
        &PushOptions { mount_from },
    ))?;
    for (digest, how) in &report.blobs {
        let what = match how {
            BlobPush::Existed => "already there".to_owned(),
            BlobPush::Mounted { from } => format!("mounted from {from}"),
            BlobPush::Uploaded { chunks: 0 } => "uploaded".to_owned(),
            BlobPush::Uploaded { chunks } => format!("uploaded in {chunks} chunks"),
        };
        eprintln!("  {digest}: {what}");
    }
    println!("{}", report.manifest_digest);
    Ok(ExitCode::SUCCESS)
}
