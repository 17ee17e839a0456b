//! Cancelling a build: Ctrl-C (SIGINT) or SIGTERM stops `forge build` cleanly on both backends
//! (running steps killed, no container or mount left, exit 130/143), and the first failing
//! step stops the others with its own error. `forge run` passes the signals it gets to the
//! container's process instead, as `docker run` does.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::forgetest;
use crate::harness::{forge_exe, TestEnv};

/// Only a guard against a hung forge, never a speed assertion: a cancelled build that has
/// not exited by then is stuck.
const HANG_GUARD: Duration = Duration::from_secs(20);
/// How long a step may take to start before the test gives up.
const START_GUARD: Duration = Duration::from_secs(60);

/// A `forge` command running in the background, its stdout and stderr read line by line.
struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: String,
}

impl Background {
    /// `forge build --progress plain ARGS CONTEXT`.
    fn build(t: &TestEnv, args: &[&str]) -> Background {
        let ctx = t.ctx().display().to_string();
        let mut all = vec!["build", "--progress", "plain"];
        all.extend_from_slice(args);
        all.push(&ctx);
        Background::start(t, &all)
    }

    fn start(t: &TestEnv, args: &[&str]) -> Background {
        let mut child = Command::new(forge_exe())
            .env("FORGE_ROOT", t.root())
            .env_remove("SOURCE_DATE_EPOCH")
            .current_dir(t.ctx())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning forge");
        let (tx, lines) = mpsc::channel();
        let stdout: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let stderr: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for pipe in [stdout, stderr] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Background {
            child,
            lines,
            log: String::new(),
        }
    }

    /// Reads progress until a line contains `needle`.
    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + START_GUARD;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push_str(&line);
                    self.log.push('\n');
                    if line.contains(needle) {
                        return;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("forge never printed {needle:?}:\n{}", self.log);
                }
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Waits for forge to exit (killing it and failing past `guard`); its exit status and the
    /// whole of its stderr.
    fn finish(mut self, what: &str, guard: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + guard;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "forge build was still running {guard:?} after {what}:\n{}",
                    self.log
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The readers end when the pipes close, which forge's exit did.
        for line in self.lines.iter() {
            self.log.push_str(&line);
            self.log.push('\n');
        }
        (status.code(), std::mem::take(&mut self.log))
    }
}

impl Drop for Background {
    /// A test that failed half-way leaves no forge running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Processes whose command line holds `sleep <seconds>` (the step's shell or its sleep).
fn sleepers(seconds: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(&format!("sleep {seconds}")) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// Mount points under `dir` in this (the host's) mount namespace.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&prefix)))
        .map(str::to_owned)
        .collect()
}

/// The state directories forge gives runc in this store: one per forge process, under its
/// staging directory (`v1/tmp/s-<id>/sandbox/runc-state`).
fn runc_roots(t: &TestEnv) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(t.root().join("v1/tmp")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path().join("sandbox/runc-state"))
        .filter(|p| p.is_dir())
        .collect()
}

/// Containers `runc list` knows under `root` (none when the directory is gone).
fn runc_containers(root: &Path) -> Vec<String> {
    if !root.exists() {
        return Vec::new();
    }
    let out = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["list", "--quiet"])
        .output()
        .expect("running runc list");
    assert!(
        out.status.success(),
        "runc list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// Staging directories left in the store: forge removes its own when it unwinds, unless
/// something is still mounted or running in it.
fn staging_dirs(t: &TestEnv) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(t.root().join("v1/tmp")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("s-"))
        .collect()
}

/// cgroups of steps or containers forge process `pid` made (named `forge-<pid>-...`), in the
/// unified hierarchy or any v1 controller.
fn cgroups_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("forge-{pid}-");
    let mut found = Vec::new();
    let mut dirs = vec![(PathBuf::from("/sys/fs/cgroup"), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                found.push(e.path());
            } else if depth < 2 {
                dirs.push((e.path(), depth + 1));
            }
        }
    }
    found
}

