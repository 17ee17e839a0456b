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

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use forge_cache::{CacheKey, CacheRecord, ContentDigest, ContextTree, SnapshotId, Store};
use forge_planner::OpKind;

use crate::error::BuildError;
use crate::images::lock;

/// The record key of a COPY family's reuse index: the op's own definition (not its inputs)
/// and the directory it copies from.
pub(crate) fn family_key(kind: &OpKind, context: &Path) -> CacheKey {
    let definition = serde_json::to_string(kind).unwrap_or_default();
    CacheKey::builder("copy-reuse/v3")
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
    earlier: Option<(PathBuf, Index)>,
    wrote: Mutex<Vec<(String, ContentDigest)>>,
}

/// A COPY's index as it is stored: one string of `target NUL digest NUL` pairs sorted by
/// target (digests in hex), found by binary search. One string rather than a JSON map of
/// thousands of entries: loading it is a copy, not an allocation per file.
#[derive(Debug)]
struct Index {
    pairs: String,
    /// Where each pair's target, and its digest, start and end in `pairs`.
    spans: Vec<(u32, u32, u32, u32)>,
}

impl Index {
    fn parse(pairs: String) -> Option<Index> {
        let mut spans = Vec::new();
        let mut at = 0usize;
        let bytes = pairs.as_bytes();
        while at < bytes.len() {
            let target_end = at + bytes[at..].iter().position(|&b| b == 0)?;
            let digest_end =
                target_end + 1 + bytes[target_end + 1..].iter().position(|&b| b == 0)?;
            let span = |v: usize| u32::try_from(v).ok();
            spans.push((
                span(at)?,
                span(target_end)?,
                span(target_end + 1)?,
                span(digest_end)?,
            ));
            at = digest_end + 1;
        }
        Some(Index { pairs, spans })
    }

    /// The digest recorded for `target`.
    fn get(&self, target: &str) -> Option<ContentDigest> {
        let at = |a: u32, b: u32| &self.pairs[a as usize..b as usize];
        let i = self
            .spans
            .binary_search_by(|&(a, b, _, _)| at(a, b).cmp(target))
            .ok()?;
        let (_, _, c, d) = self.spans[i];
        let mut digest = [0u8; 32];
        hex::decode_to_slice(at(c, d), &mut digest).ok()?;
        Some(ContentDigest(digest))
    }
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
                let serde_json::Value::String(pairs) = record.payload.get_mut("pairs")?.take()
                else {
                    return None;
                };
                Some((root, Index::parse(pairs)?))
            });
        CopyReuse {
            tree,
            earlier,
            wrote: Mutex::new(Vec::new()),
        }
    }

    fn digest_of(&self, src: &Path) -> Option<ContentDigest> {
        let rel = forge_executor::path_below(src, self.tree.root())?.to_str()?;
        self.tree.digest(rel)
    }

    /// Records this copy's index for the next build of the family.
    pub(crate) fn save(
        self,
        store: &Store,
        family: &CacheKey,
        snapshot: &SnapshotId,
        description: &str,
    ) -> Result<(), BuildError> {
        let mut files = self.wrote.into_inner().unwrap_or_else(|e| e.into_inner());
        if files.is_empty() {
            return Ok(());
        }
        // A target written twice keeps its last source, as the tree does.
        files.reverse();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        files.dedup_by(|a, b| a.0 == b.0);
        let mut pairs = String::with_capacity(files.len() * 100);
        for (target, digest) in files {
            pairs.push_str(&target);
            pairs.push('\0');
            pairs.push_str(&hex::encode(digest.0));
            pairs.push('\0');
        }
        store.put_record(
            family,
            &CacheRecord {
                snapshot: Some(snapshot.clone()),
                payload: serde_json::json!({ "pairs": pairs }),
                description: format!("reuse index of {description}"),
                ..CacheRecord::default()
            },
        )?;
        Ok(())
    }
}

impl forge_executor::Reuse for CopyReuse<'_> {
    fn identical(&self, src: &Path, target: &Path) -> Option<PathBuf> {
        let (root, index) = self.earlier.as_ref()?;
        let before = index.get(target.to_str()?)?;
        (self.digest_of(src)? == before).then(|| root.join(target))
    }

    fn wrote(&self, src: &Path, target: &Path) {
        if let (Some(digest), Some(target)) = (self.digest_of(src), target.to_str()) {
            lock(&self.wrote).push((target.to_owned(), digest));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_finds_each_target_and_nothing_else() {
        let digest = |n: u8| ContentDigest([n; 32]);
        let mut pairs = String::new();
        for (target, n) in [("a", 1u8), ("data/f 1", 2), ("data/f2", 3), ("z\u{e9}", 4)] {
            pairs.push_str(target);
            pairs.push('\0');
            pairs.push_str(&hex::encode(digest(n).0));
            pairs.push('\0');
        }
        let index = Index::parse(pairs).unwrap();
        assert_eq!(index.get("a"), Some(digest(1)));
        assert_eq!(index.get("data/f 1"), Some(digest(2)));
        assert_eq!(index.get("data/f2"), Some(digest(3)));
        assert_eq!(index.get("z\u{e9}"), Some(digest(4)));
        for absent in ["", "b", "data", "data/f", "data/f3"] {
            assert_eq!(index.get(absent), None, "{absent:?}");
        }
        // A damaged index (an unterminated pair) is no index: everything is copied.
        assert!(Index::parse("a\0abc".to_owned()).is_none());
        assert!(Index::parse(String::new()).unwrap().get("a").is_none());
    }
}
