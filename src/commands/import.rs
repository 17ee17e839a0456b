//! `forge import ROOTFS.tar[.gz] NAME:TAG`: an image from a root filesystem tarball, as
//! `docker import` makes one: one layer, no command, a history entry saying where it came from.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use forge_cache::{SnapshotMeta, Store};
use forge_export::{build_image, Compression, ImageSpec, LayerOptions, UnpackOptions};
use oci_spec::image::{Config, HistoryBuilder, Platform};

use crate::images::{canonical_name, familiar_name};
use crate::Globals;

#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// The root filesystem tarball (plain, gzip, bzip2, xz or zstd); `-` reads stdin.
    file: String,
    /// The name to give the image (`name:tag`).
    name: String,
    /// A Dockerfile instruction for the config (`CMD`, `ENV`, `WORKDIR`, `USER`, `ENTRYPOINT`).
    #[arg(short = 'c', long = "change")]
    change: Vec<String>,
}

pub(crate) fn run(globals: &Globals, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&globals.root)?;
    let name =
        canonical_name(&args.name).with_context(|| format!("invalid name {:?}", args.name))?;
    let reader: Box<dyn std::io::Read> = if args.file == "-" {
        Box::new(std::io::stdin())
    } else {
        let path = PathBuf::from(&args.file);
        Box::new(std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?)
    };
    // Unpack (path-safe) and re-pack, so the layer is normalised and deterministic whatever
    // tool wrote the tarball.
    let draft = store.prepare_snapshot()?;
    forge_export::unpack_layer(reader, &draft.fs_dir(), &UnpackOptions::default())
        .with_context(|| format!("unpacking {}", args.file))?;
    let mut writer = store.blob_writer()?;
    let info = forge_export::write_layer(
        &draft.fs_dir(),
        &mut writer,
        &LayerOptions {
            compression: Compression::Uncompressed,
            level: None,
            source_date_epoch: None,
        },
    )?;
    writer.commit(Some(&info.digest))?;
    store.commit_snapshot(
        draft,
        SnapshotMeta {
            diff_id: Some(info.diff_id.clone()),
            layer_blob: Some(info.digest.clone()),
            description: format!("imported from {}", args.file),
            ..SnapshotMeta::default()
        },
    )?;

    let mut config = Config::default();
    config.set_env(Some(vec![format!("PATH={}", forge_executor::DEFAULT_PATH)]));
    for change in &args.change {
        apply_change(&mut config, change)?;
    }
    let history = HistoryBuilder::default()
        .created_by(format!(
            "Imported from {}",
            if args.file == "-" { "-" } else { &args.file }
        ))
        .build()?;
    let host = forge_planner::Platform::host();
    let mut platform = Platform::default();
    platform.set_os(host.os.as_str().into());
    platform.set_architecture(host.architecture.as_str().into());
    let built = build_image(&ImageSpec {
        base: None,
        layers: vec![info],
        history: vec![history],
        config,
        platform,
        ..ImageSpec::default()
    })?;
    store.put_blob_bytes(&built.config_json)?;
    store.put_blob_bytes(&built.manifest_json)?;
    store.tag_image(&name, &built.manifest_descriptor)?;
    eprintln!("imported {}", familiar_name(&name));
    println!("{}", built.config_descriptor.digest());
    Ok(ExitCode::SUCCESS)
}

/// `--change`: the few instructions `docker import` accepts, in their simplest forms.
fn apply_change(config: &mut Config, change: &str) -> anyhow::Result<()> {
    let (keyword, rest) = change
        .trim()
        .split_once(char::is_whitespace)
        .unwrap_or((change, ""));
    let rest = rest.trim();
    let words = || -> Vec<String> {
        serde_json::from_str::<Vec<String>>(rest)
            .unwrap_or_else(|_| vec!["/bin/sh".into(), "-c".into(), rest.to_owned()])
    };
    match keyword.to_ascii_uppercase().as_str() {
        "CMD" => {
            config.set_cmd(Some(words()));
        }
        "ENTRYPOINT" => {
            config.set_entrypoint(Some(words()));
        }
        "WORKDIR" => {
            config.set_working_dir(Some(rest.to_owned()));
        }
        "USER" => {
            config.set_user(Some(rest.to_owned()));
        }
        "ENV" => {
            let (k, v) = rest
                .split_once('=')
                .or_else(|| rest.split_once(' '))
                .with_context(|| format!("--change {change:?}: expected ENV KEY=VALUE"))?;
            let mut env = config.env().clone().unwrap_or_default();
            env.retain(|e| !e.starts_with(&format!("{k}=")));
            env.push(format!("{k}={}", v.trim()));
            config.set_env(Some(env));
        }
        other => anyhow::bail!("--change {change:?}: {other} is not supported by import"),
    }
    Ok(())
}
