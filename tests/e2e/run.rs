//! `forge run`: how Entrypoint and Cmd combine, the -e/-w/-u overrides, exit statuses.

use crate::forgetest;

forgetest!(entrypoint_and_cmd_combine_as_docker_does, |t| {
    t.dockerfile("FROM busybox:latest\nENTRYPOINT [\"echo\", \"ep\"]\nCMD [\"default\"]\n");
    t.build_ok(&["-t", "ep:1"]);
    assert_eq!(t.run_ok("ep:1", &[]), "ep default\n");
    assert_eq!(t.run_ok("ep:1", &["given", "args"]), "ep given args\n");
    let over = t.forge(&[
        "run",
        "--rm",
        "--entrypoint",
        "printf",
        "ep:1",
        "%s-%s",
        "a",
        "b",
    ]);
    assert!(over.success(), "{}", over.stderr);
    assert_eq!(over.stdout, "a-b");

    t.dockerfile("FROM busybox:latest\nCMD [\"echo\", \"just-cmd\"]\n");
    t.build_ok(&["-t", "cmd:1"]);
    assert_eq!(t.run_ok("cmd:1", &[]), "just-cmd\n");
    assert_eq!(t.run_ok("cmd:1", &["echo", "replaced"]), "replaced\n");

    // A shell-form ENTRYPOINT ignores CMD and arguments.
    t.dockerfile("FROM busybox:latest\nENTRYPOINT echo shell-form\nCMD [\"ignored\"]\n");
    t.build_ok(&["-t", "shep:1"]);
    assert_eq!(t.run_ok("shep:1", &[]), "shell-form\n");
    assert_eq!(t.run_ok("shep:1", &["also-ignored"]), "shell-form\n");
});

forgetest!(run_flags_env_workdir_user, |t| {
    t.dockerfile("FROM busybox:latest\nENV A=image B=image\nWORKDIR /etc\n");
    t.build_ok(&["-t", "flags:1"]);
    assert_eq!(
        t.sh("flags:1", "echo $A $B; pwd; id -u"),
        "image image\n/etc\n0\n"
    );
    let run = t.forge(&[
        "run",
        "--rm",
        "-e",
        "A=flag",
        "-e",
        "C=new",
        "-w",
        "/tmp",
        "-u",
        "app",
        "flags:1",
        "sh",
        "-c",
        "echo $A $B $C; pwd; id -u; id -g",
    ]);
    assert!(run.success(), "{}", run.stderr);
    assert_eq!(run.stdout, "flag image new\n/tmp\n1000\n1000\n");
    let numeric = t.forge(&[
        "run",
        "--rm",
        "-u",
        "4321:8765",
        "flags:1",
        "sh",
        "-c",
        "id -u; id -g",
    ]);
    assert!(numeric.success(), "{}", numeric.stderr);
    assert_eq!(numeric.stdout, "4321\n8765\n");
    // -w to a directory that does not exist yet: Docker creates it.
    let created = t.forge(&["run", "--rm", "-w", "/new/dir", "flags:1", "pwd"]);
    assert!(created.success(), "{}", created.stderr);
    assert_eq!(created.stdout, "/new/dir\n");
});

forgetest!(run_exit_statuses, |t| {
    assert_eq!(
        t.run("busybox:latest", &["sh", "-c", "exit 3"]).status,
        Some(3)
    );
    assert_eq!(t.run("busybox:latest", &["true"]).status, Some(0));
    let missing = t.run("busybox:latest", &["no-such-command"]);
    assert_eq!(missing.status, Some(127), "{}", missing.stderr);
    let not_exec = t.run("busybox:latest", &["/etc/passwd"]);
    assert_eq!(not_exec.status, Some(126), "{}", not_exec.stderr);
    let no_image = t.run("nosuch:image", &["true"]);
    assert_eq!(no_image.status, Some(125), "{}", no_image.stderr);
    assert!(
        no_image.stderr.contains("nosuch:image"),
        "{}",
        no_image.stderr
    );
    let killed = t.run("busybox:latest", &["sh", "-c", "kill -9 $$"]);
    assert_eq!(killed.status, Some(137), "{}", killed.stderr);
});

forgetest!(run_writes_do_not_change_the_image, |t| {
    assert!(t
        .run("busybox:latest", &["sh", "-c", "echo x > /scribble"])
        .success());
    assert_eq!(
        t.sh(
            "busybox:latest",
            "test -e /scribble && echo kept || echo gone"
        ),
        "gone\n"
    );
});

forgetest!(run_output_streams_are_separate_and_byte_exact, |t| {
    let run = t.run(
        "busybox:latest",
        &["sh", "-c", "echo to-out; echo to-err >&2; exit 0"],
    );
    assert!(run.success(), "{}", run.stderr);
    assert_eq!(run.stdout, "to-out\n");
    assert!(run.stderr.contains("to-err"), "{}", run.stderr);
    assert!(!run.stdout.contains("to-err"));
    // A binary (the image's busybox is the host's) comes through unchanged.
    let out = std::process::Command::new(crate::harness::forge_exe())
        .env("FORGE_ROOT", t.root())
        .args(["run", "--rm", "busybox:latest", "cat", "/bin/busybox"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let host = std::fs::read("/bin/busybox").unwrap();
    assert!(
        out.stdout == host,
        "forge run's stdout changed the bytes ({} vs {})",
        out.stdout.len(),
        host.len()
    );
});
