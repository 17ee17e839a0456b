//! forge-registry: the OCI distribution client. It parses and normalises image references,
//! pulls manifests, indexes and blobs (platform selection, sha256 verification, bounded
//! concurrency, resumable transfers) into a [`BlobSink`], pushes from a [`BlobSource`] (HEAD,
//! cross-repository mount, monolithic and chunked uploads, manifest last), and authenticates
//! with Docker's config.json and credential helpers, basic auth and bearer tokens, over TLS
//! (plain HTTP only for loopback and registries listed as insecure).
//!
//! The store implements the blob traits; [`OciDir`] is a plain OCI layout that does too.

mod auth;
mod blob;
mod client;
mod error;
mod platform;
mod pull;
mod push;
mod reference;

pub use auth::{auth_key, Credentials, DockerConfig, DOCKER_HUB_AUTH_KEY};
pub use blob::{BlobSink, BlobSource, BlobWriter, OciDir, StagedBlob};
pub use client::{registry_host, ClientConfig, RegistryClient};
pub use error::{BlobError, RegistryError};
pub use platform::Platform;
pub use pull::{PulledImage, ResolvedManifest};
pub use push::{BlobPush, PushOptions, PushReport};
pub use reference::{Reference, DOCKER_HUB};

/// Media types the client understands.
pub mod media_type {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
}
