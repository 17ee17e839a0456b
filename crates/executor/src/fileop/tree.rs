//! The recursive copy itself, with fsutil's (`cp -a`-like) rules: symlinks are copied as links
//! and never followed, hardlinks between copied files stay hardlinks, devices and fifos are
//! recreated, and each entry gets its owner (per the COPY's owner policy), mode (with
//! `--chmod`), atime/mtime and xattrs. Directory times are set after their contents.
//! Nothing below the top-level target is ever resolved through a destination symlink: files
//! replace what was there, directories refuse to merge into a non-directory.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::fcntl::AtFlags;
use nix::sys::stat::{utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::error::{io_err, FileOpError};
use super::mode::ChmodSpec;
use super::owner::Owner;
use super::pattern::PatternSet;
use super::{CopyOptions, CopyReport, Reuse};

/// Xattrs that describe the overlay itself; copying them into an upperdir would corrupt it.
const SKIPPED_XATTR_PREFIX: &str = "trusted.overlay.";

/// (dev, ino) -> (first copy, whether it is an earlier snapshot's inode).
pub(crate) type FirstCopies = HashMap<(u64, u64), (PathBuf, bool)>;

/// Copies trees with one COPY's owner, mode and exclusion settings.
#[derive(Debug, Clone)]
pub(crate) struct Copier<'a> {
    chown: Option<Owner>,
    keep_source_owner: bool,
    chmod: Option<&'a ChmodSpec>,
    excludes: &'a PatternSet,
    /// `.dockerignore` and the root its patterns are relative to.
    ignore: Option<(&'a PatternSet, &'a Path)>,
    /// (dev, ino) of multiply-linked sources -> their first copy, and whether that is an
    /// earlier snapshot's inode (whose metadata is never set). Shared by parallel copiers.
    inodes: Arc<Mutex<FirstCopies>>,
    cancel: Option<&'a AtomicBool>,
    /// Earlier files to link, and the root that targets are relative to for it.
    reuse: Option<(&'a dyn Reuse, &'a Path)>,
    instruction: &'static str,
    /// The directories of the last earlier file looked at and of the last link made, held
    /// open: linking a directory's unchanged files then looks up one name each, not two long
    /// paths. Each worker has its own.
    link_dirs: LinkDirs,
    pub(crate) report: CopyReport,
}

/// An open directory and its path, reused while consecutive files are in it.
#[derive(Debug)]
struct OpenDir {
    path: PathBuf,
    fd: std::os::fd::OwnedFd,
}

/// [`Copier::link_dirs`]: the earlier snapshot's directory and the target directory.
#[derive(Debug, Default)]
struct LinkDirs {
    old: Option<OpenDir>,
    target: Option<OpenDir>,
}

impl Clone for LinkDirs {
    /// A copy starts with nothing open (a worker on another thread opens its own).
    fn clone(&self) -> Self {
        LinkDirs::default()
    }
}

/// The open directory holding `path` (from `slot` when it is that one already) and the name
/// of `path` in it.
fn dir_of<'s>(
    slot: &'s mut Option<OpenDir>,
    path: &'s Path,
) -> Option<(std::os::fd::BorrowedFd<'s>, &'s std::ffi::OsStr)> {
    use std::os::fd::AsFd;
    let (parent, name) = (path.parent()?, path.file_name()?);
    if slot.as_ref().is_none_or(|d| d.path != parent) {
        let fd = File::open(parent).ok()?;
        *slot = Some(OpenDir {
            path: parent.to_path_buf(),
            fd: fd.into(),
        });
    }
    Some((slot.as_ref()?.fd.as_fd(), name))
}

impl<'a> Copier<'a> {
    pub(crate) fn new(
        chown: Option<Owner>,
        keep_source_owner: bool,
        chmod: Option<&'a ChmodSpec>,
        excludes: &'a PatternSet,
    ) -> Self {
        Self {
            chown,
            keep_source_owner,
            chmod,
            excludes,
            ignore: None,
            inodes: Arc::default(),
            cancel: None,
            reuse: None,
            instruction: "COPY",
            link_dirs: LinkDirs::default(),
            report: CopyReport::default(),
        }
    }

    /// Takes the caller's cancel flag, and its reuse source when the copy writes into `root`
    /// directly (links cannot be made through an overlay mount).
    pub(crate) fn with_options(
        mut self,
        opts: &CopyOptions<'a>,
        root: Option<&'a Path>,
        instruction: &'static str,
    ) -> Self {
        self.cancel = opts.cancel;
        self.reuse = opts.reuse.zip(root);
        self.instruction = instruction;
        self
    }

