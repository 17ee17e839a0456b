//! Image names and where base images come from: names are normalised as Docker does
//! (`busybox` is `docker.io/library/busybox:latest`) and looked up in the local store.

use forge_build::{BuildError, ImageProvider, ProvidedImage};
use forge_cache::Store;
use forge_planner::Platform;
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

/// Base images from the local store (pulls come with the registry integration).
#[derive(Debug, Default)]
pub(crate) struct LocalProvider;

impl ImageProvider for LocalProvider {
    fn provide(
        &self,
        store: &Store,
        reference: &str,
        _platform: &Platform,
        _pull: bool,
    ) -> Result<Option<ProvidedImage>, BuildError> {
        let name = Reference::parse(reference)
            .map(|r| r.to_string())
            .map_err(|e| BuildError::BadImage {
                reference: reference.to_owned(),
                what: e.to_string(),
            })?;
        Ok(store
            .resolve_image(&name)?
            .map(|descriptor| ProvidedImage { name, descriptor }))
    }
}
