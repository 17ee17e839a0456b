//! Build-context hashing: a walk of the context (with the `.dockerignore` filter applied) that
//! hashes every entry by type, mode, owner, size, link target, xattrs and content (never mtime)
//! into a Merkle tree, so every subtree a COPY selects has its own digest.
//!
//! A stat memo in the store (`contexts/<hash of the context path>.memo`) maps each path's
//! (device, inode, size, mtime, ctime) to its content and xattr digests, so an unchanged context
//! costs one walk of stats and no reads. ctime changes with content, mode, owner and xattrs, and
//! cannot be set by users, which is what makes it safe to trust. Entries changed within a second
//! of a hashing run are not memoised (they could change again within one timestamp tick).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use rayon::prelude::*;

use crate::error::{Result, StoreError};
use crate::fsutil;
use crate::key::ContentDigest;
use crate::store::Store;

/// Decides which context paths are part of the context (implemented for `.dockerignore` by the
/// parser's matcher). Paths are relative to the context root, `/`-separated, without `./`.
pub trait PathFilter: Sync {
    /// Whether this path is left out of the context.
    fn is_excluded(&self, rel: &str) -> bool;
    /// Whether an excluded directory may still contain included paths (a later `!pattern`), so
    /// the walk must descend into it.
    fn may_include_under(&self, rel_dir: &str) -> bool;
}

/// The filter that keeps everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFilter;

impl PathFilter for NoFilter {
    fn is_excluded(&self, _rel: &str) -> bool {
        false
    }
    fn may_include_under(&self, _rel_dir: &str) -> bool {
        true
    }
}

/// What kind of filesystem object an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (hashed as its target text, never followed).
    Symlink,
    /// A fifo, socket or device node.
    Special,
}

/// One hashed path of the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextEntry {
    /// Its kind.
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (files; 0 for others).
    pub size: u64,
    /// A symlink's target, as written.
    pub link_target: Option<PathBuf>,
    /// blake3 of the contents (files only).
    pub content: Option<ContentDigest>,
    /// The entry's digest: its metadata and content, and for a directory those of everything
    /// below it (a Merkle tree). Its own name is not part of it.
    pub digest: ContentDigest,
}

/// The hashed context: every included path with its entry.
#[derive(Debug, Clone)]
pub struct ContextTree {
    root: PathBuf,
    entries: BTreeMap<String, ContextEntry>,
    stats: HashStats,
}

/// How much work a hashing run did (for benchmarks and progress output).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashStats {
    /// Files whose content was read.
    pub files_read: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Entries answered by the stat memo.
    pub memo_hits: u64,
}

impl ContextTree {
    /// The context directory that was hashed.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The digest of the whole context.
    pub fn root_digest(&self) -> ContentDigest {
        self.entries[""].digest
    }

    /// The digest of a path (a file, or a directory's whole subtree); `None` when the path is
    /// not in the context (missing or excluded). Accepts `a/b`, `./a/b`, `/a/b/`.
    pub fn digest(&self, path: &str) -> Option<ContentDigest> {
        self.entry(path).map(|e| e.digest)
    }

    /// The entry of a path.
    pub fn entry(&self, path: &str) -> Option<&ContextEntry> {
        self.entries.get(&normalize(path)?)
    }

    /// The path itself (when present) and every entry below it, in path order, as
    /// (context-relative path, entry). The root is `""`.
    pub fn entries_under<'t>(
        &'t self,
        path: &str,
    ) -> Box<dyn Iterator<Item = (&'t str, &'t ContextEntry)> + 't> {
        let Some(p) = normalize(path) else {
            return Box::new(std::iter::empty());
        };
        if p.is_empty() {
            return Box::new(self.entries.iter().map(|(k, v)| (k.as_str(), v)));
        }
        let own = self.entries.get_key_value(&p).map(|(k, v)| (k.as_str(), v));
        let lo = format!("{p}/");
        let hi = format!("{p}0"); // '0' follows '/' in byte order: the range is exactly "p/..."
        Box::new(
            own.into_iter()
                .chain(self.entries.range(lo..hi).map(|(k, v)| (k.as_str(), v))),
        )
    }

    /// How many entries (the root included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never true: the root is always there.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The work the run that produced this tree did.
    pub fn stats(&self) -> HashStats {
        self.stats
    }
}

