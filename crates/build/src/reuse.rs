//! Incremental COPY: when a COPY runs again, because one of its files changed or because a step
//! before it did, most of its files are the same as last time. Each COPY from a build context
//! leaves an index beside its cache record (target path -> the context digest of the file it
//! was copied from, and which directory of the snapshot's tree holds it), keyed by the op's
//! family: the instruction as planned (sources, destination, workdir, flags) and the context
//! directory, not its inputs, so the family stays the same when a file or an earlier step
//! changes.
//!
//! The next run of that family writes only what changed. Its new snapshot holds the changed
//! files and every directory, and is laid over the earlier snapshot (`SnapshotMeta::below`),
//! whose unchanged files show through as overlayfs shows a lowerdir's: for RUN steps the
//! earlier tree is one more lowerdir, and the layer is written from the merged tree. That holds
//! only when nothing of the earlier tree shows through that this copy would not make: once the
//! copy is done, the earlier tree is checked against the new one ([`CopyReuse::settle`]), and
//! where anything earlier would show that should not (a file deleted since, say), the unchanged
//! files are hardlinked into the new tree instead, which then stands on its own. So they are
//! too when the earlier tree is already [`MAX_LEVELS`] deep.
//!
//! The family only picks which snapshot to look in; what is kept is decided per file, so a
//! candidate from a different base is as safe as one from the same: the copier checks size,
//! mtime, mode and owner before it keeps or links (the file is exactly what a fresh copy would
//! make), and the digest vouches for content and xattrs. Sharing inodes between snapshots is
//! safe because snapshots are never written after they are committed: overlayfs copies a lower
//! file up before changing it, and the copier never sets metadata on a kept or linked file. A
//! pruned earlier snapshot just means nothing is found and the file is copied.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use forge_cache::{
    CacheKey, CacheRecord, ContentDigest, ContextEntry, ContextTree, EntryKind, SnapshotId, Store,
};
use forge_planner::OpKind;

use crate::error::BuildError;
use crate::images::lock;

/// A COPY's tree is at most this many directories laid over one another (its own and those of
/// earlier runs); the run after that hardlinks everything into a tree of its own again. Each
/// level is one more overlay lowerdir for the steps after it.
pub(crate) const MAX_LEVELS: usize = 4;

/// Index entries [`Index::get_near`] tries after the last one found, before a binary search.
const NEAR_TRIES: usize = 4;

thread_local! {
    /// Where this thread's last lookups found their paths: in the context tree, and in the
    /// earlier index. A copy worker goes through a directory's files in order, so the next
    /// path is usually just after the last; a binary search of 20,000 entries instead costs a
    /// cache miss per step, which measured as half of a big incremental COPY's CPU time.
    static NEAR: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// The record key of a COPY family's reuse index: the op's own definition (not its inputs)
/// and the directory it copies from.
pub(crate) fn family_key(kind: &OpKind, context: &Path) -> CacheKey {
    let definition = serde_json::to_string(kind).unwrap_or_default();
    CacheKey::builder("copy-reuse/v4")
        .extra("op", definition.as_bytes())
        .extra("context", context.as_os_str().as_encoded_bytes())
        .finish()
}

/// The reuse source for one COPY from a context tree: the last snapshot of its family and what
/// went into it, and the index of this copy as it is written.
#[derive(Debug)]
pub(crate) struct CopyReuse<'t> {
    tree: &'t ContextTree,
    earlier: Option<Earlier>,
    /// Whether an earlier file's owner and mode follow from its source's alone (no `--chown` by
    /// name, which depends on the base's /etc/passwd): then [`forge_executor::Reuse::unchanged`]
    /// can answer from the context tree and the index, without a stat.
    unseen: bool,
    wrote: Mutex<Vec<Wrote>>,
}

/// A file of this copy's tree, for its index.
#[derive(Debug)]
struct Wrote {
    target: String,
    /// The context digest of its source.
    digest: ContentDigest,
    /// Its source's mtime (the file has it too).
    mtime_ns: i64,
    /// The level of this copy's tree that holds it: 0 for its own directory, more for a file
    /// kept in an earlier tree.
    level: usize,
}

