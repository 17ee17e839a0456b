//! The crate's one error type: every variant names the path (or entry) a person needs to act.

use std::io;
use std::path::PathBuf;

/// What can go wrong in the store, the context hasher and garbage collection.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation on a path in the store (or the build context) failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("create directory", "read", "rename", ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Taking a lock on a lock file failed (not a wait: the lock call itself errored).
    #[error("lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A blob's bytes no longer hash to its digest; the blob was removed and must be refetched or rebuilt.
    #[error("blob {digest} is corrupt (its bytes hash to {actual}); removed {path}, refetch or rebuild it")]
    CorruptBlob {
        /// The digest the blob is stored under.
        digest: String,
        /// What its bytes hash to now.
        actual: String,
        /// Where it was.
        path: PathBuf,
    },
    /// Bytes offered to the store did not hash to the digest the caller expected.
    #[error("blob digest mismatch: expected {expected}, the bytes hash to {actual}")]
    DigestMismatch {
        /// The digest the caller said the bytes have.
        expected: String,
        /// What they hash to.
        actual: String,
    },
    /// Bytes offered to the store were not the size the caller expected.
    #[error("blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The digest of the blob.
        digest: String,
        /// The size the caller said it has.
        expected: u64,
        /// What arrived.
        actual: u64,
    },
    /// The store holds sha256 blobs only (what OCI registries use).
    #[error("unsupported digest algorithm in {digest} (the store holds sha256 blobs)")]
    UnsupportedDigest {
        /// The offending digest.
        digest: String,
    },
    /// A blob that was asked for is not in the store.
    #[error("blob {digest} is not in the store")]
    BlobNotFound {
        /// Its digest.
        digest: String,
    },
    /// A snapshot that was asked for is not in the store.
    #[error("snapshot {id} is not in the store")]
    SnapshotNotFound {
        /// Its id.
        id: String,
    },
    /// A snapshot laid over more snapshots than any forge makes (a damaged store, or a cycle).
    #[error("snapshot {id} is laid over more than {max} others; its metadata is damaged")]
    SnapshotTooDeep {
        /// Its id.
        id: String,
        /// The most levels a tree may have.
        max: usize,
    },
    /// A snapshot id that is not 32 lowercase hex digits (ids become path components).
    #[error("invalid snapshot id {id:?}: expected 32 lowercase hex digits")]
    InvalidSnapshotId {
        /// The offending text.
        id: String,
    },
    /// A cache-mount id that could escape its directory.
    #[error("invalid cache mount id {id:?}: it must be non-empty and contain no '/', NUL, '.' or '..' alone")]
    InvalidCacheMountId {
        /// The offending id.
        id: String,
    },
    /// A JSON file of the store could not be parsed.
    #[error("{path} is not valid: {source}")]
    BadJson {
        /// The file.
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The stat memo of a build context is damaged (it is then ignored and rewritten by callers).
    #[error("stat memo {path} is damaged: {reason}")]
    BadMemo {
        /// The memo file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A build context (or a path asked for inside it) does not exist or is not a directory.
    #[error("build context {path}: {reason}")]
    BadContext {
        /// The context root or the path in it.
        path: PathBuf,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// A name given to `tag_image` is empty or contains characters no image reference has.
    #[error("invalid image name {name:?}")]
    InvalidImageName {
        /// The offending name.
        name: String,
    },
    /// A size for `--keep-storage` or the GC budget could not be parsed.
    #[error("invalid size {text:?}: expected a number with an optional unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")]
    InvalidSize {
        /// The offending text.
        text: String,
    },
    /// A duration for `--filter until=` could not be parsed.
    #[error("invalid duration {text:?}: expected e.g. 90s, 30m, 24h, 7d or 1h30m")]
    InvalidDuration {
        /// The offending text.
        text: String,
    },
    /// A prune filter that is not `until=DURATION`.
    #[error("unsupported prune filter {text:?}: only until=DURATION is supported")]
    InvalidFilter {
        /// The offending filter.
        text: String,
    },
}

impl StoreError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }
}

/// The crate's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
