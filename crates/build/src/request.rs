//! What a caller asks a build for, and what it gets back.

use std::collections::BTreeMap;
use std::path::PathBuf;

use forge_executor::{NetworkMode, ResourceLimits, SandboxConfig};
use forge_planner::Platform;
use oci_spec::image::Descriptor;

/// Everything `forge build` passes down besides the store and the image provider.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// The Dockerfile's name as the user gave it, for error messages (`Dockerfile:3:1: ...`).
    pub dockerfile_name: String,
    /// The build context directory; `None` for a Dockerfile with no context (`forge build -`).
    pub context: Option<PathBuf>,
    /// Named contexts (`--build-context NAME=...`): what `FROM NAME`, `COPY --from=NAME` and
    /// `RUN --mount=from=NAME` mean when no stage has that name.
    pub named_contexts: BTreeMap<String, ContextSource>,
    /// `--build-arg` values (the binary resolves `--build-arg K` from its environment).
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--platform`; the host's when `None`.
    pub platform: Option<Platform>,
    /// `--no-cache`: run every step.
    pub no_cache: bool,
    /// `--no-cache-filter`: run every step of these stages (names or indexes).
    pub no_cache_filter: Vec<String>,
    /// `--pull`: re-resolve base image tags.
    pub pull: bool,
    /// `--secret id=ID,...`: secret contents by id. Never in a layer, a key or the history.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// `--ssh ID=SOCKET`: agent sockets by id.
    pub ssh: BTreeMap<String, PathBuf>,
    /// `--network`: the network of RUN steps that do not ask for one.
    pub network: Option<NetworkMode>,
    /// `--allow security.insecure`.
    pub allow_insecure: bool,
    /// `--label K=V`: labels added to the image config.
    pub labels: BTreeMap<String, String>,
    /// Names to tag the result with (already normalised, e.g. `docker.io/library/app:1.0`).
    pub tags: Vec<String>,
    /// How and where RUN steps run. Its `cancel` flag, when given, cancels the whole build
    /// (see [`crate::build`]).
    pub sandbox: SandboxConfig,
    /// cgroup limits for every RUN step.
    pub limits: ResourceLimits,
    /// Steps run at once (the number of cores by default).
    pub jobs: usize,
    /// SOURCE_DATE_EPOCH: clamps layer mtimes and the image's created time.
    pub source_date_epoch: Option<i64>,
}

/// What a named build context is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextSource {
    /// A local directory, read like the build context but with no `.dockerignore`.
    Dir(PathBuf),
    /// An image reference the provider can find (a `docker-image://` value, or the name the
    /// binary gave an imported `oci-layout://` image).
    Image(String),
}

/// What a successful build produced.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The image id (its config digest), as Docker prints it.
    pub image_id: String,
    /// The manifest's descriptor in the store.
    pub manifest: Descriptor,
    /// Compressed size of the image (layers and config).
    pub size: u64,
    /// Steps shown in progress, and how many of them were cached.
    pub steps: usize,
    pub cached: usize,
    /// The names the image was tagged with.
    pub tags: Vec<String>,
}