/// What an index says of one target.
#[derive(Debug, PartialEq, Eq)]
struct Recorded<'i> {
    /// The digest as the index holds it: 64 hex digits, checked by [`Recorded::is`].
    digest: &'i str,
    mtime_ns: i64,
    level: usize,
}

impl Recorded<'_> {
    /// Whether the recorded digest is `digest`. Compared as hex: encoding 32 bytes is a table
    /// lookup per byte, while decoding 64 digits branches on each, and that decoding measured
    /// as a quarter of a 20,000-file incremental COPY's CPU time.
    fn is(&self, digest: &ContentDigest) -> bool {
        let mut hex = [0u8; 64];
        hex::encode_to_slice(digest.0, &mut hex).is_ok() && self.digest.as_bytes() == hex
    }
}

/// The last snapshot of the family.
#[derive(Debug)]
struct Earlier {
    snapshot: SnapshotId,
    /// Its tree, topmost first (`Store::snapshot_tree`).
    levels: Vec<PathBuf>,
    index: Index,
}

/// A COPY's index as it is stored: one string of `target NUL record NUL` pairs sorted by
/// target, a record being `digest.mtime` (the digest in hex, the mtime in nanoseconds) followed
/// by `@level` for a file in a lower level of the tree; found by binary search. One string
/// rather than a JSON map of thousands of entries: loading it is a copy, not an allocation per
/// file.
#[derive(Debug)]
struct Index {
    pairs: String,
    /// Where each pair's target, and its record, start and end in `pairs`.
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

    /// What is recorded for `target`.
    #[cfg(test)]
    fn get(&self, target: &str) -> Option<Recorded<'_>> {
        self.get_near(target, &mut 0)
    }

    /// [`Index::get`] for a caller that looks targets up in about their order: `near` is where
    /// its last lookup found one; the next few are tried before a binary search, and `near`
    /// moves to where `target` is (as [`forge_cache::ContextTree::entry_near`] does).
    fn get_near(&self, target: &str, near: &mut usize) -> Option<Recorded<'_>> {
        let at = |a: u32, b: u32| &self.pairs[a as usize..b as usize];
        let next = (*near..self.spans.len().min(*near + NEAR_TRIES)).find(|&i| {
            let (a, b, _, _) = self.spans[i];
            at(a, b) == target
        });
        let i = match next {
            Some(i) => i,
            None => self
                .spans
                .binary_search_by(|&(a, b, _, _)| at(a, b).cmp(target))
                .ok()?,
        };
        *near = i;
        let (_, _, c, d) = self.spans[i];
        let (record, level) = match at(c, d).split_once('@') {
            Some((record, level)) => (record, level.parse().ok()?),
            None => (at(c, d), 0),
        };
        let (digest, mtime_ns) = record.split_once('.')?;
        Some(Recorded {
            digest,
            mtime_ns: mtime_ns.parse().ok()?,
            level,
        })
    }
}

impl<'t> CopyReuse<'t> {
    /// Loads the family's last index, if it and its snapshot are still there and `link` allows
    /// using it; either way this copy's index is kept for the next one.
    pub(crate) fn load(
        store: &Store,
        family: &CacheKey,
        tree: &'t ContextTree,
        link: bool,
        chown: Option<&str>,
    ) -> Self {
        let earlier = link
            .then(|| store.get_record(family).ok().flatten())
            .flatten()
            .and_then(|mut record| {
                let snapshot = record.snapshot?;
                let levels = store.snapshot_tree(&snapshot).ok()?;
                let serde_json::Value::String(pairs) = record.payload.get_mut("pairs")?.take()
                else {
                    return None;
                };
                Some(Earlier {
                    snapshot,
                    levels,
                    index: Index::parse(pairs)?,
                })
            });
        let numeric = |ids: &str| {
            ids.split(':')
                .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        };
        CopyReuse {
            tree,
            earlier,
            unseen: chown.is_none_or(numeric),
            wrote: Mutex::new(Vec::new()),
        }
    }

