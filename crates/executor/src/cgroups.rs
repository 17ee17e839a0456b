//! Resource limits for a step through cgroups: v2 when /sys/fs/cgroup is a unified hierarchy,
//! otherwise the v1 controllers (this host is hybrid: v1 controllers, and a cgroup2 mount
//! without controllers at /sys/fs/cgroup/unified, which cannot limit anything). The step's
//! cgroup is created under forge's own and removed after the step.

use std::path::{Path, PathBuf};

use crate::error::ExecError;
use crate::spec::ResourceLimits;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// CFS period used for CPU limits (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

/// One step's cgroup (one directory per v1 controller, or one v2 directory).
#[derive(Debug)]
pub(crate) struct StepCgroup {
    dirs: Vec<PathBuf>,
}

fn write(path: &Path, value: &str) -> Result<(), ExecError> {
    std::fs::write(path, value).map_err(|err| ExecError::Cgroup {
        path: path.to_owned(),
        err,
    })
}

fn mkdir(path: &Path) -> Result<(), ExecError> {
    std::fs::create_dir(path).map_err(|err| ExecError::Cgroup {
        path: path.to_owned(),
        err,
    })
}

/// This process's cgroup path in a hierarchy (`0::` for v2, `N:controller:` for v1), from
/// the text of /proc/self/cgroup.
fn own_path(proc_self_cgroup: &str, controller: Option<&str>) -> String {
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, list, path) = (parts.next(), parts.next(), parts.next());
        let (Some(list), Some(path)) = (list, path) else {
            continue;
        };
        let matches = match controller {
            None => list.is_empty(),
            Some(c) => list.split(',').any(|x| x == c),
        };
        if matches {
            return path.trim_start_matches('/').to_owned();
        }
    }
    String::new()
}

impl StepCgroup {
    /// Creates the cgroup `name` with `limits`; `None` when no limit is set.
    pub(crate) fn create(name: &str, limits: &ResourceLimits) -> Result<Option<Self>, ExecError> {
        if limits.is_empty() {
            return Ok(None);
        }
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Self::create_at(Path::new(CGROUP_ROOT), &own, name, limits).map(Some)
    }

    /// [`StepCgroup::create`] under a given cgroup mount root and /proc/self/cgroup text.
    fn create_at(
        root: &Path,
        proc_self_cgroup: &str,
        name: &str,
        limits: &ResourceLimits,
    ) -> Result<Self, ExecError> {
        let mut cgroup = StepCgroup { dirs: Vec::new() };
        if root.join("cgroup.controllers").exists() {
            let parent = root.join(own_path(proc_self_cgroup, None));
            let wanted: Vec<&str> = [
                limits.memory_bytes.map(|_| "+memory"),
                limits.pids.map(|_| "+pids"),
                limits.cpu_millis.map(|_| "+cpu"),
            ]
            .into_iter()
            .flatten()
            .collect();
            write(&parent.join("cgroup.subtree_control"), &wanted.join(" "))?;
            let dir = parent.join(name);
            mkdir(&dir)?;
            cgroup.dirs.push(dir.clone());
            if let Some(m) = limits.memory_bytes {
                write(&dir.join("memory.max"), &m.to_string())?;
                // Swap would let the step exceed the limit.
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
            }
            if let Some(p) = limits.pids {
                write(&dir.join("pids.max"), &p.to_string())?;
            }
            if let Some(c) = limits.cpu_millis {
                write(
                    &dir.join("cpu.max"),
                    &format!("{} {CPU_PERIOD_US}", c * CPU_PERIOD_US / 1000),
                )?;
            }
            return Ok(cgroup);
        }
        let mut v1 = |controller: &str| -> Result<PathBuf, ExecError> {
            let dir = root
                .join(controller)
                .join(own_path(proc_self_cgroup, Some(controller)))
                .join(name);
            mkdir(&dir)?;
            cgroup.dirs.push(dir.clone());
            Ok(dir)
        };
        if let Some(m) = limits.memory_bytes {
            let dir = v1("memory")?;
            write(&dir.join("memory.limit_in_bytes"), &m.to_string())?;
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &m.to_string())?;
            }
        }
        if let Some(p) = limits.pids {
            let dir = v1("pids")?;
            write(&dir.join("pids.max"), &p.to_string())?;
        }
        if let Some(c) = limits.cpu_millis {
            let dir = v1("cpu")?;
            write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            write(
                &dir.join("cpu.cfs_quota_us"),
                &(c * CPU_PERIOD_US / 1000).to_string(),
            )?;
        }
        Ok(cgroup)
    }

    /// Moves `pid` (the helper, before it forks anything) into the cgroup.
    pub(crate) fn add(&self, pid: u32) -> Result<(), ExecError> {
        for dir in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }
}

impl Drop for StepCgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            // The namespace's processes may take a moment to leave after SIGKILL.
            for _ in 0..100 {
                match std::fs::remove_dir(dir) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(10))
                    }
                    _ => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    const LIMITS: ResourceLimits = ResourceLimits {
        memory_bytes: Some(1 << 30),
        pids: Some(100),
        cpu_millis: Some(1500),
    };

    #[test]
    fn v2_writes_unified_limits_under_our_own_cgroup() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
        std::fs::create_dir_all(root.path().join("user.slice/forge")).unwrap();
        let cg =
            StepCgroup::create_at(root.path(), "0::/user.slice/forge\n", "step1", &LIMITS).unwrap();
        let parent = root.path().join("user.slice/forge");
        let dir = parent.join("step1");
        assert_eq!(cg.dirs, vec![dir.clone()]);
        assert_eq!(
            read(&parent.join("cgroup.subtree_control")),
            "+memory +pids +cpu"
        );
        assert_eq!(read(&dir.join("memory.max")), "1073741824");
        assert_eq!(read(&dir.join("pids.max")), "100");
        assert_eq!(read(&dir.join("cpu.max")), "150000 100000");
        std::mem::forget(cg);
    }

    #[test]
    fn v1_uses_one_directory_per_limited_controller() {
        let root = tempfile::tempdir().unwrap();
        for c in ["memory/api/x", "pids", "cpu"] {
            std::fs::create_dir_all(root.path().join(c)).unwrap();
        }
        let own = "9:pids:/\n4:memory:/api/x\n2:cpu,cpuacct:/\n0::/\n";
        let limits = ResourceLimits {
            memory_bytes: Some(4096),
            pids: None,
            cpu_millis: Some(500),
        };
        let cg = StepCgroup::create_at(root.path(), own, "s", &limits).unwrap();
        let (mem, cpu) = (
            root.path().join("memory/api/x/s"),
            root.path().join("cpu/s"),
        );
        assert_eq!(cg.dirs, vec![mem.clone(), cpu.clone()]);
        assert_eq!(read(&mem.join("memory.limit_in_bytes")), "4096");
        assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
        assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
        assert!(!root.path().join("pids/s").exists());
        std::mem::forget(cg);
    }
}
