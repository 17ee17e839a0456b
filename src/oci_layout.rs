//! `--build-context NAME=oci-layout://DIR[:TAG|@DIGEST]`: an image in an OCI image layout
//! directory (what `skopeo copy ... oci:DIR:TAG` or `forge`'s own store writes). The build
//! reads images only from the store, so the image is copied in (every blob checked against its
//! digest) and named with a synthetic reference the planner then uses like any image name.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use forge_cache::Store;
use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest};

use crate::images::canonical_name;

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Imports the image `spec` (`DIR`, `DIR:TAG` or `DIR@sha256:...`) names into the store and
/// returns the store name it was given (`localhost/forge-oci-layout/<hash>:latest`). Errors
/// do not repeat the flag: the caller names it.
pub(crate) fn import(store: &Store, spec: &str) -> anyhow::Result<String> {
    let (dir, selector) = split_spec(spec);
    let index_path = dir.join("index.json");
    let bytes = std::fs::read(&index_path).with_context(|| {
        format!(
            "reading {} (not an OCI layout directory?)",
            index_path.display()
        )
    })?;
    let index: ImageIndex = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not an OCI image index", index_path.display()))?;
    let descriptor = select(&index, &selector)?;
    copy_blobs(store, &dir, &descriptor).context("copying the image into the store")?;

    // One name per (directory, selector), so two layouts never overwrite each other's name.
    let canonical_dir = dir.canonicalize().unwrap_or_else(|_| dir.clone());
    let mut hasher = blake3::Hasher::new();
    hasher.update(canonical_dir.as_os_str().as_encoded_bytes());
    hasher.update(b"\0");
    hasher.update(format!("{selector:?}").as_bytes());
    let hex = hasher.finalize().to_hex();
    let name = canonical_name(&format!("localhost/forge-oci-layout/{}:latest", &hex[..16]))?;
    store.tag_image(&name, &descriptor)?;
    Ok(name)
}

/// What picks the image out of the layout's index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selector {
    Only,
    Tag(String),
    Digest(String),
}

/// `DIR@DIGEST`, `DIR:TAG` or `DIR`. A `:` may be part of the directory's name, so the tag
/// starts at the first `:` whose left side is a layout directory.
fn split_spec(spec: &str) -> (PathBuf, Selector) {
    if let Some((dir, digest)) = spec.rsplit_once('@') {
        if digest.contains(':') {
            return (PathBuf::from(dir), Selector::Digest(digest.to_owned()));
        }
    }
    for (i, _) in spec.match_indices(':') {
        let dir = Path::new(&spec[..i]);
        if dir.join("index.json").is_file() {
            return (dir.to_path_buf(), Selector::Tag(spec[i + 1..].to_owned()));
        }
    }
    (PathBuf::from(spec), Selector::Only)
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

/// The index entry the selector means. A tag matches a short ref name (`v1`, as skopeo writes)
/// or a full one (`docker.io/library/busybox:latest`, as forge's store writes).
fn select(index: &ImageIndex, selector: &Selector) -> anyhow::Result<Descriptor> {
    let manifests = index.manifests();
    let found = match selector {
        Selector::Digest(digest) => manifests
            .iter()
            .find(|d| d.digest().to_string() == *digest)
            .cloned(),
        Selector::Tag(tag) => manifests
            .iter()
            .find(|d| ref_name(d) == Some(tag.as_str()))
            .or_else(|| {
                manifests.iter().find(|d| {
                    ref_name(d).is_some_and(|n| {
                        n.strip_suffix(tag.as_str())
                            .is_some_and(|rest| rest.ends_with(':'))
                    })
                })
            })
            .cloned(),
        Selector::Only if manifests.len() == 1 => manifests.first().cloned(),
        Selector::Only => manifests
            .iter()
            .find(|d| ref_name(d) == Some("latest"))
            .cloned(),
    };
    found.with_context(|| {
        let names: Vec<&str> = manifests.iter().filter_map(ref_name).collect();
        let wanted = match selector {
            Selector::Digest(d) => format!("no image with digest {d}"),
            Selector::Tag(t) => format!("no image tagged {t:?}"),
            Selector::Only => "several images and no tag given (add :TAG)".to_owned(),
        };
        format!("{wanted} in the layout (its names: {})", names.join(", "))
    })
}

/// Copies `d`'s blob and everything it points to (manifests of an index; config and layers
/// of a manifest), checking each against its digest.
fn copy_blobs(store: &Store, dir: &Path, d: &Descriptor) -> anyhow::Result<()> {
    copy_blob(store, dir, d.digest())?;
    let bytes = store.read_blob_verified(d.digest())?;
    // By content, not media type: Docker's manifest list and OCI's index both list manifests.
    let is_index = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .is_some_and(|v| v.get("manifests").is_some());
    if is_index {
        let index: ImageIndex = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not an image index", d.digest()))?;
        for m in index.manifests() {
            copy_blobs(store, dir, m)?;
        }
    } else {
        let manifest: ImageManifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not an image manifest", d.digest()))?;
        copy_blob(store, dir, manifest.config().digest())?;
        for layer in manifest.layers() {
            copy_blob(store, dir, layer.digest())?;
        }
    }
    Ok(())
}

fn copy_blob(store: &Store, dir: &Path, digest: &Digest) -> anyhow::Result<()> {
    if store.has_blob(digest) {
        return Ok(());
    }
    let path = dir
        .join("blobs")
        .join(digest.algorithm().to_string())
        .join(digest.digest());
    if !path.is_file() {
        bail!(
            "blob {digest} is missing ({} does not exist)",
            path.display()
        );
    }
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    store
        .put_blob_from_reader(file, Some(digest))
        .with_context(|| format!("copying {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_splits_into_directory_and_selector() {
        let tmp = std::env::temp_dir().join(format!("forge-oci-split-{}", std::process::id()));
        let dir = tmp.join("lay:out");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.json"), "{}").unwrap();
        let d = dir.display().to_string();
        assert_eq!(
            split_spec(&format!("{d}:v1")),
            (dir.clone(), Selector::Tag("v1".into()))
        );
        assert_eq!(
            split_spec(&format!("{d}:docker.io/library/busybox:latest")),
            (
                dir.clone(),
                Selector::Tag("docker.io/library/busybox:latest".into())
            )
        );
        assert_eq!(split_spec(&d), (dir.clone(), Selector::Only));
        assert_eq!(
            split_spec(&format!("{d}@sha256:abc")),
            (dir.clone(), Selector::Digest("sha256:abc".into()))
        );
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
