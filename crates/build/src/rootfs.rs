//! Small operations inside a root filesystem that forge mounted itself: every path is
//! resolved with `openat2(RESOLVE_IN_ROOT)`, so a symlink in an image (`/var/run -> /run`,
//! or a hostile `/app -> /`) always resolves inside the root, never on the host.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use nix::unistd::{fchownat, Gid, Uid};

use crate::error::BuildError;

fn open_in_root(root: &OwnedFd, path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let target: &Path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let fd = openat2(root.as_raw_fd(), target, how)?;
    // SAFETY: openat2 just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_root(root: &Path) -> Result<OwnedFd, BuildError> {
    let fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| BuildError::io(root, e.into()))?;
    // SAFETY: open just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `mkdir -p` of `path` inside `root`; directories it creates get `mode`, `uid` and `gid`.
pub(crate) fn mkdir_in_root(
    root: &Path,
    path: &Path,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<(), BuildError> {
    let rootfd = open_root(root)?;
    let mut prefix = PathBuf::new();
    for component in path.components() {
        let Component::Normal(name) = component else {
            if component == Component::ParentDir {
                prefix.push("..");
            }
            continue;
        };
        let next = prefix.join(name);
        match open_in_root(&rootfd, &next, OFlag::O_PATH | OFlag::O_DIRECTORY) {
            Ok(_) => {}
            Err(Errno::ENOENT) => {
                let parent = open_in_root(&rootfd, &prefix, OFlag::O_PATH | OFlag::O_DIRECTORY)
                    .map_err(|e| BuildError::io(root.join(&prefix), e.into()))?;
                match nix::sys::stat::mkdirat(
                    Some(parent.as_raw_fd()),
                    name,
                    Mode::from_bits_truncate(mode),
                ) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(BuildError::io(root.join(&next), e.into())),
                }
                fchownat(
                    Some(parent.as_raw_fd()),
                    name,
                    Some(Uid::from_raw(uid)),
                    Some(Gid::from_raw(gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| BuildError::io(root.join(&next), e.into()))?;
                // mkdir's mode is filtered by the umask; set it exactly.
                let dir = open_in_root(&rootfd, &next, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                    .map_err(|e| BuildError::io(root.join(&next), e.into()))?;
                nix::sys::stat::fchmod(dir.as_raw_fd(), Mode::from_bits_truncate(mode))
                    .map_err(|e| BuildError::io(root.join(&next), e.into()))?;
            }
            Err(e) => return Err(BuildError::io(root.join(&next), e.into())),
        }
        prefix = next;
    }
    Ok(())
}

/// Reads a small file inside `root` (e.g. `/etc/passwd`); `None` when it does not exist.
pub(crate) fn read_in_root(root: &Path, path: &str) -> Result<Option<String>, BuildError> {
    let rootfd = open_root(root)?;
    let fd = match open_in_root(
        &rootfd,
        Path::new(path.trim_start_matches('/')),
        OFlag::O_RDONLY,
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(None),
        Err(e) => return Err(BuildError::io(root.join(path), e.into())),
    };
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(16 << 20)
        .read_to_string(&mut text)
        .map_err(|e| BuildError::io(root.join(path), e))?;
    Ok(Some(text))
}

/// `user[:group]` (names or numbers) to numeric ids, through the root's /etc/passwd and
/// /etc/group. A user name without a group takes the user's primary group.
pub(crate) fn resolve_owner(root: &Path, spec: &str) -> Result<(u32, u32), BuildError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_in_root(root, "/etc/passwd")?.unwrap_or_default();
    let unknown = |what: &str, name: &str| BuildError::BadImage {
        reference: root.display().to_string(),
        what: format!(
            "unknown {what} {name:?}: not in /etc/{}",
            if what == "user" { "passwd" } else { "group" }
        ),
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => {
            let gid = passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 3 && f[2] == user)
                .and_then(|f| f[3].parse().ok())
                .unwrap_or(uid);
            (uid, gid)
        }
        Err(_) => passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[0] == user)
            .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .ok_or_else(|| unknown("user", user))?,
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => read_in_root(root, "/etc/group")?
                .unwrap_or_default()
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| unknown("group", g))?,
        },
    };
    Ok((uid, gid))
}
