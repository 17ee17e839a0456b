//! Base images: finding them (through an [`ImageProvider`], which may pull), reading their
//! manifest and config from the store, and unpacking their layers once into snapshots that
//! every later build and `forge run` share.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use forge_cache::{CacheKey, CacheRecord, SnapshotId, SnapshotMeta, Store};
use forge_export::UnpackOptions;
use forge_planner::{ImageConfig, ImageResolver, Platform, ResolvedImage};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};

use crate::error::BuildError;

/// Where base images come from: the local store, a registry, an OCI layout directory. The
/// binary implements it; the build only ever reads what the provider put in the store.
pub trait ImageProvider: Sync {
    /// Makes sure `reference` (as written in the Dockerfile, variables expanded) is in the
    /// store, re-resolving tags when `pull` is set, and returns its canonical name and manifest
    /// descriptor. `Ok(None)` means the image does not exist anywhere this provider looks.
    fn provide(
        &self,
        store: &Store,
        reference: &str,
        platform: &Platform,
        pull: bool,
    ) -> Result<Option<ProvidedImage>, BuildError>;
}

/// An image the provider made available in the store.
#[derive(Debug, Clone)]
pub struct ProvidedImage {
    /// The canonical name, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// The descriptor of its manifest (or index) blob in the store.
    pub descriptor: Descriptor,
}

/// An image read from the store: manifest and config, for one platform.
#[derive(Debug, Clone)]
pub struct LocalImage {
    pub name: String,
    /// The manifest's descriptor (the platform's manifest when the name points at an index).
    pub manifest_descriptor: Descriptor,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
    pub config_json: Vec<u8>,
}

impl LocalImage {
    /// The image's id as Docker prints it: its config digest.
    pub fn id(&self) -> String {
        self.manifest.config().digest().to_string()
    }

    /// Total compressed size of its layers and config.
    pub fn size(&self) -> u64 {
        self.manifest.layers().iter().map(|l| l.size()).sum::<u64>() + self.manifest.config().size()
    }
}

fn is_index(media_type: &MediaType) -> bool {
    match media_type {
        MediaType::ImageIndex => true,
        MediaType::Other(t) => t == "application/vnd.docker.distribution.manifest.list.v2+json",
        _ => false,
    }
}

/// Reads the image `name` whose manifest (or index) blob is `descriptor`, choosing `platform`
/// from an index.
pub fn load_image(
    store: &Store,
    name: &str,
    descriptor: &Descriptor,
    platform: &Platform,
) -> Result<LocalImage, BuildError> {
    let bad = |what: String| BuildError::BadImage {
        reference: name.to_owned(),
        what,
    };
    let mut descriptor = descriptor.clone();
    let mut bytes = store.read_blob_verified(descriptor.digest())?;
    if is_index(descriptor.media_type()) || looks_like_index(&bytes) {
        let index: ImageIndex = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("index {}: {e}", descriptor.digest())))?;
        let chosen = index
            .manifests()
            .iter()
            .find(|m| {
                m.platform().as_ref().is_none_or(|p| {
                    p.os().to_string() == platform.os
                        && p.architecture().to_string() == platform.architecture
                })
            })
            .ok_or_else(|| bad(format!("no manifest for platform {platform}")))?;
        descriptor = chosen.clone();
        bytes = store.read_blob_verified(descriptor.digest())?;
    }
    let manifest: ImageManifest = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("manifest {}: {e}", descriptor.digest())))?;
    let config_json = store.read_blob_verified(manifest.config().digest())?;
    let config: ImageConfiguration = serde_json::from_slice(&config_json)
        .map_err(|e| bad(format!("config {}: {e}", manifest.config().digest())))?;
    if config.rootfs().diff_ids().len() != manifest.layers().len() {
        return Err(bad(format!(
            "config lists {} diff ids but the manifest has {} layers",
            config.rootfs().diff_ids().len(),
            manifest.layers().len()
        )));
    }
    Ok(LocalImage {
        name: name.to_owned(),
        manifest_descriptor: descriptor,
        manifest,
        config,
        config_json,
    })
}

