//! Small operations inside a root filesystem that forge mounted itself: every path is
//! resolved with `openat2(RESOLVE_IN_ROOT)`, so a symlink in an image (`/var/run -> /run`,
//! or a hostile `/app -> /`) always resolves inside the root, never on the host.

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
