//! Steps that outlived their forge. A native step dies with forge (its helper has PDEATHSIG
//! and holds the step's pid namespace), but a runc container outlives `runc run`, so a forge
//! killed with SIGKILL during a runc step leaves the container running. Every step's cgroup
//! is named `forge-<pid>-<step>-<nanos>` after the forge that made it (runc puts a container
//! in `/<container id>` of every hierarchy); [`reap_orphans`] kills what runs in the cgroups
//! of forge processes that are gone and removes those cgroups. `forge build` and `forge run`
//! call it when they start.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Kills the processes left in the cgroups of forge processes that no longer run, and
/// removes those cgroups. Returns how many cgroup directories it removed. Best effort: what
/// it cannot read or remove is left for the next call.
pub fn reap_orphans() -> usize {
    reap_at(Path::new(CGROUP_ROOT), &forge_runs, &|pid| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    })
}

/// Whether a process `pid` runs. Any process counts, not just forge: the sandbox's own tests
/// name step cgroups after their test binary, and a pid reused by another program only delays
/// the reaping, never kills a live step.
fn forge_runs(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The forge pid in a step cgroup's name.
fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("forge-")?;
    let (pid, step) = rest.split_once('-')?;
    (!step.is_empty()).then_some(())?;
    pid.parse().ok()
}

/// The orphaned step cgroups below `root`: at most two levels down (a v1 controller, or the
/// cgroup2 mount inside a hybrid hierarchy, then the step's directory).
fn orphans(root: &Path, alive: &dyn Fn(u32) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name();
            match owner(&name.to_string_lossy()) {
                Some(pid) if !alive(pid) => found.push(entry.path()),
                Some(_) => {}
                None if depth < 1 => dirs.push((entry.path(), depth + 1)),
                None => {}
            }
        }
    }
    found
}

fn reap_at(root: &Path, alive: &dyn Fn(u32) -> bool, kill: &dyn Fn(i32)) -> usize {
    let dirs = orphans(root, alive);
    let members = |dir: &Path| -> Vec<i32> {
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    for dir in &dirs {
        for pid in members(dir) {
            kill(pid);
        }
    }
    // A killed process leaves its cgroup a moment later; an empty cgroup can be removed.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut removed = 0;
    for dir in &dirs {
        loop {
            if std::fs::remove_dir(dir).is_ok() {
                removed += 1;
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            for pid in members(dir) {
                kill(pid);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn step_cgroup_names_give_their_forge_pid() {
        assert_eq!(owner("forge-123-0-58116d6"), Some(123));
        assert_eq!(owner("forge-123-"), None);
        assert_eq!(owner("forge-x-1"), None);
        assert_eq!(owner("forge"), None);
        assert_eq!(owner("system.slice"), None);
    }

    #[test]
    fn only_cgroups_of_dead_forges_are_reaped() {
        let root = tempfile::tempdir().unwrap();
        let mk = |rel: &str, procs: &str| {
            let dir = root.path().join(rel);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cgroup.procs"), procs).unwrap();
        };
        mk("pids/forge-100-0-aa", "7\n8\n");
        mk("memory/forge-100-0-aa", "7\n8\n");
        mk("pids/forge-200-0-bb", "9\n");
        mk("unified/forge-100-1-cc", "");
        mk("pids/user.slice/forge-100-2-dd", "10\n");
        let killed = RefCell::new(Vec::new());
        let found = orphans(root.path(), &|pid| pid == 200);
        let mut names: Vec<_> = found
            .iter()
            .map(|p| p.strip_prefix(root.path()).unwrap().display().to_string())
            .collect();
        names.sort();
        // Two levels down only: a step cgroup deeper than that is not runc's.
        assert_eq!(
            names,
            [
                "memory/forge-100-0-aa",
                "pids/forge-100-0-aa",
                "unified/forge-100-1-cc"
            ]
        );
        // Plain directories cannot be rmdir'ed with a file inside, as cgroups can: the reaper
        // gives up on them after its deadline, but it has killed every member by then.
        reap_at(root.path(), &|pid| pid == 200, &|pid| {
            killed.borrow_mut().push(pid)
        });
        let mut killed = killed.into_inner();
        killed.sort();
        killed.dedup();
        assert_eq!(killed, [7, 8]);
    }
}
