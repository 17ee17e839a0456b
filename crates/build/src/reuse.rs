//! Incremental COPY: when one file of a copied directory changes, the COPY misses the cache and
//! runs again, but the other files are the same as last time. Each COPY from a build context
//! leaves an index beside its cache record (target path -> the context digest of the file it
//! was copied from), keyed by the op's family: its definition and inputs without the file
//! contents, which is what stays the same between two builds of one project. The next run of
//! that family hardlinks every file whose digest is unchanged from the earlier snapshot
//! instead of copying it.
//!
//! Sharing inodes between snapshots is safe because snapshots are never written after they are
//! committed: overlayfs copies a lower file up before changing it, and the copier never sets
//! metadata on a linked file. The copier also checks size, mtime, mode and owner before it
//! links, so the file is exactly what a fresh copy would make; the digest vouches for content
//! and xattrs. A pruned earlier snapshot just means the link fails and the file is copied.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use forge_cache::{CacheKey, CacheRecord, ContextTree, SnapshotId, Store};

use crate::error::BuildError;
use crate::images::lock;

/// The record key of a COPY family's reuse index.
pub(crate) fn family_key(definition_and_inputs: CacheKey) -> CacheKey {
    CacheKey::builder("copy-reuse/v1")
        .input(&definition_and_inputs)
        .finish()
}

/// The reuse source for one COPY from a context tree: the last snapshot of its family and what
/// went into it, and the index of this copy as it is written.
#[derive(Debug)]
pub(crate) struct CopyReuse<'t> {
    tree: &'t ContextTree,
    /// The earlier snapshot's root directory and its index.
    earlier: Option<(PathBuf, HashMap<String, String>)>,
    wrote: Mutex<BTreeMap<String, String>>,
}

impl<'t> CopyReuse<'t> {
    /// Loads the family's last index, if it and its snapshot are still there and `link` allows
    /// linking from it; either way this copy's index is kept for the next one.
    pub(crate) fn load(
        store: &Store,
        family: &CacheKey,
        tree: &'t ContextTree,
        link: bool,
    ) -> Self {
        let earlier = link
            .then(|| store.get_record(family).ok().flatten())
            .flatten()
            .and_then(|record| {
                let snapshot = record.snapshot?;
                let root = store.snapshot_fs(&snapshot).ok()?;
                let files: HashMap<String, String> =
                    serde_json::from_value(record.payload.get("files")?.clone()).ok()?;
                Some((root, files))
            });
        CopyReuse {
            tree,
            earlier,
            wrote: Mutex::new(BTreeMap::new()),
        }
    }

    fn digest_of(&self, src: &Path) -> Option<String> {
        let rel = src.strip_prefix(self.tree.root()).ok()?.to_str()?;
        Some(self.tree.digest(rel)?.to_string())
    }

    /// Records this copy's index for the next build of the family.
    pub(crate) fn save(
        self,
        store: &Store,
        family: &CacheKey,
        snapshot: &SnapshotId,
        description: &str,
    ) -> Result<(), BuildError> {
        let files = self.wrote.into_inner().unwrap_or_else(|e| e.into_inner());
        if files.is_empty() {
            return Ok(());
        }
        store.put_record(
            family,
            &CacheRecord {
                snapshot: Some(snapshot.clone()),
                payload: serde_json::json!({ "files": files }),
                description: format!("reuse index of {description}"),
                ..CacheRecord::default()
            },
        )?;
        Ok(())
    }
}

impl forge_executor::Reuse for CopyReuse<'_> {
    fn identical(&self, src: &Path, target: &Path) -> Option<PathBuf> {
        let (root, files) = self.earlier.as_ref()?;
        let before = files.get(target.to_str()?)?;
        (self.digest_of(src)? == *before).then(|| root.join(target))
    }

    fn wrote(&self, src: &Path, target: &Path) {
        if let (Some(digest), Some(target)) = (self.digest_of(src), target.to_str()) {
            lock(&self.wrote).insert(target.to_owned(), digest);
        }
    }
}
