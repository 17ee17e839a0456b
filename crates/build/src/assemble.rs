//! The result image: the target stage's new snapshots become layer blobs (once each, then
//! remembered), its config and history are joined to the base image's, and the manifest is
//! written and tagged in the store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Mutex;

use forge_cache::{CacheKey, CacheRecord, SnapshotId, Store};
use forge_export::{build_image, BaseImage, Compression, ImageSpec, LayerInfo, LayerOptions};
use forge_planner::{ImageConfig, InputRole, Op, Plan, StagePlan};
use oci_spec::image::{Config, History, MediaType, Platform};
use serde_json::Value;

use crate::error::BuildError;
use crate::images::lock;
use crate::progress::{Event, Progress};
use crate::request::{BuildOutput, BuildRequest};
use crate::solve::{State, Tally};

/// Exports the layers of `state` above its base image and writes the image for `stage`.
pub(crate) fn assemble(
    store: &Store,
    req: &BuildRequest,
    stage: &StagePlan,
    state: &State,
    tally: Tally,
    progress: &dyn Progress,
) -> Result<BuildOutput, BuildError> {
    progress.event(Event::Phase {
        name: "exporting layers",
    });
    let mut chain = match &state.top {
        Some(top) => store.snapshot_chain(top)?,
        None => Vec::new(),
    };
    chain.reverse(); // bottom first
    let (base, base_history) = match &state.root {
        Some(root) => (
            Some(BaseImage {
                config: root.config.clone(),
                layers: root.manifest.layers().clone(),
            }),
            root.config.history().len(),
        ),
        None => (None, 0),
    };
    let base_layers = base.as_ref().map(|b| b.layers.len()).unwrap_or(0);
    let new_snapshots: Vec<&SnapshotId> = chain.iter().skip(base_layers).collect();
    let cancel = req.sandbox.cancel.as_deref();
    let layers = export_layers(store, &new_snapshots, req.source_date_epoch, cancel)?;

    let config = &stage.config;
    let history = new_history(config, base_history)?;
    // Without SOURCE_DATE_EPOCH, the image is dated by its newest layer (or its base), so a
    // rebuild that hits the cache everywhere gives the same image id, as BuildKit's does.
    let created = match req.source_date_epoch {
        Some(epoch) => epoch,
        None => {
            let newest = chain
                .iter()
                .skip(base_layers)
                .filter_map(|s| store.snapshot_meta(s).ok())
                .map(|m| m.created as i64)
                .max();
            let base_created = state
                .root
                .as_ref()
                .and_then(|r| r.config.created().clone())
                .and_then(|c| {
                    time::OffsetDateTime::parse(&c, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .map(|t| t.unix_timestamp());
            newest.or(base_created).unwrap_or(0)
        }
    };
    let (oci_config, docker_extra) = container_config(config, &req.labels)?;
    let mut platform = Platform::default();
    platform.set_os(config.os.as_str().into());
    platform.set_architecture(config.architecture.as_str().into());
    platform.set_variant(config.variant.clone());
    let spec = ImageSpec {
        base,
        layers,
        history,
        config: oci_config,
        docker_config: docker_extra,
        platform,
        author: config.author.clone(),
        source_date_epoch: Some(created),
        annotations: BTreeMap::new(),
    };
    progress.event(Event::Phase {
        name: "writing image",
    });
    let built = build_image(&spec)?;
    store.put_blob_bytes(&built.config_json)?;
    store.put_blob_bytes(&built.manifest_json)?;
    for tag in &req.tags {
        store.tag_image(tag, &built.manifest_descriptor)?;
    }
    let size = built
        .manifest
        .layers()
        .iter()
        .map(|l| l.size())
        .sum::<u64>()
        + built.config_descriptor.size();
    Ok(BuildOutput {
        image_id: built.config_descriptor.digest().to_string(),
        manifest: built.manifest_descriptor,
        size,
        steps: tally.steps,
        cached: tally.cached,
        tags: req.tags.clone(),
    })
}

/// Layer exports at once at most (see [`export_layers`]).
const MAX_EXPORTS: usize = 4;

/// The layer blobs of `snapshots`, in their order. Layers are independent of each other, so up to
/// one per core is exported at once: small layers then overlap their fsyncs and lock round trips.
/// A big one uses three threads of its own (walk, hash, write) and holds up to 24 MiB of
/// buffers, so never more than [`MAX_EXPORTS`] run at once, however many cores there are.
fn export_layers(
    store: &Store,
    snapshots: &[&SnapshotId],
    epoch: Option<i64>,
    cancel: Option<&AtomicBool>,
) -> Result<Vec<LayerInfo>, BuildError> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_EXPORTS)
        .min(snapshots.len());
    if workers <= 1 {
        return snapshots
            .iter()
            .map(|s| export_layer(store, s, epoch, cancel))
            .collect();
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let mut done: Vec<(usize, Result<LayerInfo, BuildError>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    // After a failure the build fails anyway: start no more layers.
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(snapshot) = snapshots.get(i) else {
                            break;
                        };
                        let result = export_layer(store, snapshot, epoch, cancel);
                        failed.fetch_or(result.is_err(), Ordering::Relaxed);
                        out.push((i, result));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    // The manifest lists layers bottom first, whatever order they finished in; the first error
    // in that order is the one reported.
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, result)| result).collect()
}

/// The layer blob of a snapshot, made once per (snapshot, epoch). Layers are stored
/// uncompressed: writing them costs a tar and a sha256 (hundreds of MB/s), and `forge push`
/// compresses each one once, when it first leaves the machine.
fn export_layer(
    store: &Store,
    snapshot: &SnapshotId,
    epoch: Option<i64>,
    cancel: Option<&AtomicBool>,
) -> Result<LayerInfo, BuildError> {
    let key = CacheKey::builder("layer-blob/v1")
        .extra("snapshot", snapshot.as_str().as_bytes())
        .extra("compression", b"none")
        .extra(
            "epoch",
            epoch.map(|e| e.to_string()).unwrap_or_default().as_bytes(),
        )
        .finish();
    if let Some(record) = store.get_record(&key)? {
        if let (Some(blob), Some(diff_id)) = (&record.layer_blob, &record.diff_id) {
            if store.has_blob(blob) {
                let sizes: (u64, u64) =
                    serde_json::from_value(record.payload.clone()).unwrap_or((0, 0));
                return Ok(LayerInfo {
                    diff_id: diff_id.clone(),
                    digest: blob.clone(),
                    size: store.blob_size(blob)?,
                    uncompressed_size: sizes.1,
                    media_type: MediaType::ImageLayer,
                });
            }
        }
    }
    let tree = store.snapshot_tree(snapshot)?;
    let tree: Vec<&std::path::Path> = tree.iter().map(|p| p.as_path()).collect();
    // Hashed once, by the store's own hasher, while the tree is walked and written.
    let info = forge_export::write_stacked_layer_to_store(
        &tree,
        store,
        &LayerOptions {
            compression: Compression::Uncompressed,
            level: None,
            source_date_epoch: epoch,
        },
        cancel,
    )
    .map_err(|e| match e {
        forge_export::ExportError::Cancelled { .. } => BuildError::Cancelled,
        e => e.into(),
    })?;
    store.put_record(
        &key,
        &CacheRecord {
            snapshot: Some(snapshot.clone()),
            layer_blob: Some(info.digest.clone()),
            diff_id: Some(info.diff_id.clone()),
            payload: serde_json::json!([info.size, info.uncompressed_size]),
            description: format!("layer of snapshot {snapshot}"),
        },
    )?;
    Ok(info)
}

/// Layers exported while the build still runs. A step whose snapshot will be one of the
/// image's layers (it is on the target stage's chain of bases) hands its new snapshot over as
/// soon as it is committed, and it is exported while later steps run: in a build whose
/// last steps follow a big COPY, the COPY's layer is written while they run instead of after.
/// Each export leaves the same record [`export_layer`] looks for, so the assembly finds the
/// layer done; a failed or cancelled early export is simply done again there, where its error
/// is reported.
pub(crate) struct EarlyLayers {
    /// The ops whose snapshots become the image's layers.
    ops: BTreeSet<usize>,
    queue: Mutex<Option<Sender<SnapshotId>>>,
}

impl EarlyLayers {
    /// The ops on the chain of bases below `plan`'s target stage, and the queue of their
    /// snapshots, to be drained by [`EarlyLayers::export`].
    pub(crate) fn new(plan: &Plan) -> (Self, Receiver<SnapshotId>) {
        let mut ops = BTreeSet::new();
        let mut next = Some(plan.target_stage().result);
        while let Some(id) = next {
            ops.insert(id);
            let op: &Op = plan.graph.op(id);
            next = op
                .inputs
                .iter()
                .find(|i| i.role == InputRole::Base)
                .map(|i| i.op);
        }
        let (tx, rx) = mpsc::channel();
        let early = EarlyLayers {
            ops,
            queue: Mutex::new(Some(tx)),
        };
        (early, rx)
    }

    /// `op` committed `snapshot`: exported now if it will be a layer.
    pub(crate) fn committed(&self, op: &Op, snapshot: &SnapshotId) {
        if self.ops.contains(&op.id) {
            if let Some(tx) = lock(&self.queue).as_ref() {
                let _ = tx.send(snapshot.clone());
            }
        }
    }

    /// No more snapshots come: the exporting threads end once they have done those queued.
    pub(crate) fn close(&self) {
        lock(&self.queue).take();
    }

    /// The exporting threads (up to one per core, at most [`MAX_EXPORTS`]), each taking the
    /// next snapshot queued; they stop early when `cancel` is raised (Ctrl-C, or a step failed).
    pub(crate) fn export(
        store: &Store,
        queue: Receiver<SnapshotId>,
        epoch: Option<i64>,
        cancel: &AtomicBool,
    ) {
        // A layer committed while a bigger one is still being exported (a RUN after a big
        // COPY) is exported beside it, not after it, as the assembly's exports are.
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_EXPORTS);
        let queue = Mutex::new(queue);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    // One worker at a time waits for the next snapshot; the others, for it.
                    let Ok(snapshot) = lock(&queue).recv() else {
                        return;
                    };
                    if cancel.load(Ordering::SeqCst) {
                        return;
                    }
                    // An error here is met again, and reported, when the image is assembled.
                    let _ = export_layer(store, &snapshot, epoch, Some(cancel));
                });
            }
        });
    }
}

