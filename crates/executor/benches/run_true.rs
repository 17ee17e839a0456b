//! Overhead of `RUN true` per step: a busybox rootfs, a fresh upperdir each time, native
//! sandbox against runc. Prints a table; run with
//! `cargo bench -p forge-executor --bench run_true` as root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use forge_executor::{run, Runtime, SandboxConfig, SandboxSpec};

const WARMUP: usize = 5;
const STEPS: usize = 100;

/// Where per-run state goes: FORGE_BENCH_STATE_DIR (e.g. a tmpfs such as /run), else the
/// scratch directory.
fn state_dir(scratch: &Path) -> PathBuf {
    std::env::var_os("FORGE_BENCH_STATE_DIR").map_or_else(|| scratch.join("state"), PathBuf::from)
}

/// A busybox rootfs; with FORGE_BENCH_SKELETON=1 it also has the mount points real images ship
/// (/proc, /dev, /sys, empty /etc/hosts, /etc/hostname, /etc/resolv.conf).
fn busybox_rootfs(root: &Path) {
    if std::env::var_os("FORGE_BENCH_SKELETON").is_some() {
        for d in ["proc", "dev", "sys"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::create_dir_all(root.join("etc")).unwrap();
        for f in ["hosts", "hostname", "resolv.conf"] {
            std::fs::write(root.join("etc").join(f), "").unwrap();
        }
    }
    for d in ["bin", "etc", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "true"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
}

/// CPU time (user + system) of this process and every child it has waited for: the whole
/// sandbox (helper, its pid 1, the step, runc) but not kernel threads.
fn cpu_time() -> Duration {
    let usage = |who| {
        let r = nix::sys::resource::getrusage(who).unwrap();
        let tv = |t: nix::sys::time::TimeVal| {
            Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
        };
        tv(r.user_time()) + tv(r.system_time())
    };
    usage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        + usage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
}

fn measure(
    name: &str,
    runtime: Runtime,
    scratch: &Path,
    layer: &Path,
) -> (Vec<Duration>, Duration) {
    let config = SandboxConfig {
        helper_exe: PathBuf::from(env!("CARGO_BIN_EXE_forge-sandbox-init")),
        state_dir: state_dir(scratch),
        runtime,
        cancel: None,
    };
    let mut times = Vec::with_capacity(STEPS);
    let mut cpu = Duration::ZERO;
    for i in 0..WARMUP + STEPS {
        let snap = scratch.join(format!("{name}-{i}"));
        std::fs::create_dir_all(snap.join("fs")).unwrap();
        std::fs::create_dir_all(snap.join("work")).unwrap();
        let spec = SandboxSpec::new(
            vec![layer.to_path_buf()],
            snap.join("fs"),
            snap.join("work"),
            vec!["true".into()],
        );
        let (start, cpu_start) = (Instant::now(), cpu_time());
        run(&config, &spec, &mut |_, _| {}).unwrap_or_else(|e| panic!("{name}: {e}"));
        if i >= WARMUP {
            times.push(start.elapsed());
            cpu += cpu_time() - cpu_start;
        }
        std::fs::remove_dir_all(&snap).unwrap();
    }
    times.sort();
    (times, cpu / STEPS as u32)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    // FORGE_BENCH_DIR puts layers, upperdirs and run state elsewhere (e.g. a tmpfs, to see
    // what the disk's journal costs).
    let base = std::env::var_os("FORGE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let tmp = tempfile::Builder::new()
        .prefix("forge-bench-run-true-")
        .tempdir_in(base)
        .unwrap();
    let layer = tmp.path().join("busybox");
    busybox_rootfs(&layer);
    let runc = Runtime::Runc {
        binary: PathBuf::from("/usr/bin/runc"),
    };
    println!("RUN true, {STEPS} steps each (after {WARMUP} warm-up), fresh upperdir per step");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average before: {}",
        load.split(' ').next().unwrap_or("?")
    );
    println!("| backend | mean ms | median ms | p90 ms | min ms | CPU ms/step |");
    println!("|---|---|---|---|---|---|");
    for (name, runtime) in [("native", Runtime::Native), ("runc", runc)] {
        let (t, cpu) = measure(name, runtime, tmp.path(), &layer);
        let mean = t.iter().sum::<Duration>() / t.len() as u32;
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            ms(mean),
            ms(t[t.len() / 2]),
            ms(t[t.len() * 9 / 10]),
            ms(t[0]),
            ms(cpu)
        );
    }
}