    /// An earlier file to hardlink in place of copying `src` to `target`: one the reuse
    /// source vouches for, with exactly the size, mtime, mode and owner the copy would give.
    fn reusable(&mut self, src: &Path, meta: &Metadata, target: &Path) -> Option<PathBuf> {
        let (reuse, root) = self.reuse?;
        let old = reuse.identical(src, super::path_below(target, root)?)?;
        let (dir, name) = dir_of(&mut self.link_dirs.old, &old)?;
        let m = nix::sys::stat::fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .ok()?;
        let owner = self.owner_for(meta);
        let same = m.st_mode & libc::S_IFMT == libc::S_IFREG
            && u64::try_from(m.st_size).ok() == Some(meta.len())
            && m.st_mtime == meta.mtime()
            && m.st_mtime_nsec == meta.mtime_nsec()
            && m.st_mode & 0o7777 == self.mode_for(meta)
            && (m.st_uid, m.st_gid) == (owner.uid, owner.gid);
        same.then_some(old)
    }

    /// Hardlinks the earlier file `old` (just vouched for by [`Copier::reusable`]) as `target`,
    /// both looked up in their open directories.
    fn link_earlier(&mut self, old: &Path, target: &Path) -> bool {
        let Some((old_dir, old_name)) = dir_of(&mut self.link_dirs.old, old) else {
            return false;
        };
        let old_dir = old_dir.as_raw_fd();
        let Some((dir, name)) = dir_of(&mut self.link_dirs.target, target) else {
            return false;
        };
        nix::unistd::linkat(
            Some(old_dir),
            old_name,
            Some(dir.as_raw_fd()),
            name,
            // No AT_SYMLINK_FOLLOW: `old` itself is linked (it is a regular file anyway).
            AtFlags::empty(),
        )
        .is_ok()
    }

    /// Keeps the earlier file for `src` (a regular file by its directory entry) without a look
    /// at `src`, when the reuse source vouches for it ([`super::Reuse::unchanged`]) and the
    /// copy would not leave it out anyway.
    fn kept_unseen(&mut self, src: &Path, rel: &str, target: &Path) -> bool {
        let Some((reuse, root)) = self.reuse else {
            return false;
        };
        if !reuse.keeps() || self.is_excluded(rel, false) || self.is_ignored(src, false) {
            return false;
        }
        let unchanged =
            super::path_below(target, root).is_some_and(|rel| reuse.unchanged(src, rel));
        if unchanged {
            self.report.kept += 1;
        }
        unchanged
    }

    /// Treats what `ignore` matches (relative to `root`) as absent from the source.
    pub(crate) fn with_ignore(mut self, ignore: &'a PatternSet, root: &'a Path) -> Self {
        if !ignore.is_empty() {
            self.ignore = Some((ignore, root));
        }
        self
    }

    fn is_ignored(&self, src: &Path, is_dir: bool) -> bool {
        let Some((set, root)) = self.ignore else {
            return false;
        };
        let Some(rel) = super::path_below(src, root) else {
            return false;
        };
        let rel = rel.to_string_lossy();
        !rel.is_empty() && set.matches(&rel) && !(is_dir && set.may_reinclude_below(&rel))
    }

    /// The owner a copied entry gets: `--chown`, else the source's owner from another stage,
    /// else root (BuildKit resets build-context files to 0:0).
    pub(crate) fn owner_for(&self, meta: &Metadata) -> Owner {
        self.chown.unwrap_or(if self.keep_source_owner {
            Owner {
                uid: meta.uid(),
                gid: meta.gid(),
            }
        } else {
            Owner { uid: 0, gid: 0 }
        })
    }

    fn mode_for(&self, meta: &Metadata) -> u32 {
        let perm = meta.mode() & 0o7777;
        self.chmod.map_or(perm, |c| c.apply(perm, meta.is_dir()))
    }

    /// Whether `rel` is excluded by `--exclude` (a directory stays when a `!` pattern may
    /// re-include something inside it).
    pub(crate) fn is_excluded(&self, rel: &str, is_dir: bool) -> bool {
        rel != "."
            && !self.excludes.is_empty()
            && self.excludes.matches(rel)
            && !(is_dir && self.excludes.may_reinclude_below(rel))
    }

