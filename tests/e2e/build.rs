//! The solver seen from outside: concurrency of independent stages, the cache across builds,
//! what a changed file or build arg reruns, `--target`, and how failures are reported.

use crate::forgetest;

forgetest!(independent_stages_run_at_the_same_time, |t| {
    t.dockerfile(
        "FROM busybox:latest AS a\n\
         RUN sleep 1 && echo from-a > /a\n\
         FROM busybox:latest AS b\n\
         RUN sleep 1 && echo from-b > /b\n\
         FROM busybox:latest\n\
         COPY --from=a /a /a\n\
         COPY --from=b /b /b\n",
    );
    let built = t.build_ok(&["-t", "par:1"]);
    let a = built.step("[a 2/2] RUN");
    let b = built.step("[b 2/2] RUN");
    let (a0, a1) = a
        .window
        .unwrap_or_else(|| panic!("no window for {a:?}:\n{}", built.log));
    let (b0, b1) = b
        .window
        .unwrap_or_else(|| panic!("no window for {b:?}:\n{}", built.log));
    assert!(
        a0 < b1 && b0 < a1,
        "the two independent RUN steps did not overlap: a [{a0} -> {a1}], b [{b0} -> {b1}]\n{}",
        built.log
    );
    assert_eq!(t.sh("par:1", "cat /a /b"), "from-a\nfrom-b\n");
});

