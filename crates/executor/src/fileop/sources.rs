//! Turning COPY/ADD source strings into the paths they name inside the source root: Go-style
//! wildcards per component (BuildKit resolves the literal prefix with symlinks followed inside
//! the root, then walks real directories below it), and `--parents` with its `/./` pivot.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::error::FileOpError;
use super::pattern::{compile_glob, compile_segments, glob_matches, has_wildcard, Segment};
use super::scoped::{clean_abs, is_missing, resolve_in_root};

/// One matched source path.
#[derive(Debug, Clone)]
pub(crate) struct Matched {
    /// The path as named or matched, relative to the source root ("." for the root itself);
    /// its last component names the copy at the destination.
    pub(crate) rel: String,
    /// Where it is on the host, top-level symlink followed (inside the root) if asked.
    pub(crate) host: PathBuf,
    /// Its name as on disk (not lossily converted), which the copy keeps.
    pub(crate) name: Option<OsString>,
    /// With `--parents`: the part below the pivot that is recreated under the destination,
    /// and the pivot directory on the host.
    pub(crate) parents: Option<(PathBuf, PathBuf)>,
}

/// The outcome for one source string.
#[derive(Debug)]
pub(crate) struct Expansion {
    pub(crate) matches: Vec<Matched>,
}

/// True for sources the caller must download first (ADD of URLs and git refs).
pub(crate) fn is_remote(source: &str) -> bool {
    let lower = source.to_ascii_lowercase();
    ["http://", "https://", "git@", "git://", "ssh://"]
        .iter()
        .any(|p| lower.starts_with(p))
}

/// Expands one source string against `src_root`.
pub(crate) fn expand(
    instruction: &'static str,
    source: &str,
    parents: bool,
    follow_top: bool,
    src_root: &Path,
) -> Result<Expansion, FileOpError> {
    if is_remote(source) {
        return Err(FileOpError::RemoteSourceUnsupported {
            instruction,
            source_path: source.to_string(),
        });
    }
    if parents {
        return expand_parents(instruction, source, follow_top, src_root);
    }
    let cleaned = clean_abs(source);
    let comps: Vec<&str> = cleaned.split('/').filter(|c| !c.is_empty()).collect();
    let Some(first_wild) = comps.iter().position(|c| has_wildcard(c)) else {
        let rel = rel_of(&comps);
        let host = top_path(src_root, &rel, follow_top)?;
        if let Err(e) = std::fs::symlink_metadata(&host) {
            if is_missing(&e) {
                return Err(FileOpError::SourceNotFound {
                    instruction,
                    source_path: source.to_string(),
                });
            }
        }
        return Ok(Expansion {
            matches: vec![Matched {
                name: Path::new(&rel).file_name().map(|n| n.to_os_string()),
                rel,
                host,
                parents: None,
            }],
        });
    };
    let base_rel = rel_of(&comps[..first_wild]);
    let base_host = resolve_in_root(src_root, &base_rel, true)?;
    match std::fs::symlink_metadata(&base_host) {
        Err(e) if is_missing(&e) => {
            return Err(FileOpError::WildcardBaseMissing {
                instruction,
                source_path: source.to_string(),
                base: base_rel,
            })
        }
        _ => {}
    }
    let segments = comps[first_wild..]
        .iter()
        .map(|c| compile_glob(c, source).map(Segment::Glob))
        .collect::<Result<Vec<_>, _>>()?;
    let base_rel_followed = relative_to(src_root, &base_host);
    let mut found = BTreeMap::new();
    walk(&base_host, &base_rel_followed, &segments, &mut found);
    let matches = prune_nested(found)
        .into_iter()
        .map(|(rel, walked)| {
            let host = top_path(src_root, &walked, follow_top)?;
            Ok(Matched {
                rel,
                host,
                name: walked.file_name().map(|n| n.to_os_string()),
                parents: None,
            })
        })
        .collect::<Result<Vec<_>, FileOpError>>()?;
    Ok(Expansion { matches })
}

/// `--parents`: everything before `/./` is the pivot, the rest is a pattern (with `**`) whose
/// matches keep their path below the pivot.
fn expand_parents(
    instruction: &'static str,
    source: &str,
    follow_top: bool,
    src_root: &Path,
) -> Result<Expansion, FileOpError> {
    let (pivot, pattern) = match source.split_once("/./") {
        Some((pivot, pattern)) => (clean_abs(pivot), clean_abs(pattern)),
        None => ("/".to_string(), clean_abs(source)),
    };
    let not_found = || FileOpError::SourceNotFound {
        instruction,
        source_path: source.to_string(),
    };
    let pivot_host = resolve_in_root(src_root, &pivot, true)?;
    if !pivot_host.is_dir() {
        return Err(not_found());
    }
    let pivot_rel = relative_to(src_root, &pivot_host);
    let pattern_rel = pattern.trim_start_matches('/');
    let is_wildcard = pattern_rel.split('/').any(has_wildcard);
    let segments = compile_segments(pattern_rel)?;
    let mut found = BTreeMap::new();
    if segments.is_empty() {
        found.insert(".".to_string(), pivot_host.clone());
    } else {
        walk(&pivot_host, ".", &segments, &mut found);
    }
    let found = prune_nested(found);
    if found.is_empty() && !is_wildcard {
        return Err(not_found());
    }
    let matches = found
        .into_iter()
        .map(|(below, walked)| {
            let rel = join_rel(&pivot_rel, &below);
            let host = top_path(src_root, &walked, follow_top)?;
            Ok(Matched {
                rel,
                host,
                name: walked.file_name().map(|n| n.to_os_string()),
                parents: Some((
                    walked
                        .strip_prefix(&pivot_host)
                        .map_or_else(|_| PathBuf::from(&below), Path::to_path_buf),
                    pivot_host.clone(),
                )),
            })
        })
        .collect::<Result<Vec<_>, FileOpError>>()?;
    Ok(Expansion { matches })
}