    fn entry_of(&self, src: &Path) -> Option<&ContextEntry> {
        let rel = forge_executor::path_below(src, self.tree.root())?.to_str()?;
        let (mut near, index_near) = NEAR.get();
        let entry = self.tree.entry_near(rel, &mut near);
        NEAR.set((near, index_near));
        entry
    }

    /// The earlier index's record of `target`.
    fn earlier_record(&self, target: &str) -> Option<Recorded<'_>> {
        let index = &self.earlier.as_ref()?.index;
        let (tree_near, mut near) = NEAR.get();
        let recorded = index.get_near(target, &mut near);
        NEAR.set((tree_near, near));
        recorded
    }

    fn record(&self, target: &str, entry: &ContextEntry, level: usize) {
        lock(&self.wrote).push(Wrote {
            target: target.to_owned(),
            digest: entry.digest,
            mtime_ns: entry.mtime_ns,
            level,
        });
    }

    /// After the copy into `fs` (the new snapshot's own directory): the snapshot to lay it over,
    /// when files were kept and the earlier tree shows nothing through it that the copy would
    /// not make. Otherwise the kept files are hardlinked (or, where a link cannot be made,
    /// copied) into `fs`, which stands on its own; the number linked is returned.
    pub(crate) fn settle(&self, fs: &Path) -> Result<Settled, BuildError> {
        let mut wrote = lock(&self.wrote);
        let Some(earlier) = &self.earlier else {
            return Ok(Settled::Alone { linked: 0 });
        };
        let kept: HashSet<&str> = wrote
            .iter()
            .filter(|w| w.level > 0)
            .map(|w| w.target.as_str())
            .collect();
        if kept.is_empty() {
            return Ok(Settled::Alone { linked: 0 });
        }
        let mut covered = true;
        for level in &earlier.levels {
            covered = covers(fs, level, &mut String::new(), &kept)
                .map_err(|e| BuildError::io(level, e))?;
            if !covered {
                break;
            }
        }
        if covered {
            return Ok(Settled::Over(earlier.snapshot.clone()));
        }
        let mut linked = 0;
        for w in wrote.iter_mut().filter(|w| w.level > 0) {
            let old = earlier.levels[w.level - 1].join(&w.target);
            let new = fs.join(&w.target);
            match fs::hard_link(&old, &new) {
                Ok(()) => linked += 1,
                // A target kept twice is linked once.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EMLINK as i32) => {
                    copy_with_metadata(&old, &new).map_err(|e| BuildError::io(&new, e))?;
                    linked += 1;
                }
                Err(e) => return Err(BuildError::io(&new, e)),
            }
            w.level = 0;
        }
        Ok(Settled::Alone { linked })
    }

    /// This copy's index, to be made into the record the next build of the family looks for
    /// ([`PendingIndex::record`]) once the snapshot is on its way to the layer exporter; none
    /// when the copy wrote no files.
    pub(crate) fn index(self, snapshot: &SnapshotId, description: &str) -> Option<PendingIndex> {
        let files = self.wrote.into_inner().unwrap_or_else(|e| e.into_inner());
        (!files.is_empty()).then(|| PendingIndex {
            files,
            snapshot: snapshot.clone(),
            description: format!("reuse index of {description}"),
        })
    }
}

/// A COPY's index not yet made into its record: sorting and joining 20,000 targets takes
/// milliseconds that the step's successors should not wait for.
#[derive(Debug)]
pub(crate) struct PendingIndex {
    files: Vec<Wrote>,
    snapshot: SnapshotId,
    description: String,
}

