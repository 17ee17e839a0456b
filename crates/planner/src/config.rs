//! The image configuration each stage produces, and the resolver through which the planner
//! learns a base image's configuration without doing I/O itself.
//!
//! These are our own serde structs rather than oci-spec's because a Docker image config
//! carries fields the OCI spec leaves out (`Healthcheck`, `Shell`, `OnBuild`) and BuildKit
//! writes them; the field names below are the ones in the config JSON, so a config blob from
//! a registry deserialises straight into [`ImageConfig`].

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::platform::Platform;

/// Docker's default `PATH`, added when a base image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An image configuration (the config blob of an OCI/Docker image) without its `rootfs`,
/// which only the exporter can know.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// RFC 3339; set from `SOURCE_DATE_EPOCH` when given, otherwise left to the exporter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub config: ContainerConfig,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub history: Vec<History>,
}

/// The `config` object: what a container started from the image gets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub exposed_ports: BTreeMap<String, EmptyObject>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub volumes: BTreeMap<String, EmptyObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub on_build: Vec<String>,
}

impl ContainerConfig {
    /// The value of `name` in `Env`.
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env.iter().find_map(|e| {
            let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
            (k == name).then_some(v)
        })
    }

    /// Set `name` in `Env`, in place when it is already there (Docker keeps the position).
    pub(crate) fn set_env(&mut self, name: &str, value: &str) {
        let entry = format!("{name}={value}");
        match self
            .env
            .iter_mut()
            .find(|e| e.split('=').next() == Some(name))
        {
            Some(slot) => *slot = entry,
            None => self.env.push(entry),
        }
    }
}

/// The `{}` Docker uses as the value of `ExposedPorts` and `Volumes` entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyObject {}

/// `Healthcheck`: durations in nanoseconds as Docker stores them; zero means "default".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    #[serde(default, deserialize_with = "null_default")]
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: u64,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub retries: u32,
}

/// One `history` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// A base image the resolver found: the reference it resolved, its manifest digest and config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedImage {
    /// The canonical reference, e.g. `docker.io/library/alpine:3.20`.
    pub reference: String,
    /// The manifest digest, e.g. `sha256:…`; it enters the image op's definition, so a moved
    /// tag changes every digest downstream.
    pub digest: String,
    pub config: ImageConfig,
}

/// How the planner learns about base images without doing I/O: the store or a registry
/// client implements this; `None` means "not known", and the image stays an unresolved source.
pub trait ImageResolver {
    fn resolve(&self, reference: &str, platform: &Platform) -> Option<ResolvedImage>;
}

/// The resolver for planning offline: every image is unresolved.
#[derive(Debug, Clone, Copy, Default)]
pub struct OfflineResolver;

impl ImageResolver for OfflineResolver {
    fn resolve(&self, _reference: &str, _platform: &Platform) -> Option<ResolvedImage> {
        None
    }
}

/// Images known up front, by the reference as written in the Dockerfile (tests, pre-pulled sets).
impl ImageResolver for BTreeMap<String, ResolvedImage> {
    fn resolve(&self, reference: &str, _platform: &Platform) -> Option<ResolvedImage> {
        self.get(reference).cloned()
    }
}

fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::ImageConfig;

    #[test]
    fn docker_config_with_nulls_deserialises() {
        let json = r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"],
            "Volumes":null,"OnBuild":null,"Labels":null,"Entrypoint":null,"WorkingDir":"",
            "ExposedPorts":{"80/tcp":{}}},"rootfs":{"type":"layers","diff_ids":[]},
            "history":[{"created_by":"x","empty_layer":true}]}"#;
        let config: ImageConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.config.env_value("PATH"), Some("/bin"));
        assert_eq!(config.config.cmd.as_deref(), Some(&["sh".to_string()][..]));
        assert!(config.config.on_build.is_empty());
        assert!(config.config.exposed_ports.contains_key("80/tcp"));
        assert!(config.history[0].empty_layer);
    }
}
