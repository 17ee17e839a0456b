//! Incremental COPY: when a COPY runs again, because one of its files changed or because a step
//! before it did, most of its files are the same as last time. Each COPY from a build context
//! leaves an index beside its cache record (target path -> the context digest of the file it
//! was copied from), keyed by the op's family: the instruction as planned (sources,
//! destination, workdir, flags) and the context directory, not its inputs, so the family stays
//! the same when a file or an earlier step changes. The next run of that family hardlinks
//! every file whose digest is unchanged from the earlier snapshot instead of copying it.
//!
//! The family only picks which snapshot to look in; what is linked is decided per file, so a
//! candidate from a different base is as safe as one from the same: the copier checks size,
//! mtime, mode and owner before it links (the file is exactly what a fresh copy would make),
//! and the digest vouches for content and xattrs. Sharing inodes between snapshots is safe
//! because snapshots are never written after they are committed: overlayfs copies a lower file
//! up before changing it, and the copier never sets metadata on a linked file. A pruned
//! earlier snapshot just means the link fails and the file is copied.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use forge_cache::{CacheKey, CacheRecord, ContextTree, SnapshotId, Store};
use forge_planner::OpKind;

use crate::error::BuildError;
use crate::images::lock;

/// The record key of a COPY family's reuse index: the op's own definition (not its inputs)
/// and the directory it copies from.
pub(crate) fn family_key(kind: &OpKind, context: &Path) -> CacheKey {
    let definition = serde_json::to_string(kind).unwrap_or_default();
    CacheKey::builder("copy-reuse/v2")
        .extra("op", definition.as_bytes())
        .extra("context", context.as_os_str().as_encoded_bytes())
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
            .and_then(|mut record| {
                let snapshot = record.snapshot?;
                let root = store.snapshot_fs(&snapshot).ok()?;
                let files = record.payload.get_mut("files")?.take();
                let files: HashMap<String, String> = serde_json::from_value(files).ok()?;
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