/// Builds a Dockerfile whose RUN sleeps `seconds` (unless `--build-arg NAP=0`), sends
/// `signal` once the step has started and checks the build unwound completely; then builds
/// again with the same store.
fn cancel_running_step(t: &TestEnv, runtime: &str, seconds: &str, signal: &str, status: i32) {
    // The marker is computed by the shell, so the step's own name line does not contain it.
    t.dockerfile(&format!(
        "FROM busybox\n\
         ARG NAP={seconds}\n\
         RUN echo started-$((1000 + 1)) && sleep $NAP && echo woke-$((3000 + 3))\n"
    ));
    // A limit gives every step a cgroup of its own (the native backend makes none without).
    let mut build = Background::build(t, &["--runtime", runtime, "--pids-limit", "1000"]);
    build.wait_for("started-1001");
    let pid = build.pid();
    // What the after-checks look at must exist now, or they would prove nothing.
    assert!(
        !cgroups_of(pid).is_empty(),
        "the running step has no cgroup named forge-{pid}-*"
    );
    let roots = runc_roots(t);
    if runtime == "runc" {
        let running: Vec<String> = roots.iter().flat_map(|r| runc_containers(r)).collect();
        assert_eq!(running.len(), 1, "runc lists no running step: {roots:?}");
    }
    build.signal(signal);
    let (code, log) = build.finish(signal, HANG_GUARD);
    assert_eq!(code, Some(status), "exit status after {signal}:\n{log}");
    assert!(
        log.lines().any(|l| l == "forge: build cancelled"),
        "no one-line cancel message:\n{log}"
    );
    assert!(
        log.contains("ERROR: cancelled"),
        "the running step is not shown as cancelled:\n{log}"
    );
    assert!(
        !log.contains("woke-3003"),
        "the step ran to its end:\n{log}"
    );
    let left = sleepers(seconds);
    assert!(left.is_empty(), "the step's processes survive: {left:?}");
    let mounts = mounts_under(t.root());
    assert!(mounts.is_empty(), "mounts left under the store: {mounts:?}");
    for root in &roots {
        let containers = runc_containers(root);
        assert!(
            containers.is_empty(),
            "runc containers left: {containers:?}"
        );
    }
    let cgroups = cgroups_of(pid);
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    let staging = staging_dirs(t);
    assert!(staging.is_empty(), "staging directories left: {staging:?}");
    let again = t.build_ok(&["--runtime", runtime, "--build-arg", "NAP=0"]);
    assert!(again.log.contains("woke-3003"), "{}", again.log);
}

// Ctrl-C kills the running native step and its namespace; forge exits 130.
forgetest!(ctrl_c_cancels_a_native_build, |t| {
    cancel_running_step(t, "native", "3601", "INT", 130);
});

// Ctrl-C under runc: `runc kill` stops the container and no container state stays behind.
forgetest!(ctrl_c_cancels_a_runc_build, |t| {
    cancel_running_step(t, "runc", "3602", "INT", 130);
});

// SIGTERM (what `kill` and service managers send) cancels the same way, with status 143.
forgetest!(sigterm_cancels_a_build, |t| {
    cancel_running_step(t, "native", "3603", "TERM", 143);
});

