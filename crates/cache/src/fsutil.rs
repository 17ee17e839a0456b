//! Small filesystem primitives the store is built from: flock-based lock files that survive
//! concurrent deletion, atomic publishes (write a temp file, fsync, rename, fsync the directory),
//! unique names and tree sizes.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::stat::{fstatat, Mode};
use rayon::prelude::*;

use crate::error::{Result, StoreError};

/// A held flock on a lock file; released when dropped (or when the process dies, which is what
/// makes flock right for liveness: a killed holder never leaves a stale lock).
#[derive(Debug)]
pub(crate) struct LockGuard {
    _flock: Flock<File>,
    path: PathBuf,
}

impl LockGuard {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The same lock after its file was renamed to `path`.
    pub(crate) fn renamed(mut self, path: PathBuf) -> LockGuard {
        self.path = path;
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockMode {
    Shared,
    Exclusive,
}

/// Takes a lock on `path` (creating it), waiting if `wait`, else returning `None` when held
/// elsewhere. After locking it checks that `path` still names the locked inode: a holder may
/// delete a lock file while others wait on it, and a lock on an unlinked inode protects nothing.
pub(crate) fn lock_file(path: &Path, mode: LockMode, wait: bool) -> Result<Option<LockGuard>> {
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(StoreError::io("open lock file", path))?;
        let arg = match (mode, wait) {
            (LockMode::Shared, true) => FlockArg::LockShared,
            (LockMode::Shared, false) => FlockArg::LockSharedNonblock,
            (LockMode::Exclusive, true) => FlockArg::LockExclusive,
            (LockMode::Exclusive, false) => FlockArg::LockExclusiveNonblock,
        };
        let flock = match Flock::lock(file, arg) {
            Ok(f) => f,
            Err((_, Errno::EWOULDBLOCK)) if !wait => return Ok(None),
            Err((_, Errno::EINTR)) => continue,
            Err((_, e)) => {
                return Err(StoreError::Lock {
                    path: path.to_owned(),
                    source: e.into(),
                })
            }
        };
        let held = flock
            .metadata()
            .map_err(StoreError::io("stat lock file", path))?;
        match fs::metadata(path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                return Ok(Some(LockGuard {
                    _flock: flock,
                    path: path.to_owned(),
                }))
            }
            // Replaced or removed while we waited: lock whatever is there now.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io("stat lock file", path)(e)),
        }
    }
}

/// Takes an exclusive lock on a directory itself (flock works on directory descriptors), used for
/// staging directories whose liveness is the lock.
pub(crate) fn lock_dir(path: &Path, wait: bool) -> Result<Option<Flock<File>>> {
    let file = File::open(path).map_err(StoreError::io("open directory", path))?;
    let arg = if wait {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockExclusiveNonblock
    };
    match Flock::lock(file, arg) {
        Ok(f) => Ok(Some(f)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(StoreError::Lock {
            path: path.to_owned(),
            source: e.into(),
        }),
    }
}

/// fsyncs a directory so a rename into it survives a power cut.
pub(crate) fn fsync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("fsync directory", path))
}

/// Publishes `bytes` at `target`: written to a temp file in `staging` (same filesystem), fsynced,
/// renamed over `target`, and the parent directory fsynced. Readers see the old file or the new.
pub(crate) fn write_atomic(staging: &Path, target: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = staging.join(unique_name("w"));
    let mut f = File::create(&tmp).map_err(StoreError::io("create", &tmp))?;
    f.write_all(bytes).map_err(StoreError::io("write", &tmp))?;
    f.sync_all().map_err(StoreError::io("fsync", &tmp))?;
    drop(f);
    rename(&tmp, target)?;
    if let Some(parent) = target.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

pub(crate) fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|source| StoreError::Io {
        op: "rename into place",
        path: to.to_owned(),
        source,
    })
}

pub(crate) fn create_dir_all(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(StoreError::io("create directory", path))
}

/// Removes a file or a whole tree; a missing path is not an error (someone else removed it).
pub(crate) fn remove_any(path: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("stat", path)(e)),
    };
    let r = if meta.is_dir() {
        make_writable(path);
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("remove", path)(e)),
    }
}

/// Overlay workdirs and some layer trees hold directories without write/search permission;
/// root ignores that, a rootless user does not, so open them up before removing.
fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if nix::unistd::geteuid().is_root() {
        return;
    }
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() | 0o700));
    if let Ok(rd) = fs::read_dir(path) {
        for e in rd.flatten() {
            make_writable(&e.path());
        }
    }
}

/// A name unique across processes and threads: pid, a per-process counter and the clock, hashed.
pub(crate) fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = blake3::Hasher::new();
    h.update(&std::process::id().to_le_bytes());
    h.update(&n.to_le_bytes());
    h.update(&now.to_le_bytes());
    let hex = h.finalize().to_hex();
    format!("{prefix}-{}", &hex[..32])
}

/// The pool for work that waits on the disk more than on the CPU: hashing a cold context,
/// reading the store's metadata files. A disk serves many requests in flight faster than one
/// per core, so the pool is wider than the machine (on a warm cache the extra threads cost
/// little: they only ever run on the cores).
pub(crate) fn io_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        rayon::ThreadPoolBuilder::new()
            .num_threads((cores * 4).clamp(8, 64))
            .thread_name(|i| format!("forge-io-{i}"))
            .build()
            .expect("a thread pool can be built")
    })
}

/// Bytes used by a tree: the sum of the sizes of its non-directories, each inode counted once
/// (hardlinks).
///
/// Every snapshot commit measures its tree, so this is on the path of every step: entries are
/// looked up relative to their directory's descriptor (not by a path walked from `/` each time),
/// directories are known from the directory entry without a stat, and the directories of a
/// level are measured in parallel.
pub(crate) fn tree_size(path: &Path) -> u64 {
    let seen = Mutex::new(HashSet::new());
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    match Dir::open(path, flags, Mode::empty()) {
        Ok(dir) => dir_size(dir, &seen),
        Err(_) => fs::symlink_metadata(path).map(|m| m.len()).unwrap_or(0),
    }
}

/// [`tree_size`] of an open directory; `seen` holds the multiply-linked inodes counted so far.
fn dir_size(mut dir: Dir, seen: &Mutex<HashSet<(u64, u64)>>) -> u64 {
    let fd = dir.as_raw_fd();
    let mut total = 0;
    let mut subdirs = Vec::new();
    for entry in dir.iter().flatten() {
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let is_dir = match entry.file_type() {
            Some(Type::Directory) => true,
            Some(_) => false,
            // The filesystem does not say: ask.
            None => fstatat(Some(fd), name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR),
        };
        if is_dir {
            subdirs.push(name.to_owned());
            continue;
        }
        let Ok(st) = fstatat(Some(fd), name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        let counted = st.st_nlink <= 1 || lock(seen).insert((st.st_dev, st.st_ino));
        if counted {
            total += u64::try_from(st.st_size).unwrap_or(0);
        }
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    total
        + subdirs
            .par_iter()
            .filter_map(|name| Dir::openat(Some(fd), name.as_c_str(), flags, Mode::empty()).ok())
            .map(|sub| dir_size(sub, seen))
            .sum::<u64>()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Seconds since the Unix epoch, now.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A file's mtime in seconds since the epoch (0 when unknown).
pub(crate) fn mtime_secs(meta: &fs::Metadata) -> u64 {
    u64::try_from(meta.mtime()).unwrap_or(0)
}