fn normalize(path: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// Hashes a build context. See the module docs.
pub struct ContextHasher<'a> {
    root: PathBuf,
    filter: &'a dyn PathFilter,
    store: Option<&'a Store>,
}

impl std::fmt::Debug for ContextHasher<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextHasher")
            .field("root", &self.root)
            .field("memo", &self.store.is_some())
            .finish()
    }
}

impl<'a> ContextHasher<'a> {
    /// A hasher for the context directory `root`, with no filter and no memo.
    pub fn new(root: impl Into<PathBuf>) -> ContextHasher<'a> {
        ContextHasher {
            root: root.into(),
            filter: &NoFilter,
            store: None,
        }
    }

    /// Leaves out what `filter` excludes (the `.dockerignore` rules).
    pub fn filter(mut self, filter: &'a dyn PathFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Uses (and updates) the stat memo kept in `store`.
    pub fn memo(mut self, store: &'a Store) -> Self {
        self.store = Some(store);
        self
    }

    /// Walks and hashes the context.
    pub fn hash(&self) -> Result<ContextTree> {
        let root = fs::canonicalize(&self.root)
            .map_err(StoreError::io("open build context", &self.root))?;
        let meta = fs::metadata(&root).map_err(StoreError::io("stat build context", &root))?;
        if !meta.is_dir() {
            return Err(StoreError::BadContext {
                path: root,
                reason: "not a directory",
            });
        }
        let memo_path = self.store.map(|s| {
            let h = blake3::hash(root.as_os_str().as_bytes()).to_hex();
            s.dir.join("contexts").join(format!("{}.memo", &h[..32]))
        });
        let old = memo_path.as_deref().map(Memo::load).unwrap_or_default();
        let start_ns = now_ns();
        let walk = Walk {
            filter: self.filter,
            old: &old,
            // Entries whose ctime is within a second of this run could change again in the same
            // timestamp tick after we read them: hash them but do not remember them.
            trust_before_ns: start_ns - 1_000_000_000,
            hits: AtomicU64::new(0),
            fresh: Mutex::new(Vec::new()),
            files_read: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
        };
        let mut entries = Vec::new();
        let root_entry = io_pool().install(|| walk.entry(&root, "", &meta, &mut entries))?;
        let Some(root_entry) = root_entry else {
            unreachable!("the root is never filtered out")
        };
        entries.insert(0, (String::new(), root_entry));
        // Stable sort: adaptive, so the nearly sorted pre-order costs about one pass.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let entries: BTreeMap<String, ContextEntry> = entries.into_iter().collect();
        let hits = walk.hits.load(Ordering::Relaxed);
        let fresh = walk.fresh.into_inner().unwrap_or_else(|e| e.into_inner());
        let stats = HashStats {
            files_read: walk.files_read.load(Ordering::Relaxed),
            bytes_read: walk.bytes_read.load(Ordering::Relaxed),
            memo_hits: hits,
        };
        if let (Some(store), Some(path)) = (self.store, memo_path) {
            // Unchanged (every old entry hit, nothing new): nothing to write.
            if !fresh.is_empty() || hits != old.entries.len() as u64 {
                // Keep the old entries of paths still in the context (a changed one was either
                // re-remembered in `fresh` or no longer matches its stat), plus the fresh ones.
                let fresh_keys: HashSet<&str> = fresh.iter().map(|(k, _)| k.as_str()).collect();
                let mut all: Vec<(&str, &MemoEntry)> = old
                    .entries
                    .iter()
                    .filter(|(k, _)| {
                        entries.contains_key(k.as_str()) && !fresh_keys.contains(k.as_str())
                    })
                    .map(|(k, v)| (k.as_str(), v))
                    .collect();
                all.extend(fresh.iter().map(|(k, v)| (k.as_str(), v)));
                Memo::save(store, &path, &all)?;
            }
        }
        Ok(ContextTree {
            root,
            entries,
            stats,
        })
    }
}

