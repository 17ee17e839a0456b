//! Build-context hashing: a walk of the context (with the `.dockerignore` filter applied) that
//! hashes every entry by type, mode, owner, size, link target, xattrs and content (never mtime)
//! into a Merkle tree, so every subtree a COPY selects has its own digest.
//!
//! A stat memo in the store (`contexts/<hash of the context path>.memo`) maps each path's
//! (device, inode, size, mtime, ctime, mode, owner) to its content and xattr digests (and a file's
//! whole entry digest), so an unchanged context costs one walk of stats, no reads and no hashing
//! of files. ctime changes with content, mode, owner and xattrs, and
//! cannot be set by users, which is what makes it safe to trust. Entries changed within a second
//! of a hashing run are not memoised (they could change again within one timestamp tick).

use std::borrow::Cow;
use std::collections::HashSet;
use std::ffi::{CStr, OsStr};
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::libc;
use nix::sys::stat::{fstatat, Mode};
use rayon::prelude::*;

use crate::error::{Result, StoreError};
use crate::fsutil;
use crate::key::ContentDigest;
use crate::store::Store;

/// Entries [`ContextTree::entry_near`] tries after the last one found: the next file, past the
/// entry of a directory that starts between the two, before a binary search.
const NEAR_TRIES: usize = 4;

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
    /// Modification time in nanoseconds since the epoch, as hashed (not part of any digest).
    pub mtime_ns: i64,
    /// Hard links to the entry's inode, as hashed.
    pub nlink: u64,
    /// The entry's digest: its metadata and content, and for a directory those of everything
    /// below it (a Merkle tree). Its own name is not part of it.
    pub digest: ContentDigest,
}

