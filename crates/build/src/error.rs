//! `BuildError`: every way a build can fail, with what a person needs to act on it.

use std::path::PathBuf;

/// A failed build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile does not parse; the rendered error names file, line and column.
    #[error("{rendered}")]
    Parse { rendered: String },
    /// The planner refused the Dockerfile (unknown stage, bad target, ...).
    #[error("{file}: {source}")]
    Plan {
        file: String,
        #[source]
        source: forge_planner::PlanError,
    },
    /// A base image is neither in the store nor obtainable.
    #[error("base image {reference} is not in the local store (pull it with `forge pull {reference}`, or `forge import` a root filesystem under that name)")]
    ImageNotFound { reference: String },
    /// A base image's manifest or config in the store is unreadable.
    #[error("image {reference}: {what}")]
    BadImage { reference: String, what: String },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] forge_cache::StoreError),
    /// Layer export or unpacking failed.
    #[error(transparent)]
    Export(#[from] forge_export::ExportError),
    /// A RUN step failed (non-zero exit or sandbox error).
    #[error("{file}:{line}: {name}: {source}")]
    Step {
        file: String,
        line: usize,
        name: String,
        // Boxed: the executor's errors are large and BuildError travels through every `?`.
        #[source]
        source: Box<forge_executor::ExecError>,
    },
    /// A COPY/ADD/WORKDIR step failed.
    #[error("{file}:{line}: {name}: {source}")]
    FileOp {
        file: String,
        line: usize,
        name: String,
        #[source]
        source: Box<forge_executor::FileOpError>,
    },
    /// An ADD source that forge cannot fetch yet (URLs, git).
    #[error("{file}:{line}: {name}: remote ADD sources are not supported yet: {source_text}")]
    RemoteSource {
        file: String,
        line: usize,
        name: String,
        source_text: String,
    },
    /// An `ADD <url>` source could not be downloaded.
    #[error("{file}:{line}: {name}: downloading {url}: {source}")]
    Fetch {
        file: String,
        line: usize,
        name: String,
        url: String,
        #[source]
        source: crate::fetch::FetchError,
    },
    /// An `ADD --checksum` did not match what the URL served.
    #[error("{file}:{line}: ADD: checksum mismatch for {url}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        file: String,
        line: usize,
        url: String,
        expected: String,
        actual: String,
    },
    /// An `ADD --checksum` value that is not `sha256:<64 hex digits>`.
    #[error(
        "{file}:{line}: {name}: --checksum={checksum:?} is not of the form sha256:<64 hex digits>"
    )]
    BadChecksum {
        file: String,
        line: usize,
        name: String,
        checksum: String,
    },
    /// `ADD --checksum` with a source that is not an http(s) URL.
    #[error(
        "{file}:{line}: {name}: --checksum applies to http(s) sources only, not {source_text:?}"
    )]
    ChecksumNeedsUrl {
        file: String,
        line: usize,
        name: String,
        source_text: String,
    },
    /// A RUN --mount=type=secret names a secret the build was not given.
    #[error("{file}:{line}: secret {id:?} is required but was not provided (use --secret id={id},src=FILE)")]
    MissingSecret {
        file: String,
        line: usize,
        id: String,
    },
    /// A RUN --mount=type=ssh without an --ssh agent.
    #[error("{file}:{line}: ssh agent {id:?} is required but was not provided (use --ssh {id}[=SOCKET])")]
    MissingSsh {
        file: String,
        line: usize,
        id: String,
    },
    /// A mount or unmount in forge's own namespace failed.
    #[error("{action} {target}: {source}")]
    Mount {
        action: &'static str,
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    /// A file under forge's control could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON document in the store is malformed.
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// The build was stopped through its cancel flag (Ctrl-C) before it finished; also what a
    /// step stopped that way reports in progress.
    #[error("cancelled")]
    Cancelled,
    /// The build context is unusable.
    #[error("build context {path}: {source}")]
    Context {
        path: PathBuf,
        #[source]
        source: forge_cache::StoreError,
    },
}

impl BuildError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BuildError::Io {
            path: path.into(),
            source,
        }
    }
}