/// The walk's thread pool. Hashing a cold context waits on the disk far more than on the CPU, and
/// a disk serves many requests in flight faster than one per core, so the pool is wider than the
/// machine (on a warm cache the extra threads cost little: they only ever run on the cores).
fn io_pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        rayon::ThreadPoolBuilder::new()
            .num_threads((cores * 4).clamp(8, 64))
            .thread_name(|i| format!("forge-hash-{i}"))
            .build()
            .expect("a thread pool can be built")
    })
}

struct Walk<'w> {
    filter: &'w dyn PathFilter,
    old: &'w Memo,
    trust_before_ns: i64,
    /// How many memo entries matched.
    hits: AtomicU64,
    /// Entries hashed now and old enough to remember.
    fresh: Mutex<Vec<(String, MemoEntry)>>,
    files_read: AtomicU64,
    bytes_read: AtomicU64,
}

/// The result of hashing one child: its subtree's entries and its own (None: filtered out).
type Sub = (Vec<(String, ContextEntry)>, Option<ContextEntry>);

/// A hashed child: its context path, the length of its name (the path's tail) and its subtree.
type Child = (String, usize, Sub);

impl Walk<'_> {
    /// Hashes `abs` (at context path `rel`, already lstat'ed as `meta`), adding the entries
    /// below it to `out`, and returns its own entry (None: excluded with nothing included below).
    fn entry(
        &self,
        abs: &Path,
        rel: &str,
        meta: &fs::Metadata,
        out: &mut Vec<(String, ContextEntry)>,
    ) -> Result<Option<ContextEntry>> {
        let ft = meta.file_type();
        let excluded = !rel.is_empty() && self.filter.is_excluded(rel);
        if ft.is_dir() {
            if excluded && !self.filter.may_include_under(rel) {
                return Ok(None);
            }
            let mut children: Vec<(std::ffi::OsString, fs::DirEntry)> = Vec::new();
            for e in fs::read_dir(abs).map_err(StoreError::io("read directory", abs))? {
                let e = e.map_err(StoreError::io("read directory", abs))?;
                children.push((e.file_name(), e));
            }
            children.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            let subs: Vec<Result<Child>> = children
                .par_iter()
                .map(|(name, dirent)| {
                    let child_abs = abs.join(name);
                    let name = name.to_string_lossy();
                    let child_rel = if rel.is_empty() {
                        name.clone().into_owned()
                    } else {
                        format!("{rel}/{name}")
                    };
                    // fstatat relative to the open directory: no path walk per entry. It does
                    // not follow symlinks, as lstat.
                    let cmeta = dirent
                        .metadata()
                        .map_err(StoreError::io("stat", &child_abs))?;
                    let mut sub = Vec::new();
                    let e = self.entry(&child_abs, &child_rel, &cmeta, &mut sub)?;
                    Ok((child_rel, name.len(), (sub, e)))
                })
                .collect();
            let mut h = header(EntryKind::Dir, meta);
            let (_, xattrs) = self.memoized(abs, rel, meta, EntryKind::Dir)?;
            h.update(&xattrs.0);
            let mut any_child = false;
            // Each child before its subtree (pre-order): with children sorted by name this is
            // nearly path order, which makes the final sort cheap.
            for sub in subs {
                let (child_rel, name_len, (sub, e)) = sub?;
                if let Some(e) = e {
                    any_child = true;
                    frame(&mut h, &child_rel.as_bytes()[child_rel.len() - name_len..]);
                    h.update(&e.digest.0);
                    out.push((child_rel, e));
                }
                out.extend(sub);
            }
            if excluded && !any_child {
                return Ok(None);
            }
            return Ok(Some(ContextEntry {
                kind: EntryKind::Dir,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                size: 0,
                link_target: None,
                content: None,
                digest: ContentDigest(*h.finalize().as_bytes()),
            }));
        }
        if excluded {
            return Ok(None);
        }
        let kind = if ft.is_file() {
            EntryKind::File
        } else if ft.is_symlink() {
            EntryKind::Symlink
        } else {
            EntryKind::Special
        };
        let mut h = header(kind, meta);
        let (content, xattrs) = self.memoized(abs, rel, meta, kind)?;
        h.update(&xattrs.0);
        let mut link_target = None;
        match kind {
            EntryKind::File => {
                h.update(&meta.size().to_le_bytes());
                h.update(&content.0);
            }
            EntryKind::Symlink => {
                let t = fs::read_link(abs).map_err(StoreError::io("read link", abs))?;
                frame(&mut h, t.as_os_str().as_bytes());
                link_target = Some(t);
            }
            EntryKind::Special => {
                let special = if ft.is_fifo() {
                    1u8
                } else if ft.is_socket() {
                    2
                } else if ft.is_char_device() {
                    3
                } else {
                    4
                };
                h.update(&[special]);
                h.update(&meta.rdev().to_le_bytes());
            }
            EntryKind::Dir => unreachable!("handled above"),
        }
        Ok(Some(ContextEntry {
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: if kind == EntryKind::File {
                meta.size()
            } else {
                0
            },
            link_target,
            content: (kind == EntryKind::File).then_some(content),
            digest: ContentDigest(*h.finalize().as_bytes()),
        }))
    }

    /// The content digest (files; zero otherwise) and xattr digest of an entry, from the memo
    /// when its stat matches, else computed (and remembered when old enough to trust).
    fn memoized(
        &self,
        abs: &Path,
        rel: &str,
        meta: &fs::Metadata,
        kind: EntryKind,
    ) -> Result<(ContentDigest, ContentDigest)> {
        let stat = MemoStat::of(meta);
        if let Some(e) = self.old.entries.get(rel) {
            if e.stat == stat {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok((e.content, e.xattrs));
            }
        }
        let content = if kind == EntryKind::File {
            let d = hash_file_content(abs, meta.size())?;
            self.files_read.fetch_add(1, Ordering::Relaxed);
            self.bytes_read.fetch_add(meta.size(), Ordering::Relaxed);
            d
        } else {
            ContentDigest([0; 32])
        };
        let xattrs = xattr_digest(abs)?;
        if stat.ctime_ns < self.trust_before_ns && stat.mtime_ns < self.trust_before_ns {
            self.remember(
                rel,
                MemoEntry {
                    stat,
                    content,
                    xattrs,
                },
            );
        }
        Ok((content, xattrs))
    }

    fn remember(&self, rel: &str, e: MemoEntry) {
        self.fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((rel.to_owned(), e));
    }
}

