//! COPY and ADD as pure filesystem operations between two directory trees, with BuildKit's
//! semantics (dockerfile2llb's dispatchCopy + fsutil's copy): wildcards, directory contents vs
//! files, destination trailing-slash rules, WORKDIR-relative destinations, `--chown`,
//! `--chmod`, `--parents`, `--exclude`, heredoc sources and ADD's local archive extraction.
//! The caller mounts the trees: `src_root` is the build context or another stage's rootfs,
//! `dest_root` the target stage's merged rootfs. Paths on both sides are resolved inside their
//! root, as in a chroot, so no symlink can lead a copy out of either tree.

mod archive;
mod error;
mod mode;
mod owner;
mod pattern;
mod scoped;
mod sources;
mod tree;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::AtomicBool;

pub use error::FileOpError;
pub use mode::ChmodSpec;

use owner::resolve_chown;
use pattern::PatternSet;
use scoped::{clean_abs, resolve_in_root};
use sources::{expand, relative_to, Matched};
use tree::Copier;

/// One source of a COPY/ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopySource {
    /// A path (variables already expanded) inside the source root; may hold wildcards.
    /// URLs and git refs are refused: the caller downloads them first.
    Path(String),
    /// A heredoc (`COPY <<EOF name`): written as a 0644 file called `name`.
    Inline { name: String, content: Vec<u8> },
}

/// Everything one COPY or ADD instruction asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySpec {
    pub sources: Vec<CopySource>,
    /// The destination as written (expanded); relative to `workdir` unless absolute. A
    /// trailing `/` (or `.`) makes it a directory.
    pub dest: String,
    /// The stage's WORKDIR ("/" by default).
    pub workdir: String,
    /// `--chown`: `user`, `user:group`, `uid`, `uid:gid`; names resolved in `dest_root`.
    pub chown: Option<String>,
    /// `--chmod`: octal or symbolic.
    pub chmod: Option<ChmodSpec>,
    /// `--parents`: keep each source's path (below an optional `/./` pivot) under `dest`.
    pub parents: bool,
    /// `--exclude` patterns (Docker's pattern syntax, `**` and `!`).
    pub exclude: Vec<String>,
    /// Follow a symlink named directly as a source (inside `src_root`); BuildKit does.
    pub follow_top_symlink: bool,
    /// ADD: local tar archives (plain, gzip, bzip2, xz, zstd; detected by content) are
    /// extracted into `dest` instead of copied. Also selects "ADD" in error messages.
    pub unpack_archives: bool,
    /// Without `--chown`: keep the source's uid/gid (`--from` a stage or image) instead of
    /// making everything root-owned (build context, whose owners BuildKit resets to 0:0).
    pub keep_source_owner: bool,
    /// `.dockerignore` patterns, matched against paths relative to `src_root`: what they
    /// exclude is not part of the source tree at all (a COPY of the build context never sees
    /// ignored files, inside copied directories included).
    pub ignore: Vec<String>,
}

impl Default for CopySpec {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            dest: String::new(),
            workdir: "/".to_string(),
            chown: None,
            chmod: None,
            parents: false,
            exclude: Vec::new(),
            follow_top_symlink: true,
            unpack_archives: false,
            keep_source_owner: false,
            ignore: Vec::new(),
        }
    }
}

/// What a copy wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Regular files (and devices/fifos) written, hardlinks not included.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Unchanged files hardlinked from an earlier copy instead of written.
    pub reused: u64,
    /// Unchanged files left where an earlier copy put them, for a snapshot laid over that one
    /// ([`Reuse::keeps`]): neither written nor linked.
    pub kept: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Archives extracted by ADD.
    pub archives: u64,
    /// Extended attributes copied, and those the destination refused (BuildKit ignores those).
    pub xattrs: u64,
    pub xattrs_skipped: u64,
}

impl CopyReport {
    fn add(&mut self, other: &CopyReport) {
        self.files += other.files;
        self.dirs += other.dirs;
        self.symlinks += other.symlinks;
        self.hardlinks += other.hardlinks;
        self.reused += other.reused;
        self.kept += other.kept;
        self.bytes += other.bytes;
        self.archives += other.archives;
        self.xattrs += other.xattrs;
        self.xattrs_skipped += other.xattrs_skipped;
    }
}

