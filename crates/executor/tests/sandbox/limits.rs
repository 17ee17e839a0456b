//! cgroup limits for a step: pids and memory are enforced, CPU is applied.

use forge_executor::{ExecError, ExitKind, ResourceLimits};

use crate::support::*;

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let s = Scratch::new();
    let script = "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 1 & done; echo all-started";
    // Without a limit all twelve start...
    let unlimited = s.spec(script);
    assert_eq!(
        run_step(&s.config(native()), &unlimited).ok(),
        "all-started\n"
    );
    // ...with a limit of 6 tasks the shell cannot fork the rest.
    let mut spec = s.spec(script);
    spec.limits = ResourceLimits {
        pids: Some(6),
        ..ResourceLimits::default()
    };
    match run_step(&s.config(native()), &spec).result {
        Err(ExecError::StepFailed { output_tail, .. }) => {
            assert!(output_tail.contains("can't fork"), "{output_tail}")
        }
        other => panic!("expected the fork bomb to fail, got {other:?}"),
    }
}

#[test]
fn memory_limit_kills_a_step_that_exceeds_it() {
    let s = Scratch::new();
    // dd's 64 MiB block is allocated and written: far over a 16 MiB limit.
    let mut spec = s.spec("dd if=/dev/zero of=/dev/null bs=64M count=1");
    spec.limits = ResourceLimits {
        memory_bytes: Some(16 << 20),
        ..ResourceLimits::default()
    };
    let err = run_step(&s.config(native()), &spec).result.unwrap_err();
    assert!(
        matches!(
            err,
            ExecError::StepFailed {
                exit: ExitKind::Signal(9),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn cpu_limit_is_accepted() {
    let s = Scratch::new();
    let mut spec = s.spec("echo ok");
    spec.limits = ResourceLimits {
        cpu_millis: Some(500),
        ..ResourceLimits::default()
    };
    assert_eq!(run_step(&s.config(native()), &spec).ok(), "ok\n");
}
