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

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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
    /// Bytes of file content written.
    pub bytes: u64,
    /// Archives extracted by ADD.
    pub archives: u64,
    /// Extended attributes copied, and those the destination refused (BuildKit ignores those).
    pub xattrs: u64,
    pub xattrs_skipped: u64,
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

/// Carries out `spec`, reading from `src_root` and writing below `dest_root`.
pub fn copy(spec: &CopySpec, src_root: &Path, dest_root: &Path) -> Result<CopyReport, FileOpError> {
    copy_trees(spec, src_root, dest_root).map_err(|e| e.inside_rootfs(dest_root))
}

fn copy_trees(
    spec: &CopySpec,
    src_root: &Path,
    dest_root: &Path,
) -> Result<CopyReport, FileOpError> {
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
    let mut copier = Copier::new(
        chown,
        spec.keep_source_owner,
        spec.chmod.as_ref(),
        &excludes,
    )
    .with_ignore(&ignore, src_root);
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
                copier.copy(&matched.host, "", &target, false)?;
                // A directory the copy creates takes --chmod too (fsutil#228, BuildKit 0.14).
                if let (true, Some(chmod)) = (created, spec.chmod.as_ref()) {
                    let mode = chmod.apply(0o755, true);
                    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                        .map_err(error::io_err("chmod", &target))?;
                }
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
    Ok(copier.report)
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
}