/// Walks real directories below `dir` (symlinks are matched but never descended into, like
/// Go's filepath.Walk), collecting relative paths that match `segments`.
fn walk(dir: &Path, dir_rel: &str, segments: &[Segment], out: &mut BTreeMap<String, PathBuf>) {
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    // Names are matched as (lossy) text but joined as they are on disk.
    let mut entries: Vec<(String, OsString, bool)> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| {
                let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
                let name = e.file_name();
                (name.to_string_lossy().into_owned(), name, is_dir)
            })
            .collect(),
        Err(_) => return,
    };
    entries.sort();
    match first {
        Segment::Glob(tokens) => {
            for (name, raw, is_dir) in entries {
                if !glob_matches(tokens, &name) {
                    continue;
                }
                let rel = join_rel(dir_rel, &name);
                if rest.is_empty() {
                    out.insert(rel, dir.join(&raw));
                } else if is_dir {
                    walk(&dir.join(&raw), &rel, rest, out);
                }
            }
        }
        Segment::AnyDepth => {
            if rest.is_empty() {
                for (name, raw, _) in entries {
                    out.insert(join_rel(dir_rel, &name), dir.join(&raw));
                }
                return;
            }
            walk(dir, dir_rel, rest, out);
            for (name, raw, is_dir) in entries {
                if is_dir {
                    walk(&dir.join(&raw), &join_rel(dir_rel, &name), segments, out);
                }
            }
        }
    }
}

/// A matched directory is copied whole, so matches inside it are dropped.
fn prune_nested(found: BTreeMap<String, PathBuf>) -> Vec<(String, PathBuf)> {
    if found.contains_key(".") {
        return found.into_iter().filter(|(rel, _)| rel == ".").collect();
    }
    let mut kept_names = std::collections::HashSet::new();
    let mut kept = Vec::new();
    for (rel, host) in found {
        // Ancestors sort before their descendants, so checking each prefix is enough.
        let covered = rel
            .match_indices('/')
            .any(|(i, _)| kept_names.contains(&rel[..i]));
        if !covered {
            kept_names.insert(rel.clone());
            kept.push((rel, host));
        }
    }
    kept
}

/// The host path of a source: `at` is either a path relative to `src_root` or a host path
/// found by walking below it; either way symlinks are resolved inside `src_root`.
fn top_path(src_root: &Path, at: impl AsRef<Path>, follow: bool) -> Result<PathBuf, FileOpError> {
    let at = at.as_ref();
    let rel = at.strip_prefix(src_root).unwrap_or(at);
    if rel.as_os_str().is_empty() || rel == Path::new(".") {
        return Ok(src_root.to_path_buf());
    }
    resolve_in_root(src_root, rel, follow)
}

fn rel_of(comps: &[&str]) -> String {
    if comps.is_empty() {
        ".".to_string()
    } else {
        comps.join("/")
    }
}

fn join_rel(a: &str, b: &str) -> String {
    match (a, b) {
        (".", b) => b.to_string(),
        (a, ".") => a.to_string(),
        (a, b) => format!("{a}/{b}"),
    }
}

/// `host` relative to `root` as a slash path ("." for the root).
pub(crate) fn relative_to(root: &Path, host: &Path) -> String {
    match host.strip_prefix(root) {
        Ok(r) if r.as_os_str().is_empty() => ".".to_string(),
        Ok(r) => r.to_string_lossy().into_owned(),
        Err(_) => ".".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_matches_are_covered_by_their_directory() {
        let found: BTreeMap<String, PathBuf> = ["a", "a b", "a/x", "a/x/y", "b/c", "b/cd"]
            .iter()
            .map(|r| (r.to_string(), PathBuf::from(r)))
            .collect();
        let kept: Vec<String> = prune_nested(found).into_iter().map(|(r, _)| r).collect();
        assert_eq!(kept, vec!["a", "a b", "b/c", "b/cd"]);
    }

    #[test]
    fn any_depth_patterns_walk_real_directories() {
        let t = tempfile::tempdir().unwrap();
        for p in ["x/a.go", "x/y/b.go", "z/c.txt"] {
            let f = t.path().join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, "").unwrap();
        }
        std::os::unix::fs::symlink("x", t.path().join("link")).unwrap();
        let mut found = BTreeMap::new();
        walk(
            t.path(),
            ".",
            &compile_segments("**/*.go").unwrap(),
            &mut found,
        );
        let got: Vec<&String> = found.keys().collect();
        assert_eq!(
            got,
            vec!["x/a.go", "x/y/b.go"],
            "symlinked directories are not walked"
        );
    }
}
