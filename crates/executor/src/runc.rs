//! The OCI runtime backend: the same step through `runc run`, from a config.json generated with
//! oci-spec. forge mounts the overlay rootfs (and rw bind overlays, the secrets tmpfs) on the
//! host itself, creates the mount points with the same code as the native backend so both
//! leave the same layer, and lets runc do namespaces, /proc, /dev, masking and capabilities.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::mount::MntFlags;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder,
    PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::error::ExecError;
use crate::mounts::{
    bind_source, ensure_target, mount_overlay, MountTrace, RunLayout, TargetKind, ETC_FILES,
    MASKED_PATHS, READONLY_PATHS,
};
use crate::native::BackendResult;
use crate::output::pump;
use crate::process::{create_workdir, nofile_limit, ALL_CAPS, CAP_NAMES, DEFAULT_CAPS};
use crate::sandbox::watch_cancel;
use crate::spec::{ExitKind, MountSpec, SandboxConfig, SandboxSpec, SecurityMode, Stream};
use crate::syscall::{FileKind, LinuxSyscall, Syscall};
use crate::user::{resolve_user, Identity};

/// Host mounts made for one runc run, undone (lazily) in reverse order.
struct HostMounts(Vec<PathBuf>);

impl Drop for HostMounts {
    fn drop(&mut self) {
        for target in self.0.iter().rev() {
            let _ = LinuxSyscall.umount(target, MntFlags::MNT_DETACH);
        }
    }
}

fn spec_err(e: oci_spec::OciSpecError) -> ExecError {
    ExecError::RuntimeConfig {
        reason: e.to_string(),
    }
}

fn oci_mount(dest: &str, typ: &str, source: &Path, options: &[&str]) -> Result<Mount, ExecError> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(spec_err)
}

pub(crate) fn run_runc(
    binary: &Path,
    config: &SandboxConfig,
    spec: &SandboxSpec,
    layout: &RunLayout,
    name: &str,
    mut env: Vec<String>,
    output: &mut dyn FnMut(Stream, &[u8]),
) -> Result<BackendResult, ExecError> {
    let sys = LinuxSyscall;
    let rootfs = layout.rootfs();
    let mut host_mounts = HostMounts(Vec::new());
    mount_overlay(&sys, spec, layout)?;
    host_mounts.0.push(rootfs.clone());
    let identity = resolve_user(&rootfs, &spec.user)?;
    let (mounts, trace) = prepare_mounts(&sys, spec, layout, &mut host_mounts)?;
    create_workdir(&sys, &rootfs, &spec.cwd, &identity)?;
    if !env.iter().any(|kv| kv.starts_with("HOME=")) {
        env.push(format!("HOME={}", identity.home));
    }
    let oci = build_config(spec, &rootfs, mounts, &identity, env)?;
    let config_path = layout.dir.join("config.json");
    oci.save(&config_path)
        .map_err(|e| ExecError::RuntimeConfig {
            reason: format!("{}: {e}", config_path.display()),
        })?;

    let state = config.state_dir.join("runc-state");
    let cancel = config.cancel.clone();
    if cancel.as_ref().is_some_and(|c| c.load(Ordering::SeqCst)) {
        return Err(ExecError::Cancelled);
    }
    // Declared after `host_mounts`, so the container is gone before its rootfs is unmounted.
    let container = Container {
        binary: binary.to_owned(),
        root: state.clone(),
        name: name.to_owned(),
    };
    // A process group of its own, as the native helper has: a terminal's Ctrl-C reaches forge
    // alone (`runc run` would pass it to the container a second time).
    let mut child = Command::new(binary)
        .process_group(0)
        .arg("--root")
        .arg(&state)
        .arg("run")
        .arg("--bundle")
        .arg(&layout.dir)
        .arg(name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| ExecError::SpawnHelper {
            exe: binary.to_owned(),
            err,
        })?;
    let finished = Arc::new(AtomicBool::new(false));
    let watcher = cancel.map(|cancel| {
        let (binary, root, name) = (binary.to_owned(), state.clone(), name.to_owned());
        // `runc kill` fails until `runc run` has created the container; the watcher retries.
        watch_cancel(cancel, finished.clone(), move || {
            runc_command(&binary, &root, &["kill", &name, "KILL"])
        })
    });
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let tail = pump(stdout, stderr, output);
    let status = child.wait();
    finished.store(true, Ordering::SeqCst);
    let cancelled = watcher.is_some_and(|w| w.join().unwrap_or(false));
    let status = status.map_err(|err| ExecError::SpawnHelper {
        exe: binary.to_owned(),
        err,
    })?;
    drop(container);
    drop(host_mounts);
    if cancelled {
        return Err(ExecError::Cancelled);
    }
    let exit = match (
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (Some(c), _) => ExitKind::Code(c),
        (None, Some(s)) => ExitKind::Signal(s),
        (None, None) => ExitKind::Code(-1),
    };
    Ok(BackendResult { trace, exit, tail })
}