fn looks_like_index(bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        layers: Option<serde_json::Value>,
    }
    serde_json::from_slice::<Probe>(bytes)
        .map(|p| p.manifests.is_some() && p.layers.is_none())
        .unwrap_or(false)
}

/// Unpacks the image's layers into snapshots (once per layer chain, remembered in the cache)
/// and returns the top snapshot; `None` for an image without layers.
pub fn image_snapshots(
    store: &Store,
    image: &LocalImage,
) -> Result<Option<SnapshotId>, BuildError> {
    let mut parent: Option<SnapshotId> = None;
    for (layer, diff_id) in image
        .manifest
        .layers()
        .iter()
        .zip(image.config.rootfs().diff_ids())
    {
        let key = CacheKey::builder("unpacked-layer/v1")
            .extra(
                "parent",
                parent.as_ref().map(|p| p.as_str()).unwrap_or("").as_bytes(),
            )
            .extra("diff_id", diff_id.as_bytes())
            .finish();
        if let Some(record) = store.get_record(&key)? {
            if let Some(snapshot) = record.snapshot {
                if store.snapshot_fs(&snapshot).is_ok() {
                    parent = Some(snapshot);
                    continue;
                }
            }
        }
        let draft = store.prepare_snapshot()?;
        let blob = store.open_blob_verified(layer.digest())?;
        forge_export::unpack_layer(blob, &draft.fs_dir(), &UnpackOptions::default())?;
        let meta = SnapshotMeta {
            parent: parent.clone(),
            diff_id: diff_id.parse().ok(),
            layer_blob: Some(layer.digest().clone()),
            description: format!("{} layer {}", image.name, layer.digest()),
            ..SnapshotMeta::default()
        };
        let id = store.commit_snapshot(draft, meta)?;
        store.put_record(
            &key,
            &CacheRecord {
                snapshot: Some(id.clone()),
                layer_blob: Some(layer.digest().clone()),
                diff_id: diff_id.parse().ok(),
                payload: serde_json::Value::Null,
                description: format!("unpacked {}", layer.digest()),
            },
        )?;
        parent = Some(id);
    }
    Ok(parent)
}

/// The planner's view of the store: resolves FROM references through the provider and
/// remembers what it found, so the solver uses exactly the images the plan was made with.
pub(crate) struct StoreResolver<'a> {
    pub(crate) store: &'a Store,
    pub(crate) provider: &'a dyn ImageProvider,
    pub(crate) pull: bool,
    pub(crate) found: Mutex<BTreeMap<String, Arc<LocalImage>>>,
    pub(crate) errors: Mutex<Vec<BuildError>>,
}

impl ImageResolver for StoreResolver<'_> {
    fn resolve(&self, reference: &str, platform: &Platform) -> Option<ResolvedImage> {
        if let Some(image) = lock(&self.found).get(reference) {
            return resolved(image, reference, &mut lock(&self.errors));
        }
        let provided = match self
            .provider
            .provide(self.store, reference, platform, self.pull)
        {
            Ok(Some(p)) => p,
            Ok(None) => return None,
            Err(e) => {
                lock(&self.errors).push(e);
                return None;
            }
        };
        match load_image(self.store, &provided.name, &provided.descriptor, platform) {
            Ok(image) => {
                let image = Arc::new(image);
                // The plan names resolved images canonically; keep both spellings.
                lock(&self.found).insert(image.name.clone(), image.clone());
                lock(&self.found).insert(reference.to_owned(), image.clone());
                resolved(&image, reference, &mut lock(&self.errors))
            }
            Err(e) => {
                lock(&self.errors).push(e);
                None
            }
        }
    }
}

fn resolved(
    image: &LocalImage,
    reference: &str,
    errors: &mut Vec<BuildError>,
) -> Option<ResolvedImage> {
    match serde_json::from_slice::<ImageConfig>(&image.config_json) {
        Ok(config) => Some(ResolvedImage {
            reference: image.name.clone(),
            digest: image.manifest_descriptor.digest().to_string(),
            config,
        }),
        Err(source) => {
            errors.push(BuildError::Json {
                what: format!("config of {reference}"),
                source,
            });
            None
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