    /// MkdirAll with fsutil's rules: missing directories get 0755 and the `--chown` owner.
    pub(crate) fn mkdir_all(&mut self, path: &Path) -> Result<(), FileOpError> {
        let mut missing = Vec::new();
        let mut cur = path;
        loop {
            match fs::symlink_metadata(cur) {
                Ok(m) if m.is_dir() => break,
                Ok(_) => {
                    return Err(FileOpError::NotADirectory {
                        dest: cur.to_path_buf(),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    missing.push(cur.to_path_buf());
                    match cur.parent() {
                        Some(p) => cur = p,
                        None => break,
                    }
                }
                Err(e) => return Err(io_err("lstat", cur)(e)),
            }
        }
        for dir in missing.into_iter().rev() {
            fs::create_dir(&dir).map_err(io_err("mkdir", &dir))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                .map_err(io_err("chmod", &dir))?;
            if let Some(o) = self.chown {
                std::os::unix::fs::lchown(&dir, Some(o.uid), Some(o.gid))
                    .map_err(io_err("chown", &dir))?;
            }
            self.report.dirs += 1;
        }
        Ok(())
    }

    /// Copies `src` to `target`. `rel` is the path below the copied source used for
    /// `--exclude` ("" for the top entry, which is never matched here); `overwrite_meta` is
    /// false for the top entry, whose existing directory keeps its metadata.
    pub(crate) fn copy(
        &mut self,
        src: &Path,
        rel: &str,
        target: &Path,
        overwrite_meta: bool,
    ) -> Result<(), FileOpError> {
        self.copy_entry(src, rel, target, overwrite_meta, false)
    }

    /// [`Copier::copy`]; `fresh` says `target`'s directory was created by this copy just now,
    /// so nothing can be in the way.
    pub(crate) fn copy_entry(
        &mut self,
        src: &Path,
        rel: &str,
        target: &Path,
        overwrite_meta: bool,
        fresh: bool,
    ) -> Result<(), FileOpError> {
        if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(FileOpError::Cancelled {
                instruction: self.instruction,
            });
        }
        let meta = fs::symlink_metadata(src).map_err(io_err("lstat", src))?;
        let ft = meta.file_type();
        if !rel.is_empty() && self.is_excluded(rel, ft.is_dir()) {
            return Ok(());
        }
        if self.is_ignored(src, ft.is_dir()) {
            return Ok(());
        }
        if !ft.is_dir() && !fresh {
            ensure_empty_file_target(target)?;
        }
        let mut copy_info = true;
        if ft.is_dir() {
            let created = dir_only(target)?;
            if created {
                self.report.dirs += 1;
            }
            for (name, is_file) in sorted_entries(src)? {
                let child_rel = if rel.is_empty() {
                    name.to_string_lossy().into_owned()
                } else {
                    format!("{rel}/{}", name.to_string_lossy())
                };
                let (child_src, child_target) = (src.join(&name), target.join(&name));
                // In a directory this copy just made, nothing is in the way of a kept file.
                if created && is_file && self.kept_unseen(&child_src, &child_rel, &child_target) {
                    continue;
                }
                self.copy_entry(&child_src, &child_rel, &child_target, true, created)?;
            }
            if !overwrite_meta {
                copy_info = created;
            }
        } else if ft.is_file() {
            // A multiply-linked source stays linked: its first copy is remembered, and the map
            // stays locked while that copy is made, so a copier on another thread links to a
            // file that exists.
            let map = Arc::clone(&self.inodes);
            let mut inodes = (meta.nlink() > 1).then(|| lock(&map));
            let key = (meta.dev(), meta.ino());
            let first = inodes.as_ref().and_then(|m| m.get(&key).cloned());
            // The first copy may have been replaced since (the same source copied twice in
            // one COPY); then this one is copied afresh.
            let linked = first.filter(|(first, _)| fs::hard_link(first, target).is_ok());
            let earlier = match linked {
                Some(_) => None,
                None => self.reusable(src, &meta, target),
            };
            // A multiply-linked source is written (or linked) in the new tree, where its
            // other names can be linked to it.
            let keep = inodes.is_none() && self.reuse.is_some_and(|(reuse, _)| reuse.keeps());
            if let Some((_, shared)) = linked {
                self.report.hardlinks += 1;
                copy_info = !shared;
            } else if let Some(old) = earlier.as_ref().filter(|_| keep) {
                // Left where the earlier copy put it (its metadata is already right); the
                // caller lays this tree over that one.
                self.report.kept += 1;
                if let Some((reuse, root)) = self.reuse {
                    if let Some(rel) = super::path_below(target, root) {
                        reuse.kept(src, rel, old);
                    }
                }
                return Ok(());
            } else {
                let reused = earlier.is_some_and(|old| self.link_earlier(&old, target));
                if reused {
                    // The inode belongs to an earlier snapshot too: its metadata is already
                    // right and must not be touched.
                    copy_info = false;
                    self.report.reused += 1;
                } else {
                    self.report.bytes += copy_file(src, target)?;
                    self.report.files += 1;
                }
                if let Some(m) = inodes.as_mut() {
                    m.insert(key, (target.to_path_buf(), reused));
                }
            }
            drop(inodes);
            if let Some((reuse, root)) = self.reuse {
                if let Some(rel) = super::path_below(target, root) {
                    reuse.wrote(src, rel);
                }
            }
        } else if ft.is_symlink() {
            let link = fs::read_link(src).map_err(io_err("readlink", src))?;
            std::os::unix::fs::symlink(&link, target).map_err(io_err("symlink", target))?;
            self.report.symlinks += 1;
        } else {
            let kind = SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT);
            nix::sys::stat::mknod(target, kind, Mode::from_bits_truncate(0o600), meta.rdev())
                .map_err(|e| io_err("mknod", target)(io::Error::from(e)))?;
            self.report.files += 1;
        }
        if copy_info {
            self.apply_meta(&meta, src, target)?;
        }
        Ok(())
    }