/// The hashed context: every included path with its entry.
#[derive(Debug, Clone)]
pub struct ContextTree {
    root: PathBuf,
    /// Every entry in byte order of its path (the root, `""`, first), found by binary search: the
    /// walk produces them in this order, so no map has to be built.
    entries: Vec<(String, ContextEntry)>,
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
        self.entries[0].1.digest
    }

    /// The digest of a path (a file, or a directory's whole subtree); `None` when the path is
    /// not in the context (missing or excluded). Accepts `a/b`, `./a/b`, `/a/b/`.
    pub fn digest(&self, path: &str) -> Option<ContentDigest> {
        self.entry(path).map(|e| e.digest)
    }

    /// The entry of a path.
    pub fn entry(&self, path: &str) -> Option<&ContextEntry> {
        let i = self.find(&normalize(path)?).ok()?;
        Some(&self.entries[i].1)
    }

    /// [`ContextTree::entry`] for a caller that goes through paths in about path order (a copy
    /// walking a directory): `near` is where its last lookup found a path. The few entries just
    /// after it are tried before a binary search, and `near` moves to where this path is. A
    /// binary search of a big tree misses the CPU cache at each step; the next entry rarely does.
    pub fn entry_near(&self, path: &str, near: &mut usize) -> Option<&ContextEntry> {
        let path = normalize(path)?;
        let next = self
            .entries
            .iter()
            .enumerate()
            .skip(*near)
            .take(NEAR_TRIES)
            .find(|(_, (k, _))| *k == path)
            .map(|(i, _)| i);
        let i = match next {
            Some(i) => i,
            None => self.find(&path).ok()?,
        };
        *near = i;
        Some(&self.entries[i].1)
    }

    fn find(&self, path: &str) -> std::result::Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(path))
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
        let own = self.find(&p).ok().map(|i| &self.entries[i]);
        let lo = format!("{p}/");
        let hi = format!("{p}0"); // '0' follows '/' in byte order: the range is exactly "p/..."
        let a = self
            .entries
            .partition_point(|(k, _)| k.as_str() < lo.as_str());
        let b = self
            .entries
            .partition_point(|(k, _)| k.as_str() < hi.as_str());
        Box::new(
            own.into_iter()
                .chain(&self.entries[a..b])
                .map(|(k, v)| (k.as_str(), v)),
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

fn normalize(path: &str) -> Option<Cow<'_, str>> {
    // Paths the copier asks for, one per file, are already normal: no allocation for those.
    if path
        .split('/')
        .all(|c| !c.is_empty() && c != "." && c != "..")
    {
        return Some(Cow::Borrowed(path));
    }
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    Some(Cow::Owned(parts.join("/")))
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

    /// Walks and hashes the context, and updates the stat memo.
    pub fn hash(&self) -> Result<ContextTree> {
        let (tree, memo) = self.hash_deferring_memo()?;
        if let Some(memo) = memo {
            memo.write()?;
        }
        Ok(tree)
    }

    /// [`ContextHasher::hash`], leaving the memo's update (when it changed) to the caller, who
    /// can write it while the tree is already in use: writing it means an fsync.
    pub fn hash_deferring_memo(&self) -> Result<(ContextTree, Option<PendingMemo>)> {
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
        let mut pieces = Vec::new();
        let root_entry = crate::fsutil::io_pool()
            .install(|| walk.entry(Loc::Root(&root), "", &Stat::of_meta(&meta), &mut pieces))?;
        let Some(root_entry) = root_entry else {
            unreachable!("the root is never filtered out")
        };
        // The walk emits each directory's entries in path order (see `Walk::entry`), so the
        // flattened list is sorted: the root first, then everything below it.
        let mut entries = Vec::with_capacity(old.len() + 1);
        entries.push((String::new(), root_entry));
        flatten(pieces, &mut entries);
        // Names that are not UTF-8 are stored lossily, which can change their order or make two
        // paths one: then sort (and keep one of each), as a map would have.
        if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.dedup_by(|a, b| a.0 == b.0);
        }
        let tree = ContextTree {
            root,
            entries,
            stats: HashStats {
                files_read: walk.files_read.load(Ordering::Relaxed),
                bytes_read: walk.bytes_read.load(Ordering::Relaxed),
                memo_hits: walk.hits.load(Ordering::Relaxed),
            },
        };
        let fresh = walk.fresh.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut pending = None;
        if let (Some(store), Some(path)) = (self.store, memo_path) {
            // Nothing new to remember: the old memo is as good as a rewritten one. Its entries
            // that missed (a file changed too recently to be trusted, or gone) cost nothing but
            // a stat comparison the next time, so they are dropped only once they are many. A
            // rewrite is 20,000 path lookups and a sort for a 20,000-file context, on the path
            // of every build: a build right after an edit skips it.
            let stale = (old.len() as u64).saturating_sub(tree.stats.memo_hits);
            if !fresh.is_empty() || stale > old.len() as u64 / MEMO_STALE_SHARE {
                // Keep the old entries of paths still in the context (a changed one was either
                // re-remembered in `fresh` or no longer matches its stat), plus the fresh ones.
                let fresh_keys: HashSet<&str> = fresh.iter().map(|(k, _)| k.as_str()).collect();
                let kept: Vec<(&str, MemoEntry)> = old
                    .iter()
                    .filter_map(|(k, v)| Some((std::str::from_utf8(k).ok()?, v)))
                    .filter(|(k, _)| tree.find(k).is_ok() && !fresh_keys.contains(k))
                    .collect();
                let mut all: Vec<(&str, &MemoEntry)> = kept.iter().map(|(k, v)| (*k, v)).collect();
                all.extend(fresh.iter().map(|(k, v)| (k.as_str(), v)));
                pending = Some(PendingMemo {
                    staging: store.staging_dir().to_path_buf(),
                    bytes: Memo::encode(&mut all),
                    path,
                });
            }
        }
        Ok((tree, pending))
    }
}

/// A stat memo update waiting to be written (see [`ContextHasher::hash_deferring_memo`]).
#[derive(Debug)]
pub struct PendingMemo {
    staging: PathBuf,
    path: PathBuf,
    bytes: Vec<u8>,
}

