//! OCI layer tar -> directory. Two modes: `unpack_layer` keeps the layer as an overlayfs upperdir
//! (whiteouts become 0/0 character devices, opaque markers an xattr), `apply_layer` flattens it onto
//! an existing tree (whiteouts delete). Every path is resolved component by component from a
//! directory descriptor with O_NOFOLLOW, so nothing is ever written outside the destination.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Cursor, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{self, Mode as Perm, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{self, Gid, Uid, UnlinkatFlags};
use oci_spec::image::Digest;

use crate::hash::HashingReader;
use crate::sys;
use crate::ExportError;

/// Options of [`unpack_layer`] and [`apply_layer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnpackOptions {
    /// lchown every entry to the uid/gid in the archive (needs root or a user namespace).
    pub preserve_ownership: bool,
    /// Apply `SCHILY.xattr.*` records (`trusted.overlay.*` ones are always ignored).
    pub xattrs: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            preserve_ownership: true,
            xattrs: true,
        }
    }
}

/// Counts of what an unpack did, and the digest of the uncompressed stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnpackStats {
    /// sha256 of the uncompressed tar: compare with the config's rootfs.diff_ids entry.
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// Entries created (files, directories, links, devices), whiteouts not included.
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Whiteouts and opaque markers recorded (unpack) or applied (apply).
    pub whiteouts: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Overlay,
    Flatten,
}

/// Wraps `reader` in the decompressor its first bytes call for: gzip, zstd, bzip2, xz, or none.
pub fn decompress<'a>(mut reader: impl Read + 'a) -> Result<Box<dyn Read + 'a>, ExportError> {
    let mut magic = Vec::with_capacity(6);
    (&mut reader)
        .take(6)
        .read_to_end(&mut magic)
        .map_err(|source| ExportError::ReadArchive {
            entry: None,
            source,
        })?;
    let stream = Cursor::new(magic.clone()).chain(reader);
    let zstd_err = |source| ExportError::ReadArchive {
        entry: None,
        source,
    };
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(stream))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(stream).map_err(zstd_err)?)
    } else if magic.starts_with(b"BZh") {
        Box::new(bzip2::read::MultiBzDecoder::new(stream))
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Box::new(xz2::read::XzDecoder::new_multi_decoder(stream))
    } else {
        Box::new(stream)
    })
}

/// Unpacks a layer (any compression) into `dest` as an overlayfs upperdir: `.wh.<name>` becomes a
/// character device 0/0, `.wh..wh..opq` the xattr `trusted.overlay.opaque=y` on its directory.
pub fn unpack_layer(
    reader: impl Read,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, ExportError> {
    run(reader, dest, opts, Mode::Overlay)
}

/// Applies a layer (any compression) onto the plain tree `dest`: whiteouts delete what they name,
/// opaque markers delete the directory's earlier content. Used for flattening (`type=local`,
/// `type=tar`, `forge import`) and for ADD's archive extraction.
pub fn apply_layer(
    reader: impl Read,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, ExportError> {
    run(reader, dest, opts, Mode::Flatten)
}

fn run(
    reader: impl Read,
    dest: &Path,
    opts: &UnpackOptions,
    mode: Mode,
) -> Result<UnpackStats, ExportError> {
    let dest_err = |source| ExportError::Destination {
        path: dest.to_path_buf(),
        source,
    };
    fs::create_dir_all(dest).map_err(dest_err)?;
    let root: OwnedFd = File::open(dest).map_err(dest_err)?.into();
    let mut unpacker = Unpacker {
        root,
        mode,
        opts,
        stats: Counts::default(),
        dirs: Vec::new(),
        written: HashSet::new(),
        cache: None,
    };
    let mut archive = tar::Archive::new(HashingReader::new(decompress(reader)?));
    let entries = archive
        .entries()
        .map_err(|source| ExportError::ReadArchive {
            entry: None,
            source,
        })?;
    for entry in entries {
        let mut entry = entry.map_err(|source| ExportError::ReadArchive {
            entry: None,
            source,
        })?;
        unpacker.entry(&mut entry)?;
    }
    unpacker.finish()?;
    // The tar reader stops at the end-of-archive blocks; the diff_id covers every byte.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|source| ExportError::ReadArchive {
        entry: None,
        source,
    })?;
    let (diff_id, uncompressed_size) = rest.finish();
    let Counts {
        entries,
        bytes,
        whiteouts,
    } = unpacker.stats;
    Ok(UnpackStats {
        diff_id,
        uncompressed_size,
        entries,
        bytes,
        whiteouts,
    })
}