impl PendingIndex {
    /// The index as its record.
    pub(crate) fn record(self) -> CacheRecord {
        let PendingIndex {
            mut files,
            snapshot,
            description,
        } = self;
        // A target written twice keeps its last source, as the tree does.
        files.reverse();
        files.sort_by(|a, b| a.target.cmp(&b.target));
        files.dedup_by(|a, b| a.target == b.target);
        let mut pairs = String::with_capacity(files.len() * 120);
        for w in files {
            use std::fmt::Write as _;
            pairs.push_str(&w.target);
            pairs.push('\0');
            w.digest.push_hex(&mut pairs);
            let _ = write!(pairs, ".{}", w.mtime_ns);
            if w.level > 0 {
                let _ = write!(pairs, "@{}", w.level);
            }
            pairs.push('\0');
        }
        CacheRecord {
            snapshot: Some(snapshot),
            payload: serde_json::json!({ "pairs": pairs }),
            description,
            ..CacheRecord::default()
        }
    }
}

/// What [`CopyReuse::settle`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// The new tree is laid over this snapshot.
    Over(SnapshotId),
    /// The new tree stands on its own; `linked` kept files were linked into it.
    Alone { linked: u64 },
}

/// Whether everything in the earlier directory `old` (at `rel` in the tree, `rel` ending in
/// `/` unless empty) is hidden by the new directory `new` or is a kept file: then laying `new`
/// over `old` shows exactly what the copy made. A directory in both is compared inside, and
/// must not be opaque (it would hide what is below it in the new tree's parents).
fn covers(new: &Path, old: &Path, rel: &mut String, kept: &HashSet<&str>) -> io::Result<bool> {
    let mut made: HashMap<OsString, bool> = HashMap::new();
    for entry in fs::read_dir(new)? {
        let entry = entry?;
        made.insert(entry.file_name(), entry.file_type()?.is_dir());
    }
    let depth = rel.len();
    for entry in fs::read_dir(old)? {
        let entry = entry?;
        let name = entry.file_name();
        let ft = entry.file_type()?;
        let Some(name_str) = name.to_str() else {
            return Ok(false);
        };
        rel.truncate(depth);
        rel.push_str(name_str);
        let covered = match made.get(&name) {
            Some(true) if ft.is_dir() => {
                let old_dir = entry.path();
                rel.push('/');
                !is_opaque(&old_dir) && covers(&new.join(&name), &old_dir, rel, kept)?
            }
            // Something of the new tree's own hides it.
            Some(_) => true,
            None => ft.is_file() && kept.contains(rel.as_str()),
        };
        if !covered {
            return Ok(false);
        }
    }
    rel.truncate(depth);
    Ok(true)
}

fn is_opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| matches!(xattr::get(dir, name), Ok(Some(v)) if v == b"y"))
}

/// A copy of `old` at `new` (which must not exist: `old`'s inode belongs to an earlier snapshot
/// and is never written) with its owner, mode, times and xattrs: a kept file that cannot be
/// linked because its inode is at the filesystem's link limit.
fn copy_with_metadata(old: &Path, new: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(old)?;
    let mut out = fs::File::options().write(true).create_new(true).open(new)?;
    io::copy(&mut fs::File::open(old)?, &mut out)?;
    drop(out);
    std::os::unix::fs::lchown(new, Some(meta.uid()), Some(meta.gid()))?;
    fs::set_permissions(new, meta.permissions())?;
    for name in xattr::list(old)? {
        if let Some(value) = xattr::get(old, &name)? {
            xattr::set(new, &name, &value)?;
        }
    }
    let times = fs::FileTimes::new()
        .set_accessed(meta.accessed()?)
        .set_modified(meta.modified()?);
    fs::File::options().write(true).open(new)?.set_times(times)
}