/// One thing to copy after wildcard expansion.
#[derive(Debug)]
enum Item<'a> {
    Path {
        matched: Matched,
        is_dir: bool,
        archive: bool,
    },
    Inline {
        name: String,
        content: &'a [u8],
    },
}

/// What a caller may add to a copy beyond the instruction itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions<'a> {
    /// Checked between entries: once set, the copy stops with [`FileOpError::Cancelled`].
    pub cancel: Option<&'a AtomicBool>,
    /// Files an earlier copy made that may be hardlinked instead of copied again (used by
    /// [`DeferredCopy::finish`], which writes to a plain directory where links can be made).
    pub reuse: Option<&'a dyn Reuse>,
}

/// `path` relative to `root`, when `path` is `root` joined with something (as every path the
/// copy builds is). A byte comparison: `Path::strip_prefix` compares component by component,
/// which costs more than it should on the per-file path of a big copy.
pub fn path_below<'p>(path: &'p Path, root: &Path) -> Option<&'p Path> {
    use std::os::unix::ffi::OsStrExt;
    let rest = path
        .as_os_str()
        .as_bytes()
        .strip_prefix(root.as_os_str().as_bytes())?;
    let rest = match rest {
        [] => rest,
        _ if root.as_os_str().as_bytes().ends_with(b"/") => rest,
        [b'/', tail @ ..] => tail,
        _ => return None,
    };
    Some(Path::new(std::ffi::OsStr::from_bytes(rest)))
}

/// Where unchanged files of an earlier copy can be found.
///
/// The copier asks before writing each regular file. An answer is only a candidate: it is
/// linked when it is a regular file whose size, mtime, permission bits and owner are exactly
/// what the copy would give the new file, and its metadata is never touched afterwards (the
/// inode is shared with the earlier snapshot). The implementation vouches for the rest: same
/// content and xattrs.
pub trait Reuse: Sync + std::fmt::Debug {
    /// An existing file identical to what copying `src` to `target` would write; `target` is
    /// relative to the directory the deferred copy writes into.
    fn identical(&self, src: &Path, target: &Path) -> Option<std::path::PathBuf>;
    /// Told of every regular file the copy wrote or linked, so the next copy can reuse it.
    fn wrote(&self, src: &Path, target: &Path);
    /// Whether an identical earlier file may simply be left where it is, instead of linked: the
    /// caller will lay the new tree over the earlier one. Then only what changed is written.
    fn keeps(&self) -> bool {
        false
    }
    /// Told of an identical earlier file (`old`, from [`Reuse::identical`]) left where it is in
    /// place of `target`, when [`Reuse::keeps`]. The caller owns making it part of the result.
    fn kept(&self, _src: &Path, _target: &Path, _old: &Path) {}
    /// Asked (when [`Reuse::keeps`]) before the copier looks at `src`, a directory entry whose
    /// type is a regular file: true when the implementation knows, without the copier's checks,
    /// that `src` has one link and the content, metadata and mtime it had when an earlier copy
    /// with the same owner and mode settings made `target`, and that this file is still there.
    /// The earlier file is then kept, as after [`Reuse::kept`], and `src` is not read at all.
    fn unchanged(&self, _src: &Path, _target: &Path) -> bool {
        false
    }
}

/// The outcome of [`copy_or_defer`].
#[derive(Debug)]
pub enum Staged {
    /// Everything was copied through `dest_root`.
    Done(CopyReport),
    /// The copy's target directory was made (or copied up) through `dest_root`; its contents
    /// are still to be written with [`DeferredCopy::finish`].
    Deferred(Box<DeferredCopy>),
}

/// A COPY of one directory into a directory, whose entries the target did not have yet. They
/// cannot merge with anything in the lower layers, so they can be written straight into the
/// overlay's upper directory once the overlay is unmounted: no overlayfs on the write path,
/// and unchanged files can be hardlinked from an earlier snapshot. (Entries the target had are
/// merged through the overlay by [`copy_or_defer`] itself.)
#[derive(Debug)]
pub struct DeferredCopy {
    spec: CopySpec,
    src_root: std::path::PathBuf,
    src: std::path::PathBuf,
    /// The entries of `src` still to copy: those the target directory did not have.
    names: Vec<std::ffi::OsString>,
    /// Multiply-linked sources already copied through the overlay (paths relative to its
    /// root, which are the upperdir's too), so their other names are linked to them.
    first_copies: tree::FirstCopies,
    /// The target directory, relative to the merged rootfs (and so to the upperdir).
    target: std::path::PathBuf,
    chown: Option<owner::Owner>,
    report: CopyReport,
}

