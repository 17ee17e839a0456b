//! Path resolution scoped to a root directory, as if the root were `/` (a chroot without the
//! syscall): `..` stops at the root and absolute symlink targets restart from the root, so a
//! link to `/usr` inside a rootfs resolves to `<root>/usr` and never to the host's `/usr`.
//! This is what containerd's `fs.RootPath` does for BuildKit's copy.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Component, Path, PathBuf};

use super::error::{io_err, FileOpError};

/// Linux's own limit on symlinks followed in one lookup.
const MAX_SYMLINKS: usize = 40;

/// Resolves `path` (absolute or relative, both taken from `root`) to a host path below `root`.
/// Every symlink met on the way is followed inside `root`; the last component is followed only
/// when `follow_last` is set. Components that do not exist are appended as they are.
pub(crate) fn resolve_in_root(
    root: &Path,
    path: impl AsRef<Path>,
    follow_last: bool,
) -> Result<PathBuf, FileOpError> {
    let path = path.as_ref();
    let mut queue: VecDeque<OsString> = components(path).collect();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut followed = 0usize;
    while let Some(name) = queue.pop_front() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        if queue.is_empty() && !follow_last {
            resolved.push(name);
            break;
        }
        let candidate = join_all(root, &resolved).join(&name);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return Err(FileOpError::SymlinkLoop {
                        root: root.to_path_buf(),
                        path: path.display().to_string(),
                    });
                }
                let target =
                    std::fs::read_link(&candidate).map_err(io_err("readlink", &candidate))?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for part in components(&target).collect::<Vec<_>>().into_iter().rev() {
                    queue.push_front(part);
                }
            }
            Ok(_) => resolved.push(name),
            Err(e) if is_missing(&e) => resolved.push(name),
            Err(e) => return Err(io_err("lstat", candidate)(e)),
        }
    }
    Ok(join_all(root, &resolved))
}

/// True for the errors that mean "nothing there" (including a file used as a directory).
pub(crate) fn is_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// The normal components of `path`, with `.` dropped and `..` kept for the resolver.
fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsStr::new("..").to_os_string()),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

fn join_all(root: &Path, parts: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    for part in parts {
        p.push(part);
    }
    p
}

/// Lexically cleans a slash path the way Go's `path.Clean` does, keeping it absolute;
/// `..` at the top stays at `/`.
pub(crate) fn clean_abs(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_abs_clamps_at_root() {
        assert_eq!(clean_abs("../../a/./b/"), "/a/b");
        assert_eq!(clean_abs("/"), "/");
        assert_eq!(clean_abs("a/../../b"), "/b");
    }

    #[test]
    fn absolute_link_resolves_inside_root() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", t.path().join("lib")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", t.path().join("usr/up")).unwrap();
        assert_eq!(
            resolve_in_root(t.path(), "/lib/x", true).unwrap(),
            t.path().join("usr/lib/x")
        );
        assert_eq!(
            resolve_in_root(t.path(), "usr/up", true).unwrap(),
            t.path().join("etc")
        );
        assert_eq!(
            resolve_in_root(t.path(), "lib", false).unwrap(),
            t.path().join("lib")
        );
    }

    #[test]
    fn symlink_loop_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("b", t.path().join("a")).unwrap();
        std::os::unix::fs::symlink("a", t.path().join("b")).unwrap();
        assert!(matches!(
            resolve_in_root(t.path(), "a/x", true),
            Err(FileOpError::SymlinkLoop { .. })
        ));
    }
}
