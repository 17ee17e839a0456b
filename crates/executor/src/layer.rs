//! Turning the upperdir into the step's layer as it is: only the traces of the sandbox's own
//! mount points go (empty files and directories it created, and directories copied up only
//! because a mount point was created inside them), never anything the step wrote.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::ExecError;
use crate::mounts::MountTrace;
use crate::syscall::Syscall;

/// Removes mount-point traces from `upperdir`. `lowerdirs` are top-most first.
pub(crate) fn remove_mount_traces(
    sys: &dyn Syscall,
    upperdir: &Path,
    lowerdirs: &[PathBuf],
    trace: &MountTrace,
) -> Result<(), ExecError> {
    // Created paths were recorded parents first; children go first.
    for rel in trace.created.iter().rev() {
        let path = upperdir.join(rel);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if is_empty_dir(&path)? && !is_opaque(sys, &path)? {
                remove(&path, true)?;
            }
        } else if meta.is_file() && meta.len() == 0 {
            remove(&path, false)?;
        }
    }
    let mut copied: Vec<&PathBuf> = trace.copied_up.iter().collect();
    copied.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for rel in copied {
        let path = upperdir.join(rel);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || !is_empty_dir(&path)? || is_opaque(sys, &path)? {
            continue;
        }
        let lower = lowerdirs
            .iter()
            .find_map(|l| std::fs::symlink_metadata(l.join(rel)).ok());
        // Only a pure copy-up goes: a chmod or chown by the step is a change to keep.
        if let Some(lower) = lower {
            if lower.is_dir()
                && lower.mode() == meta.mode()
                && lower.uid() == meta.uid()
                && lower.gid() == meta.gid()
            {
                remove(&path, true)?;
            }
        }
    }
    Ok(())
}

fn is_empty_dir(path: &Path) -> Result<bool, ExecError> {
    let mut entries =
        std::fs::read_dir(path).map_err(|e| ExecError::fs("read directory", path, e))?;
    Ok(entries.next().is_none())
}

fn is_opaque(sys: &dyn Syscall, path: &Path) -> Result<bool, ExecError> {
    let value = sys
        .get_xattr(path, "trusted.overlay.opaque")
        .map_err(|e| ExecError::fs("read the opaque xattr of", path, e))?;
    Ok(value.as_deref() == Some(b"y"))
}

fn remove(path: &Path, dir: bool) -> Result<(), ExecError> {
    let result = if dir {
        std::fs::remove_dir(path)
    } else {
        std::fs::remove_file(path)
    };
    result.map_err(|e| ExecError::fs("remove mount point", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::LinuxSyscall;

    #[test]
    fn removes_only_untouched_mount_points() {
        let tmp = tempfile::tempdir().unwrap();
        let (upper, lower) = (tmp.path().join("up"), tmp.path().join("low"));
        for d in [
            "up/proc",
            "up/etc",
            "up/run/secrets",
            "up/tmp/used",
            "low/etc",
        ] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        std::fs::write(upper.join("etc/hosts"), "").unwrap();
        std::fs::write(upper.join("tmp/used/file"), "step output").unwrap();
        std::fs::write(upper.join("run/secrets/other"), "").unwrap();
        let trace = MountTrace {
            created: [
                "proc",
                "etc/hosts",
                "run",
                "run/secrets",
                "run/secrets/id",
                "tmp",
                "tmp/used",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
            copied_up: vec!["etc".into()],
        };
        remove_mount_traces(&LinuxSyscall, &upper, &[lower], &trace).unwrap();
        let mut left: Vec<String> = walk(&upper);
        left.sort();
        // run/secrets/other is not in the trace: an empty file the step made stays, and so
        // do the directories holding it.
        assert_eq!(
            left,
            [
                "run",
                "run/secrets",
                "run/secrets/other",
                "tmp",
                "tmp/used",
                "tmp/used/file"
            ]
        );
    }

    fn walk(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                out.push(path.strip_prefix(root).unwrap().display().to_string());
                if path.is_dir() {
                    stack.push(path);
                }
            }
        }
        out
    }
}