impl DeferredCopy {
    /// The target directory, relative to the root the copy was staged in.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Writes the directory's contents below `upper` (the unmounted overlay's upperdir, where
    /// [`copy_or_defer`] left the target directory).
    pub fn finish(self, upper: &Path, opts: &CopyOptions<'_>) -> Result<CopyReport, FileOpError> {
        let excludes = PatternSet::new(&self.spec.exclude)?;
        let ignore = PatternSet::new(&self.spec.ignore)?;
        let mut copier = Copier::new(
            self.chown,
            self.spec.keep_source_owner,
            self.spec.chmod.as_ref(),
            &excludes,
        )
        .with_ignore(&ignore, &self.src_root)
        .with_options(opts, Some(upper), instruction(&self.spec))
        .with_first_copies(upper, self.first_copies);
        copier.report = self.report;
        let target = upper.join(&self.target);
        // Plain directories on the same filesystem: the entries can be written in parallel.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        copier
            .copy_contents_parallel(&self.src, &self.names, &target, threads)
            .map_err(|e| e.inside_rootfs(upper))?;
        Ok(copier.report)
    }
}

/// Carries out `spec`, reading from `src_root` and writing below `dest_root`.
pub fn copy(spec: &CopySpec, src_root: &Path, dest_root: &Path) -> Result<CopyReport, FileOpError> {
    match copy_trees(spec, src_root, dest_root, &CopyOptions::default(), false)
        .map_err(|e| e.inside_rootfs(dest_root))?
    {
        Staged::Done(report) => Ok(report),
        Staged::Deferred(_) => unreachable!("copy_trees defers only when asked"),
    }
}

/// Like [`copy`], but a COPY of a single directory into a directory is only partly done: what
/// the target already has is merged through `dest_root`, the new entries are left for the
/// caller, who unmounts the overlay at `dest_root` and calls [`DeferredCopy::finish`] with its
/// upperdir.
pub fn copy_or_defer(
    spec: &CopySpec,
    src_root: &Path,
    dest_root: &Path,
    opts: &CopyOptions<'_>,
) -> Result<Staged, FileOpError> {
    copy_trees(spec, src_root, dest_root, opts, true).map_err(|e| e.inside_rootfs(dest_root))
}