/// `runc --root ROOT ARGS...` with its output discarded; whether it succeeded.
fn runc_command(binary: &Path, root: &Path, args: &[&str]) -> bool {
    Command::new(binary)
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A container `runc run` may have left in runc's state directory: `runc run` deletes its
/// container when the process exits, but not when it is itself killed or fails half-way, so
/// this forces the deletion on every path (a killed, cancelled or failed step alike).
struct Container {
    binary: PathBuf,
    root: PathBuf,
    name: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        // runc keeps a directory per container under its root; none means nothing to delete
        // (the common case, which then costs no extra runc process).
        if self.root.join(&self.name).exists() {
            runc_command(&self.binary, &self.root, &["delete", "--force", &self.name]);
        }
    }
}

/// The mounts of config.json, with their targets created in the rootfs as the native backend
/// creates them.
fn prepare_mounts(
    sys: &dyn Syscall,
    spec: &SandboxSpec,
    layout: &RunLayout,
    host_mounts: &mut HostMounts,
) -> Result<(Vec<Mount>, MountTrace), ExecError> {
    let rootfs = layout.rootfs();
    let upper = Some(spec.upperdir.as_path());
    let mut trace = MountTrace::default();
    for dir in ["/proc", "/dev", "/sys"] {
        ensure_target(sys, &rootfs, upper, dir, TargetKind::Dir, &mut trace)?;
    }
    let sys_ro = if spec.security == SecurityMode::Insecure {
        "rw"
    } else {
        "ro"
    };
    let mut mounts = vec![
        oci_mount(
            "/proc",
            "proc",
            Path::new("proc"),
            &["nosuid", "noexec", "nodev"],
        )?,
        oci_mount(
            "/dev",
            "tmpfs",
            Path::new("tmpfs"),
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        oci_mount(
            "/dev/pts",
            "devpts",
            Path::new("devpts"),
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        oci_mount(
            "/dev/shm",
            "tmpfs",
            Path::new("shm"),
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        oci_mount(
            "/sys",
            "sysfs",
            Path::new("sysfs"),
            &["nosuid", "noexec", "nodev", sys_ro],
        )?,
    ];
    for name in ETC_FILES {
        let target = format!("/etc/{name}");
        ensure_target(sys, &rootfs, upper, &target, TargetKind::File, &mut trace)?;
        mounts.push(oci_mount(
            &target,
            "bind",
            &layout.etc_file(name),
            &["rbind", "ro", "nodev"],
        )?);
    }
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
                ensure_target(sys, &rootfs, upper, &target, kind.into(), &mut trace)?;
                let source = if !readwrite {
                    host
                } else {
                    let scratch = layout.bind_scratch(index);
                    std::fs::create_dir(&scratch)
                        .map_err(|e| ExecError::fs("create directory", &scratch, e))?;
                    if kind == FileKind::Dir {
                        let (up, work, merged) = (
                            scratch.join("upper"),
                            scratch.join("work"),
                            scratch.join("merged"),
                        );
                        for d in [&up, &work, &merged] {
                            std::fs::create_dir(d)
                                .map_err(|e| ExecError::fs("create directory", d, e))?;
                        }
                        let data = format!(
                            "lowerdir={},upperdir={},workdir={},volatile",
                            host.display(),
                            up.display(),
                            work.display()
                        );
                        sys.mount(
                            Some(Path::new("overlay")),
                            &merged,
                            Some("overlay"),
                            nix::mount::MsFlags::MS_NODEV,
                            Some(&data),
                        )
                        .map_err(|err| ExecError::Mount {
                            from: host.display().to_string(),
                            target: merged.clone(),
                            fstype: "overlay".into(),
                            err,
                        })?;
                        host_mounts.0.push(merged.clone());
                        merged
                    } else {
                        let copy = scratch.join("file");
                        std::fs::copy(&host, &copy).map_err(|e| ExecError::fs("copy", &host, e))?;
                        copy
                    }
                };
                let mode = if *readwrite { "rw" } else { "ro" };
                mounts.push(oci_mount(
                    &target,
                    "bind",
                    &source,
                    &["rbind", mode, "nodev"],
                )?);
            }
            MountSpec::Cache {
                host_dir, readonly, ..
            } => {
                ensure_target(sys, &rootfs, upper, &target, TargetKind::Dir, &mut trace)?;
                let mode = if *readonly { "ro" } else { "rw" };
                mounts.push(oci_mount(
                    &target,
                    "bind",
                    host_dir,
                    &["rbind", mode, "nodev"],
                )?);
            }
            MountSpec::Tmpfs { size_bytes, .. } => {
                ensure_target(sys, &rootfs, upper, &target, TargetKind::Dir, &mut trace)?;
                let size = size_bytes.map(|n| format!("size={n}"));
                let mut options = vec!["nosuid", "nodev", "mode=1777"];
                if let Some(s) = &size {
                    options.push(s);
                }
                mounts.push(oci_mount(&target, "tmpfs", Path::new("tmpfs"), &options)?);
            }
            MountSpec::Secret {
                content,
                mode,
                uid,
                gid,
                ..
            } => {
                let dir = layout.secrets();
                if !secrets_mounted {
                    sys.mount(
                        Some(Path::new("tmpfs")),
                        &dir,
                        Some("tmpfs"),
                        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                        Some("mode=0700"),
                    )
                    .map_err(|err| ExecError::Mount {
                        from: "tmpfs".into(),
                        target: dir.clone(),
                        fstype: "tmpfs".into(),
                        err,
                    })?;
                    host_mounts.0.push(dir.clone());
                    secrets_mounted = true;
                }
                let file = dir.join(format!("secret-{index}"));
                sys.write_file(&file, content, *mode)
                    .map_err(|e| ExecError::fs("write secret", &file, e))?;
                sys.chown(&file, *uid, *gid)
                    .map_err(|e| ExecError::fs("chown", &file, e))?;
                ensure_target(sys, &rootfs, upper, &target, TargetKind::File, &mut trace)?;
                mounts.push(oci_mount(
                    &target,
                    "bind",
                    &file,
                    &["rbind", "ro", "nodev"],
                )?);
            }
            MountSpec::Ssh { socket, .. } => {
                ssh_index += 1;
                ensure_target(sys, &rootfs, upper, &target, TargetKind::File, &mut trace)?;
                mounts.push(oci_mount(&target, "bind", socket, &["rbind", "nodev"])?);
            }
        }
    }
    Ok((mounts, trace))
}

