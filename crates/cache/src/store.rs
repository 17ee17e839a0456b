//! The store itself: its layout under `<root>/v1/`, opening (and cleaning what killed processes
//! left), the store-wide GC lock, per-process staging directories and leases.
//!
//! Locking, in one place:
//! - `locks/gc.lock` is taken *shared* for the few milliseconds of each publish or lookup (so the
//!   item and the lease entry that protects it appear together) and *exclusive* by prune and by the
//!   janitor. It is never held across a build step, so builds never wait on each other.
//! - Per-entry lock files (`locks/index.lock`, `locks/blob-<hex>.lock`, cache mounts) are always
//!   taken after the GC lock, never before, so there is one lock order and no deadlock.
//! - A staging directory `tmp/s-<id>` and a lease `leases/<id>.lock` are flocked by their owner for
//!   as long as it lives; a lock that can be taken means the owner died, and its files are garbage.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::fcntl::Flock;
use oci_spec::image::Digest;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::fsutil::{self, LockGuard, LockMode};
use crate::key::CacheKey;
use crate::snapshots::SnapshotId;

/// The store format version; it is part of every path, so a future format never misreads this one.
pub(crate) const FORMAT_DIR: &str = "v1";

/// Options for opening a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The size budget of the build cache in bytes; `None` uses the default (10% of the
    /// filesystem, at most 20 GB). See [`Store::gc_budget`].
    pub gc_budget: Option<u64>,
    /// Flush each snapshot tree to disk (one `syncfs`) before publishing it, so a power cut
    /// never leaves a published snapshot with lost file contents. On by default; a killed
    /// process is safe either way (its writes are in the page cache), so throwaway stores (CI,
    /// tests) may turn it off to save the flush per step.
    pub sync_snapshots: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            gc_budget: None,
            sync_snapshots: true,
        }
    }
}

/// forge's on-disk store: an OCI image layout of blobs and named images, snapshots, cache records,
/// context memos and cache mounts, safe to share between concurrent forge processes.
///
/// Everything a `Store` publishes or looks up is pinned by its *session lease* until the `Store` is
/// dropped (or its process dies), so a concurrent `forge prune` never removes what a running build
/// is using.
#[derive(Debug)]
pub struct Store {
    pub(crate) dir: PathBuf,
    pub(crate) staging: PathBuf,
    _staging_lock: Flock<File>,
    session: Mutex<Option<Lease>>,
    pub(crate) config: StoreConfig,
}

/// Something a lease keeps alive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseItem {
    /// A blob (and, for a manifest or index, every blob it references).
    Blob(Digest),
    /// A snapshot (and its parent chain).
    Snapshot(SnapshotId),
    /// A cache record (and what it references).
    Record(CacheKey),
}

/// A lease: a lock file held while its owner lives plus a list of what it uses. Prune treats
/// everything listed by a live lease as in use. Released on drop.
#[derive(Debug)]
pub struct Lease {
    id: String,
    lock: Option<LockGuard>,
    items_path: PathBuf,
    items: Mutex<(Option<File>, HashSet<LeaseItem>)>,
}

