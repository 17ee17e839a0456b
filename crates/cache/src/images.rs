//! Named images: entries of the OCI layout's `index.json`, each a manifest (or index) descriptor
//! carrying its name in the `org.opencontainers.image.ref.name` annotation, so that
//! `skopeo inspect oci:<root>/v1/oci:<name>` finds it. `index.json` is changed read-modify-write
//! under its lock and published atomically.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;

use oci_spec::image::{Descriptor, ImageIndex, ANNOTATION_REF_NAME};

use crate::error::{Result, StoreError};
use crate::fsutil;
use crate::store::{LeaseItem, Store};

/// A named image of the store.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageEntry {
    /// Its full name, e.g. `docker.io/library/app:1.0`.
    pub name: String,
    /// Its manifest (or image index) descriptor.
    pub descriptor: Descriptor,
}

impl Store {
    pub(crate) fn read_index(&self) -> Result<ImageIndex> {
        let path = self.oci_dir().join("index.json");
        let f = File::open(&path).map_err(StoreError::io("open", &path))?;
        serde_json::from_reader(BufReader::new(f))
            .map_err(|source| StoreError::BadJson { path, source })
    }

    fn update_index(
        &self,
        change: impl FnOnce(&mut Vec<Descriptor>) -> Result<bool>,
    ) -> Result<bool> {
        let _gc = self.gc_shared()?;
        let _l = self.entry_lock("index")?;
        let mut index = self.read_index()?;
        let mut manifests = index.manifests().clone();
        let changed = change(&mut manifests)?;
        if changed {
            index.set_manifests(manifests);
            let bytes = serde_json::to_vec_pretty(&index).expect("an image index serialises");
            fsutil::write_atomic(&self.staging, &self.oci_dir().join("index.json"), &bytes)?;
        }
        Ok(changed)
    }

    /// Names an image: `descriptor` (a manifest or index whose blob is in the store) becomes the
    /// index entry for `name`, replacing any previous one of that name.
    pub fn tag_image(&self, name: &str, descriptor: &Descriptor) -> Result<()> {
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(StoreError::InvalidImageName {
                name: name.to_owned(),
            });
        }
        let mut desc = descriptor.clone();
        let mut ann: HashMap<String, String> = desc.annotations().clone().unwrap_or_default();
        ann.insert(ANNOTATION_REF_NAME.to_owned(), name.to_owned());
        desc.set_annotations(Some(ann));
        self.update_index(|manifests| {
            if !self.has_blob(descriptor.digest()) {
                return Err(StoreError::BlobNotFound {
                    digest: descriptor.digest().to_string(),
                });
            }
            manifests.retain(|d| ref_name(d) != Some(name));
            manifests.push(desc);
            Ok(true)
        })?;
        Ok(())
    }

    /// Removes a name; returns whether it existed. The blobs stay until prune finds them unused.
    pub fn untag(&self, name: &str) -> Result<bool> {
        self.update_index(|manifests| {
            let before = manifests.len();
            manifests.retain(|d| ref_name(d) != Some(name));
            Ok(manifests.len() != before)
        })
    }

    /// The descriptor named `name`, pinned by this store's session lease.
    pub fn resolve_image(&self, name: &str) -> Result<Option<Descriptor>> {
        let _gc = self.gc_shared()?;
        let index = self.read_index()?;
        let found = index
            .manifests()
            .iter()
            .find(|d| ref_name(d) == Some(name))
            .cloned();
        if let Some(d) = &found {
            self.pin(LeaseItem::Blob(d.digest().clone()))?;
        }
        Ok(found)
    }

    /// Every named image, in index order.
    pub fn list_images(&self) -> Result<Vec<ImageEntry>> {
        let index = self.read_index()?;
        Ok(index
            .manifests()
            .iter()
            .filter_map(|d| {
                ref_name(d).map(|n| ImageEntry {
                    name: n.to_owned(),
                    descriptor: d.clone(),
                })
            })
            .collect())
    }
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()?
        .get(ANNOTATION_REF_NAME)
        .map(String::as_str)
}