impl PendingMemo {
    /// Writes the memo: staged, fsynced and renamed into place.
    pub fn write(self) -> Result<()> {
        fsutil::write_atomic(&self.staging, &self.path, &self.bytes)
    }
}

/// A walk's output below a directory, in path order: nested lists spare copying every entry into
/// each ancestor's list; they are flattened once at the end.
enum Piece {
    One(String, ContextEntry),
    Many(Vec<Piece>),
}

fn flatten(pieces: Vec<Piece>, out: &mut Vec<(String, ContextEntry)>) {
    for p in pieces {
        match p {
            Piece::One(k, e) => out.push((k, e)),
            Piece::Many(v) => flatten(v, out),
        }
    }
}

/// What `lstat` says about an entry (from `fs::Metadata` for the root, `fstatat` below it).
#[derive(Debug, Clone, Copy)]
struct Stat {
    /// `st_mode`: type and permission bits.
    mode: u32,
    uid: u32,
    gid: u32,
    rdev: u64,
    nlink: u64,
    memo: MemoStat,
}

impl Stat {
    fn of_meta(m: &fs::Metadata) -> Stat {
        Stat {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            rdev: m.rdev(),
            nlink: m.nlink(),
            memo: MemoStat {
                dev: m.dev(),
                ino: m.ino(),
                size: m.size(),
                mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            },
        }
    }

    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    fn of_libc(s: &nix::sys::stat::FileStat) -> Stat {
        Stat {
            mode: s.st_mode as u32,
            uid: s.st_uid,
            gid: s.st_gid,
            rdev: s.st_rdev as u64,
            nlink: s.st_nlink as u64,
            memo: MemoStat {
                dev: s.st_dev as u64,
                ino: s.st_ino as u64,
                size: s.st_size as u64,
                mtime_ns: s.st_mtime as i64 * 1_000_000_000 + s.st_mtime_nsec as i64,
                ctime_ns: s.st_ctime as i64 * 1_000_000_000 + s.st_ctime_nsec as i64,
            },
        }
    }

    fn kind(&self) -> EntryKind {
        match self.mode & libc::S_IFMT {
            libc::S_IFDIR => EntryKind::Dir,
            libc::S_IFREG => EntryKind::File,
            libc::S_IFLNK => EntryKind::Symlink,
            _ => EntryKind::Special,
        }
    }

    fn size(&self) -> u64 {
        self.memo.size
    }
}

/// Where an entry is: the root by its path; anything below by its directory's open descriptor and
/// its name, so stats and opens need no path walk (its path is built only when it must be read).
#[derive(Clone, Copy)]
enum Loc<'a> {
    Root(&'a Path),
    Child {
        dir_fd: RawFd,
        dir_abs: &'a Path,
        name: &'a CStr,
    },
}

impl Loc<'_> {
    fn abs(&self) -> PathBuf {
        match self {
            Loc::Root(p) => p.to_path_buf(),
            Loc::Child { dir_abs, name, .. } => dir_abs.join(OsStr::from_bytes(name.to_bytes())),
        }
    }

    fn open_dir(&self) -> nix::Result<Dir> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        match self {
            Loc::Root(p) => Dir::open(*p, flags, Mode::empty()),
            // O_NOFOLLOW: it was lstat'ed as a directory; a symlink swapped in since is not followed.
            Loc::Child { dir_fd, name, .. } => Dir::openat(
                Some(*dir_fd),
                *name,
                flags | OFlag::O_NOFOLLOW,
                Mode::empty(),
            ),
        }
    }
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

/// A hashed child of a directory: its context path, the length of its name (the path's tail),
/// its own entry (None: filtered out) and what is below it.
struct Child {
    rel: String,
    name_len: usize,
    entry: Option<ContextEntry>,
    below: Vec<Piece>,
}

impl Child {
    fn name(&self) -> &[u8] {
        &self.rel.as_bytes()[self.rel.len() - self.name_len..]
    }
}