impl forge_executor::Reuse for CopyReuse<'_> {
    fn identical(&self, src: &Path, target: &Path) -> Option<PathBuf> {
        let earlier = self.earlier.as_ref()?;
        let before = self.earlier_record(target.to_str()?)?;
        let root = earlier.levels.get(before.level)?;
        before
            .is(&self.entry_of(src)?.digest)
            .then(|| root.join(target))
    }

    fn wrote(&self, src: &Path, target: &Path) {
        if let (Some(entry), Some(target)) = (self.entry_of(src), target.to_str()) {
            self.record(target, entry, 0);
        }
    }

    fn keeps(&self) -> bool {
        self.earlier
            .as_ref()
            .is_some_and(|e| e.levels.len() < MAX_LEVELS)
    }

    fn kept(&self, src: &Path, target: &Path, old: &Path) {
        // `old` came from `identical`: the level is the tree directory it is in.
        let level = self.earlier.as_ref().and_then(|e| {
            e.levels
                .iter()
                .position(|l| forge_executor::path_below(old, l).is_some())
        });
        if let (Some(level), Some(entry), Some(target)) =
            (level, self.entry_of(src), target.to_str())
        {
            self.record(target, entry, level + 1);
        }
    }

    /// From the context tree (hashed this build) and the index alone: the same digest (content,
    /// mode, owner, xattrs of the source) and the same mtime as when the earlier file was made,
    /// one link, and owner settings that give the same owner again.
    fn unchanged(&self, src: &Path, target: &Path) -> bool {
        let (Some(earlier), true) = (&self.earlier, self.unseen) else {
            return false;
        };
        let (Some(entry), Some(target)) = (self.entry_of(src), target.to_str()) else {
            return false;
        };
        if entry.kind != EntryKind::File || entry.nlink != 1 {
            return false;
        }
        match self.earlier_record(target) {
            Some(before)
                if before.is(&entry.digest)
                    && before.mtime_ns == entry.mtime_ns
                    && before.level < earlier.levels.len() =>
            {
                self.record(target, entry, before.level + 1);
                true
            }
            _ => false,
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
        for (target, n, record) in [
            ("a", 1u8, ".17"),
            ("data/f 1", 2, ".-5@2"),
            ("data/f2", 3, ".1795414634123456789"),
            ("z\u{e9}", 4, ".0@1"),
        ] {
            pairs.push_str(target);
            pairs.push('\0');
            pairs.push_str(&hex::encode(digest(n).0));
            pairs.push_str(record);
            pairs.push('\0');
        }
        let index = Index::parse(pairs).unwrap();
        let check = |target: &str, n: u8, mtime_ns: i64, level: usize| {
            let r = index
                .get(target)
                .unwrap_or_else(|| panic!("{target:?} not found"));
            assert!(
                r.is(&digest(n)) && !r.is(&digest(n + 1)),
                "{target:?}: {r:?}"
            );
            assert_eq!((r.mtime_ns, r.level), (mtime_ns, level), "{target:?}");
        };
        check("a", 1, 17, 0);
        check("data/f 1", 2, -5, 2);
        check("data/f2", 3, 1_795_414_634_123_456_789, 0);
        check("z\u{e9}", 4, 0, 1);
        for absent in ["", "b", "data", "data/f", "data/f3"] {
            assert_eq!(index.get(absent), None, "{absent:?}");
        }
        // A lookup near the last one finds what a binary search finds, from any hint: in
        // order, backwards, from a hint past the end, and for what is not there (which leaves
        // the hint where it was).
        let mut near = 0;
        for (target, at) in [("a", 0), ("data/f 1", 1), ("data/f2", 2), ("z\u{e9}", 3)] {
            assert_eq!(index.get_near(target, &mut near), index.get(target));
            assert_eq!(near, at, "{target:?}");
        }
        for (target, at) in [("data/f2", 2), ("a", 0)] {
            assert_eq!(index.get_near(target, &mut near), index.get(target));
            assert_eq!(near, at, "{target:?}");
        }
        near = 100;
        assert_eq!(index.get_near("data/f 1", &mut near), index.get("data/f 1"));
        assert_eq!(near, 1);
        assert_eq!(index.get_near("b", &mut near), None);
        assert_eq!(near, 1);
        // A damaged index (an unterminated pair) is no index: everything is copied. A record
        // without its mtime (an index of the earlier format) is no record.
        assert!(Index::parse("a\0abc".to_owned()).is_none());
        assert!(Index::parse(String::new()).unwrap().get("a").is_none());
        let old = format!("a\0{}\0", hex::encode(digest(1).0));
        assert_eq!(Index::parse(old).unwrap().get("a"), None);
    }
}
