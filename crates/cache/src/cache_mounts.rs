//! Cache mounts (`RUN --mount=type=cache`): persistent directories under `cache-mounts/`, one per
//! cache id, shared between builds according to the mount's `sharing` mode. The id is hashed into
//! the directory name because BuildKit's default id is the mount target, a path with slashes.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};
use crate::fsutil::{self, LockGuard, LockMode};
use crate::store::Store;

/// How concurrent users share one cache mount (BuildKit's `sharing=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSharing {
    /// Any number of steps use it at once.
    Shared,
    /// One step at a time; others wait.
    Locked,
    /// A step gets it alone; when it is busy, a separate directory is used instead.
    Private,
}

/// A cache mount in use; prune leaves it alone until this is dropped.
#[derive(Debug)]
pub struct CacheMount {
    path: PathBuf,
    _lock: LockGuard,
}

impl CacheMount {
    /// The directory to bind-mount.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Store {
    fn cache_mount_base(&self, id: &str) -> Result<String> {
        if id.is_empty() || id.contains('\0') {
            return Err(StoreError::InvalidCacheMountId { id: id.to_owned() });
        }
        let h = blake3::hash(id.as_bytes()).to_hex();
        Ok(h[..32].to_owned())
    }

    /// The directory of cache mount `id` (created if missing), without taking it: for callers
    /// that manage sharing themselves. Prefer [`Store::cache_mount`].
    pub fn cache_mount_dir(&self, id: &str) -> Result<PathBuf> {
        let base = self.cache_mount_base(id)?;
        let dir = self.dir.join("cache-mounts").join(&base);
        self.create_cache_mount(&dir, &base, id)?;
        Ok(dir)
    }

    /// Takes cache mount `id` with the given sharing mode, waiting for `Locked` ones.
    pub fn cache_mount(&self, id: &str, sharing: CacheSharing) -> Result<CacheMount> {
        let base = self.cache_mount_base(id)?;
        let root = self.dir.join("cache-mounts");
        let mut n = 0u32;
        loop {
            let name = if n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let lock_path = root.join(format!("{name}.lock"));
            let lock = match sharing {
                CacheSharing::Shared => fsutil::lock_file(&lock_path, LockMode::Shared, true)?,
                CacheSharing::Locked => fsutil::lock_file(&lock_path, LockMode::Exclusive, true)?,
                CacheSharing::Private => fsutil::lock_file(&lock_path, LockMode::Exclusive, false)?,
            };
            if let Some(lock) = lock {
                let dir = root.join(&name);
                self.create_cache_mount(&dir, &name, id)?;
                return Ok(CacheMount {
                    path: dir,
                    _lock: lock,
                });
            }
            n += 1;
        }
    }

    fn create_cache_mount(&self, dir: &Path, name: &str, id: &str) -> Result<()> {
        if !dir.is_dir() {
            fsutil::create_dir_all(dir)?;
        }
        let id_path = self.dir.join("cache-mounts").join(format!("{name}.id"));
        if !id_path.exists() {
            fsutil::write_atomic(&self.staging, &id_path, id.as_bytes())?;
        }
        Ok(())
    }
}

/// A cache mount directory as seen by `disk_usage` and prune.
#[derive(Debug)]
pub(crate) struct CacheMountEntry {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) dir: PathBuf,
}

pub(crate) fn list_cache_mounts(store: &Store) -> Result<Vec<CacheMountEntry>> {
    let root = store.dir.join("cache-mounts");
    let mut out = Vec::new();
    for name in crate::store::read_dir_names(&root)? {
        let dir = root.join(&name);
        if !dir.is_dir() {
            continue;
        }
        let id =
            fs::read_to_string(root.join(format!("{name}.id"))).unwrap_or_else(|_| name.clone());
        out.push(CacheMountEntry { name, id, dir });
    }
    Ok(out)
}

/// Whether anyone holds a cache mount now (best effort, for reporting).
pub(crate) fn cache_mount_in_use(store: &Store, name: &str) -> bool {
    let lock_path = store.dir.join("cache-mounts").join(format!("{name}.lock"));
    if !lock_path.exists() {
        return false;
    }
    matches!(
        fsutil::lock_file(&lock_path, LockMode::Exclusive, false),
        Ok(None)
    )
}

/// Removes a cache mount unless someone holds it. Returns the bytes it used, if removed.
pub(crate) fn remove_cache_mount(store: &Store, entry: &CacheMountEntry) -> Result<Option<u64>> {
    let root = store.dir.join("cache-mounts");
    let lock_path = root.join(format!("{}.lock", entry.name));
    let Some(held) = fsutil::lock_file(&lock_path, LockMode::Exclusive, false)? else {
        return Ok(None);
    };
    let size = fsutil::tree_size(&entry.dir);
    // Rename first so a half-deleted tree never appears under its name.
    let doomed = store.staging.join(fsutil::unique_name("del"));
    fsutil::rename(&entry.dir, &doomed)?;
    fsutil::remove_any(&doomed)?;
    let _ = fs::remove_file(root.join(format!("{}.id", entry.name)));
    let _ = fs::remove_file(held.path());
    Ok(Some(size))
}