/// The history entries the build added on top of the base image's.
fn new_history(config: &ImageConfig, base_history: usize) -> Result<Vec<History>, BuildError> {
    config
        .history
        .iter()
        .skip(base_history)
        .map(|h| {
            let value = serde_json::to_value(h).map_err(|source| BuildError::Json {
                what: "history entry".to_owned(),
                source,
            })?;
            serde_json::from_value(value).map_err(|source| BuildError::Json {
                what: "history entry".to_owned(),
                source,
            })
        })
        .collect()
}

/// The OCI `config` object, plus the Docker keys OCI lacks (Healthcheck, Shell, OnBuild).
fn container_config(
    config: &ImageConfig,
    labels: &BTreeMap<String, String>,
) -> Result<(Config, BTreeMap<String, Value>), BuildError> {
    let json_err = |source| BuildError::Json {
        what: "image config".to_owned(),
        source,
    };
    let mut value = serde_json::to_value(&config.config).map_err(json_err)?;
    let mut extra = BTreeMap::new();
    if let Some(obj) = value.as_object_mut() {
        for key in ["Healthcheck", "Shell", "OnBuild"] {
            if let Some(v) = obj.remove(key) {
                if !v.is_null() && v != Value::Array(Vec::new()) {
                    extra.insert(key.to_owned(), v);
                }
            }
        }
        if !labels.is_empty() {
            let entry = obj
                .entry("Labels")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(map) = entry.as_object_mut() {
                for (k, v) in labels {
                    map.insert(k.clone(), Value::String(v.clone()));
                }
            }
        }
    }
    let config: Config = serde_json::from_value(value).map_err(json_err)?;
    Ok((config, extra))
}
