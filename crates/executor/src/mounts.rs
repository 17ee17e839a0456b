//! The root filesystem of a sandbox: the overlay, the system mounts (/proc, /dev, /sys, the
//! /etc files), the RUN --mount entries, masked and read-only paths, then pivot_root. Mount
//! targets are resolved inside the rootfs (symlinks and `..` cannot leave it) and every mount
//! point the sandbox creates is recorded in a [`MountTrace`] so it can be taken out of the layer.

use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use crate::error::ExecError;
use crate::spec::{MountSpec, SandboxSpec, SecurityMode};
use crate::syscall::{FileKind, Syscall};

/// Paths runc masks by default (Docker's list): directories get an empty read-only tmpfs,
/// files get /dev/null.
pub(crate) const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths runc makes read-only by default.
pub(crate) const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The device nodes of the minimal /dev, bind-mounted from the host's.
pub(crate) const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// The /etc files the sandbox provides, from the run directory.
pub(crate) const ETC_FILES: &[&str] = &["resolv.conf", "hosts", "hostname"];

/// Symlink loops end here (Linux's own limit is 40).
const MAX_SYMLINKS: usize = 40;

/// Mount points the sandbox made in the rootfs, rootfs-relative: `created` did not exist at
/// all; `copied_up` existed in a lower layer and were copied into the upperdir only because
/// something was created inside them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MountTrace {
    pub(crate) created: Vec<PathBuf>,
    pub(crate) copied_up: Vec<PathBuf>,
}

/// What to create at a mount target when it is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetKind {
    Dir,
    File,
}

/// The per-run layout shared by the parent and the helper.
#[derive(Debug, Clone)]
pub(crate) struct RunLayout {
    pub(crate) dir: PathBuf,
}

impl RunLayout {
    pub(crate) fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    pub(crate) fn empty_lower(&self) -> PathBuf {
        self.dir.join("empty")
    }
    pub(crate) fn etc_file(&self, name: &str) -> PathBuf {
        self.dir.join("etc").join(name)
    }
    pub(crate) fn secrets(&self) -> PathBuf {
        self.dir.join("secrets")
    }
    pub(crate) fn bind_scratch(&self, index: usize) -> PathBuf {
        self.dir.join(format!("bind-{index}"))
    }
}

/// Resolves `path` inside `root` the way the kernel would after a chroot there: absolute
/// symlinks restart at `root`, `..` stops at `root`. Returns the path relative to `root`.
pub(crate) fn resolve_in_root(
    sys: &dyn Syscall,
    root: &Path,
    path: &str,
) -> Result<PathBuf, ExecError> {
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut pending: Vec<std::ffi::OsString> = Vec::new();
    push_components(&mut pending, Path::new(path));
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate: PathBuf = std::iter::once(root.as_os_str())
            .chain(resolved.iter().map(|s| s.as_os_str()))
            .chain(std::iter::once(part.as_os_str()))
            .collect();
        let kind = sys
            .kind(&candidate)
            .map_err(|e| ExecError::fs("inspect", &candidate, e))?;
        if kind == Some(FileKind::Symlink) {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(ExecError::SymlinkLoop {
                    path: path.to_owned(),
                });
            }
            let target = sys
                .read_link(&candidate)
                .map_err(|e| ExecError::fs("read link", &candidate, e))?;
            if target.is_absolute() {
                resolved.clear();
            }
            push_components(&mut pending, &target);
        } else {
            resolved.push(part);
        }
    }
    Ok(resolved.iter().collect())
}

/// Pushes the components of `path` so that popping yields them in order.
fn push_components(stack: &mut Vec<std::ffi::OsString>, path: &Path) {
    let parts: Vec<std::ffi::OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    stack.extend(parts.into_iter().rev());
}

