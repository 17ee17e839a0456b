//! Snapshots: unpacked filesystem trees in `snapshots/<id>/fs` (overlay whiteouts kept as overlay
//! writes them, so a tree can serve as an overlay lowerdir as it is), each with `meta.json`
//! (parent chain, layer digests, size). A snapshot is built in a draft directory in staging (for a
//! RUN step, the sandbox's overlay upperdir and workdir) and published by one rename.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::Digest;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Result, StoreError};
use crate::fsutil;
use crate::store::{LeaseItem, Store};

/// A snapshot's id: 32 lowercase hex digits (random; two builds of one step make two snapshots,
/// and the cache record decides which one is used).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotId(String);

impl SnapshotId {
    fn new_random() -> SnapshotId {
        let name = fsutil::unique_name("x");
        SnapshotId(name[2..].to_owned())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SnapshotId {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(SnapshotId(s.to_owned()))
        } else {
            Err(StoreError::InvalidSnapshotId { id: s.to_owned() })
        }
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SnapshotId({})", self.0)
    }
}

impl Serialize for SnapshotId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SnapshotId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A snapshot's tree is at most this many directories laid over one another (a guard against a
/// damaged store; forge itself stacks far fewer).
const MAX_TREE_LEVELS: usize = 64;

/// What is known about a snapshot (`snapshots/<id>/meta.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The snapshot below this one (this tree is an overlay layer on top of its parent chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SnapshotId>,
    /// A snapshot whose tree shows through below this one's `fs` as part of this snapshot's
    /// own layer (overlay semantics, no whiteouts): a COPY that ran again keeps only what it
    /// changed in `fs` and lays it over its last run. See [`Store::snapshot_tree`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<SnapshotId>,
    /// The uncompressed layer digest (diff id) of this tree as a layer, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<Digest>,
    /// The layer blob (compressed tar) made from or unpacked into this tree, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_blob: Option<Digest>,
    /// A human description (e.g. the step that made it), for `forge system df -v`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Bytes in the tree; filled in by [`Store::commit_snapshot`].
    #[serde(default)]
    pub size: u64,
    /// Seconds since the epoch when it was committed; filled in by [`Store::commit_snapshot`].
    #[serde(default)]
    pub created: u64,
}

/// A snapshot being built: `fs_dir()` receives the tree (the overlay upperdir), `work_dir()` is
/// the overlay workdir (same filesystem, as overlayfs requires). Dropped uncommitted, it vanishes.
#[derive(Debug)]
pub struct SnapshotDraft {
    dir: PathBuf,
    committed: bool,
}

impl SnapshotDraft {
    /// The tree being built (overlay upperdir).
    pub fn fs_dir(&self) -> PathBuf {
        self.dir.join("fs")
    }

    /// Scratch space for overlayfs (its workdir); removed at commit.
    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }
}

impl Drop for SnapshotDraft {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fsutil::remove_any(&self.dir);
        }
    }
}

impl Store {
    pub(crate) fn snapshot_dir(&self, id: &SnapshotId) -> PathBuf {
        self.dir.join("snapshots").join(&id.0)
    }

    /// Starts a new snapshot in this store's staging directory.
    pub fn prepare_snapshot(&self) -> Result<SnapshotDraft> {
        let dir = self.staging.join(fsutil::unique_name("snap"));
        for sub in ["fs", "work"] {
            fsutil::create_dir_all(&dir.join(sub))?;
        }
        Ok(SnapshotDraft {
            dir,
            committed: false,
        })
    }