fn io_err(op: &'static str, path: PathBuf) -> impl FnOnce(nix::errno::Errno) -> StoreError {
    move |e| StoreError::io(op, path)(e.into())
}

impl Walk<'_> {
    /// Hashes the entry at `loc` (context path `rel`, already lstat'ed as `st`), adding what is
    /// below it to `out` in path order, and returns its own entry (None: excluded with nothing
    /// included below).
    fn entry(
        &self,
        loc: Loc<'_>,
        rel: &str,
        st: &Stat,
        out: &mut Vec<Piece>,
    ) -> Result<Option<ContextEntry>> {
        let kind = st.kind();
        let excluded = !rel.is_empty() && self.filter.is_excluded(rel);
        if kind == EntryKind::Dir {
            if excluded && !self.filter.may_include_under(rel) {
                return Ok(None);
            }
            return self.dir(loc, rel, st, excluded, out);
        }
        if excluded {
            return Ok(None);
        }
        let memo = self.old.get(rel).filter(|m| m.matches(st));
        if let (Some(m), EntryKind::File) = (memo, kind) {
            // The whole entry digest is remembered: nothing to hash.
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(ContextEntry {
                kind,
                mode: st.mode & 0o7777,
                uid: st.uid,
                gid: st.gid,
                size: st.size(),
                link_target: None,
                content: Some(m.content),
                mtime_ns: st.memo.mtime_ns,
                nlink: st.nlink,
                digest: m.digest,
            }));
        }
        let abs = loc.abs();
        let (content, xattrs) = match memo {
            Some(m) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                (m.content, m.xattrs)
            }
            None => self.read(&abs, st, kind)?,
        };
        let mut h = header(kind, st);
        h.update(&xattrs.0);
        let mut link_target = None;
        match kind {
            EntryKind::File => {
                h.update(&st.size().to_le_bytes());
                h.update(&content.0);
            }
            EntryKind::Symlink => {
                let t = fs::read_link(&abs).map_err(StoreError::io("read link", &abs))?;
                frame(&mut h, t.as_os_str().as_bytes());
                link_target = Some(t);
            }
            EntryKind::Special => {
                let special = match st.mode & libc::S_IFMT {
                    libc::S_IFIFO => 1u8,
                    libc::S_IFSOCK => 2,
                    libc::S_IFCHR => 3,
                    _ => 4,
                };
                h.update(&[special]);
                h.update(&st.rdev.to_le_bytes());
            }
            EntryKind::Dir => unreachable!("handled above"),
        }
        let digest = ContentDigest(*h.finalize().as_bytes());
        if memo.is_none() {
            self.remember(rel, st, content, xattrs, digest);
        }
        Ok(Some(ContextEntry {
            kind,
            mode: st.mode & 0o7777,
            uid: st.uid,
            gid: st.gid,
            size: if kind == EntryKind::File {
                st.size()
            } else {
                0
            },
            link_target,
            content: (kind == EntryKind::File).then_some(content),
            mtime_ns: st.memo.mtime_ns,
            nlink: st.nlink,
            digest,
        }))
    }

    fn dir(
        &self,
        loc: Loc<'_>,
        rel: &str,
        st: &Stat,
        excluded: bool,
        out: &mut Vec<Piece>,
    ) -> Result<Option<ContextEntry>> {
        let abs = loc.abs();
        let mut dir = loc
            .open_dir()
            .map_err(io_err("read directory", abs.clone()))?;
        // Every name in one buffer, NUL-terminated (for fstatat), instead of an allocation each.
        let mut names: Vec<u8> = Vec::new();
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for e in dir.iter() {
            let e = e.map_err(io_err("read directory", abs.clone()))?;
            let n = e.file_name().to_bytes_with_nul();
            if n == b".\0" || n == b"..\0" {
                continue;
            }
            spans.push((names.len(), names.len() + n.len() - 1));
            names.extend_from_slice(n);
        }
        spans.sort_unstable_by(|a, b| names[a.0..a.1].cmp(&names[b.0..b.1]));
        let dir_fd = dir.as_raw_fd();
        // Collected by index straight into place: collecting into a `Result<Vec>` goes through a
        // list of partial vectors that are allocated and copied again.
        let mut results = Vec::with_capacity(spans.len());
        spans
            .par_iter()
            .map(|&(a, b)| {
                let name_bytes = &names[a..b];
                let cname = CStr::from_bytes_with_nul(&names[a..=b])
                    .expect("a directory entry's name has no NUL inside");
                let name = String::from_utf8_lossy(name_bytes);
                let mut child_rel = String::with_capacity(rel.len() + 1 + name.len());
                if !rel.is_empty() {
                    child_rel.push_str(rel);
                    child_rel.push('/');
                }
                child_rel.push_str(&name);
                let cst = fstatat(Some(dir_fd), cname, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(io_err("stat", abs.join(OsStr::from_bytes(name_bytes))))?;
                let child = Loc::Child {
                    dir_fd,
                    dir_abs: &abs,
                    name: cname,
                };
                let mut below = Vec::new();
                let entry = self.entry(child, &child_rel, &Stat::of_libc(&cst), &mut below)?;
                Ok(Child {
                    name_len: name.len(),
                    rel: child_rel,
                    entry,
                    below,
                })
            })
            .collect_into_vec(&mut results);
        let mut children = results.into_iter().collect::<Result<Vec<Child>>>()?;
        drop(dir);
        let mut h = header(EntryKind::Dir, st);
        let xattrs = match self.old.get(rel).filter(|m| m.matches(st)) {
            Some(m) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                m.xattrs
            }
            None => {
                let (_, x) = self.read(&abs, st, EntryKind::Dir)?;
                self.remember(rel, st, ContentDigest([0; 32]), x, ContentDigest([0; 32]));
                x
            }
        };
        h.update(&xattrs.0);
        // Children in name order for the digest.
        let mut order = Vec::with_capacity(children.len() * 2);
        for (i, c) in children.iter().enumerate() {
            if let Some(e) = &c.entry {
                frame(&mut h, c.name());
                h.update(&e.digest.0);
                order.push((i, false));
            }
            if !c.below.is_empty() {
                order.push((i, true));
            }
        }
        if excluded && order.is_empty() {
            return Ok(None);
        }
        // Path order for the output: a child's own path sorts by its name, what is below it by
        // its name and '/', and a sibling such as "a.txt" falls between "a" and "a/x". The list
        // is nearly sorted already, which the stable sort notices.
        order.sort_by(|&(i, below_i), &(j, below_j)| {
            let a = children[i].name().iter().chain(below_i.then_some(&b'/'));
            let b = children[j].name().iter().chain(below_j.then_some(&b'/'));
            a.cmp(b)
        });
        out.reserve(order.len());
        for (i, below) in order {
            let c = &mut children[i];
            if below {
                out.push(Piece::Many(std::mem::take(&mut c.below)));
            } else if let Some(e) = c.entry.take() {
                out.push(Piece::One(std::mem::take(&mut c.rel), e));
            }
        }
        Ok(Some(ContextEntry {
            kind: EntryKind::Dir,
            mode: st.mode & 0o7777,
            uid: st.uid,
            gid: st.gid,
            size: 0,
            link_target: None,
            content: None,
            mtime_ns: st.memo.mtime_ns,
            nlink: st.nlink,
            digest: ContentDigest(*h.finalize().as_bytes()),
        }))
    }

    /// Reads what the memo would have answered: the content digest (files; zero otherwise) and
    /// the xattr digest.
    fn read(
        &self,
        abs: &Path,
        st: &Stat,
        kind: EntryKind,
    ) -> Result<(ContentDigest, ContentDigest)> {
        let content = if kind == EntryKind::File {
            let d = hash_file_content(abs, st.size())?;
            self.files_read.fetch_add(1, Ordering::Relaxed);
            self.bytes_read.fetch_add(st.size(), Ordering::Relaxed);
            d
        } else {
            ContentDigest([0; 32])
        };
        Ok((content, xattr_digest(abs)?))
    }

    /// Remembers a freshly hashed entry when it is old enough to trust.
    fn remember(
        &self,
        rel: &str,
        st: &Stat,
        content: ContentDigest,
        xattrs: ContentDigest,
        digest: ContentDigest,
    ) {
        let stat = st.memo;
        if stat.ctime_ns >= self.trust_before_ns || stat.mtime_ns >= self.trust_before_ns {
            return;
        }
        let e = MemoEntry {
            stat,
            mode: st.mode,
            uid: st.uid,
            gid: st.gid,
            content,
            xattrs,
            digest,
        };
        self.fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((rel.to_owned(), e));
    }
}

