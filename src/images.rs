//! Image names, normalised as Docker does (`busybox` is `docker.io/library/busybox:latest`).

use forge_registry::Reference;

/// The canonical name of an image reference (`docker.io/library/busybox:latest`).
pub(crate) fn canonical_name(reference: &str) -> anyhow::Result<String> {
    let parsed = Reference::parse(reference)?;
    Ok(parsed.to_string())
}

/// The short name Docker prints (`busybox:latest`).
pub(crate) fn familiar_name(canonical: &str) -> String {
    Reference::parse(canonical)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| canonical.to_owned())
}