forgetest!(independent_stages_overlap_in_json_progress, |t| {
    t.dockerfile(
        // The two RUNs differ: identical ones would be solved once (see below).
        "FROM busybox:latest AS a\nRUN sleep 1 && echo a\nFROM busybox:latest AS b\nRUN sleep 1 && echo b\n\
         FROM busybox:latest\nCOPY --from=a /etc/passwd /a\nCOPY --from=b /etc/passwd /b\n",
    );
    let ctx = t.ctx().display().to_string();
    let run = t.forge(&["build", "--progress", "json", &ctx]);
    assert!(run.success(), "{}", run.stderr);
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let window = |stage: &str| {
        let step = events
            .iter()
            .find(|e| {
                e["event"] == "started"
                    && e["name"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with(&format!("[{stage} 2/2] RUN"))
            })
            .unwrap_or_else(|| panic!("no started event for stage {stage}:\n{}", run.stdout))
            ["step"]
            .clone();
        let time = |kind: &str| {
            events
                .iter()
                .find(|e| e["event"] == kind && e["step"] == step)
                .and_then(|e| e["time"].as_f64())
                .unwrap_or_else(|| {
                    panic!(
                        "no {kind} event with a time for step {step}:\n{}",
                        run.stdout
                    )
                })
        };
        (time("started"), time("done"))
    };
    let (a0, a1) = window("a");
    let (b0, b1) = window("b");
    assert!(
        a0 < b1 && b0 < a1,
        "no overlap: a [{a0} -> {a1}], b [{b0} -> {b1}]"
    );
});

forgetest!(second_build_is_all_cached_with_the_same_id, |t| {
    t.write("app.sh", "echo app\n");
    t.dockerfile(
        "FROM busybox:latest AS build\n\
         WORKDIR /src\n\
         COPY app.sh .\n\
         ENV MODE=release\n\
         RUN sh app.sh > /out && echo $MODE >> /out\n\
         FROM busybox:latest\n\
         COPY --from=build /out /out\n\
         CMD [\"cat\", \"/out\"]\n",
    );
    let first = t.build_ok(&["-t", "cached:1"]);
    let second = t.build_ok(&["-t", "cached:1"]);
    assert_eq!(
        first.id, second.id,
        "a rebuild of the same input changed the image id"
    );
    let steps = second.steps();
    let work: Vec<_> = steps.iter().filter(|s| !s.name.contains("FROM")).collect();
    assert!(work.len() >= 4, "too few steps in:\n{}", second.log);
    for s in work {
        assert!(
            s.cached,
            "step {:?} was not CACHED on the second build:\n{}",
            s.name, second.log
        );
    }
    // -q prints just the id.
    let ctx = t.ctx().display().to_string();
    let quiet = t.forge(&["build", "-q", &ctx]);
    assert!(quiet.success(), "{}", quiet.stderr);
    assert_eq!(quiet.stdout.trim(), first.id);
    assert_eq!(t.run_ok("cached:1", &[]), "app\nrelease\n");
});

forgetest!(changed_context_file_reruns_from_its_copy, |t| {
    t.write("a.txt", "one\n");
    t.write("b.txt", "bee\n");
    t.dockerfile(
        "FROM busybox:latest\n\
         RUN echo early > /early\n\
         COPY b.txt /b.txt\n\
         COPY a.txt /a.txt\n\
         RUN cat /a.txt > /derived\n",
    );
    t.build_ok(&[]);
    t.write("a.txt", "two\n");
    let second = t.build_ok(&["-t", "changed:1"]);
    assert!(second.step("RUN echo early").cached, "{}", second.log);
    assert!(second.step("COPY b.txt").cached, "{}", second.log);
    let copy = second.step("COPY a.txt");
    assert!(!copy.cached, "{}", second.log);
    assert_eq!(
        copy.miss.as_deref(),
        Some("file \"a.txt\" in the build context changed"),
        "{}",
        second.log
    );
    let run = second.step("RUN cat /a.txt");
    assert!(!run.cached && run.done, "{}", second.log);
    assert_eq!(t.sh("changed:1", "cat /derived"), "two\n");
});

forgetest!(changed_build_arg_reruns_only_steps_that_see_it, |t| {
    t.dockerfile(
        "FROM busybox:latest AS other\n\
         RUN echo other > /other\n\
         FROM busybox:latest\n\
         RUN echo before > /before\n\
         ARG V=1\n\
         RUN echo $V > /v\n\
         COPY --from=other /other /other\n",
    );
    t.build_ok(&["--build-arg", "V=1"]);
    let again = t.build_ok(&["--build-arg", "V=1"]);
    assert!(
        again.step("RUN echo $V").cached,
        "same arg, same cache:\n{}",
        again.log
    );
    let second = t.build_ok(&["--build-arg", "V=2", "-t", "arg:2"]);
    assert!(second.step("RUN echo other").cached, "{}", second.log);
    assert!(second.step("RUN echo before").cached, "{}", second.log);
    let v = second.step("RUN echo $V");
    assert!(!v.cached, "{}", second.log);
    let reason = v.miss.clone().unwrap_or_default();
    assert!(
        reason.contains("V") && reason.contains("changed"),
        "miss reason {reason:?}"
    );
    assert_eq!(t.sh("arg:2", "cat /v /before /other"), "2\nbefore\nother\n");
});

forgetest!(
    target_builds_only_the_named_stage_and_its_dependencies,
    |t| {
        t.dockerfile(
            "FROM busybox:latest AS base\n\
         RUN echo base > /base\n\
         FROM busybox:latest AS broken\n\
         RUN exit 1\n\
         FROM base AS mid\n\
         RUN echo mid > /mid\n\
         FROM mid AS last\n\
         RUN echo last > /last\n",
        );
        let built = t.build_ok(&["--target", "mid", "-t", "tgt:mid"]);
        assert!(
            !built.log.contains("[broken"),
            "an unneeded stage ran:\n{}",
            built.log
        );
        assert!(
            !built.log.contains("[last"),
            "a later stage ran:\n{}",
            built.log
        );
        assert_eq!(
            t.sh("tgt:mid", "cat /base /mid; test -e /last || echo no-last"),
            "base\nmid\nno-last\n"
        );
        let missing = t.build_err(&["--target", "nosuch"]);
        assert!(missing.stderr.contains("nosuch"), "{}", missing.stderr);
    }
);

forgetest!(failing_run_names_its_line_and_exit_code, |t| {
    t.dockerfile(
        "FROM busybox:latest\n\
         RUN echo fine\n\
         RUN echo going-down && exit 7\n\
         RUN echo never > /never\n",
    );
    let run = t.build_err(&[]);
    assert_eq!(run.status, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("Dockerfile:3"),
        "no Dockerfile:3 in:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("exit code 7")
            || run.stderr.contains("exit status 7")
            || run.stderr.contains("code: 7"),
        "the exit code 7 is not named:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("going-down"),
        "the step's output is not shown:\n{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("RUN echo never"),
        "a step after the failure started:\n{}",
        run.stderr
    );
});

forgetest!(dockerfile_error_is_reported_before_anything_runs, |t| {
    t.dockerfile("FROM busybox:latest\nRUN echo hi > /hi\nCOPY --nonsense=1 a /a\n");
    let run = t.build_err(&[]);
    assert!(
        run.stderr.contains("Dockerfile:3:"),
        "no Dockerfile:3:COL in:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains('^'),
        "no caret under the error:\n{}",
        run.stderr
    );
    assert!(
        !run.stderr.lines().any(|l| l.starts_with("#1 ")),
        "a step started:\n{}",
        run.stderr
    );
});

forgetest!(missing_base_image_is_named, |t| {
    t.dockerfile("FROM nosuchimage:9\nRUN true\n");
    let run = t.build_err(&[]);
    assert!(run.stderr.contains("nosuchimage"), "{}", run.stderr);
});

forgetest!(cache_follows_content_not_paths_or_mtimes, |t| {
    t.write("src/a.txt", "a\n");
    t.write("src/run.sh", "echo run\n");
    t.dockerfile("FROM busybox:latest\nCOPY src /src\nRUN sh /src/run.sh > /out\n");
    let first = t.build_ok(&[]);
    // Only the mtime changes: still cached.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(t.ctx().join("src/a.txt"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    let touched = t.build_ok(&[]);
    assert!(
        touched.step("COPY src").cached,
        "an mtime change missed the cache:\n{}",
        touched.log
    );
    assert_eq!(touched.id, first.id);
    // The same content in another directory: cached too.
    let copy = t.scratch().join("ctx2");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(t.ctx())
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    let ctx2 = copy.display().to_string();
    let run = t.forge(&["build", "--progress", "plain", &ctx2]);
    assert!(run.success(), "{}", run.stderr);
    let moved = crate::harness::parse_steps(&run.stderr);
    assert!(
        moved
            .iter()
            .filter(|s| !s.name.contains("FROM"))
            .all(|s| s.cached),
        "{}",
        run.stderr
    );
    // A mode change is a change.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        t.ctx().join("src/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let chmodded = t.build_ok(&["-t", "mode:1"]);
    assert!(!chmodded.step("COPY src").cached, "{}", chmodded.log);
    assert_eq!(t.sh("mode:1", "stat -c %a /src/run.sh"), "755\n");
    // So is a .dockerignore that now hides a copied file.
    t.write(".dockerignore", "src/a.txt\n");
    let ignored = t.build_ok(&["-t", "mode:2"]);
    assert!(!ignored.step("COPY src").cached, "{}", ignored.log);
    assert_eq!(t.sh("mode:2", "ls /src"), "run.sh\n");
});

forgetest!(build_checks_warn_and_can_fail_the_build, |t| {
    t.dockerfile("FROM busybox:latest as lower\nRUN echo hi\n");
    let built = t.build_ok(&[]);
    assert!(
        built.log.lines().any(|l| l.starts_with("WARNING: ")
            && l.contains("Dockerfile:1:")
            && l.contains("FromAsCasing")),
        "no FromAsCasing warning:\n{}",
        built.log
    );
    t.dockerfile("# check=error=true\nFROM busybox:latest as lower\nRUN echo hi > /never\n");
    let run = t.build_err(&[]);
    assert!(run.stderr.contains("FromAsCasing"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("RUN echo hi"),
        "a step ran:\n{}",
        run.stderr
    );
});

forgetest!(a_miss_names_the_file_inside_a_copied_directory, |t| {
    t.write("app/src/main.txt", "one\n");
    t.write("app/src/lib.txt", "lib\n");
    t.write("app/README", "readme\n");
    t.dockerfile("FROM busybox:latest\nCOPY . /app\n");
    t.build_ok(&[]);
    t.write("app/src/main.txt", "two\n");
    let changed = t.build_ok(&[]);
    assert_eq!(
        changed.step("COPY . /app").miss.as_deref(),
        Some("file \"app/src/main.txt\" in the build context changed"),
        "{}",
        changed.log
    );
    t.write("app/src/new.txt", "new\n");
    let added = t.build_ok(&[]);
    assert_eq!(
        added.step("COPY . /app").miss.as_deref(),
        Some("file \"app/src/new.txt\" was added to the build context"),
        "{}",
        added.log
    );
    std::fs::remove_file(t.ctx().join("app/README")).unwrap();
    let removed = t.build_ok(&["-t", "dirmiss:1"]);
    assert_eq!(
        removed.step("COPY . /app").miss.as_deref(),
        Some("file \"app/README\" was removed from the build context"),
        "{}",
        removed.log
    );
    assert_eq!(
        t.sh("dirmiss:1", "ls /app/app /app/app/src"),
        "/app/app:\nsrc\n\n/app/app/src:\nlib.txt\nmain.txt\nnew.txt\n"
    );
});

// BuildKit solves identical operations once: two stages with the same base and the same RUN
// share one result, even when the scheduler reaches both at the same time.
forgetest!(identical_steps_in_two_stages_run_once, |t| {
    t.dockerfile(
        "FROM busybox AS one\n\
         RUN sleep 1 && cat /proc/sys/kernel/random/uuid > /id\n\
         FROM busybox AS two\n\
         RUN sleep 1 && cat /proc/sys/kernel/random/uuid > /id\n\
         FROM busybox\n\
         COPY --from=one /id /one\n\
         COPY --from=two /id /two\n",
    );
    let built = t.build_ok(&["-t", "twins:1"]);
    let runs: Vec<_> = built
        .steps()
        .into_iter()
        .filter(|s| s.name.contains("RUN sleep 1"))
        .collect();
    assert_eq!(runs.len(), 2, "{}", built.log);
    assert_eq!(
        runs.iter().filter(|s| s.cached).count(),
        1,
        "one of the identical steps runs, the other takes its result:\n{}",
        built.log
    );
    let out = t.sh("twins:1", "cat /one /two");
    let ids: Vec<&str> = out.lines().collect();
    assert_eq!(ids.len(), 2, "{out}");
    assert_eq!(ids[0], ids[1], "both stages see the same result");
});

// A layer is exported as soon as its step is done, while later steps run: when the last step
// fails, the COPY below it is already a layer blob in the store (a build that exported only at
// the end would have written none), and the next build finds it done.
forgetest!(layers_are_exported_while_later_steps_run, |t| {
    let marker = b"early-layer-marker-7f3a90";
    let mut payload = marker.to_vec();
    payload.resize(2 << 20, b'x');
    t.write_bytes("data/payload", &payload);
    t.dockerfile("FROM busybox\nCOPY data /data\nRUN sleep 3 && exit 3\n");
    let run = t.build_err(&[]);
    assert!(run.stderr.contains("exit code 3"), "{}", run.stderr);
    let blobs = t.root().join("v1/oci/blobs/sha256");
    let layer = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .find(|blob| {
            blob.len() > payload.len()
                && crate::harness::contains_bytes(blob, b"data/payload")
                && crate::harness::contains_bytes(blob, marker)
        });
    assert!(
        layer.is_some(),
        "no layer blob holds data/payload after the failed build:\n{}",
        run.stderr
    );
});

// The first failure cancels the rest: a long RUN in an independent stage is stopped (its pid
// namespace killed) instead of running to its end, and the build reports the failure.
forgetest!(a_failing_step_cancels_a_running_one, |t| {
    t.dockerfile(
        "FROM busybox AS slow\n\
         RUN sleep 60 && echo finished-$((40 + 2))\n\
         FROM busybox AS bad\n\
         RUN sleep 1 && exit 3\n\
         FROM busybox\n\
         COPY --from=slow /etc/passwd /a\n\
         COPY --from=bad /etc/passwd /b\n",
    );
    let run = t.build_err(&[]);
    assert!(run.stderr.contains("exit code 3"), "{}", run.stderr);
    let steps = crate::harness::parse_steps(&run.stderr);
    let slow = steps
        .iter()
        .find(|s| s.name.contains("[slow 2/2] RUN"))
        .unwrap_or_else(|| panic!("no slow step:\n{}", run.stderr));
    assert!(
        !slow.done,
        "the slow step was not cancelled:\n{}",
        run.stderr
    );
    assert!(!run.stderr.contains("finished-42"), "{}", run.stderr);
    assert!(
        run.stderr.contains("cancelled: another step failed"),
        "{}",
        run.stderr
    );
});
