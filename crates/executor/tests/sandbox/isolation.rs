//! What a RUN step must not be able to do or see.

use forge_executor::{ExecError, MountSpec, NetworkMode, SecurityMode};

use crate::support::*;

fn run_ok(script: &str) -> String {
    let s = Scratch::new();
    run_step(&s.config(native()), &s.spec(script)).ok()
}

#[test]
fn cannot_see_host_processes() {
    let out = run_ok("ls /proc | grep -E '^[0-9]+$' | wc -l; echo $$");
    let lines: Vec<&str> = out.lines().collect();
    // pid 1 (the sandbox's init), the shell, and the pipeline's children: nothing of the host.
    let count: u32 = lines[0].trim().parse().unwrap();
    assert!(count <= 5, "saw {count} processes: {out}");
    assert_eq!(
        lines[1], "2",
        "the step is the child of the namespace's pid 1"
    );
}

#[test]
fn cannot_mount_or_change_the_hostname() {
    let out = run_ok(
        "mkdir -p /m; mount -t tmpfs none /m 2>/dev/null && echo mounted; \
         hostname evil 2>/dev/null && echo renamed; hostname; cat /etc/hostname",
    );
    assert_eq!(out, "forge\nforge\n");
}

#[test]
fn proc_is_masked_and_read_only_where_runc_masks_it() {
    // This VM's kernel has no /proc/kcore; every masked file the host does have must read empty.
    let masked = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
    ];
    let present: Vec<&str> = masked
        .into_iter()
        .filter(|p| std::path::Path::new(p).exists())
        .collect();
    assert!(
        !present.is_empty(),
        "no masked /proc file exists on this host to check"
    );
    let script = format!(
        "for f in {}; do echo \"$f $(wc -c < $f)\"; done; \
         (echo h > /proc/sysrq-trigger) 2>/dev/null && echo wrote; \
         ls /sys/firmware | wc -l; grep ' /sys sysfs' /proc/mounts | cut -d' ' -f4 | cut -d, -f1",
        present.join(" ")
    );
    let out = run_ok(&script);
    let want: String = present.iter().map(|p| format!("{p} 0\n")).collect();
    assert_eq!(out, format!("{want}0\nro\n"));
}

#[test]
fn dev_holds_only_the_minimal_devices() {
    let out = run_ok("ls /dev | tr '\\n' ' '");
    assert_eq!(
        out,
        "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero "
    );
}

#[test]
fn capabilities_are_dockers_default_set() {
    let out =
        run_ok("grep -E '^Cap(Eff|Bnd|Inh)' /proc/self/status; grep NoNewPrivs /proc/self/status");
    assert_eq!(
        out,
        "CapInh:\t0000000000000000\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nNoNewPrivs:\t1\n"
    );
}

#[test]
fn non_root_user_has_no_effective_capabilities_and_its_groups() {
    let s = Scratch::new();
    let mut spec = s.spec("id; grep CapEff /proc/self/status; pwd; stat -c %U /home/app/new");
    spec.user = "app".into();
    spec.cwd = "/home/app/new".into();
    let out = run_step(&s.config(native()), &spec).ok();
    assert_eq!(
        out,
        "uid=1000(app) gid=1000(app) groups=50(staff),1000(app)\nCapEff:\t0000000000000000\n/home/app/new\napp\n"
    );
}

#[test]
fn no_host_environment_leaks_in() {
    std::env::set_var("FORGE_HOST_SECRET", "leak");
    let s = Scratch::new();
    let mut spec = s.spec("env | sort");
    spec.env = vec![("A".into(), "1".into())];
    let out = run_step(&s.config(native()), &spec).ok();
    assert_eq!(
        out,
        "A=1\nHOME=/root\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nPWD=/\nSHLVL=1\n"
    );
}

#[test]
fn no_forge_descriptor_leaks_in() {
    let out = run_ok("ls /proc/self/fd | tr '\\n' ' '");
    // 0-2 and the one ls opened to list the directory.
    assert_eq!(out, "0 1 2 3 ");
}

#[test]
fn cannot_write_outside_the_rootfs() {
    let s = Scratch::new();
    let outside = s.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    // A bind source with `..` stays inside its root.
    let ctx = s.path().join("ctx");
    std::fs::create_dir_all(ctx.join("sub")).unwrap();
    std::fs::write(ctx.join("sub/inside"), "in").unwrap();
    let mut spec = s.spec(
        "ls /ctx | tr '\\n' ' '; echo x > /proc/self/root/../../escape-proc; \
         echo y > /link/escape-link; echo done",
    );
    spec.mounts.push(MountSpec::Bind {
        source_root: ctx.join("sub"),
        source: "../../..".into(),
        target: "/ctx".into(),
        readwrite: false,
    });
    // A mount target through a symlink pointing out of the rootfs stays inside it.
    std::fs::create_dir_all(s.path().join("lower2")).unwrap();
    std::os::unix::fs::symlink(&outside, s.path().join("lower2/link")).unwrap();
    spec.lowerdirs.insert(0, s.path().join("lower2"));
    spec.mounts.push(MountSpec::Tmpfs {
        target: "/link/mnt".into(),
        size_bytes: None,
    });
    let out = run_step(&s.config(native()), &spec).ok();
    assert_eq!(out, "inside done\n");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    assert!(!s.path().join("escape-proc").exists());
    // The writes landed in the layer instead.
    assert!(spec.upperdir.join("escape-proc").exists());
    assert!(spec
        .upperdir
        .join(outside.strip_prefix("/").unwrap())
        .join("escape-link")
        .exists());
}