fn header(kind: EntryKind, st: &Stat) -> blake3::Hasher {
    // The derived key is computed once: deriving it per entry costs a hash of its own.
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = KEY.get_or_init(|| blake3::derive_key("forge context entry v1", b""));
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(&[kind as u8]);
    h.update(&(st.mode & 0o7777).to_le_bytes());
    h.update(&st.uid.to_le_bytes());
    h.update(&st.gid.to_le_bytes());
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MemoEntry {
    stat: MemoStat,
    /// `st_mode`, owner and group: part of the entry digest (a change to them changes ctime too,
    /// but comparing them costs nothing).
    mode: u32,
    uid: u32,
    gid: u32,
    content: ContentDigest,
    xattrs: ContentDigest,
    /// A file's whole entry digest (zero for other kinds, whose digests are computed).
    digest: ContentDigest,
}

impl MemoEntry {
    fn matches(&self, st: &Stat) -> bool {
        self.stat == st.memo && self.mode == st.mode && self.uid == st.uid && self.gid == st.gid
    }
}

/// The stat memo as loaded: the file's bytes, read in place (no string or record is copied out
/// of them), and an open-addressing table from a path's hash to where its record starts.
#[derive(Debug, Default)]
struct Memo {
    bytes: Vec<u8>,
    count: usize,
    /// (the hash's low 32 bits, the record's offset in `bytes` + 1); offset 0 is a free slot.
    /// Its length is a power of two, at least twice `count`. The tag spares reading the record of
    /// a colliding path: the records are scattered, each read a cache miss.
    slots: Vec<(u32, u32)>,
}

/// The memo is rewritten, when nothing new is to be remembered, once more than this share of its
/// entries (one in this many) no longer match a file of the context.
const MEMO_STALE_SHARE: u64 = 8;

/// A record: the name's length (u64), the name, then the fixed part.
const MEMO_FIXED: usize = 5 * 8 + 3 * 4 + 3 * 32;

/// A fast non-cryptographic hash of the memo's path keys (the keys are our own paths, so DoS
/// resistance buys nothing); FxHash-style, finished with a multiply whose top bits index the table.
fn path_hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let mut h = 0u64;
    let mut add = |v: u64| h = (h.rotate_left(5) ^ v).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    add(u64::from_le_bytes(tail) ^ ((bytes.len() as u64) << 56));
    h.wrapping_mul(K)
}