    /// Copies the entries `names` of directory `src` into the existing directory `target` on up
    /// to `threads` threads, each taking every n-th entry; `target` keeps its own metadata, as
    /// [`Copier::copy`] leaves a top-level directory that exists. What each entry becomes does
    /// not depend on which thread copies it.
    pub(crate) fn copy_contents_parallel(
        &mut self,
        src: &Path,
        names: &[OsString],
        target: &Path,
        threads: usize,
    ) -> Result<(), FileOpError> {
        let threads = threads.clamp(1, names.len().max(1));
        let reports = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|first| {
                    let mut copier = self.worker();
                    scope.spawn(move || {
                        for name in names.iter().skip(first).step_by(threads) {
                            let rel = name.to_string_lossy();
                            copier.copy_entry(
                                &src.join(name),
                                &rel,
                                &target.join(name),
                                true,
                                false,
                            )?;
                        }
                        Ok::<_, FileOpError>(copier.report)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("a copy worker panicked"))
                .collect::<Vec<_>>()
        });
        for report in reports {
            self.report.add(&report?);
        }
        Ok(())
    }

    /// The first copies of multiply-linked sources, relative to `root` (where they were made).
    pub(crate) fn first_copies_below(&self, root: &Path) -> FirstCopies {
        lock(&self.inodes)
            .iter()
            .filter_map(|(k, (path, shared))| {
                let rel = path.strip_prefix(root).ok()?;
                Some((*k, (rel.to_path_buf(), *shared)))
            })
            .collect()
    }

    /// Takes first copies made by an earlier copier, relative to `root` (where they are now).
    pub(crate) fn with_first_copies(self, root: &Path, firsts: FirstCopies) -> Self {
        lock(&self.inodes).extend(
            firsts
                .into_iter()
                .map(|(k, (rel, shared))| (k, (root.join(rel), shared))),
        );
        self
    }