/// The host path and kind of a bind mount's source, resolved inside `source_root` so that
/// `..` and symlinks cannot leave it. Both backends bind-mount what this returns.
pub(crate) fn bind_source(
    sys: &dyn Syscall,
    source_root: &Path,
    source: &str,
) -> Result<(PathBuf, FileKind), ExecError> {
    let host = source_root.join(resolve_in_root(sys, source_root, source)?);
    let kind = sys
        .kind(&host)
        .map_err(|e| ExecError::fs("inspect", &host, e))?
        .ok_or_else(|| {
            ExecError::fs(
                "bind-mount",
                &host,
                std::io::Error::from_raw_os_error(libc::ENOENT),
            )
        })?;
    Ok((host, kind))
}

impl From<FileKind> for TargetKind {
    /// A mount target takes the kind of what is mounted on it: a directory for a directory,
    /// a file for anything else.
    fn from(kind: FileKind) -> Self {
        if kind == FileKind::Dir {
            TargetKind::Dir
        } else {
            TargetKind::File
        }
    }
}

/// Resolves `target` inside `root` and creates what is missing (parents as 0755 directories,
/// the last component as `kind`), recording creations in `trace`. `upperdir` (when the root is
/// an overlay) tells which existing parents get copied up by the creation.
pub(crate) fn ensure_target(
    sys: &dyn Syscall,
    root: &Path,
    upperdir: Option<&Path>,
    target: &str,
    kind: TargetKind,
    trace: &mut MountTrace,
) -> Result<PathBuf, ExecError> {
    if !target.starts_with('/') {
        return Err(ExecError::RelativePath {
            path: target.to_owned(),
        });
    }
    let rel = resolve_in_root(sys, root, target)?;
    let parts: Vec<_> = rel.components().collect();
    let mut current = PathBuf::new();
    let mut existing_parents: Vec<PathBuf> = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        current.push(part);
        let host = root.join(&current);
        let last = i + 1 == parts.len();
        let exists = sys
            .kind(&host)
            .map_err(|e| ExecError::fs("inspect", &host, e))?
            .is_some();
        if exists {
            if !last {
                existing_parents.push(current.clone());
            }
            continue;
        }
        // Existing parents that the upperdir lacks are copied up by this creation.
        for parent in existing_parents.drain(..) {
            let in_upper = match upperdir {
                Some(u) => sys
                    .kind(&u.join(&parent))
                    .map_err(|e| ExecError::fs("inspect", u.join(&parent), e))?
                    .is_some(),
                None => true,
            };
            if !in_upper && !trace.copied_up.contains(&parent) {
                trace.copied_up.push(parent);
            }
        }
        let result = if last && kind == TargetKind::File {
            sys.create_file(&host, 0o644)
        } else {
            sys.mkdir(&host, 0o755)
        };
        result.map_err(|e| ExecError::fs("create mount point", &host, e))?;
        trace.created.push(current.clone());
    }
    Ok(root.join(rel))
}

fn mount_err(from: &str, target: &Path, fstype: &str, err: std::io::Error) -> ExecError {
    ExecError::Mount {
        from: from.to_owned(),
        target: target.to_owned(),
        fstype: fstype.to_owned(),
        err,
    }
}