const MEMO_MAGIC: &[u8; 12] = b"forge-memo2\n";

impl Memo {
    /// Loads a memo; a missing or damaged one is empty (it only saves work, never decides).
    fn load(path: &Path) -> Memo {
        let Ok(bytes) = fs::read(path) else {
            return Memo::default();
        };
        Memo::parse(bytes).unwrap_or_default()
    }

    fn parse(bytes: Vec<u8>) -> Option<Memo> {
        if bytes.len() >= u32::MAX as usize {
            return None;
        }
        let mut r = bytes.strip_prefix(MEMO_MAGIC.as_slice())?;
        let count = take_u64(&mut r)? as usize;
        // Every record takes more than MEMO_FIXED bytes: a count beyond that is damage.
        if count > r.len() / MEMO_FIXED {
            return None;
        }
        let mut slots = vec![(0u32, 0u32); (count * 2).next_power_of_two().max(2)];
        let bits = slots.len().trailing_zeros();
        let mask = slots.len() - 1;
        for _ in 0..count {
            let at = bytes.len() - r.len();
            let len = take_u64(&mut r)? as usize;
            if r.len() < len.checked_add(MEMO_FIXED)? {
                return None;
            }
            let h = path_hash(&r[..len]);
            r = &r[len + MEMO_FIXED..];
            let mut s = (h >> (64 - bits)) as usize;
            while slots[s].1 != 0 {
                s = (s + 1) & mask;
            }
            slots[s] = (h as u32, at as u32 + 1);
        }
        Some(Memo {
            bytes,
            count,
            slots,
        })
    }

