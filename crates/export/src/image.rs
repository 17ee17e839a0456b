//! OCI image config, manifest and index: built from a base image, new layers, history and the
//! final container config, serialised deterministically (sorted keys, created time from
//! SOURCE_DATE_EPOCH when set).

use std::collections::BTreeMap;

use oci_spec::image::{
    Config, Descriptor, History, ImageConfiguration, ImageIndex, ImageIndexBuilder, ImageManifest,
    ImageManifestBuilder, MediaType, Platform, RootFs,
};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::hash::digest_of;
use crate::{ExportError, LayerInfo};

/// The image a build starts FROM: its config and its manifest's layer descriptors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseImage {
    pub config: ImageConfiguration,
    pub layers: Vec<Descriptor>,
}

/// Everything [`build_image`] needs.
#[derive(Clone, Debug, Default)]
pub struct ImageSpec {
    /// `None` for `FROM scratch`.
    pub base: Option<BaseImage>,
    /// The new layers, in order, on top of the base's.
    pub layers: Vec<LayerInfo>,
    /// New history entries; those without `empty_layer: true` must match `layers` one to one.
    pub history: Vec<History>,
    /// The final container config (Env, Cmd, Entrypoint, ...).
    pub config: Config,
    /// Docker's container-config keys oci-spec's `Config` lacks (`Healthcheck`, `Shell`,
    /// `OnBuild`, `ArgsEscaped`), merged into the config's `config` object as they are.
    pub docker_config: BTreeMap<String, Value>,
    /// os/architecture/variant of the image.
    pub platform: Platform,
    pub author: Option<String>,
    /// SOURCE_DATE_EPOCH: the image's and the new history entries' created time.
    pub source_date_epoch: Option<i64>,
    /// Annotations on the manifest.
    pub annotations: BTreeMap<String, String>,
}

/// A config and manifest, as bytes to store and as descriptors to reference.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub config: ImageConfiguration,
    pub config_json: Vec<u8>,
    pub config_descriptor: Descriptor,
    pub manifest: ImageManifest,
    pub manifest_json: Vec<u8>,
    /// The manifest's descriptor, with its platform set (ready for an index).
    pub manifest_descriptor: Descriptor,
}

/// An image index and its descriptor.
#[derive(Clone, Debug)]
pub struct BuiltIndex {
    pub index: ImageIndex,
    pub index_json: Vec<u8>,
    pub index_descriptor: Descriptor,
}

/// RFC 3339 in UTC, as Docker and BuildKit write it.
pub fn rfc3339(epoch: i64) -> Result<String, ExportError> {
    let t = time::OffsetDateTime::from_unix_timestamp(epoch)
        .map_err(|_| ExportError::Timestamp(epoch))?;
    t.format(&time::format_description::well_known::Rfc3339)
        .map_err(|_| ExportError::Timestamp(epoch))
}

/// Sorts every object's keys so that a serialisation does not depend on HashMap order.
fn canonical(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<String, Value> =
                map.into_iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().collect::<Map<_, _>>())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

fn to_json<T: Serialize>(
    what: &str,
    value: &T,
    extra_config: &BTreeMap<String, Value>,
) -> Result<Vec<u8>, ExportError> {
    let json_err = |source| ExportError::Json {
        what: what.to_owned(),
        source,
    };
    let mut v = serde_json::to_value(value).map_err(json_err)?;
    if !extra_config.is_empty() {
        if let Some(obj) = v.as_object_mut() {
            let config = obj
                .entry("config")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(config) = config.as_object_mut() {
                for (k, val) in extra_config {
                    config.insert(k.clone(), val.clone());
                }
            }
        }
    }
    serde_json::to_vec(&canonical(v)).map_err(json_err)
}

fn spec_err(what: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> ExportError {
    move |source| ExportError::Spec { what, source }
}

/// Builds the config and manifest of an image from its base, its new layers and its config.
pub fn build_image(spec: &ImageSpec) -> Result<BuiltImage, ExportError> {
    let claimed = spec
        .history
        .iter()
        .filter(|h| h.empty_layer() != Some(true))
        .count();
    if claimed != spec.layers.len() {
        return Err(ExportError::HistoryMismatch {
            layers: spec.layers.len(),
            history: claimed,
        });
    }
    let created = match spec.source_date_epoch {
        Some(epoch) => rfc3339(epoch)?,
        None => rfc3339(time::OffsetDateTime::now_utc().unix_timestamp())?,
    };

    let (mut config, mut layers) = match &spec.base {
        Some(base) => {
            let base_ids = base.config.rootfs().diff_ids().len();
            if base_ids != base.layers.len() {
                return Err(ExportError::BaseLayerMismatch {
                    diff_ids: base_ids,
                    layers: base.layers.len(),
                });
            }
            (base.config.clone(), base.layers.clone())
        }
        None => (ImageConfiguration::default(), Vec::new()),
    };
    config.set_created(Some(created.clone()));
    if spec.author.is_some() {
        config.set_author(spec.author.clone());
    }
    config.set_architecture(spec.platform.architecture().clone());
    config.set_os(spec.platform.os().clone());
    config.set_variant(spec.platform.variant().clone());
    config.set_os_version(spec.platform.os_version().clone());
    config.set_config(Some(spec.config.clone()));
    let mut rootfs = RootFs::default();
    let mut diff_ids = config.rootfs().diff_ids().clone();
    diff_ids.extend(spec.layers.iter().map(|l| l.diff_id.to_string()));
    rootfs.set_diff_ids(diff_ids);
    config.set_rootfs(rootfs);
    let mut history = config.history().clone();
    for h in &spec.history {
        let mut h = h.clone();
        if spec.source_date_epoch.is_some() || h.created().is_none() {
            h.set_created(Some(created.clone()));
        }
        history.push(h);
    }
    config.set_history(history);

    let config_json = to_json("image config", &config, &spec.docker_config)?;
    let config_descriptor = Descriptor::new(
        MediaType::ImageConfig,
        config_json.len() as u64,
        digest_of(&config_json),
    );

    layers.extend(spec.layers.iter().map(LayerInfo::descriptor));
    let mut manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_descriptor.clone())
        .layers(layers)
        .build()
        .map_err(spec_err("manifest"))?;
    if !spec.annotations.is_empty() {
        manifest.set_annotations(Some(spec.annotations.clone().into_iter().collect()));
    }
    let manifest_json = to_json("image manifest", &manifest, &BTreeMap::new())?;
    let mut manifest_descriptor = Descriptor::new(
        MediaType::ImageManifest,
        manifest_json.len() as u64,
        digest_of(&manifest_json),
    );
    manifest_descriptor.set_platform(Some(spec.platform.clone()));
    Ok(BuiltImage {
        config,
        config_json,
        config_descriptor,
        manifest,
        manifest_json,
        manifest_descriptor,
    })
}

/// Builds an image index over several platform manifests (their descriptors carry the platform).
pub fn build_index(
    manifests: &[Descriptor],
    annotations: &BTreeMap<String, String>,
) -> Result<BuiltIndex, ExportError> {
    let mut index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests.to_vec())
        .build()
        .map_err(spec_err("index"))?;
    if !annotations.is_empty() {
        index.set_annotations(Some(annotations.clone().into_iter().collect()));
    }
    let index_json = to_json("image index", &index, &BTreeMap::new())?;
    let index_descriptor = Descriptor::new(
        MediaType::ImageIndex,
        index_json.len() as u64,
        digest_of(&index_json),
    );
    Ok(BuiltIndex {
        index,
        index_json,
        index_descriptor,
    })
}