/// A recursive bind mount, then (when `remount` is not empty) a remount of it with those flags
/// (read-only, nodev).
fn bind(
    sys: &dyn Syscall,
    source: &Path,
    target: &Path,
    remount: MsFlags,
) -> Result<(), ExecError> {
    let from = source.display().to_string();
    sys.mount(
        Some(source),
        target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(|e| mount_err(&from, target, "bind", e))?;
    if !remount.is_empty() {
        sys.mount(
            None,
            target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_REC | remount,
            None,
        )
        .map_err(|e| mount_err(&from, target, "bind (remount)", e))?;
    }
    Ok(())
}

/// Flags for everything the step can write to: a device node it makes with CAP_MKNOD (Docker's
/// default set has it) must not open a host disk. Docker gets that from the devices cgroup;
/// nodev works the same on cgroup v1 and v2.
const NODEV: MsFlags = MsFlags::MS_NODEV;
const RO_NODEV: MsFlags = MsFlags::MS_RDONLY.union(MsFlags::MS_NODEV);

fn fs_mount(
    sys: &dyn Syscall,
    fstype: &str,
    target: &Path,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), ExecError> {
    sys.mount(Some(Path::new(fstype)), target, Some(fstype), flags, data)
        .map_err(|e| mount_err(fstype, target, fstype, e))
}

/// The overlay's option string; lowerdirs top-most first, an empty directory for scratch.
/// `volatile`: without it, unmounting the overlay syncs the whole upper filesystem, which
/// costs a journal commit per step; the store makes a snapshot durable when it commits it.
/// (The workdir then holds `work/incompat/volatile` and must not be reused for another mount.)
pub(crate) fn overlay_options(
    lowerdirs: &[PathBuf],
    empty_lower: &Path,
    upper: &Path,
    work: &Path,
) -> Result<String, ExecError> {
    let lowers: Vec<String> = if lowerdirs.is_empty() {
        vec![empty_lower.display().to_string()]
    } else {
        lowerdirs.iter().map(|p| p.display().to_string()).collect()
    };
    let data = format!(
        "lowerdir={},upperdir={},workdir={},volatile",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    // The kernel copies mount data into one page, NUL included.
    if data.len() > 4095 {
        return Err(ExecError::TooManyLayers {
            count: lowers.len(),
            len: data.len(),
        });
    }
    Ok(data)
}

/// Mounts the overlay rootfs at `layout.rootfs()`.
pub(crate) fn mount_overlay(
    sys: &dyn Syscall,
    spec: &SandboxSpec,
    layout: &RunLayout,
) -> Result<(), ExecError> {
    let data = overlay_options(
        &spec.lowerdirs,
        &layout.empty_lower(),
        &spec.upperdir,
        &spec.workdir,
    )?;
    let rootfs = layout.rootfs();
    let flags = if spec.security == SecurityMode::Insecure {
        MsFlags::empty()
    } else {
        NODEV
    };
    fs_mount(sys, "overlay", &rootfs, flags, Some(&data))
}

/// The files the sandbox provides under /etc: `(name, content)` for each of [`ETC_FILES`].
pub(crate) type EtcFiles = Vec<(String, Vec<u8>)>;

/// Makes the run directory a tmpfs private to this mount namespace and fills it (rootfs mount
/// point, empty lower, /etc files). Nothing of a native run touches the disk but the upperdir,
/// and concurrent runs can share one state directory.
fn prepare_run_dir(
    sys: &dyn Syscall,
    layout: &RunLayout,
    etc_files: &EtcFiles,
) -> Result<(), ExecError> {
    fs_mount(
        sys,
        "tmpfs",
        &layout.dir,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0700"),
    )?;
    for dir in [
        layout.rootfs(),
        layout.empty_lower(),
        layout.dir.join("etc"),
        layout.secrets(),
    ] {
        sys.mkdir(&dir, 0o700)
            .map_err(|e| ExecError::fs("create directory", &dir, e))?;
    }
    for (name, content) in etc_files {
        let path = layout.etc_file(name);
        sys.write_file(&path, content, 0o644)
            .map_err(|e| ExecError::fs("write", &path, e))?;
    }
    Ok(())
}

/// The whole native rootfs sequence, run in the helper's fresh mount namespace. Ends with the
/// process inside the new root.
pub(crate) fn setup_rootfs(
    sys: &dyn Syscall,
    spec: &SandboxSpec,
    layout: &RunLayout,
    etc_files: &EtcFiles,
) -> Result<MountTrace, ExecError> {
    let root = layout.rootfs();
    let upper = Some(spec.upperdir.as_path());
    let insecure = spec.security == SecurityMode::Insecure;
    let mut trace = MountTrace::default();
    // Nothing below may propagate back to the host.
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
    .map_err(|e| mount_err("/", Path::new("/"), "propagation", e))?;
    prepare_run_dir(sys, layout, etc_files)?;
    mount_overlay(sys, spec, layout)?;

    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc = ensure_target(sys, &root, upper, "/proc", TargetKind::Dir, &mut trace)?;
    fs_mount(sys, "proc", &proc, nosuid_nodev_noexec, None)?;

    let dev = ensure_target(sys, &root, upper, "/dev", TargetKind::Dir, &mut trace)?;
    // The device nodes below are bind mounts of the host's, which keep their own flags.
    let dev_flags = if insecure {
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME
    } else {
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME | NODEV
    };
    fs_mount(sys, "tmpfs", &dev, dev_flags, Some("mode=755,size=65536k"))?;
    for name in DEVICES {
        let node = dev.join(name);
        sys.create_file(&node, 0o666)
            .map_err(|e| ExecError::fs("create device node", &node, e))?;
        bind(sys, &Path::new("/dev").join(name), &node, MsFlags::empty())?;
    }
    let pts = dev.join("pts");
    sys.mkdir(&pts, 0o755)
        .map_err(|e| ExecError::fs("create directory", &pts, e))?;
    fs_mount(
        sys,
        "devpts",
        &pts,
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm = dev.join("shm");
    sys.mkdir(&shm, 0o1777)
        .map_err(|e| ExecError::fs("create directory", &shm, e))?;
    fs_mount(
        sys,
        "tmpfs",
        &shm,
        nosuid_nodev_noexec,
        Some("mode=1777,size=65536k"),
    )?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let path = dev.join(link);
        sys.symlink(Path::new(to), &path)
            .map_err(|e| ExecError::fs("create symlink", &path, e))?;
    }

    let sys_dir = ensure_target(sys, &root, upper, "/sys", TargetKind::Dir, &mut trace)?;
    let sys_flags = if insecure {
        nosuid_nodev_noexec
    } else {
        nosuid_nodev_noexec | MsFlags::MS_RDONLY
    };
    fs_mount(sys, "sysfs", &sys_dir, sys_flags, None)?;

    for name in ETC_FILES {
        let target = format!("/etc/{name}");
        let at = ensure_target(sys, &root, upper, &target, TargetKind::File, &mut trace)?;
        bind(sys, &layout.etc_file(name), &at, RO_NODEV)?;
    }

    mount_user_mounts(sys, spec, layout, &mut trace)?;

    if !insecure {
        mask_paths(sys, &root)?;
    }

    sys.chdir(&root)
        .map_err(|e| ExecError::fs("change directory to", &root, e))?;
    sys.pivot_root(Path::new("."), Path::new("."))
        .map_err(|err| ExecError::PivotRoot {
            root: root.clone(),
            err,
        })?;
    // The old root is stacked under the new one; detach it so the host tree is unreachable.
    sys.umount(Path::new("."), MntFlags::MNT_DETACH)
        .map_err(|err| ExecError::Unmount {
            target: "old root".into(),
            err,
        })?;
    sys.chdir(Path::new("/"))
        .map_err(|e| ExecError::fs("change directory to", "/", e))?;
    Ok(trace)
}

fn mount_user_mounts(
    sys: &dyn Syscall,
    spec: &SandboxSpec,
    layout: &RunLayout,
    trace: &mut MountTrace,
) -> Result<(), ExecError> {
    let root = layout.rootfs();
    let upper = Some(spec.upperdir.as_path());
    let mut ssh_index = 0;
    let mut secrets_mounted = false;
    for (index, mount) in spec.mounts.iter().enumerate() {
        let Some(target) = mount.target(ssh_index) else {
            continue;
        };
        match mount {
            MountSpec::Bind {
                source_root,
                source,
                readwrite,
                ..
            } => {
                let (host, kind) = bind_source(sys, source_root, source)?;
                let at = ensure_target(sys, &root, upper, &target, kind.into(), trace)?;
                if !readwrite {
                    bind(sys, &host, &at, RO_NODEV)?;
                    continue;
                }
                // rw: writes go to a throwaway layer, never to the source.
                let scratch = layout.bind_scratch(index);
                sys.mkdir(&scratch, 0o700)
                    .map_err(|e| ExecError::fs("create directory", &scratch, e))?;
                if kind == FileKind::Dir {
                    let (up, work) = (scratch.join("upper"), scratch.join("work"));
                    for d in [&up, &work] {
                        sys.mkdir(d, 0o755)
                            .map_err(|e| ExecError::fs("create directory", d, e))?;
                    }
                    let data = format!(
                        "lowerdir={},upperdir={},workdir={},volatile",
                        host.display(),
                        up.display(),
                        work.display()
                    );
                    fs_mount(sys, "overlay", &at, NODEV, Some(&data))?;
                } else {
                    let copy = scratch.join("file");
                    sys.copy_file(&host, &copy)
                        .map_err(|e| ExecError::fs("copy", &host, e))?;
                    bind(sys, &copy, &at, NODEV)?;
                }
            }
            MountSpec::Cache {
                host_dir, readonly, ..
            } => {
                let at = ensure_target(sys, &root, upper, &target, TargetKind::Dir, trace)?;
                let flags = if *readonly { RO_NODEV } else { NODEV };
                bind(sys, host_dir, &at, flags)?;
            }
            MountSpec::Tmpfs { size_bytes, .. } => {
                let at = ensure_target(sys, &root, upper, &target, TargetKind::Dir, trace)?;
                let data = match size_bytes {
                    Some(n) => format!("mode=1777,size={n}"),
                    None => "mode=1777".to_owned(),
                };
                fs_mount(
                    sys,
                    "tmpfs",
                    &at,
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(&data),
                )?;
            }
            MountSpec::Secret {
                content,
                mode,
                uid,
                gid,
                ..
            } => {
                // Secrets live on a tmpfs of this mount namespace only: never in the upperdir,
                // never visible on the host.
                let dir = layout.secrets();
                if !secrets_mounted {
                    fs_mount(
                        sys,
                        "tmpfs",
                        &dir,
                        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                        Some("mode=0700"),
                    )?;
                    secrets_mounted = true;
                }
                let file = dir.join(format!("secret-{index}"));
                sys.write_file(&file, content, *mode)
                    .map_err(|e| ExecError::fs("write secret", &file, e))?;
                sys.chown(&file, *uid, *gid)
                    .map_err(|e| ExecError::fs("chown", &file, e))?;
                let at = ensure_target(sys, &root, upper, &target, TargetKind::File, trace)?;
                bind(sys, &file, &at, RO_NODEV)?;
            }
            MountSpec::Ssh { socket, .. } => {
                ssh_index += 1;
                let at = ensure_target(sys, &root, upper, &target, TargetKind::File, trace)?;
                bind(sys, socket, &at, NODEV)?;
            }
        }
    }
    Ok(())
}

fn mask_paths(sys: &dyn Syscall, root: &Path) -> Result<(), ExecError> {
    let null = root.join("dev/null");
    for path in MASKED_PATHS {
        let at = root.join(&path[1..]);
        match sys
            .kind(&at)
            .map_err(|e| ExecError::fs("inspect", &at, e))?
        {
            Some(FileKind::Dir) => fs_mount(sys, "tmpfs", &at, MsFlags::MS_RDONLY, None)?,
            Some(_) => bind(sys, &null, &at, MsFlags::empty())?,
            None => {}
        }
    }
    for path in READONLY_PATHS {
        let at = root.join(&path[1..]);
        if sys
            .kind(&at)
            .map_err(|e| ExecError::fs("inspect", &at, e))?
            .is_some()
        {
            bind(sys, &at, &at, MsFlags::MS_RDONLY)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::fake::{Node, RecordingSyscall};

    fn spec() -> SandboxSpec {
        SandboxSpec::new(
            vec!["/layers/a".into(), "/layers/b".into()],
            "/snap/up".into(),
            "/snap/work".into(),
            vec!["true".into()],
        )
    }

    #[test]
    fn symlinks_and_dotdot_stay_inside_the_root() {
        let fake = RecordingSyscall::with_dirs(&["/r", "/r/etc", "/r/data"]);
        fake.add("/r/escape", Node::Symlink("/../../host".into()));
        fake.add("/r/rel", Node::Symlink("../../data".into()));
        assert_eq!(
            resolve_in_root(&fake, Path::new("/r"), "/escape/x").unwrap(),
            PathBuf::from("host/x")
        );
        assert_eq!(
            resolve_in_root(&fake, Path::new("/r"), "/../../etc/../rel").unwrap(),
            PathBuf::from("data")
        );
    }

    #[test]
    fn symlink_loops_are_an_error() {
        let fake = RecordingSyscall::with_dirs(&["/r"]);
        fake.add("/r/a", Node::Symlink("b".into()));
        fake.add("/r/b", Node::Symlink("/a".into()));
        assert!(matches!(
            resolve_in_root(&fake, Path::new("/r"), "/a"),
            Err(ExecError::SymlinkLoop { .. })
        ));
    }

    #[test]
    fn ensure_target_records_created_and_copied_up_paths() {
        let fake = RecordingSyscall::with_dirs(&["/r", "/r/etc", "/up"]);
        let mut trace = MountTrace::default();
        let at = ensure_target(
            &fake,
            Path::new("/r"),
            Some(Path::new("/up")),
            "/etc/ssl/cert.pem",
            TargetKind::File,
            &mut trace,
        )
        .unwrap();
        assert_eq!(at, PathBuf::from("/r/etc/ssl/cert.pem"));
        assert_eq!(
            trace,
            MountTrace {
                created: vec!["etc/ssl".into(), "etc/ssl/cert.pem".into()],
                copied_up: vec!["etc".into()],
            }
        );
        assert_eq!(
            fake.calls(),
            vec!["mkdir /r/etc/ssl 755", "create /r/etc/ssl/cert.pem 644"]
        );
    }

    #[test]
    fn native_mount_sequence() {
        let fake = RecordingSyscall::with_dirs(&["/run/x/rootfs", "/run/x/rootfs/proc"]);
        // /proc contents appear once proc is mounted; pretend two of the masked paths exist.
        fake.add("/run/x/rootfs/proc/kcore", Node::File);
        fake.add("/run/x/rootfs/proc/sys", Node::Dir);
        let mut spec = spec();
        spec.mounts.push(MountSpec::Tmpfs {
            target: "/tmp/t".into(),
            size_bytes: Some(1 << 20),
        });
        let layout = RunLayout {
            dir: "/run/x".into(),
        };
        let etc: EtcFiles = vec![("hosts".into(), b"127.0.0.1 localhost\n".to_vec())];
        let trace = setup_rootfs(&fake, &spec, &layout, &etc).unwrap();
        let calls = fake.calls();
        let mounts: Vec<&String> = calls
            .iter()
            .filter(|c| c.starts_with("mount") || c.starts_with("pivot") || c.starts_with("umount"))
            .collect();
        let expected = [
            "mount - / - MS_REC | MS_PRIVATE -",
            "mount tmpfs /run/x tmpfs MS_NOSUID | MS_NODEV mode=0700",
            "mount overlay /run/x/rootfs overlay MS_NODEV lowerdir=/layers/a:/layers/b,upperdir=/snap/up,workdir=/snap/work,volatile",
            "mount proc /run/x/rootfs/proc proc MS_NOSUID | MS_NODEV | MS_NOEXEC -",
            "mount tmpfs /run/x/rootfs/dev tmpfs MS_NOSUID | MS_NODEV | MS_STRICTATIME mode=755,size=65536k",
            "mount /dev/null /run/x/rootfs/dev/null - MS_BIND | MS_REC -",
            "mount /dev/zero /run/x/rootfs/dev/zero - MS_BIND | MS_REC -",
            "mount /dev/full /run/x/rootfs/dev/full - MS_BIND | MS_REC -",
            "mount /dev/random /run/x/rootfs/dev/random - MS_BIND | MS_REC -",
            "mount /dev/urandom /run/x/rootfs/dev/urandom - MS_BIND | MS_REC -",
            "mount /dev/tty /run/x/rootfs/dev/tty - MS_BIND | MS_REC -",
            "mount devpts /run/x/rootfs/dev/pts devpts MS_NOSUID | MS_NOEXEC newinstance,ptmxmode=0666,mode=0620,gid=5",
            "mount tmpfs /run/x/rootfs/dev/shm tmpfs MS_NOSUID | MS_NODEV | MS_NOEXEC mode=1777,size=65536k",
            "mount sysfs /run/x/rootfs/sys sysfs MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC -",
            "mount /run/x/etc/resolv.conf /run/x/rootfs/etc/resolv.conf - MS_BIND | MS_REC -",
            "mount - /run/x/rootfs/etc/resolv.conf - MS_RDONLY | MS_NODEV | MS_REMOUNT | MS_BIND | MS_REC -",
            "mount /run/x/etc/hosts /run/x/rootfs/etc/hosts - MS_BIND | MS_REC -",
            "mount - /run/x/rootfs/etc/hosts - MS_RDONLY | MS_NODEV | MS_REMOUNT | MS_BIND | MS_REC -",
            "mount /run/x/etc/hostname /run/x/rootfs/etc/hostname - MS_BIND | MS_REC -",
            "mount - /run/x/rootfs/etc/hostname - MS_RDONLY | MS_NODEV | MS_REMOUNT | MS_BIND | MS_REC -",
            "mount tmpfs /run/x/rootfs/tmp/t tmpfs MS_NOSUID | MS_NODEV mode=1777,size=1048576",
            "mount /run/x/rootfs/dev/null /run/x/rootfs/proc/kcore - MS_BIND | MS_REC -",
            "mount /run/x/rootfs/proc/sys /run/x/rootfs/proc/sys - MS_BIND | MS_REC -",
            "mount - /run/x/rootfs/proc/sys - MS_RDONLY | MS_REMOUNT | MS_BIND | MS_REC -",
            "pivot_root . .",
            "umount . MNT_DETACH",
        ];
        assert_eq!(mounts, expected.iter().collect::<Vec<_>>());
        assert!(calls.ends_with(&["chdir /".to_owned()]));
        assert!(calls.contains(&"write /run/x/etc/hosts 20 bytes 644".to_owned()));
        // /proc existed; everything else the sandbox created is recorded for cleanup.
        assert_eq!(
            trace.created,
            [
                "dev",
                "sys",
                "etc",
                "etc/resolv.conf",
                "etc/hosts",
                "etc/hostname",
                "tmp",
                "tmp/t"
            ]
            .iter()
            .map(PathBuf::from)
            .collect::<Vec<_>>()
        );
    }

    #[test]
    fn insecure_leaves_sys_writable_and_nothing_masked() {
        let fake = RecordingSyscall::with_dirs(&["/run/x/rootfs"]);
        fake.add("/run/x/rootfs/proc/kcore", Node::File);
        let mut spec = spec();
        spec.security = SecurityMode::Insecure;
        setup_rootfs(
            &fake,
            &spec,
            &RunLayout {
                dir: "/run/x".into(),
            },
            &EtcFiles::new(),
        )
        .unwrap();
        let calls = fake.calls();
        assert!(
            calls
                .iter()
                .any(|c| c
                    == "mount sysfs /run/x/rootfs/sys sysfs MS_NOSUID | MS_NODEV | MS_NOEXEC -")
        );
        assert!(!calls.iter().any(|c| c.contains("proc/kcore")));
    }

    #[test]
    fn symlinked_mount_target_is_created_inside_the_root() {
        let fake = RecordingSyscall::with_dirs(&["/run/x/rootfs", "/run/x/rootfs/proc"]);
        fake.add("/run/x/rootfs/out", Node::Symlink("/../../../host".into()));
        let mut spec = spec();
        spec.mounts.push(MountSpec::Tmpfs {
            target: "/out".into(),
            size_bytes: None,
        });
        setup_rootfs(
            &fake,
            &spec,
            &RunLayout {
                dir: "/run/x".into(),
            },
            &EtcFiles::new(),
        )
        .unwrap();
        assert!(fake
            .calls()
            .iter()
            .any(|c| c == "mount tmpfs /run/x/rootfs/host tmpfs MS_NOSUID | MS_NODEV mode=1777"));
    }
}