fn copy_trees(
    spec: &CopySpec,
    src_root: &Path,
    dest_root: &Path,
    opts: &CopyOptions<'_>,
    may_defer: bool,
) -> Result<Staged, FileOpError> {
    let instruction = instruction(spec);
    let excludes = PatternSet::new(&spec.exclude)?;
    let chown = spec
        .chown
        .as_deref()
        .map(|c| resolve_chown(c, dest_root))
        .transpose()?;
    let (dest_abs, dest_dir_form) = dest_path(&spec.dest, &spec.workdir);
    let items = collect_items(spec, src_root, &excludes)?;

    let dest_host = resolve_in_root(dest_root, &dest_abs, true)?;
    let dest_is_dir = dest_host.is_dir();
    if !spec.parents && items.len() > 1 && !dest_dir_form && !dest_is_dir {
        // BuildKit silently lets later files overwrite earlier ones here (moby/buildkit#1853);
        // the Dockerfile reference and the classic builder make it an error. Several
        // directories (or archives) merging into one new directory stay allowed, as BuildKit
        // allows them.
        let all_dirs = items.iter().all(|i| {
            matches!(
                i,
                Item::Path { is_dir: true, .. } | Item::Path { archive: true, .. }
            )
        });
        if !all_dirs {
            return Err(FileOpError::DestinationNotDirectory {
                instruction,
                dest: spec.dest.clone(),
            });
        }
    }

    let ignore = PatternSet::new(&spec.ignore)?;
    let single = items.len() == 1;
    let mut copier = Copier::new(
        chown,
        spec.keep_source_owner,
        spec.chmod.as_ref(),
        &excludes,
    )
    .with_ignore(&ignore, src_root)
    .with_options(opts, None, instruction);
    // fsutil's Copy first creates the destination (dir form) or its parent.
    let ensure = if dest_dir_form {
        dest_abs.clone()
    } else {
        parent_of(&dest_abs)
    };
    copier.mkdir_all(&resolve_in_root(dest_root, &ensure, true)?)?;
    let dest_host = resolve_in_root(dest_root, &dest_abs, true)?;

    for item in items {
        match item {
            Item::Path {
                matched,
                archive: true,
                ..
            } => {
                copier.mkdir_all(&dest_host)?;
                archive::extract(&matched.host, &dest_host, chown, &mut copier.report)?;
            }
            Item::Path {
                matched:
                    Matched {
                        host,
                        parents: Some((below, pivot)),
                        ..
                    },
                ..
            } => {
                copier.mkdir_all(&dest_host)?;
                if below.as_os_str().is_empty() || below == Path::new(".") {
                    copier.copy(&host, "", &dest_host, false)?;
                } else {
                    copier.copy_parent_dirs(&pivot, &below, &dest_host)?;
                    let below_text = below.to_string_lossy();
                    copier.copy(&host, &below_text, &dest_host.join(&below), true)?;
                }
            }
            Item::Path {
                matched, is_dir, ..
            } => {
                let dest_exists = std::fs::metadata(&dest_host).ok();
                let target = match &dest_exists {
                    Some(m) if m.is_dir() && !is_dir => {
                        dest_host.join(matched.name.clone().unwrap_or_default())
                    }
                    _ => dest_host.clone(),
                };
                let created = is_dir && dest_exists.is_none();
                if created {
                    copier.mkdir_all(&target)?;
                } else if let Some(parent) = target.parent() {
                    copier.mkdir_all(parent)?;
                }
                // A directory the copy creates takes --chmod too (fsutil#228, BuildKit 0.14).
                if let (true, Some(chmod)) = (created, spec.chmod.as_ref()) {
                    let mode = chmod.apply(0o755, true);
                    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                        .map_err(error::io_err("chmod", &target))?;
                }
                if may_defer && single && is_dir && (created || target.is_dir()) {
                    // Entries the target already has (in a lower layer or the upper) are
                    // merged through the overlay now; the rest cannot meet anything below and
                    // are left for the upperdir.
                    let mut new_names = Vec::new();
                    for name in tree::sorted_names(&matched.host)? {
                        let there = target.join(&name);
                        if !created && std::fs::symlink_metadata(&there).is_ok() {
                            let rel = name.to_string_lossy();
                            copier.copy_entry(
                                &matched.host.join(&name),
                                &rel,
                                &there,
                                true,
                                false,
                            )?;
                        } else {
                            new_names.push(name);
                        }
                    }
                    if !created {
                        copy_up(&target)?;
                    }
                    let rel = target.strip_prefix(dest_root).unwrap_or(&target);
                    return Ok(Staged::Deferred(Box::new(DeferredCopy {
                        spec: spec.clone(),
                        src_root: src_root.to_path_buf(),
                        src: matched.host,
                        names: new_names,
                        first_copies: copier.first_copies_below(dest_root),
                        target: rel.to_path_buf(),
                        chown,
                        report: copier.report,
                    })));
                }
                copier.copy(&matched.host, "", &target, false)?;
            }
            Item::Inline { name, content } => {
                let target = if dest_host.is_dir() {
                    dest_host.join(&name)
                } else {
                    dest_host.clone()
                };
                if let Some(parent) = target.parent() {
                    copier.mkdir_all(parent)?;
                }
                copier.write_inline(content, &target)?;
            }
        }
    }
    Ok(Staged::Done(copier.report))
}

/// Makes overlayfs copy an existing directory up into the upperdir, unchanged: a chown to its
/// own owner is a metadata change as far as the overlay is concerned.
fn copy_up(dir: &Path) -> Result<(), FileOpError> {
    let meta = std::fs::symlink_metadata(dir).map_err(error::io_err("lstat", dir))?;
    std::os::unix::fs::lchown(dir, Some(meta.uid()), Some(meta.gid()))
        .map_err(error::io_err("chown", dir))
}