    fn len(&self) -> usize {
        self.count
    }

    /// The record at `at`: its name and entry (its bounds were checked by `parse`).
    fn record(&self, at: usize) -> Option<(&[u8], MemoEntry)> {
        let mut r = &self.bytes[at..];
        let len = take_u64(&mut r)? as usize;
        let (name, mut r) = r.split_at_checked(len)?;
        let stat = MemoStat {
            dev: take_u64(&mut r)?,
            ino: take_u64(&mut r)?,
            size: take_u64(&mut r)?,
            mtime_ns: take_u64(&mut r)? as i64,
            ctime_ns: take_u64(&mut r)? as i64,
        };
        let e = MemoEntry {
            stat,
            mode: take_u32(&mut r)?,
            uid: take_u32(&mut r)?,
            gid: take_u32(&mut r)?,
            content: ContentDigest(take_32(&mut r)?),
            xattrs: ContentDigest(take_32(&mut r)?),
            digest: ContentDigest(take_32(&mut r)?),
        };
        Some((name, e))
    }

    fn get(&self, rel: &str) -> Option<MemoEntry> {
        if self.count == 0 {
            return None;
        }
        let bits = self.slots.len().trailing_zeros();
        let mask = self.slots.len() - 1;
        let h = path_hash(rel.as_bytes());
        let mut s = (h >> (64 - bits)) as usize;
        loop {
            let (tag, at) = self.slots[s];
            let at = (at as usize).checked_sub(1)?;
            if tag == h as u32 {
                let name_at = at + 8;
                if self.bytes.get(name_at..name_at + rel.len()) == Some(rel.as_bytes()) {
                    let (name, e) = self.record(at)?;
                    if name == rel.as_bytes() {
                        return Some(e);
                    }
                }
            }
            s = (s + 1) & mask;
        }
    }

    /// Every record, in file order.
    fn iter(&self) -> impl Iterator<Item = (&[u8], MemoEntry)> {
        let mut at = MEMO_MAGIC.len() + 8;
        (0..self.count).map_while(move |_| {
            let rec = self.record(at)?;
            at += 8 + rec.0.len() + MEMO_FIXED;
            Some(rec)
        })
    }

    /// Writes `entries` in path order: a directory's lookups then read neighbouring records.
    fn encode(entries: &mut [(&str, &MemoEntry)]) -> Vec<u8> {
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::with_capacity(entries.len() * 200 + 32);
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
            for v in [e.mode, e.uid, e.gid] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&e.content.0);
            out.extend_from_slice(&e.xattrs.0);
            out.extend_from_slice(&e.digest.0);
        }
        out
    }
}

fn take_u64(r: &mut &[u8]) -> Option<u64> {
    let (a, b) = r.split_first_chunk::<8>()?;
    *r = b;
    Some(u64::from_le_bytes(*a))
}

fn take_u32(r: &mut &[u8]) -> Option<u32> {
    let (a, b) = r.split_first_chunk::<4>()?;
    *r = b;
    Some(u32::from_le_bytes(*a))
}

fn take_32(r: &mut &[u8]) -> Option<[u8; 32]> {
    let (a, b) = r.split_first_chunk::<32>()?;
    *r = b;
    Some(*a)
}