impl Lease {
    /// The lease's id (its file names under `leases/`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Adds an item; cheap when already present.
    ///
    /// The caller must make sure the item cannot be pruned between the moment it learnt about it
    /// and this call; the store's own methods do so by holding the GC lock shared.
    pub(crate) fn add(&self, item: LeaseItem) -> Result<()> {
        let mut guard = self.items.lock().unwrap_or_else(|e| e.into_inner());
        let (file, set) = &mut *guard;
        if set.contains(&item) {
            return Ok(());
        }
        if file.is_none() {
            *file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.items_path)
                    .map_err(StoreError::io("open lease", &self.items_path))?,
            );
        }
        let mut line = serde_json::to_vec(&item).expect("lease items serialise");
        line.push(b'\n');
        // One write(2) of one line to an O_APPEND file: a reader sees whole lines, and a torn
        // last line only happens when the owner died, when the lease no longer matters.
        file.as_mut()
            .expect("opened above")
            .write_all(&line)
            .map_err(StoreError::io("append to lease", &self.items_path))?;
        set.insert(item);
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Remove the list first, then the lock, while still holding it.
        let _ = fs::remove_file(&self.items_path);
        if let Some(lock) = self.lock.take() {
            let _ = fs::remove_file(lock.path());
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store under `root`, i.e. `<root>/v1/`.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(root, StoreConfig::default())
    }

    /// Opens the store with explicit options.
    ///
    /// When no other forge process is using the store, this also removes what killed processes
    /// left behind: staging directories, temp files and dead leases.
    pub fn open_with(root: impl AsRef<Path>, config: StoreConfig) -> Result<Store> {
        let dir = root.as_ref().join(FORMAT_DIR);
        for sub in [
            "oci/blobs/sha256",
            "snapshots",
            "cache",
            "contexts",
            "cache-mounts",
            "leases",
            "locks",
            "tmp",
        ] {
            fsutil::create_dir_all(&dir.join(sub))?;
        }
        // Leftovers first, but only when nobody else is in the store (they could be mid-publish).
        if let Some(_gc) = gc_lock(&dir, LockMode::Exclusive, false)? {
            clean_leftovers(&dir)?;
        }
        let _gc = gc_lock(&dir, LockMode::Shared, true)?.expect("waited");
        let staging = dir.join("tmp").join(fsutil::unique_name("s"));
        fs::create_dir(&staging).map_err(StoreError::io("create directory", &staging))?;
        let staging_lock = fsutil::lock_dir(&staging, true)?.expect("waited");
        let store = Store {
            dir,
            staging,
            _staging_lock: staging_lock,
            session: Mutex::new(None),
            config,
        };
        store.init_layout()?;
        Ok(store)
    }

    /// `<root>/v1`: everything the store owns lives below it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The OCI image layout (`oci:<this path>` for skopeo and umoci).
    pub fn oci_dir(&self) -> PathBuf {
        self.dir.join("oci")
    }

    /// A private staging directory on the store's filesystem, removed when this `Store` is dropped
    /// or, after a crash, by the next open. Anything staged here can be renamed into the store.
    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    fn init_layout(&self) -> Result<()> {
        let layout = self.oci_dir().join("oci-layout");
        if !layout.exists() {
            fsutil::write_atomic(&self.staging, &layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = self.oci_dir().join("index.json");
        if !index.exists() {
            let _l = self.entry_lock("index")?;
            if !index.exists() {
                fsutil::write_atomic(
                    &self.staging,
                    &index,
                    br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
                )?;
            }
        }
        Ok(())
    }

    /// The GC lock, shared: held while publishing or looking up so prune cannot interleave.
    pub(crate) fn gc_shared(&self) -> Result<LockGuard> {
        Ok(gc_lock(&self.dir, LockMode::Shared, true)?.expect("waited"))
    }

    pub(crate) fn gc_exclusive(&self, wait: bool) -> Result<Option<LockGuard>> {
        gc_lock(&self.dir, LockMode::Exclusive, wait)
    }

    /// An exclusive per-entry lock (`locks/<name>.lock`); take the GC lock first.
    pub(crate) fn entry_lock(&self, name: &str) -> Result<LockGuard> {
        let path = self.dir.join("locks").join(format!("{name}.lock"));
        Ok(fsutil::lock_file(&path, LockMode::Exclusive, true)?.expect("waited"))
    }

    /// Adds an item to this store handle's session lease (creating the lease on first use).
    /// Call with the GC lock held shared.
    pub(crate) fn pin(&self, item: LeaseItem) -> Result<()> {
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        if session.is_none() {
            *session = Some(self.new_lease()?);
        }
        session.as_ref().expect("created above").add(item)
    }

    /// Takes a new lease of its own (besides the session lease every `Store` keeps): what is
    /// added to it stays in use until it is dropped.
    pub fn lease(&self) -> Result<Lease> {
        self.new_lease()
    }

    /// Adds items to a lease, checking that they exist while prune is held off.
    pub fn add_to_lease(&self, lease: &Lease, item: LeaseItem) -> Result<()> {
        let _gc = self.gc_shared()?;
        match &item {
            LeaseItem::Blob(d) if !self.has_blob(d) => {
                return Err(StoreError::BlobNotFound {
                    digest: d.to_string(),
                })
            }
            LeaseItem::Snapshot(id) if !self.snapshot_dir(id).exists() => {
                return Err(StoreError::SnapshotNotFound { id: id.to_string() })
            }
            _ => {}
        }
        lease.add(item)
    }

    /// The id of this handle's session lease, if it has pinned anything yet.
    pub fn session_lease_id(&self) -> Option<String> {
        let session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        session.as_ref().map(|l| l.id.clone())
    }

    fn new_lease(&self) -> Result<Lease> {
        let id = fsutil::unique_name("l");
        // Lock the file before it appears under leases/, so prune never sees it unlocked.
        let staged = self.staging.join(format!("{id}.lock"));
        let lock = fsutil::lock_file(&staged, LockMode::Exclusive, true)?.expect("waited");
        let final_lock = self.dir.join("leases").join(format!("{id}.lock"));
        fsutil::rename(&staged, &final_lock)?;
        // The flock belongs to the open file, which the rename keeps; only the name changes.
        let lock = lock.renamed(final_lock);
        let items_path = self.dir.join("leases").join(format!("{id}.items"));
        Ok(Lease {
            id,
            lock: Some(lock),
            items_path,
            items: Mutex::new((None, HashSet::new())),
        })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Ok(mut s) = self.session.lock() {
            s.take();
        }
        let _ = fsutil::remove_any(&self.staging);
    }
}

fn gc_lock(dir: &Path, mode: LockMode, wait: bool) -> Result<Option<LockGuard>> {
    fsutil::lock_file(&dir.join("locks").join("gc.lock"), mode, wait)
}

/// Removes what dead processes left: unlocked staging directories and any loose temp file, and
/// leases whose lock can be taken. Call with the GC lock held exclusive.
pub(crate) fn clean_leftovers(dir: &Path) -> Result<()> {
    let tmp = dir.join("tmp");
    for entry in read_dir_names(&tmp)? {
        let path = tmp.join(&entry);
        let is_dir = fs::symlink_metadata(&path)
            .map(|m| m.is_dir())
            .unwrap_or(false);
        if is_dir {
            match fsutil::lock_dir(&path, false) {
                Ok(Some(_held)) => fsutil::remove_any(&path)?,
                Ok(None) => {}
                Err(_) => fsutil::remove_any(&path)?,
            }
        } else {
            fsutil::remove_any(&path)?;
        }
    }
    let leases = dir.join("leases");
    for name in read_dir_names(&leases)? {
        let path = leases.join(&name);
        if let Some(id) = name.strip_suffix(".lock") {
            if let Some(held) = fsutil::lock_file(&path, LockMode::Exclusive, false)? {
                let _ = fs::remove_file(leases.join(format!("{id}.items")));
                let _ = fs::remove_file(held.path());
            }
        } else if let Some(id) = name.strip_suffix(".items") {
            if !leases.join(format!("{id}.lock")).exists() {
                fsutil::remove_any(&path)?;
            }
        } else {
            fsutil::remove_any(&path)?;
        }
    }
    Ok(())
}

/// What every live lease lists. Call with the GC lock held exclusive (after `clean_leftovers`, so
/// every remaining lease is live).
pub(crate) fn live_lease_items(dir: &Path) -> Result<HashSet<LeaseItem>> {
    let leases = dir.join("leases");
    let mut out = HashSet::new();
    for name in read_dir_names(&leases)? {
        if !name.ends_with(".items") {
            continue;
        }
        let path = leases.join(&name);
        let Ok(f) = File::open(&path) else { continue };
        for line in BufReader::new(f).lines() {
            let Ok(line) = line else { break };
            if let Ok(item) = serde_json::from_str::<LeaseItem>(&line) {
                out.insert(item);
            }
        }
    }
    Ok(out)
}

/// The names in a directory, sorted; a missing directory has none.
pub(crate) fn read_dir_names(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("read directory", dir)(e)),
    };
    let mut names = Vec::new();
    for e in rd {
        let e = e.map_err(StoreError::io("read directory", dir))?;
        if let Ok(n) = e.file_name().into_string() {
            names.push(n);
        }
    }
    names.sort();
    Ok(names)
}