// A failing stage stops a runc step of another stage; the build reports the failure itself,
// not a cancellation. The failing step waits (through a shared cache mount) until the slow
// one has started, so there is always a running container to stop.
forgetest!(a_failing_stage_stops_a_runc_step, |t| {
    t.dockerfile(
        "FROM busybox AS slow\n\
         RUN --mount=type=cache,id=flag,target=/flag \\\n\
             echo started-$((2000 + 2)) && touch /flag/up && sleep 3604 && echo woke-$((3000 + 3))\n\
         FROM busybox AS bad\n\
         RUN --mount=type=cache,id=flag,target=/flag \\\n\
             until [ -e /flag/up ]; do sleep 0.1; done; false\n\
         FROM busybox\n\
         COPY --from=slow /etc/passwd /a\n\
         COPY --from=bad /etc/passwd /b\n",
    );
    let build = Background::build(t, &["--runtime", "runc"]);
    let pid = build.pid();
    let (code, log) = build.finish("the failing step", START_GUARD + HANG_GUARD);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("exit code 1"),
        "not the failing step's error:\n{log}"
    );
    assert!(
        !log.contains("forge: build cancelled"),
        "a failure is not a cancellation:\n{log}"
    );
    assert!(
        log.contains("started-2002"),
        "the slow runc step never started, so nothing was stopped:\n{log}"
    );
    assert!(
        log.contains("cancelled: another step failed"),
        "the slow step was not cancelled:\n{log}"
    );
    assert!(!log.contains("woke-3003"), "{log}");
    let left = sleepers("3604");
    assert!(
        left.is_empty(),
        "the runc step's processes survive: {left:?}"
    );
    let cgroups = cgroups_of(pid);
    assert!(
        cgroups.is_empty(),
        "the runc step's cgroups are left: {cgroups:?}"
    );
    let staging = staging_dirs(t);
    assert!(staging.is_empty(), "staging directories left: {staging:?}");
});

/// Runs a container whose shell traps SIGINT and SIGTERM, sends `signal` to forge once the
/// container is up, and checks the container's trap ran and decided forge's exit status.
fn forward_to_container(t: &TestEnv, runtime: &str, signal: &str, said: &str, status: i32) {
    let script = "trap 'echo got-int; exit 7' INT; trap 'echo got-term; exit 9' TERM; \
                  echo ready-$((4000 + 4)); while :; do sleep 0.1; done";
    let mut run = Background::start(
        t,
        &[
            "run",
            "--rm",
            "--runtime",
            runtime,
            "busybox",
            "sh",
            "-c",
            script,
        ],
    );
    run.wait_for("ready-4004");
    let mounts = mounts_under(t.root());
    assert!(
        mounts.is_empty(),
        "forge run's mounts are on the host, where a killed forge would leave them: {mounts:?}"
    );
    run.signal(signal);
    let (code, log) = run.finish(signal, HANG_GUARD);
    assert!(
        log.lines().any(|l| l == said),
        "the container's trap did not run:\n{log}"
    );
    assert_eq!(code, Some(status), "not the container's status:\n{log}");
}

// `forge run` forwards Ctrl-C to the container's process (native): its trap decides.
forgetest!(forge_run_forwards_ctrl_c_native, |t| {
    forward_to_container(t, "native", "INT", "got-int", 7);
});

// The same through runc, and SIGTERM likewise.
forgetest!(forge_run_forwards_signals_runc, |t| {
    forward_to_container(t, "runc", "INT", "got-int", 7);
    forward_to_container(t, "runc", "TERM", "got-term", 9);
});

// A process that does not trap SIGINT dies of it, and forge exits 130 like a shell would.
forgetest!(forge_run_ctrl_c_ends_an_untrapping_process, |t| {
    let mut run = Background::start(
        t,
        &[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "echo up-$((5000 + 5)); exec sleep 3605",
        ],
    );
    run.wait_for("up-5005");
    run.signal("INT");
    let (code, log) = run.finish("INT", HANG_GUARD);
    assert_eq!(code, Some(130), "{log}");
    let left = sleepers("3605");
    assert!(
        left.is_empty(),
        "the container's process survives: {left:?}"
    );
});