fn caps_of(mask: u64) -> Capabilities {
    CAP_NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1 << bit) != 0)
        .filter_map(|(_, name)| serde_json::from_value::<Capability>(name.to_string().into()).ok())
        .collect()
}

fn build_config(
    spec: &SandboxSpec,
    rootfs: &Path,
    mounts: Vec<Mount>,
    identity: &Identity,
    env: Vec<String>,
) -> Result<Spec, ExecError> {
    let insecure = spec.security == SecurityMode::Insecure;
    let mask =
        if insecure { ALL_CAPS } else { DEFAULT_CAPS } & crate::process::current_permitted_caps();
    let all = caps_of(mask);
    // Like the native backend: a non-root user keeps only the bounding set.
    let held = if identity.uid == 0 {
        all.clone()
    } else {
        Capabilities::new()
    };
    let caps = LinuxCapabilitiesBuilder::default()
        .bounding(all)
        .effective(held.clone())
        .permitted(held)
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()
        .map_err(spec_err)?;
    let nofile = nofile_limit();
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(identity.uid)
                .gid(identity.gid)
                .additional_gids(identity.groups.clone())
                .build()
                .map_err(spec_err)?,
        )
        .args(spec.argv.clone())
        .env(env)
        .cwd(&spec.cwd)
        .capabilities(caps)
        .no_new_privileges(true)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(nofile)
            .hard(nofile)
            .build()
            .map_err(spec_err)?])
        .build()
        .map_err(spec_err)?;
    let mut namespaces = vec![
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Cgroup,
    ];
    if !spec.network.is_host() {
        namespaces.push(LinuxNamespaceType::Network);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(spec_err)?;
    // Deny every device; runc then allows its defaults (null, zero, tty, ...), as Docker does.
    let mut resources =
        LinuxResourcesBuilder::default().devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .map_err(spec_err)?]);
    if let Some(m) = spec.limits.memory_bytes {
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(m as i64)
                .swap(m as i64)
                .build()
                .map_err(spec_err)?,
        );
    }
    if let Some(p) = spec.limits.pids {
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(p as i64)
                .build()
                .map_err(spec_err)?,
        );
    }
    if let Some(c) = spec.limits.cpu_millis {
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .period(100_000u64)
                .quota((c * 100) as i64)
                .build()
                .map_err(spec_err)?,
        );
    }
    let list = |paths: &[&str]| -> Vec<String> {
        if insecure {
            Vec::new()
        } else {
            paths.iter().map(|s| s.to_string()).collect()
        }
    };
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .masked_paths(list(MASKED_PATHS))
        .readonly_paths(list(READONLY_PATHS))
        .resources(resources.build().map_err(spec_err)?)
        .build()
        .map_err(spec_err)?;
    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(rootfs)
                .readonly(false)
                .build()
                .map_err(spec_err)?,
        )
        .hostname(spec.hostname.clone())
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(spec_err)
}