/// The numeric owner of a `user[:group]` spec (names or ids), looked up in the tree's
/// /etc/passwd and /etc/group with BuildKit's rules (a lone uid is also the gid): what
/// `--chown` and WORKDIR's directories get.
pub fn resolve_owner(spec: &str, root: &Path) -> Result<(u32, u32), FileOpError> {
    resolve_chown(spec, root).map(|o| (o.uid, o.gid))
}

/// The files a COPY reads, for cache keys: every source expanded against `src_root`, with
/// top-level symlinks followed as the copy follows them and `--exclude` applied to the
/// matches themselves, as paths relative to `src_root` ("." for the root). A directory stands
/// for its whole tree (the caller hashes it, minus `spec.exclude`). Heredoc sources read no
/// files and are not listed.
pub fn resolve_sources(spec: &CopySpec, src_root: &Path) -> Result<Vec<String>, FileOpError> {
    let excludes = PatternSet::new(&spec.exclude)?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for item in collect_items(spec, src_root, &excludes)? {
        if let Item::Path { matched, .. } = item {
            let rel = relative_to(src_root, &matched.host);
            if seen.insert(rel.clone()) {
                out.push(rel);
            }
        }
    }
    Ok(out)
}

/// Every entry a COPY reads, for content-addressed cache keys: like [`resolve_sources`], but
/// directories are walked (symlinks inside them are listed, not followed) with `--exclude`
/// applied exactly as the copy applies it. Paths are relative to `src_root`, sorted within
/// each source, each listed once; hash each with `symlink_metadata` (path, type, mode,
/// uid/gid, size, link target, xattrs, content).
pub fn list_source_files(spec: &CopySpec, src_root: &Path) -> Result<Vec<String>, FileOpError> {
    let excludes = PatternSet::new(&spec.exclude)?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for item in collect_items(spec, src_root, &excludes)? {
        let Item::Path {
            matched, is_dir, ..
        } = item
        else {
            continue;
        };
        let mut push = |rel: String| {
            if seen.insert(rel.clone()) {
                out.push(rel);
            }
        };
        push(relative_to(src_root, &matched.host));
        if is_dir {
            // Exclusion paths are relative to the copied directory (or the --parents pivot).
            let prefix = match &matched.parents {
                Some((below, _)) if below.as_os_str().is_empty() || below == Path::new(".") => {
                    String::new()
                }
                Some((below, _)) => below.to_string_lossy().into_owned(),
                None => String::new(),
            };
            list_tree(&matched.host, &prefix, &excludes, &mut |host| {
                push(relative_to(src_root, host));
            })?;
        }
    }
    Ok(out)
}

/// Walks a source directory the way [`tree::Copier`] does, calling `found` for each entry kept.
fn list_tree(
    dir: &Path,
    rel: &str,
    excludes: &PatternSet,
    found: &mut dyn FnMut(&Path),
) -> Result<(), FileOpError> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(error::io_err("read directory", dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(error::io_err("read directory", dir))?;
    names.sort();
    for name in names {
        let child = dir.join(&name);
        let child_rel = if rel.is_empty() {
            name.to_string_lossy().into_owned()
        } else {
            format!("{rel}/{}", name.to_string_lossy())
        };
        let meta = std::fs::symlink_metadata(&child).map_err(error::io_err("lstat", &child))?;
        if !excludes.is_empty()
            && excludes.matches(&child_rel)
            && !(meta.is_dir() && excludes.may_reinclude_below(&child_rel))
        {
            continue;
        }
        found(&child);
        if meta.is_dir() {
            list_tree(&child, &child_rel, excludes, found)?;
        }
    }
    Ok(())
}

fn instruction(spec: &CopySpec) -> &'static str {
    if spec.unpack_archives {
        "ADD"
    } else {
        "COPY"
    }
}

