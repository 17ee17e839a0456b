//! A step runs, streams output, reports failure, and leaves its changes (and only them) in
//! the upperdir.

use forge_executor::{ExecError, ExitKind};

use crate::support::*;

#[test]
fn step_output_is_streamed_and_changes_land_in_the_upperdir() {
    let s = Scratch::new();
    let spec = s.spec("echo hello; echo oops >&2; mkdir -p /data && echo x > /data/f; rm /bin/ls");
    let ran = run_step(&s.config(native()), &spec);
    assert_eq!(ran.stderr, "oops\n");
    assert_eq!(ran.ok(), "hello\n");
    let t = tree(&spec.upperdir);
    let names: Vec<&str> = t.iter().map(|l| l.split(' ').next().unwrap()).collect();
    // /bin/ls became a whiteout; the sandbox's own mount points left no trace.
    assert_eq!(names, ["bin", "bin/ls", "data", "data/f"], "{t:#?}");
    assert!(t[1].contains("special rdev=0x0"), "{t:#?}");
    // The run's state lived on a tmpfs private to the sandbox: nothing is left on the host.
    let state = s.config(native()).state_dir;
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);
}

#[test]
fn failing_step_reports_command_exit_code_and_tail() {
    let s = Scratch::new();
    let spec = s.spec("for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25; do echo line$i; done; exit 3");
    let err = run_step(&s.config(native()), &spec).result.unwrap_err();
    match err {
        ExecError::StepFailed {
            command,
            exit,
            output_tail,
        } => {
            assert!(command.starts_with("/bin/sh -c for i in"), "{command}");
            assert_eq!(exit, ExitKind::Code(3));
            assert!(output_tail.ends_with("line24\nline25"), "{output_tail}");
            assert!(!output_tail.contains("line5\n"), "{output_tail}");
        }
        other => panic!("expected StepFailed, got {other}"),
    }
}

#[test]
fn missing_program_is_an_exec_error() {
    let s = Scratch::new();
    let mut spec = s.spec("");
    spec.argv = vec!["no-such-program".into()];
    let err = run_step(&s.config(native()), &spec).result.unwrap_err();
    assert!(
        matches!(&err, ExecError::Exec { program, .. } if program == "no-such-program"),
        "{err}"
    );
}

#[test]
fn from_scratch_runs_and_mount_points_leave_no_trace() {
    let s = Scratch::new();
    let mut spec = s.spec("");
    spec.lowerdirs.clear();
    // No /bin/sh in scratch: bring a static busybox in through a bind mount.
    spec.mounts.push(forge_executor::MountSpec::Bind {
        source_root: "/bin".into(),
        source: "busybox".into(),
        target: "/bin/busybox".into(),
        readwrite: false,
    });
    spec.argv = vec![
        "/bin/busybox".into(),
        "sh".into(),
        "-c".into(),
        "/bin/busybox mkdir /out && /bin/busybox echo made > /out/f && \
         /bin/busybox echo mine > /etc/mine && /bin/busybox cat /etc/hostname"
            .into(),
    ];
    let out = run_step(&s.config(native()), &spec).ok();
    assert_eq!(out, "forge\n");
    let t = tree(&spec.upperdir);
    let names: Vec<&str> = t.iter().map(|l| l.split(' ').next().unwrap()).collect();
    // /etc stays because the step wrote there; /etc/hosts, /proc, /dev, /sys, /bin do not.
    assert_eq!(names, ["etc", "etc/mine", "out", "out/f"], "{t:#?}");
}