#[derive(Debug, Default)]
struct Counts {
    entries: u64,
    bytes: u64,
    whiteouts: u64,
}

type Components = Vec<Vec<u8>>;

/// Splits an archive path into components; refuses absolute paths and `..`.
fn components(path: &[u8]) -> Result<Components, &'static str> {
    if path.starts_with(b"/") {
        return Err("absolute path");
    }
    let mut out = Vec::new();
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err("path contains `..`"),
            _ => out.push(comp.to_vec()),
        }
    }
    Ok(out)
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

fn display(path: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(path))
}

struct Unpacker<'a> {
    root: OwnedFd,
    mode: Mode,
    opts: &'a UnpackOptions,
    stats: Counts,
    /// Directories and their mtimes, set at the end because creating children changes them.
    dirs: Vec<(Components, i64)>,
    /// Paths this layer wrote (flatten mode): an opaque marker keeps them.
    written: HashSet<Vec<u8>>,
    /// The last parent directory opened, since consecutive entries mostly share it.
    cache: Option<(Components, OwnedFd)>,
}

/// Metadata of one entry, with PAX records applied.
struct Meta {
    uid: u64,
    gid: u64,
    mode: u32,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn exists(dir: RawFd, name: &[u8]) -> io::Result<Option<stat::FileStat>> {
    match stat::fstatat(Some(dir), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn is_dir(st: &stat::FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

fn is_symlink(st: &stat::FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
}

fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let fd = sys::openat(dir, b".", OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    let mut d = nix::dir::Dir::from_fd(fd.as_raw_fd())?;
    // Dir now owns the descriptor.
    std::mem::forget(fd);
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// Removes `name` in `dir` and, if it is a directory, everything under it, never following symlinks.
fn remove_all_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let Some(st) = exists(dir.as_raw_fd(), name)? else {
        return Ok(());
    };
    if is_dir(&st) {
        let sub = sys::openat(
            dir,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        )?;
        for child in list_dir(sub.as_fd())? {
            remove_all_at(sub.as_fd(), &child)?;
        }
        unistd::unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::RemoveDir)?;
    } else {
        unistd::unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir)?;
    }
    Ok(())
}

/// A numeric header field, with an empty one (all NULs or spaces) read as 0 the way Go's
/// archive/tar reads it: some writers leave uid/gid/mtime blank.
fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> io::Result<u64> {
    match parsed {
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        other => other,
    }
}

fn pax_number(value: &[u8]) -> Option<i64> {
    // PAX times may carry a fraction ("1700000000.123"); the whole seconds are enough here.
    let text = std::str::from_utf8(value).ok()?;
    text.split('.').next()?.parse().ok()
}

impl Unpacker<'_> {
    fn unpack_err<'p>(
        entry: &'p Path,
        step: &'static str,
    ) -> impl FnOnce(io::Error) -> ExportError + 'p {
        move |source| ExportError::Unpack {
            entry: entry.to_path_buf(),
            step,
            source,
        }
    }

    /// Opens the directory `comps` below the root, one component at a time with O_NOFOLLOW.
    /// Missing directories are created when `create` is set, otherwise `None` is returned.
    fn walk(
        &mut self,
        comps: &[Vec<u8>],
        create: bool,
        entry: &Path,
    ) -> Result<Option<OwnedFd>, ExportError> {
        let mut cur = self
            .root
            .try_clone()
            .map_err(Self::unpack_err(entry, "opening the destination"))?;
        for (i, comp) in comps.iter().enumerate() {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
            let next = match sys::openat(cur.as_fd(), comp, flags) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    if !create {
                        return Ok(None);
                    }
                    stat::mkdirat(
                        Some(cur.as_raw_fd()),
                        comp.as_slice(),
                        Perm::from_bits_truncate(0o755),
                    )
                    .map_err(|e| {
                        Self::unpack_err(entry, "creating a parent directory")(e.into())
                    })?;
                    if self.mode == Mode::Flatten {
                        self.written.insert(join(&comps[..=i]));
                    }
                    sys::openat(cur.as_fd(), comp, flags)
                        .map_err(Self::unpack_err(entry, "opening a parent directory"))?
                }
                Err(e) => {
                    let st = exists(cur.as_raw_fd(), comp).ok().flatten();
                    if st.as_ref().is_some_and(is_symlink) {
                        return Err(ExportError::UnsafePath {
                            entry: entry.to_path_buf(),
                            reason: "a parent directory is a symlink",
                        });
                    }
                    return Err(Self::unpack_err(entry, "opening a parent directory")(e));
                }
            };
            cur = next;
        }
        Ok(Some(cur))
    }

    /// The parent directory of an entry (created if missing), from the one-entry cache if it matches.
    fn parent(&mut self, comps: &[Vec<u8>], entry: &Path) -> Result<OwnedFd, ExportError> {
        if let Some((cached, fd)) = &self.cache {
            if cached.as_slice() == comps {
                return fd
                    .try_clone()
                    .map_err(Self::unpack_err(entry, "opening a parent directory"));
            }
        }
        let fd = self
            .walk(comps, true, entry)?
            .expect("walk with create returns a directory");
        let copy = fd
            .try_clone()
            .map_err(Self::unpack_err(entry, "opening a parent directory"))?;
        self.cache = Some((comps.to_vec(), fd));
        Ok(copy)
    }

    /// Removes whatever is at `name` before an entry takes its place.
    fn remove(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        existing: &Option<stat::FileStat>,
        entry: &Path,
    ) -> Result<(), ExportError> {
        let Some(st) = existing else {
            return Ok(());
        };
        remove_all_at(parent, name).map_err(Self::unpack_err(entry, "removing what was there"))?;
        if is_dir(st) {
            // The cached directory may have been below the one removed.
            self.cache = None;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> Result<(), ExportError> {
        let raw_path = e.path_bytes().into_owned();
        let entry = display(&raw_path);
        let kind = e.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            return Ok(());
        }
        let comps = components(&raw_path).map_err(|reason| ExportError::UnsafePath {
            entry: entry.clone(),
            reason,
        })?;
        let Some((name, parent_comps)) = comps.split_last() else {
            // The archive's root entry ("./"): the destination's own metadata stays as it is.
            return Ok(());
        };
        let header_err = |source| ExportError::ReadArchive {
            entry: Some(entry.clone()),
            source,
        };
        let h = e.header();
        let old = h.as_old();
        let mut meta = Meta {
            uid: numeric(h.uid(), &old.uid).map_err(header_err)?,
            gid: numeric(h.gid(), &old.gid).map_err(header_err)?,
            mode: numeric(h.mode().map(u64::from), &old.mode).map_err(header_err)? as u32 & 0o7777,
            mtime: numeric(h.mtime(), &old.mtime).map_err(header_err)? as i64,
            xattrs: Vec::new(),
        };
        let dev = if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            let major = h.device_major().map_err(header_err)?.unwrap_or(0);
            let minor = h.device_minor().map_err(header_err)?.unwrap_or(0);
            stat::makedev(u64::from(major), u64::from(minor))
        } else {
            0
        };
        let link = e.link_name_bytes().map(|l| l.into_owned());
        if let Some(pax) = e.pax_extensions().map_err(header_err)? {
            for ext in pax {
                let ext = ext.map_err(header_err)?;
                let (key, value) = (ext.key_bytes(), ext.value_bytes());
                if let Some(attr) = key.strip_prefix(b"SCHILY.xattr.") {
                    let overlay =
                        attr.starts_with(b"trusted.overlay.") || attr.starts_with(b"user.overlay.");
                    if self.opts.xattrs && !overlay {
                        meta.xattrs.push((attr.to_vec(), value.to_vec()));
                    }
                } else if let Some(n) = pax_number(value) {
                    match key {
                        b"uid" => meta.uid = n as u64,
                        b"gid" => meta.gid = n as u64,
                        b"mtime" => meta.mtime = n,
                        _ => {}
                    }
                }
            }
        }

        if let Some(target) = name.strip_prefix(b".wh.") {
            return self.whiteout(parent_comps, target, &meta, &entry);
        }

        let parent = self.parent(parent_comps, &entry)?;
        let pfd = parent.as_raw_fd();
        let existing =
            exists(pfd, name).map_err(Self::unpack_err(&entry, "inspecting what is there"))?;
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                if !existing.as_ref().is_some_and(is_dir) {
                    self.remove(parent.as_fd(), name, &existing, &entry)?;
                    stat::mkdirat(Some(pfd), name.as_slice(), Perm::from_bits_truncate(0o700))
                        .map_err(|e| {
                            Self::unpack_err(&entry, "creating the directory")(e.into())
                        })?;
                }
                let fd = sys::openat(
                    parent.as_fd(),
                    name,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
                )
                .map_err(Self::unpack_err(&entry, "opening the directory"))?;
                self.meta_fd(fd.as_fd(), &meta, &entry, false)?;
                self.dirs.push((comps.clone(), meta.mtime));
            }
            T::Regular | T::Continuous => {
                self.remove(parent.as_fd(), name, &existing, &entry)?;
                let fd = sys::openat(
                    parent.as_fd(),
                    name,
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
                )
                .map_err(Self::unpack_err(&entry, "creating the file"))?;
                let mut file = File::from(fd);
                let n =
                    io::copy(e, &mut file).map_err(Self::unpack_err(&entry, "writing the file"))?;
                self.stats.bytes += n;
                self.meta_fd(file.as_fd(), &meta, &entry, true)?;
            }
            T::Symlink => {
                let target = link.unwrap_or_default();
                self.remove(parent.as_fd(), name, &existing, &entry)?;
                unistd::symlinkat(target.as_slice(), Some(pfd), name.as_slice())
                    .map_err(|e| Self::unpack_err(&entry, "creating the symlink")(e.into()))?;
                self.meta_at(pfd, name, &meta, &entry, true)?;
            }
            T::Char | T::Block | T::Fifo => {
                let sflag = match kind {
                    T::Char => SFlag::S_IFCHR,
                    T::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                self.remove(parent.as_fd(), name, &existing, &entry)?;
                stat::mknodat(
                    Some(pfd),
                    name.as_slice(),
                    sflag,
                    Perm::from_bits_truncate(0o600),
                    dev,
                )
                .map_err(|e| Self::unpack_err(&entry, "creating the device node")(e.into()))?;
                self.meta_at(pfd, name, &meta, &entry, false)?;
            }
            T::Link => {
                let target = link.unwrap_or_default();
                self.hardlink(parent.as_fd(), name, &comps, &target, &existing, &entry)?;
            }
            other => {
                return Err(ExportError::UnsupportedEntry {
                    entry,
                    kind: char::from(other.as_byte()),
                });
            }
        }
        self.stats.entries += 1;
        if self.mode == Mode::Flatten {
            self.written.insert(join(&comps));
        }
        Ok(())
    }

    fn hardlink(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        comps: &[Vec<u8>],
        target: &[u8],
        existing: &Option<stat::FileStat>,
        entry: &Path,
    ) -> Result<(), ExportError> {
        let target_path = display(target);
        let refuse = |reason| ExportError::UnsafeHardlink {
            entry: entry.to_path_buf(),
            target: target_path.clone(),
            reason,
        };
        let tcomps = components(target).map_err(refuse)?;
        if tcomps.as_slice() == comps {
            return Ok(());
        }
        let Some((tname, tparent_comps)) = tcomps.split_last() else {
            return Err(refuse("target is the root"));
        };
        let tparent = match self.walk(tparent_comps, false, entry) {
            Ok(Some(fd)) => fd,
            Ok(None) => return Err(refuse("target does not exist")),
            Err(ExportError::UnsafePath { .. }) => {
                return Err(refuse("target's parent is a symlink"))
            }
            Err(e) => return Err(e),
        };
        match exists(tparent.as_raw_fd(), tname) {
            Ok(Some(st)) if is_dir(&st) => return Err(refuse("target is a directory")),
            Ok(Some(_)) => {}
            _ => return Err(refuse("target does not exist")),
        }
        self.remove(parent, name, existing, entry)?;
        unistd::linkat(
            Some(tparent.as_raw_fd()),
            tname.as_slice(),
            Some(parent.as_raw_fd()),
            name,
            AtFlags::empty(),
        )
        .map_err(|e| Self::unpack_err(entry, "creating the hardlink")(e.into()))?;
        Ok(())
    }

    fn whiteout(
        &mut self,
        parent_comps: &[Vec<u8>],
        target: &[u8],
        meta: &Meta,
        entry: &Path,
    ) -> Result<(), ExportError> {
        if target == b".wh..opq" {
            self.stats.whiteouts += 1;
            return self.opaque(parent_comps, entry);
        }
        if target.starts_with(b".wh.") {
            // Other aufs metadata (.wh..wh.plnk, .wh..wh.aufs): nothing to apply.
            return Ok(());
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err(ExportError::UnsafePath {
                entry: entry.to_path_buf(),
                reason: "whiteout of `.` or `..`",
            });
        }
        self.stats.whiteouts += 1;
        match self.mode {
            Mode::Overlay => {
                let parent = self.parent(parent_comps, entry)?;
                let existing = exists(parent.as_raw_fd(), target)
                    .map_err(Self::unpack_err(entry, "inspecting what is there"))?;
                self.remove(parent.as_fd(), target, &existing, entry)?;
                stat::mknodat(
                    Some(parent.as_raw_fd()),
                    target,
                    SFlag::S_IFCHR,
                    Perm::empty(),
                    0,
                )
                .map_err(|e| Self::unpack_err(entry, "creating the whiteout device")(e.into()))?;
                self.meta_at(parent.as_raw_fd(), target, meta, entry, false)?;
            }
            Mode::Flatten => {
                if let Some(parent) = self.walk(parent_comps, false, entry)? {
                    remove_all_at(parent.as_fd(), target)
                        .map_err(Self::unpack_err(entry, "deleting the whited-out path"))?;
                    self.cache = None;
                }
            }
        }
        Ok(())
    }

    fn opaque(&mut self, dir_comps: &[Vec<u8>], entry: &Path) -> Result<(), ExportError> {
        match self.mode {
            Mode::Overlay => {
                let dir = self.parent(dir_comps, entry)?;
                sys::set_xattr_fd(dir.as_fd(), b"trusted.overlay.opaque", b"y")
                    .map_err(Self::unpack_err(entry, "marking the directory opaque"))?;
            }
            Mode::Flatten => {
                let Some(dir) = self.walk(dir_comps, false, entry)? else {
                    return Ok(());
                };
                let children = list_dir(dir.as_fd())
                    .map_err(Self::unpack_err(entry, "listing the opaque directory"))?;
                for child in children {
                    let mut path = dir_comps.to_vec();
                    path.push(child.clone());
                    if !self.written.contains(&join(&path)) {
                        remove_all_at(dir.as_fd(), &child)
                            .map_err(Self::unpack_err(entry, "emptying the opaque directory"))?;
                    }
                }
                self.cache = None;
            }
        }
        Ok(())
    }

    fn set_xattrs(
        &self,
        meta: &Meta,
        entry: &Path,
        mut set: impl FnMut(&[u8], &[u8]) -> io::Result<()>,
    ) -> Result<(), ExportError> {
        for (name, value) in &meta.xattrs {
            match set(name, value) {
                Ok(()) => {}
                // A filesystem without xattr support: the content still unpacks.
                Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
                Err(e) => return Err(Self::unpack_err(entry, "setting an xattr")(e)),
            }
        }
        Ok(())
    }

    /// Ownership, mode, xattrs and (for files) times of an open file or directory.
    fn meta_fd(
        &self,
        fd: BorrowedFd<'_>,
        meta: &Meta,
        entry: &Path,
        times: bool,
    ) -> Result<(), ExportError> {
        let raw = fd.as_raw_fd();
        // chown first: it clears set-id bits and file capabilities that chmod and xattrs then set.
        if self.opts.preserve_ownership {
            unistd::fchown(
                raw,
                Some(Uid::from_raw(meta.uid as u32)),
                Some(Gid::from_raw(meta.gid as u32)),
            )
            .map_err(|e| Self::unpack_err(entry, "changing ownership")(e.into()))?;
        }
        stat::fchmod(raw, Perm::from_bits_truncate(meta.mode))
            .map_err(|e| Self::unpack_err(entry, "changing the mode")(e.into()))?;
        self.set_xattrs(meta, entry, |n, v| sys::set_xattr_fd(fd, n, v))?;
        if times {
            let t = TimeSpec::new(meta.mtime, 0);
            stat::futimens(raw, &t, &t)
                .map_err(|e| Self::unpack_err(entry, "setting the mtime")(e.into()))?;
        }
        Ok(())
    }

    /// Ownership, mode, xattrs and times of a symlink or device node, by name in its parent.
    fn meta_at(
        &self,
        parent: RawFd,
        name: &[u8],
        meta: &Meta,
        entry: &Path,
        symlink: bool,
    ) -> Result<(), ExportError> {
        if self.opts.preserve_ownership {
            unistd::fchownat(
                Some(parent),
                name,
                Some(Uid::from_raw(meta.uid as u32)),
                Some(Gid::from_raw(meta.gid as u32)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| Self::unpack_err(entry, "changing ownership")(e.into()))?;
        }
        if !symlink {
            stat::fchmodat(
                Some(parent),
                name,
                Perm::from_bits_truncate(meta.mode),
                stat::FchmodatFlags::NoFollowSymlink,
            )
            .or_else(|e| {
                if e == Errno::EOPNOTSUPP || e == Errno::ENOTSUP {
                    // Older kernels lack AT_SYMLINK_NOFOLLOW for fchmodat; the name is not a symlink.
                    stat::fchmodat(
                        Some(parent),
                        name,
                        Perm::from_bits_truncate(meta.mode),
                        stat::FchmodatFlags::FollowSymlink,
                    )
                } else {
                    Err(e)
                }
            })
            .map_err(|e| Self::unpack_err(entry, "changing the mode")(e.into()))?;
        }
        if !meta.xattrs.is_empty() {
            // The /proc magic link names the directory we hold open, so no path is re-resolved.
            let mut path = format!("/proc/self/fd/{parent}/").into_bytes();
            path.extend_from_slice(name);
            let cpath = std::ffi::CString::new(path).map_err(|_| {
                Self::unpack_err(entry, "setting an xattr")(io::ErrorKind::InvalidInput.into())
            })?;
            self.set_xattrs(meta, entry, |n, v| sys::set_xattr_path(&cpath, n, v))?;
        }
        let t = TimeSpec::new(meta.mtime, 0);
        stat::utimensat(Some(parent), name, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| Self::unpack_err(entry, "setting the mtime")(e.into()))?;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ExportError> {
        self.cache = None;
        let dirs = std::mem::take(&mut self.dirs);
        for (comps, mtime) in dirs.iter().rev() {
            let (name, parent_comps) = comps.split_last().expect("directories have a name");
            let entry = display(&join(comps));
            // A later whiteout may have removed it, or a parent symlink replaced it: skip those.
            let Ok(Some(parent)) = self.walk(parent_comps, false, &entry) else {
                continue;
            };
            let t = TimeSpec::new(*mtime, 0);
            match stat::utimensat(
                Some(parent.as_raw_fd()),
                name.as_slice(),
                &t,
                &t,
                UtimensatFlags::NoFollowSymlink,
            ) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => {
                    return Err(Self::unpack_err(&entry, "setting the directory mtime")(
                        e.into(),
                    ))
                }
            }
        }
        Ok(())
    }
}
