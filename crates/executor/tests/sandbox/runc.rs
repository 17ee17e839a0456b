//! The runc backend runs the same step to the same layer as the native sandbox.

use forge_executor::{ExecError, ExitKind, MountSpec, NetworkMode};

use crate::support::*;

/// A step that touches every kind of change: new dirs and files, a whiteout, an opaque
/// directory, a chmod, a symlink, a user-owned workdir; with mounts that must leave no trace.
const STEP: &str = "mkdir -p /a/b && echo hi > /a/b/f && rm /bin/ls && rm -rf /home && mkdir /home && \
    echo new > /home/file && chmod 700 /root && ln -s /a/b/f /link && id && grep CapEff /proc/self/status && \
    cat /run/secrets/tok && echo && pwd && ls /cache";

fn step(s: &Scratch) -> forge_executor::SandboxSpec {
    let mut spec = s.spec(STEP);
    spec.cwd = "/srv/app".into();
    spec.env = vec![("A".into(), "1".into())];
    spec.mounts = vec![
        MountSpec::Secret {
            id: "tok".into(),
            content: b"t0k".to_vec(),
            target: None,
            env: None,
            mode: 0o400,
            uid: 0,
            gid: 0,
        },
        MountSpec::Cache {
            host_dir: s.path().join("cache"),
            target: "/cache".into(),
            readonly: false,
            mode: 0o755,
            uid: 0,
            gid: 0,
            lock_file: None,
        },
        MountSpec::Tmpfs {
            target: "/var/tmpfs".into(),
            size_bytes: Some(1 << 20),
        },
    ];
    spec
}

#[test]
fn runc_and_native_give_the_same_layer_and_output() {
    let s = Scratch::new();
    std::fs::create_dir(s.path().join("cache")).unwrap();
    std::fs::write(s.path().join("cache/cached"), "").unwrap();
    let native_spec = step(&s);
    let native_out = run_step(&s.config(native()), &native_spec).ok();
    let runc_spec = step(&s);
    let runc_out = run_step(&s.config(runc()), &runc_spec).ok();
    assert_eq!(
        native_out,
        "uid=0(root) gid=0(root) groups=0(root)\nCapEff:\t00000000a80425fb\nt0k\n/srv/app\ncached\n"
    );
    assert_eq!(runc_out, native_out);
    let (a, b) = (tree(&native_spec.upperdir), tree(&runc_spec.upperdir));
    assert_eq!(a, b);
    let names: Vec<&str> = a.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        names,
        [
            "a",
            "a/b",
            "a/b/f",
            "bin",
            "bin/ls",
            "home",
            "home/file",
            "link",
            "root",
            "srv",
            "srv/app"
        ],
        "{a:#?}"
    );
    assert!(a[5].ends_with("dir opaque"), "{a:#?}");
}

#[test]
fn runc_reports_failures_and_isolates_the_network() {
    let s = Scratch::new();
    let mut spec = s.spec("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; exit 4");
    spec.network = NetworkMode::None;
    let err = run_step(&s.config(runc()), &spec).result.unwrap_err();
    match err {
        ExecError::StepFailed {
            exit, output_tail, ..
        } => {
            assert_eq!(exit, ExitKind::Code(4));
            assert_eq!(output_tail, "lo");
        }
        other => panic!("expected StepFailed, got {other}"),
    }
}

#[test]
fn runc_user_and_background_processes() {
    let s = Scratch::new();
    let mut spec = s.spec("sleep 3600 & id; grep CapEff /proc/self/status");
    spec.user = "app".into();
    let out = run_step(&s.config(runc()), &spec).ok();
    assert_eq!(
        out,
        "uid=1000(app) gid=1000(app) groups=50(staff),1000(app)\nCapEff:\t0000000000000000\n"
    );
}

/// What the isolation tests check, asked of both backends at once. (The process count differs
/// by one: the native sandbox's pid 1 is a reaper, runc's is the step.)
const PROBE: &str = "hostname; grep -E '^Cap(Eff|Bnd)' /proc/self/status; \
    (mount -t tmpfs none /tmp) 2>/dev/null && echo mounted; \
    (hostname evil) 2>/dev/null && echo renamed; \
    (echo h > /proc/sysrq-trigger) 2>/dev/null && echo sysrq; \
    wc -c < /proc/timer_list; ls /sys/firmware | wc -l; \
    grep ' /sys sysfs' /proc/mounts | cut -d' ' -f4 | cut -d, -f1; \
    test $(ls /proc | grep -cE '^[0-9]+$') -le 5 && echo few-processes; cat /etc/hostname; env | sort";

#[test]
fn runc_isolates_like_the_native_sandbox() {
    let s = Scratch::new();
    let native_out = run_step(&s.config(native()), &s.spec(PROBE)).ok();
    let runc_out = run_step(&s.config(runc()), &s.spec(PROBE)).ok();
    assert!(
        native_out.contains("CapEff:\t00000000a80425fb\n"),
        "{native_out}"
    );
    assert!(!native_out.contains("mounted") && !native_out.contains("renamed"));
    assert_eq!(runc_out, native_out);
}