#[test]
fn network_none_has_only_loopback_up() {
    let s = Scratch::new();
    let mut spec = s
        .spec("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; ip link show lo | grep -c 'UP'");
    spec.network = NetworkMode::None;
    let out = run_step(&s.config(native()), &spec).ok();
    assert_eq!(out, "lo\n1\n");
}

#[test]
fn default_network_is_the_hosts() {
    let s = Scratch::new();
    let spec = s.spec("cat /proc/net/dev | wc -l");
    let out = run_step(&s.config(native()), &spec).ok();
    let host = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .count();
    assert_eq!(out.trim(), host.to_string());
}

#[test]
fn background_process_does_not_keep_the_step_waiting() {
    let s = Scratch::new();
    // Without the namespace kill the pipes stay open for an hour.
    let spec = s.spec("sleep 3600 & echo started");
    let out = run_step(&s.config(native()), &spec).ok();
    assert_eq!(out, "started\n");
}

#[test]
fn insecure_is_refused_unless_allowed() {
    let s = Scratch::new();
    let mut spec = s.spec("grep CapEff /proc/self/status; grep ' /sys sysfs' /proc/mounts | cut -d' ' -f4 | cut -d, -f1; ls /sys/firmware | wc -l");
    spec.security = SecurityMode::Insecure;
    let err = run_step(&s.config(native()), &spec).result.unwrap_err();
    assert!(matches!(err, ExecError::InsecureNotAllowed), "{err}");
    assert!(err.to_string().contains("--allow security.insecure"));
    spec.allow_insecure = true;
    let out = run_step(&s.config(native()), &spec).ok();
    let want = std::fs::read_to_string("/proc/self/status").unwrap();
    let want = want
        .lines()
        .find(|l| l.starts_with("CapPrm:"))
        .unwrap()
        .replace("CapPrm", "CapEff");
    assert_eq!(
        out,
        format!(
            "{want}\nrw\n{}\n",
            std::fs::read_dir("/sys/firmware").unwrap().count()
        )
    );
}

#[test]
fn step_starts_with_default_signal_dispositions() {
    // forge (Rust) ignores SIGPIPE; a step must not inherit that, or `yes | head -1` spins.
    // No shell in between: busybox sh sets dispositions of its own.
    let s = Scratch::new();
    let mut spec = s.spec("");
    spec.argv = ["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"]
        .map(String::from)
        .to_vec();
    let out = run_step(&s.config(native()), &spec).ok();
    assert_eq!(
        out,
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
}

#[test]
fn step_has_no_controlling_terminal_of_forge() {
    // A session of its own, led by the sandbox's pid 1: /dev/tty cannot reach forge's terminal.
    let out = run_ok("cut -d' ' -f6,7 /proc/self/stat");
    assert_eq!(out, "1 0\n");
}

/// The host's first block device as `major minor`.
fn host_block_device() -> String {
    let dev = std::fs::read_dir("/sys/block")
        .unwrap()
        .map(|e| e.unwrap().path().join("dev"))
        .find(|p| p.exists())
        .expect("this host has a block device");
    std::fs::read_to_string(dev)
        .unwrap()
        .trim()
        .replace(':', " ")
}

#[test]
fn device_nodes_made_by_a_step_cannot_open_host_disks() {
    let s = Scratch::new();
    let dev = host_block_device();
    let script = format!(
        "for d in /tmp /cache /dev; do mknod $d/disk b {dev} && \
         (head -c 1 $d/disk > /dev/null 2>&1 && echo \"$d READ\" || echo \"$d denied\"); done"
    );
    for (i, runtime) in [native(), runc()].into_iter().enumerate() {
        let mut spec = s.spec(&script);
        spec.mounts.push(MountSpec::Cache {
            host_dir: s.path().join(format!("cache-{i}")),
            target: "/cache".into(),
            readonly: false,
            mode: 0o755,
            uid: 0,
            gid: 0,
            lock_file: None,
        });
        let out = run_step(&s.config(runtime.clone()), &spec).ok();
        assert_eq!(
            out, "/tmp denied\n/cache denied\n/dev denied\n",
            "{runtime:?}"
        );
    }
}
