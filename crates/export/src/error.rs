//! The one error type of forge-export: every variant names the file, tar entry or blob involved.

use std::io;
use std::path::PathBuf;

/// Why reading or writing a layer, an image or an output failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A file of the tree being turned into a layer could not be read.
    #[error("reading {path} for the layer")]
    ReadTree { path: PathBuf, source: io::Error },

    /// The store refused or failed to take the layer blob of the tree at `path`.
    #[error("storing the layer of {path} as a blob")]
    StoreLayer {
        path: PathBuf,
        source: forge_cache::StoreError,
    },

    /// The caller's cancel flag was raised while the layer of `path` was being written; nothing
    /// was published.
    #[error("writing the layer of {path} was cancelled")]
    Cancelled { path: PathBuf },

    /// Writing the layer, archive or compressed stream to its destination failed.
    #[error("writing {what}")]
    Write { what: String, source: io::Error },

    /// The archive stream could not be read (truncated, corrupt, bad compression).
    #[error("reading the archive{}", entry.as_ref().map(|e| format!(" at entry {}", e.display())).unwrap_or_default())]
    ReadArchive {
        entry: Option<PathBuf>,
        source: io::Error,
    },

    /// An entry would be written outside the destination: `..`, an absolute path, or a symlinked parent.
    #[error("refusing unsafe path in archive entry {entry}: {reason}")]
    UnsafePath {
        entry: PathBuf,
        reason: &'static str,
    },

    /// A hardlink entry points outside the destination or at something that does not exist yet.
    #[error("refusing hardlink {entry} -> {target}: {reason}")]
    UnsafeHardlink {
        entry: PathBuf,
        target: PathBuf,
        reason: &'static str,
    },

    /// A tar entry type forge does not unpack (e.g. GNU sparse or multi-volume).
    #[error("archive entry {entry} has unsupported type {kind:?}")]
    UnsupportedEntry { entry: PathBuf, kind: char },

    /// Creating a file, setting metadata or deleting a whited-out path failed.
    #[error("unpacking archive entry {entry}: {step}")]
    Unpack {
        entry: PathBuf,
        step: &'static str,
        source: io::Error,
    },

    /// The destination directory cannot be opened or created.
    #[error("opening destination {path}")]
    Destination { path: PathBuf, source: io::Error },

    /// An oci-spec builder rejected a value.
    #[error("building the image {what}")]
    Spec {
        what: &'static str,
        source: oci_spec::OciSpecError,
    },

    /// Serialising or parsing image JSON failed.
    #[error("{what} JSON")]
    Json {
        what: String,
        source: serde_json::Error,
    },

    /// The new layers and the history entries that claim a layer disagree in number.
    #[error("{layers} new layers but {history} history entries without empty_layer")]
    HistoryMismatch { layers: usize, history: usize },

    /// The base image's config and manifest list different numbers of layers.
    #[error(
        "base image has {diff_ids} diff_ids in its config but {layers} layers in its manifest"
    )]
    BaseLayerMismatch { diff_ids: usize, layers: usize },

    /// SOURCE_DATE_EPOCH (or another timestamp) is not representable.
    #[error("timestamp {0} is out of range")]
    Timestamp(i64),

    /// A blob could not be opened from the blob source.
    #[error("opening blob {digest}")]
    OpenBlob { digest: String, source: io::Error },

    /// A blob's content does not hash to the digest it was asked for by.
    #[error("blob {expected} has digest {actual} (size {size})")]
    DigestMismatch {
        expected: String,
        actual: String,
        size: u64,
    },

    /// A descriptor has a media type this output cannot handle.
    #[error("{digest}: unsupported media type {media_type}")]
    UnsupportedMediaType { digest: String, media_type: String },

    /// A file or directory of an output (OCI layout, docker archive, rootfs dir) could not be written.
    #[error("writing output {path}")]
    Output { path: PathBuf, source: io::Error },
}