    /// A copier with the same settings and hardlink map, and a report of its own.
    fn worker(&self) -> Copier<'a> {
        Copier {
            report: CopyReport::default(),
            ..self.clone()
        }
    }

    /// `--parents`: creates the directories between the pivot and a match, each taking the
    /// metadata of its source directory when it is new.
    pub(crate) fn copy_parent_dirs(
        &mut self,
        pivot: &Path,
        below: &Path,
        dest: &Path,
    ) -> Result<(), FileOpError> {
        let parts: Vec<_> = below.components().collect();
        let mut src = pivot.to_path_buf();
        let mut target = dest.to_path_buf();
        for part in &parts[..parts.len().saturating_sub(1)] {
            src.push(part);
            target.push(part);
            let meta = fs::metadata(&src).map_err(io_err("stat", &src))?;
            if dir_only(&target)? {
                self.report.dirs += 1;
                self.apply_meta(&meta, &src, &target)?;
            }
        }
        Ok(())
    }

    /// Writes a heredoc source: BuildKit makes it a 0644 root-owned file, then copies it.
    pub(crate) fn write_inline(
        &mut self,
        content: &[u8],
        target: &Path,
    ) -> Result<(), FileOpError> {
        ensure_empty_file_target(target)?;
        let mut f = create_new(target)?;
        f.write_all(content).map_err(io_err("write", target))?;
        drop(f);
        let owner = self.chown.unwrap_or(Owner { uid: 0, gid: 0 });
        std::os::unix::fs::lchown(target, Some(owner.uid), Some(owner.gid))
            .map_err(io_err("chown", target))?;
        let mode = self.chmod.map_or(0o644, |c| c.apply(0o644, false));
        fs::set_permissions(target, fs::Permissions::from_mode(mode))
            .map_err(io_err("chmod", target))?;
        self.report.files += 1;
        self.report.bytes += content.len() as u64;
        Ok(())
    }

    fn apply_meta(
        &mut self,
        meta: &Metadata,
        src: &Path,
        target: &Path,
    ) -> Result<(), FileOpError> {
        let owner = self.owner_for(meta);
        std::os::unix::fs::lchown(target, Some(owner.uid), Some(owner.gid))
            .map_err(io_err("chown", target))?;
        // chmod after chown: chown clears setuid/setgid bits.
        if !meta.file_type().is_symlink() {
            fs::set_permissions(target, fs::Permissions::from_mode(self.mode_for(meta)))
                .map_err(io_err("chmod", target))?;
        }
        self.copy_xattrs(src, target);
        set_times(
            target,
            meta.atime(),
            meta.atime_nsec(),
            meta.mtime(),
            meta.mtime_nsec(),
        )
    }

    /// BuildKit logs and ignores xattr failures (e.g. `user.*` on symlinks); they are counted.
    fn copy_xattrs(&mut self, src: &Path, target: &Path) {
        let Ok(names) = xattr::list(src) else {
            return;
        };
        for name in names {
            if name.to_string_lossy().starts_with(SKIPPED_XATTR_PREFIX) {
                continue;
            }
            match xattr::get(src, &name) {
                Ok(Some(value)) if xattr::set(target, &name, &value).is_ok() => {
                    self.report.xattrs += 1;
                }
                _ => self.report.xattrs_skipped += 1,
            }
        }
    }
}

/// The names in directory `dir`, sorted by their bytes (the order copies are made in), each
/// with whether its directory entry says it is a regular file (without a stat: false where the
/// filesystem does not say).
fn sorted_entries(dir: &Path) -> Result<Vec<(OsString, bool)>, FileOpError> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(io_err("read directory", dir))?
        .map(|e| e.map(|e| (e.file_name(), e.file_type().is_ok_and(|t| t.is_file()))))
        .collect::<Result<_, _>>()
        .map_err(io_err("read directory", dir))?;
    entries.sort();
    Ok(entries)
}

/// The names in directory `dir`, sorted by their bytes (the order copies are made in).
pub(crate) fn sorted_names(dir: &Path) -> Result<Vec<OsString>, FileOpError> {
    Ok(sorted_entries(dir)?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets atime and mtime without following a symlink.
pub(crate) fn set_times(
    path: &Path,
    asec: i64,
    ansec: i64,
    msec: i64,
    mnsec: i64,
) -> Result<(), FileOpError> {
    utimensat(
        None,
        path,
        &TimeSpec::new(asec, ansec),
        &TimeSpec::new(msec, mnsec),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| io_err("set times", path)(io::Error::from(e)))
}

/// Creates `target` as a directory unless one is there; a file or symlink in the way is an
/// error, as in BuildKit. Returns whether it was created.
fn dir_only(target: &Path) -> Result<bool, FileOpError> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => Ok(false),
        Ok(_) => Err(FileOpError::NotADirectory {
            dest: target.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir(target).map_err(io_err("mkdir", target))?;
            Ok(true)
        }
        Err(e) => Err(io_err("lstat", target)(e)),
    }
}

/// A file may replace a file or symlink, never a directory.
pub(crate) fn ensure_empty_file_target(target: &Path) -> Result<(), FileOpError> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => Err(FileOpError::ReplaceDirectoryWithFile {
            dest: target.to_path_buf(),
        }),
        Ok(_) => fs::remove_file(target).map_err(io_err("remove", target)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("lstat", target)(e)),
    }
}

/// Opens a new file that must not exist yet (and so is never a symlink's target).
pub(crate) fn create_new(target: &Path) -> Result<File, FileOpError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(target)
        .map_err(io_err("create", target))
}

fn copy_file(src: &Path, target: &Path) -> Result<u64, FileOpError> {
    let mut input = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(src)
        .map_err(io_err("open", src))?;
    let mut output = create_new(target)?;
    // std::io::copy between files uses copy_file_range, so data stays in the kernel.
    io::copy(&mut input, &mut output).map_err(io_err("copy data to", target))
}
