//! Mounts in forge's own process for file operations: an overlay of a snapshot chain with a
//! fresh upperdir (COPY, ADD, WORKDIR write into it) and read-only views of other stages.
//!
//! [`isolate_mounts`] moves forge into a private mount namespace first, so every mount made
//! here disappears when the process ends, whatever ends it (Ctrl-C and SIGKILL included);
//! [`OverlayMount`] also unmounts on drop for the normal paths.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::error::BuildError;

/// Puts this process in a private mount namespace whose mounts never propagate back to the
/// host. Call before any thread is started (unshare(CLONE_NEWNS) needs an unshared fs_struct).
pub fn isolate_mounts() -> Result<(), BuildError> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|source| BuildError::Mount {
        action: "unshare mount namespace for",
        target: PathBuf::from("/"),
        source,
    })?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|source| BuildError::Mount {
        action: "make private",
        target: PathBuf::from("/"),
        source,
    })
}

/// A mounted overlay (or bind) that is unmounted and its mount point removed on drop.
#[derive(Debug)]
pub(crate) struct OverlayMount {
    target: PathBuf,
}

impl OverlayMount {
    /// Mounts `lowerdirs` (top-most first) with `upper`/`work` writable at `target`. With no
    /// lowerdirs, an empty directory beside `target` stands in (FROM scratch).
    pub(crate) fn writable(
        lowerdirs: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<Self, BuildError> {
        let mut lowers: Vec<PathBuf> = lowerdirs.to_vec();
        if lowers.is_empty() {
            let empty = target.with_extension("empty");
            std::fs::create_dir_all(&empty).map_err(|e| BuildError::io(&empty, e))?;
            lowers.push(empty);
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            join_lowers(&lowers),
            upper.display(),
            work.display()
        );
        // `volatile`: no sync of the whole upper filesystem when the overlay is unmounted (it
        // waited for every dirty page on it, the build's own and anyone else's); the upperdir
        // becomes a snapshot, whose commit syncs it anyway, and the workdir, which a volatile
        // mount marks, is deleted then. A kernel before 5.10 does not know the option.
        match Self::mount_overlay(target, &format!("{options},volatile")) {
            Err(BuildError::Mount {
                source: nix::Error::EINVAL,
                ..
            }) => Self::mount_overlay(target, &options),
            mounted => mounted,
        }
    }

    /// A read-only view of `lowerdirs` (top-most first) at `target`.
    pub(crate) fn readonly(lowerdirs: &[PathBuf], target: &Path) -> Result<Self, BuildError> {
        std::fs::create_dir_all(target).map_err(|e| BuildError::io(target, e))?;
        match lowerdirs {
            [] => Ok(OverlayMount {
                target: target.to_path_buf(),
            }),
            [only] => {
                mount(
                    Some(only.as_path()),
                    target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|source| BuildError::Mount {
                    action: "bind-mount",
                    target: target.to_path_buf(),
                    source,
                })?;
                let _ = mount(
                    None::<&str>,
                    target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                );
                Ok(OverlayMount {
                    target: target.to_path_buf(),
                })
            }
            many => Self::mount_overlay(target, &format!("lowerdir={}", join_lowers(many))),
        }
    }

    fn mount_overlay(target: &Path, options: &str) -> Result<Self, BuildError> {
        std::fs::create_dir_all(target).map_err(|e| BuildError::io(target, e))?;
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(options),
        )
        .map_err(|source| BuildError::Mount {
            action: "mount overlay at",
            target: target.to_path_buf(),
            source,
        })?;
        Ok(OverlayMount {
            target: target.to_path_buf(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = umount2(&self.target, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.target);
        let _ = std::fs::remove_dir(self.target.with_extension("empty"));
    }
}

fn join_lowers(lowers: &[PathBuf]) -> String {
    lowers
        .iter()
        .map(|p| {
            p.display()
                .to_string()
                .replace(',', "\\,")
                .replace(':', "\\:")
        })
        .collect::<Vec<_>>()
        .join(":")
}