/// Expands every source; a wildcard may match nothing as long as the instruction as a whole
/// copies something (the classic builder's "no source files were specified").
fn collect_items<'a>(
    spec: &'a CopySpec,
    src_root: &Path,
    excludes: &PatternSet,
) -> Result<Vec<Item<'a>>, FileOpError> {
    let instruction = instruction(spec);
    let ignore = PatternSet::new(&spec.ignore)?;
    let mut items = Vec::new();
    let mut matched_any = false;
    for source in &spec.sources {
        match source {
            CopySource::Inline { name, content } => {
                matched_any = true;
                let name = clean_abs(name)
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let name = if name.is_empty() {
                    "__unnamed__".to_string()
                } else {
                    name
                };
                items.push(Item::Inline { name, content });
            }
            CopySource::Path(path) => {
                let expansion = expand(
                    instruction,
                    path,
                    spec.parents,
                    spec.follow_top_symlink,
                    src_root,
                )?;
                let literal = !path.contains(['*', '?', '[']);
                for matched in expansion.matches {
                    let meta = std::fs::symlink_metadata(&matched.host)
                        .map_err(error::io_err("lstat", &matched.host))?;
                    let is_dir = meta.is_dir();
                    if !ignore.is_empty() {
                        let rel = relative_to(src_root, &matched.host);
                        if rel != "."
                            && ignore.matches(&rel)
                            && !(is_dir && ignore.may_reinclude_below(&rel))
                        {
                            // An ignored file is not in the context: naming it is an error,
                            // as in BuildKit; a wildcard just does not match it.
                            if literal {
                                return Err(FileOpError::SourceNotFound {
                                    instruction,
                                    source_path: path.clone(),
                                });
                            }
                            continue;
                        }
                    }
                    matched_any = true;
                    let rel_for_exclude = match &matched.parents {
                        Some((below, _)) if below.as_os_str().is_empty() => ".".to_string(),
                        Some((below, _)) => below.to_string_lossy().into_owned(),
                        None => matched.rel.clone(),
                    };
                    if rel_for_exclude != "."
                        && !excludes.is_empty()
                        && excludes.matches(&rel_for_exclude)
                        && !(is_dir && excludes.may_reinclude_below(&rel_for_exclude))
                    {
                        continue;
                    }
                    let archive = spec.unpack_archives
                        && meta.is_file()
                        && archive::is_archive(&matched.host);
                    items.push(Item::Path {
                        matched,
                        is_dir,
                        archive,
                    });
                }
            }
        }
    }
    if !matched_any && !spec.sources.is_empty() {
        return Err(FileOpError::NoSourceFiles {
            instruction,
            sources: spec
                .sources
                .iter()
                .filter_map(|s| match s {
                    CopySource::Path(p) => Some(p.clone()),
                    CopySource::Inline { .. } => None,
                })
                .collect(),
        });
    }
    Ok(items)
}

/// The absolute destination and whether it was written in directory form (BuildKit turns
/// "", "." and anything ending in "/" or "/." into a directory).
fn dest_path(dest: &str, workdir: &str) -> (String, bool) {
    let dir_form = dest.is_empty() || dest == "." || dest.ends_with('/') || dest.ends_with("/.");
    let joined = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("{workdir}/{dest}")
    };
    (clean_abs(&joined), dir_form)
}

fn parent_of(abs: &str) -> String {
    match abs.rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((parent, _)) => parent.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dest_path_follows_workdir_and_slash_rules() {
        assert_eq!(dest_path("app/", "/srv"), ("/srv/app".into(), true));
        assert_eq!(dest_path("app", "/srv"), ("/srv/app".into(), false));
        assert_eq!(dest_path(".", "/srv"), ("/srv".into(), true));
        assert_eq!(dest_path("/abs/x", "/srv"), ("/abs/x".into(), false));
        assert_eq!(dest_path("../../..", "/srv"), ("/".into(), false));
        assert_eq!(parent_of("/a/b"), "/a");
        assert_eq!(parent_of("/a"), "/");
    }

    #[test]
    fn path_below_strips_a_root_only_at_a_component_boundary() {
        let rel = |p: &str, r: &str| path_below(Path::new(p), Path::new(r)).map(Path::to_path_buf);
        assert_eq!(rel("/s/fs/data/f", "/s/fs"), Some("data/f".into()));
        assert_eq!(rel("/s/fs/data/f", "/s/fs/"), Some("data/f".into()));
        assert_eq!(rel("/s/fs", "/s/fs"), Some("".into()));
        assert_eq!(rel("/s/fsx/f", "/s/fs"), None);
        assert_eq!(rel("/t/f", "/s"), None);
    }
}