    /// Publishes a draft: its tree is synced to disk and renamed into `snapshots/<id>` with its
    /// metadata (`size` and `created` are filled in here). The new snapshot is pinned by this
    /// store's session lease.
    pub fn commit_snapshot(
        &self,
        mut draft: SnapshotDraft,
        mut meta: SnapshotMeta,
    ) -> Result<SnapshotId> {
        for needed in meta.parent.iter().chain(&meta.below) {
            if !self.snapshot_dir(needed).join("meta.json").is_file() {
                return Err(StoreError::SnapshotNotFound {
                    id: needed.to_string(),
                });
            }
        }
        fsutil::remove_any(&draft.work_dir())?;
        meta.size = fsutil::tree_size(&draft.fs_dir());
        meta.created = fsutil::now_secs();
        let meta_path = draft.dir.join("meta.json");
        let bytes = serde_json::to_vec_pretty(&meta).expect("snapshot metadata serialises");
        fs::write(&meta_path, bytes).map_err(StoreError::io("write", &meta_path))?;
        // One syncfs makes the whole tree durable; fsyncing each file would cost a syscall per file.
        if self.config.sync_snapshots {
            let dirf = fs::File::open(&draft.dir).map_err(StoreError::io("open", &draft.dir))?;
            nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dirf))
                .map_err(|e| StoreError::io("syncfs", &draft.dir)(e.into()))?;
        }
        let id = SnapshotId::new_random();
        let target = self.snapshot_dir(&id);
        let _gc = self.gc_shared()?;
        fsutil::rename(&draft.dir, &target)?;
        draft.committed = true;
        fsutil::fsync_dir(&self.dir.join("snapshots"))?;
        self.pin(LeaseItem::Snapshot(id.clone()))?;
        Ok(id)
    }

    /// The tree of a snapshot (`snapshots/<id>/fs`), pinned by this store's session lease.
    pub fn snapshot_fs(&self, id: &SnapshotId) -> Result<PathBuf> {
        let _gc = self.gc_shared()?;
        let dir = self.snapshot_dir(id);
        if !dir.join("meta.json").is_file() {
            return Err(StoreError::SnapshotNotFound { id: id.to_string() });
        }
        self.pin(LeaseItem::Snapshot(id.clone()))?;
        Ok(dir.join("fs"))
    }

    /// A snapshot's metadata.
    pub fn snapshot_meta(&self, id: &SnapshotId) -> Result<SnapshotMeta> {
        read_meta(&self.snapshot_dir(id)).map_err(|e| match e {
            StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                StoreError::SnapshotNotFound { id: id.to_string() }
            }
            e => e,
        })
    }

    /// The snapshot and its ancestors, topmost first: the order of overlay `lowerdir=` entries.
    pub fn snapshot_chain(&self, id: &SnapshotId) -> Result<Vec<SnapshotId>> {
        let mut chain = vec![id.clone()];
        let mut cur = self.snapshot_meta(id)?;
        while let Some(p) = cur.parent.take() {
            if chain.contains(&p) {
                break;
            }
            cur = self.snapshot_meta(&p)?;
            chain.push(p);
        }
        Ok(chain)
    }

    /// The directories that make up one snapshot's own tree, topmost first, each pinned: its
    /// `fs`, then the trees of the snapshots it is laid over ([`SnapshotMeta::below`]). Merged
    /// as overlayfs merges lowerdirs, they give the snapshot's layer; most snapshots are one
    /// directory.
    pub fn snapshot_tree(&self, id: &SnapshotId) -> Result<Vec<PathBuf>> {
        let mut dirs = vec![self.snapshot_fs(id)?];
        let mut below = self.snapshot_meta(id)?.below;
        while let Some(b) = below.take() {
            if dirs.len() >= MAX_TREE_LEVELS {
                return Err(StoreError::SnapshotTooDeep {
                    id: id.to_string(),
                    max: MAX_TREE_LEVELS,
                });
            }
            dirs.push(self.snapshot_fs(&b)?);
            below = self.snapshot_meta(&b)?.below;
        }
        Ok(dirs)
    }

    /// The overlay lowerdirs of a snapshot and its ancestors, topmost first: each snapshot's
    /// [`Store::snapshot_tree`] in chain order.
    pub fn chain_dirs(&self, top: &SnapshotId) -> Result<Vec<PathBuf>> {
        let mut dirs = Vec::new();
        for id in self.snapshot_chain(top)? {
            dirs.extend(self.snapshot_tree(&id)?);
        }
        Ok(dirs)
    }

    /// Every snapshot id in the store.
    pub fn list_snapshots(&self) -> Result<Vec<SnapshotId>> {
        Ok(crate::store::read_dir_names(&self.dir.join("snapshots"))?
            .into_iter()
            .filter_map(|n| n.parse().ok())
            .collect())
    }
}

pub(crate) fn read_meta(dir: &Path) -> Result<SnapshotMeta> {
    let path = dir.join("meta.json");
    let bytes = fs::read(&path).map_err(StoreError::io("read", &path))?;
    serde_json::from_slice(&bytes).map_err(|source| StoreError::BadJson { path, source })
}