fn header(kind: EntryKind, meta: &fs::Metadata) -> blake3::Hasher {
    // The derived key is computed once: deriving it per entry costs a hash of its own.
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = KEY.get_or_init(|| blake3::derive_key("forge context entry v1", b""));
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(&[kind as u8]);
    h.update(&(meta.mode() & 0o7777).to_le_bytes());
    h.update(&meta.uid().to_le_bytes());
    h.update(&meta.gid().to_le_bytes());
    h
}

fn frame(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// Files at least this big are hashed with blake3's multithreaded mode (memory-mapped).
const PARALLEL_HASH_MIN: u64 = 1 << 20;

fn hash_file_content(path: &Path, size: u64) -> Result<ContentDigest> {
    let mut h = blake3::Hasher::new();
    if size >= PARALLEL_HASH_MIN {
        h.update_mmap_rayon(path)
            .map_err(StoreError::io("read", path))?;
    } else {
        let mut f = File::open(path).map_err(StoreError::io("open", path))?;
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf).map_err(StoreError::io("read", path))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(ContentDigest(*h.finalize().as_bytes()))
}

/// Extended attributes, sorted by name. `security.selinux` is left out: it is the host's label,
/// not part of the content, and differs between machines.
fn xattr_digest(path: &Path) -> Result<ContentDigest> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        // Filesystems without xattr support have none to hash.
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => {
            return Ok(ContentDigest([0; 32]))
        }
        Err(e) => return Err(StoreError::io("list xattrs", path)(e)),
    };
    let mut names: Vec<_> = names
        .filter(|n| n.as_bytes() != b"security.selinux")
        .collect();
    if names.is_empty() {
        return Ok(ContentDigest([0; 32]));
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut h = blake3::Hasher::new();
    for n in names {
        let v = xattr::get(path, &n).map_err(StoreError::io("read xattr", path))?;
        frame(&mut h, OsStr::as_bytes(&n));
        frame(&mut h, v.as_deref().unwrap_or_default());
    }
    Ok(ContentDigest(*h.finalize().as_bytes()))
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MemoStat {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl MemoStat {
    fn of(m: &fs::Metadata) -> MemoStat {
        MemoStat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MemoEntry {
    stat: MemoStat,
    content: ContentDigest,
    xattrs: ContentDigest,
}

#[derive(Debug, Default)]
struct Memo {
    entries: HashMap<String, MemoEntry, BuildHasherDefault<FxHasher>>,
}

/// A fast non-cryptographic hasher for the memo's path keys (the default SipHash showed up in
/// profiles of the warm run; the keys are our own paths, so DoS resistance buys nothing).
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        for b in chunks.remainder() {
            self.add(u64::from(*b));
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    fn add(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

const MEMO_MAGIC: &[u8; 12] = b"forge-memo1\n";

impl Memo {
    /// Loads a memo; a missing or damaged one is empty (it only saves work, never decides).
    fn load(path: &Path) -> Memo {
        let Ok(bytes) = fs::read(path) else {
            return Memo::default();
        };
        Memo::parse(&bytes).unwrap_or_default()
    }

    fn parse(bytes: &[u8]) -> Option<Memo> {
        let mut r = bytes.strip_prefix(MEMO_MAGIC.as_slice())?;
        let count = take_u64(&mut r)? as usize;
        let mut entries = HashMap::with_capacity_and_hasher(count.min(1 << 24), Default::default());
        for _ in 0..count {
            let len = take_u64(&mut r)? as usize;
            if r.len() < len {
                return None;
            }
            let (name, rest) = r.split_at(len);
            r = rest;
            let name = std::str::from_utf8(name).ok()?.to_owned();
            let stat = MemoStat {
                dev: take_u64(&mut r)?,
                ino: take_u64(&mut r)?,
                size: take_u64(&mut r)?,
                mtime_ns: take_u64(&mut r)? as i64,
                ctime_ns: take_u64(&mut r)? as i64,
            };
            let content = ContentDigest(take_32(&mut r)?);
            let xattrs = ContentDigest(take_32(&mut r)?);
            entries.insert(
                name,
                MemoEntry {
                    stat,
                    content,
                    xattrs,
                },
            );
        }
        Some(Memo { entries })
    }

    fn save(store: &Store, path: &Path, entries: &[(&str, &MemoEntry)]) -> Result<()> {
        let mut out = Vec::with_capacity(entries.len() * 128 + 32);
        out.extend_from_slice(MEMO_MAGIC);
        out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        for (name, e) in entries {
            out.extend_from_slice(&(name.len() as u64).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            for v in [
                e.stat.dev,
                e.stat.ino,
                e.stat.size,
                e.stat.mtime_ns as u64,
                e.stat.ctime_ns as u64,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&e.content.0);
            out.extend_from_slice(&e.xattrs.0);
        }
        fsutil::write_atomic(store.staging_dir(), path, &out)
    }
}

fn take_u64(r: &mut &[u8]) -> Option<u64> {
    let (a, b) = r.split_first_chunk::<8>()?;
    *r = b;
    Some(u64::from_le_bytes(*a))
}

fn take_32(r: &mut &[u8]) -> Option<[u8; 32]> {
    let (a, b) = r.split_first_chunk::<32>()?;
    *r = b;
    Some(*a)
}
