//! The crate's error types: `RegistryError` for everything the client does, `BlobError` for the
//! blob sinks and sources the caller plugs in (the store implements those traits, so it needs an
//! error type it can build without knowing registry details).

use std::path::PathBuf;

/// Everything that can go wrong talking to a registry. Each variant names the registry, the
/// repository and the action, so a message can be acted on without a debugger.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The text is not a valid image reference.
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    /// The text is not a valid platform (`os/arch[/variant]`).
    #[error("invalid platform {platform:?}: expected os/architecture[/variant]")]
    InvalidPlatform { platform: String },

    /// A mirror or registry address that cannot be used as an endpoint.
    #[error("invalid registry endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },

    /// The extra CA file (`tls_ca`) cannot be read or parsed.
    #[error("TLS CA file {path}: {reason}")]
    TlsCa { path: PathBuf, reason: String },

    /// The HTTP client could not be constructed.
    #[error("building the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),

    /// The registry could not be reached at all (after retries). `reason` is the whole cause
    /// chain (connection refused, certificate not trusted, ...), so `{}` alone says why.
    #[error("{action} {target}: cannot reach {url}: {reason}")]
    Connect {
        action: String,
        target: String,
        url: String,
        reason: String,
    },

    /// 401: the registry wants credentials, or rejected the ones given.
    #[error("{action} {target}: 401 unauthorized: {message}")]
    Unauthorized {
        action: String,
        target: String,
        message: String,
    },

    /// 403: the credentials are valid but do not grant this action.
    #[error("{action} {target}: 403 denied: {message}")]
    Denied {
        action: String,
        target: String,
        message: String,
    },

    /// 404: the manifest, blob or repository does not exist.
    #[error("{action} {target}: 404 not found: {message}")]
    NotFound {
        action: String,
        target: String,
        message: String,
    },

    /// 429: still rate limited after the bounded retries.
    #[error("{action} {target}: 429 too many requests (rate limited, gave up after {attempts} attempts): {message}")]
    RateLimited {
        action: String,
        target: String,
        attempts: u32,
        message: String,
    },

    /// 5xx: the registry failed, still after the bounded retries.
    #[error(
        "{action} {target}: {status} server error (gave up after {attempts} attempts): {message}"
    )]
    Server {
        action: String,
        target: String,
        status: u16,
        attempts: u32,
        message: String,
    },

    /// Any other status the protocol does not expect at this step.
    #[error("{action} {target}: unexpected status {status}: {message}")]
    UnexpectedStatus {
        action: String,
        target: String,
        status: u16,
        message: String,
    },

    /// The token server refused to issue a token or answered something unusable.
    #[error("{action} {target}: token from {realm}: {message}")]
    Token {
        action: String,
        target: String,
        realm: String,
        message: String,
    },

    /// Bytes received do not hash to the digest they were requested by; nothing was committed.
    #[error("{action} {target}: digest mismatch for {digest}: received content hashes to {actual}; discarded")]
    DigestMismatch {
        action: String,
        target: String,
        digest: String,
        actual: String,
    },

    /// The registry sent more or fewer bytes than the descriptor's size.
    #[error(
        "{action} {target}: size mismatch for {digest}: expected {expected} bytes, got {actual}"
    )]
    SizeMismatch {
        action: String,
        target: String,
        digest: String,
        expected: u64,
        actual: u64,
    },

    /// A blob transfer kept being cut off; what arrived stays staged for the next attempt.
    #[error("{action} {target}: transfer cut off at {received} of {expected} bytes (gave up after {attempts} attempts; the next pull resumes from there)")]
    Interrupted {
        action: String,
        target: String,
        received: u64,
        expected: u64,
        attempts: u32,
    },

    /// A manifest or index that cannot be understood.
    #[error("{action} {target}: bad manifest ({media_type}): {reason}")]
    BadManifest {
        action: String,
        target: String,
        media_type: String,
        reason: String,
    },

    /// An index or manifest list with no entry for the wanted platform.
    #[error("pull {target}: no manifest for platform {platform} (available: {available})")]
    NoMatchingPlatform {
        target: String,
        platform: String,
        available: String,
    },

    /// The blob sink or source failed.
    #[error("{action} {target}: {source}")]
    Blob {
        action: String,
        target: String,
        #[source]
        source: BlobError,
    },

    /// Docker's config.json cannot be read, parsed or written.
    #[error("docker config {path}: {reason}")]
    DockerConfig { path: PathBuf, reason: String },

    /// A credential helper failed.
    #[error("credential helper docker-credential-{helper} {verb} for {server}: {reason}")]
    CredentialHelper {
        helper: String,
        verb: String,
        server: String,
        reason: String,
    },

    /// Plain HTTP was needed but the registry is neither loopback nor listed as insecure.
    #[error("{registry}: plain HTTP is only used for localhost or registries listed as insecure")]
    InsecureNotAllowed { registry: String },
}

impl RegistryError {
    /// Whether trying again (or another mirror) could help: network trouble, rate limits, 5xx.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. }
                | Self::RateLimited { .. }
                | Self::Server { .. }
                | Self::Interrupted { .. }
        )
    }
}

/// Failures of a [`crate::BlobSink`] or [`crate::BlobSource`].
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The bytes written do not hash to the digest the blob was begun with; they were discarded.
    #[error("blob {digest}: content hashes to {actual}")]
    DigestMismatch { digest: String, actual: String },

    /// The source has no blob with this digest.
    #[error("blob {digest} is missing")]
    Missing { digest: String },

    /// Reading a blob to push failed.
    #[error("reading blob {digest}: {source}")]
    Read {
        digest: String,
        #[source]
        source: std::io::Error,
    },

    /// Writing received bytes into the staged blob failed.
    #[error("writing blob {digest}: {source}")]
    Write {
        digest: String,
        #[source]
        source: std::io::Error,
    },

    /// A file operation on the blob store failed.
    #[error("blob store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An error and its sources as one line, without repeating a message a wrapper already holds.
pub(crate) fn cause_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}
