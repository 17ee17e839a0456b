//! Signals for a container in the foreground, as `docker run` (without `-it`) proxies them:
//! what forge receives goes to the container's main process, which decides what to do.
//!
//! The executor starts its helper (native) or `runc run` in a process group of their own, so
//! a terminal's Ctrl-C reaches forge alone; this module finds the container's process among
//! forge's descendants and passes the signal on.

use std::path::Path;

use forge_executor::SANDBOX_INIT_ARG;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Sends signal number `signal` to the main process of the container this process runs: the step process
/// under the native helper (below the namespace's reaping pid 1), or `runc run`, which passes
/// it to the container's pid 1 itself. Returns whether a process was signalled; `false` while
/// the container has not started (or has already ended).
pub fn forward_signal(signal: i32) -> bool {
    let Ok(signal) = Signal::try_from(signal) else {
        return false;
    };
    let table = process_table();
    let children = |parent: i32| -> Vec<i32> {
        table
            .iter()
            .filter(|(_, ppid)| *ppid == parent)
            .map(|(pid, _)| *pid)
            .collect()
    };
    let mut sent = false;
    for child in children(std::process::id() as i32) {
        let argv = cmdline(child);
        let targets = if argv.get(1).map(String::as_str) == Some(SANDBOX_INIT_ARG) {
            // helper -> pid 1 of the step's namespace -> the step.
            children(child)
                .into_iter()
                .flat_map(&children)
                .collect::<Vec<_>>()
        } else if argv
            .first()
            .is_some_and(|a| Path::new(a).file_name().is_some_and(|n| n == "runc"))
        {
            vec![child]
        } else {
            Vec::new()
        };
        for pid in targets {
            sent |= kill(Pid::from_raw(pid), signal).is_ok();
        }
    }
    sent
}

/// Every process's (pid, parent pid), from /proc.
fn process_table() -> Vec<(i32, i32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parent_of(&stat)?))
        })
        .collect()
}

/// The parent pid in a /proc/PID/stat line: the second field after the command name, which
/// is in parentheses and may itself hold spaces and parentheses.
fn parent_of(stat: &str) -> Option<i32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_pid_follows_an_odd_command_name() {
        assert_eq!(parent_of("42 (a) b (c)) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parent_of("1 (init) S 0 1 1"), Some(0));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn nothing_to_signal_without_a_container() {
        // The test process starts no helper and no runc.
        assert!(!forward_signal(Signal::SIGUSR1 as i32));
        assert!(!forward_signal(-3), "not a signal");
    }
}