// A download races against the cancel flag: Ctrl-C stops an `ADD <url>` from a server that
// accepted the connection and never answers, without a second signal.
forgetest!(ctrl_c_stops_a_stalled_download, |t| {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    let addr = listener.local_addr().unwrap();
    let (connected, accepted) = mpsc::channel();
    // Detached: holds every connection open, unanswered, until the test process exits.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
            let _ = connected.send(());
        }
    });
    t.dockerfile(&format!("FROM busybox\nADD http://{addr}/stall /stall\n"));
    let mut build = Background::build(t, &[]);
    if accepted.recv_timeout(START_GUARD).is_err() {
        let _ = build.child.kill();
        panic!("forge never requested the URL");
    }
    build.signal("INT");
    let (code, log) = build.finish("one SIGINT", HANG_GUARD);
    assert_eq!(code, Some(130), "{log}");
    assert!(log.contains("forge: build cancelled"), "{log}");
    let mounts = mounts_under(t.root());
    assert!(mounts.is_empty(), "mounts left under the store: {mounts:?}");
});

// A cancelled step is not remembered as built: the next build's miss said "its cache record
// was pruned" for a record that never existed.
forgetest!(a_cancelled_step_is_not_remembered, |t| {
    t.dockerfile("FROM busybox\nRUN echo started-$((6000 + 6)) && sleep 3606\n");
    for attempt in 0..2 {
        let mut build = Background::build(t, &[]);
        build.wait_for("started-6006");
        build.signal("INT");
        let (code, log) = build.finish("INT", HANG_GUARD);
        assert_eq!(code, Some(130), "{log}");
        let step = crate::harness::parse_steps(&log)
            .into_iter()
            .find(|s| s.name.contains("RUN echo"))
            .unwrap_or_else(|| panic!("no RUN step:\n{log}"));
        assert_eq!(
            step.miss.as_deref(),
            Some("no earlier build of this step"),
            "attempt {attempt}:\n{log}"
        );
    }
});

/// Waits until no process runs `sleep <seconds>`, up to the hang guard.
fn sleepers_gone(seconds: &str) -> Vec<String> {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let left = sleepers(seconds);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// forge killed outright (SIGKILL: no handler, no unwinding) takes its running native step
/// with it: the helper dies with forge (PDEATHSIG) and the step's pid namespace with it.
fn sigkill_takes_the_step_along(t: &TestEnv, runtime: &str, seconds: &str) {
    t.dockerfile(&format!(
        "FROM busybox\nRUN echo started-$((2000 + 2)) && sleep {seconds}\n"
    ));
    let mut build = Background::build(t, &["--runtime", runtime]);
    build.wait_for("started-2002");
    assert!(!sleepers(seconds).is_empty(), "the step is not running");
    build.signal("KILL");
    let (code, log) = build.finish("SIGKILL", HANG_GUARD);
    assert_eq!(code, None, "forge was not killed:\n{log}");
    let left = sleepers_gone(seconds);
    assert!(left.is_empty(), "the step outlives forge: {left:?}");
    let mounts = mounts_under(t.root());
    assert!(mounts.is_empty(), "mounts left under the store: {mounts:?}");
}

forgetest!(sigkill_takes_a_native_step_along, |t| {
    sigkill_takes_the_step_along(t, "native", "3611");
});

// A runc container outlives `runc run`, so a SIGKILLed forge leaves it running; the next forge
// finds its cgroup, named after the dead forge, and kills it.
forgetest!(
    the_next_forge_reaps_a_runc_step_a_sigkilled_forge_left,
    |t| {
        t.dockerfile("FROM busybox\nRUN echo started-$((2000 + 2)) && sleep 3612\n");
        let mut build = Background::build(t, &["--runtime", "runc"]);
        build.wait_for("started-2002");
        let pid = build.pid();
        build.signal("KILL");
        let (code, log) = build.finish("SIGKILL", HANG_GUARD);
        assert_eq!(code, None, "forge was not killed:\n{log}");
        // The container is left running now (another test's forge, starting meanwhile, may
        // already reap it, so this is not asserted); the next forge must leave nothing of it.
        t.dockerfile("FROM busybox\nRUN true\n");
        t.build_ok(&[]);
        let left = sleepers("3612");
        assert!(
            left.is_empty(),
            "the orphaned container still runs: {left:?}"
        );
        let cgroups = cgroups_of(pid);
        assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    }
);
