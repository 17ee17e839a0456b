//! Beyond the basics: deletions across layers, reproducible ids, concurrent builds in one
//! store, Dockerfiles on stdin, config-only instructions, and the repository's own example.

use std::path::Path;

use crate::forgetest;
use crate::harness::TestEnv;

forgetest!(deletions_in_later_layers_hide_files, |t| {
    t.dockerfile(
        "FROM busybox:latest\n\
         RUN mkdir -p /d/sub && echo x > /d/sub/f && echo y > /d/keep && echo z > /gone\n\
         RUN rm /gone && rm -rf /d/sub && echo again > /d/new\n\
         RUN rm -rf /d && mkdir /d && echo fresh > /d/only\n\
         RUN rm /etc/group\n",
    );
    t.build_ok(&["-t", "wh:1"]);
    assert_eq!(
        t.sh(
            "wh:1",
            "ls -A /d; test -e /gone || echo no-gone; test -e /etc/group || echo no-group"
        ),
        "only\nno-gone\nno-group\n"
    );
    // The same holds for an image built FROM it (the layers are read back from the store).
    t.dockerfile("FROM wh:1\nRUN ls -A /d > /listing\n");
    t.build_ok(&["-t", "wh:2"]);
    assert_eq!(t.sh("wh:2", "cat /listing"), "only\n");
});

forgetest!(source_date_epoch_gives_the_same_id_in_two_stores, |t| {
    let df = "FROM busybox:latest\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt && touch /stamp\n";
    t.write("a.txt", "same\n");
    t.dockerfile(df);
    let other = TestEnv::new("source_date_epoch_gives_the_same_id_in_two_stores (second store)");
    other.write("a.txt", "same\n");
    other.dockerfile(df);
    let ids: Vec<String> = [t, &other]
        .iter()
        .map(|env| {
            let ctx = env.ctx().display().to_string();
            let mut cmd = std::process::Command::new(crate::harness::forge_exe());
            let out = cmd
                .env("FORGE_ROOT", env.root())
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .args(["build", "-q", &ctx])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        })
        .collect();
    assert_eq!(
        ids[0], ids[1],
        "SOURCE_DATE_EPOCH builds of the same input differ between stores"
    );
});

forgetest!(concurrent_builds_share_one_store, |t| {
    t.write("f.txt", "f\n");
    t.dockerfile("FROM busybox:latest\nCOPY f.txt /f.txt\nRUN sleep 1 && cat /f.txt > /g.txt\n");
    let ctx = t.ctx().display().to_string();
    let children: Vec<_> = (0..3)
        .map(|i| {
            std::process::Command::new(crate::harness::forge_exe())
                .env("FORGE_ROOT", t.root())
                .args(["build", "-q", "-t", &format!("conc:{i}"), &ctx])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a concurrent build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ids.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    for i in 0..3 {
        assert_eq!(t.sh(&format!("conc:{i}"), "cat /g.txt"), "f\n");
    }
    // Content is the same; a later cached build agrees with at least one of them.
    let again = t.build_ok(&[]);
    assert!(ids.contains(&again.id), "{ids:?} vs {}", again.id);
});

forgetest!(dockerfile_from_stdin, |t| {
    t.write("in-context.txt", "ctx\n");
    let ctx = t.ctx().display().to_string();
    let df = b"FROM busybox:latest\nCOPY in-context.txt /c.txt\n";
    let run = t.forge_stdin(&["build", "-q", "-t", "stdin:1", "-f", "-", &ctx], Some(df));
    assert!(run.success(), "{}", run.stderr);
    assert_eq!(t.sh("stdin:1", "cat /c.txt"), "ctx\n");
    // No context at all: a Dockerfile on stdin that needs none.
    let run = t.forge_stdin(
        &["build", "-q", "-t", "stdin:2", "-"],
        Some(b"FROM busybox:latest\nRUN echo no-context > /n\n"),
    );
    assert!(run.success(), "{}", run.stderr);
    assert_eq!(t.sh("stdin:2", "cat /n"), "no-context\n");
});

forgetest!(a_failing_stage_fails_the_build_while_a_sibling_runs, |t| {
    t.dockerfile(
        "FROM busybox:latest AS slow\nRUN sleep 2 && echo slow > /s\n\
         FROM busybox:latest AS bad\nRUN exit 4\n\
         FROM busybox:latest\nCOPY --from=slow /s /s\nCOPY --from=bad /etc/passwd /p\n",
    );
    let run = t.build_err(&["-t", "never:1"]);
    assert!(run.stderr.contains("Dockerfile:4"), "{}", run.stderr);
    let images = t.forge(&["images"]).stdout;
    assert!(
        !images.contains("never"),
        "a failed build tagged its image:\n{images}"
    );
});

forgetest!(config_instructions_reach_the_image_config, |t| {
    t.dockerfile(
        "FROM busybox:latest\n\
         LABEL org.example.a=1 \"b c\"=\"d e\"\n\
         EXPOSE 8080 53/udp\n\
         STOPSIGNAL SIGINT\n\
         VOLUME /data\n\
         SHELL [\"/bin/sh\", \"-e\", \"-c\"]\n\
         RUN echo shell-form > /s\n\
         HEALTHCHECK --interval=5s CMD true\n\
         ENTRYPOINT [\"/bin/sh\", \"-c\"]\n\
         CMD [\"echo configured\"]\n",
    );
    t.build_ok(&["-t", "conf:1"]);
    let c = t.config("conf:1");
    assert_eq!(c["Labels"]["org.example.a"], "1", "{c}");
    assert_eq!(c["Labels"]["b c"], "d e", "{c}");
    assert!(c["ExposedPorts"].get("8080/tcp").is_some(), "{c}");
    assert!(c["ExposedPorts"].get("53/udp").is_some(), "{c}");
    assert_eq!(c["StopSignal"], "SIGINT", "{c}");
    assert!(c["Volumes"].get("/data").is_some(), "{c}");
    assert_eq!(t.run_ok("conf:1", &[]), "configured\n");
    // The ENTRYPOINT is `sh -c`, so an argument is a script.
    assert_eq!(t.run_ok("conf:1", &["cat /s"]), "shell-form\n");
});

forgetest!(global_arg_picks_the_base_and_stages_inherit, |t| {
    t.dockerfile(
        "ARG BASE=busybox:latest\n\
         FROM ${BASE} AS first\n\
         ENV FROM_FIRST=yes\n\
         WORKDIR /first\n\
         FROM first\n\
         ARG BASE\n\
         RUN echo \"$BASE $FROM_FIRST $(pwd)\" > /seen\n",
    );
    t.build_ok(&["-t", "garg:1"]);
    assert_eq!(t.sh("garg:1", "cat /seen"), "busybox:latest yes /first\n");
});

forgetest!(the_hello_example_builds_and_runs, |t| {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello");
    for entry in std::fs::read_dir(&example).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), t.ctx().join(entry.file_name())).unwrap();
    }
    let first = t.build_ok(&["-t", "hello:1"]);
    assert_eq!(t.run_ok("hello:1", &[]), "hello from forge\n");
    let second = t.build_ok(&["-t", "hello:1"]);
    assert_eq!(first.id, second.id);
});

forgetest!(a_retagged_base_image_invalidates_the_cache, |t| {
    t.dockerfile("FROM busybox:latest\nRUN echo on-base > /x\n");
    t.build_ok(&[]);
    let again = t.build_ok(&[]);
    assert!(again.step("RUN echo on-base").cached, "{}", again.log);
    let tarball = crate::harness::busybox_tarball().display().to_string();
    let import = t.forge(&[
        "import",
        "-c",
        "CMD [\"new-base\"]",
        &tarball,
        "busybox:latest",
    ]);
    assert!(import.success(), "{}", import.stderr);
    let after = t.build_ok(&["-t", "rebased:1"]);
    let step = after.step("RUN echo on-base");
    assert!(
        !step.cached,
        "a new base image reused the old base's step:\n{}",
        after.log
    );
    let reason = step.miss.unwrap_or_default();
    assert!(
        reason.contains("base image") || reason.contains("FROM busybox:latest"),
        "miss reason {reason:?}"
    );
    assert_eq!(
        t.config("rebased:1")["Cmd"],
        serde_json::json!(["new-base"])
    );
});

forgetest!(dockerfile_outside_the_context_and_stage_by_index, |t| {
    let df = t.scratch().join("elsewhere.Dockerfile");
    std::fs::write(
        &df,
        "FROM busybox:latest\nRUN echo zero > /zero\nFROM busybox:latest\nCOPY --from=0 /zero /z\nCOPY in.txt /in.txt\n",
    )
    .unwrap();
    t.write("in.txt", "in\n");
    // The Dockerfile is ignored by .dockerignore: it is read anyway.
    t.write(".dockerignore", "Dockerfile\n*.Dockerfile\n");
    let df_s = df.display().to_string();
    t.build_ok(&["-f", &df_s, "-t", "idx:1"]);
    assert_eq!(t.sh("idx:1", "cat /z /in.txt"), "zero\nin\n");
    // An error in it names that file.
    std::fs::write(&df, "FROM busybox:latest\nRUN exit 9\n").unwrap();
    let run = t.build_err(&["-f", &df_s]);
    assert!(
        run.stderr.contains("elsewhere.Dockerfile:2"),
        "{}",
        run.stderr
    );
});

forgetest!(
    build_flags_no_cache_filter_secret_env_and_tty_progress,
    |t| {
        t.dockerfile(
        "FROM busybox:latest AS keep\nRUN echo keep > /k\n\
         FROM busybox:latest AS redo\nRUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /len\n\
         FROM busybox:latest\nCOPY --from=keep /k /k\nCOPY --from=redo /len /len\n",
    );
        let build = |extra: &[&str]| {
            let ctx = t.ctx().display().to_string();
            let mut args = vec![
                "build",
                "--progress",
                "plain",
                "--secret",
                "id=tok,env=E2E_TOKEN",
            ];
            args.extend_from_slice(extra);
            args.push(&ctx);
            let out = std::process::Command::new(crate::harness::forge_exe())
                .env("FORGE_ROOT", t.root())
                .env("E2E_TOKEN", "abcdef")
                .args(&args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            crate::harness::Built {
                id: String::new(),
                log: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        };
        build(&["-t", "flt:1"]);
        assert_eq!(t.sh("flt:1", "cat /k /len"), "keep\n6\n");
        let filtered = build(&["--no-cache-filter", "redo"]);
        assert!(filtered.step("[keep 2/2] RUN").cached, "{}", filtered.log);
        assert!(!filtered.step("[redo 2/2] RUN").cached, "{}", filtered.log);
        // tty progress on a pipe must not fail the build.
        let ctx = t.ctx().display().to_string();
        let tty = t.forge(&[
            "build",
            "--progress",
            "tty",
            "--secret",
            "id=tok,src=/etc/hostname",
            &ctx,
        ]);
        assert!(tty.success(), "{}", tty.stderr);
    }
);

forgetest!(cache_mount_options_and_args_in_env, |t| {
    t.dockerfile(
        "FROM busybox:latest\n\
         ARG UNSET\n\
         ARG WITH_DEFAULT=dflt\n\
         ENV FROM_ARG=${WITH_DEFAULT}-env\n\
         RUN echo \"[$UNSET] $WITH_DEFAULT $FROM_ARG\" > /args\n\
         USER app\n\
         RUN --mount=type=cache,target=/home/app/.cache,uid=1000,gid=1000,id=appcache \
         touch /home/app/.cache/ok && stat -c %u /home/app/.cache > /tmp/cache-owner\n\
         USER root\n\
         RUN --mount=type=cache,target=/other,id=appcache,sharing=locked ls /other > /shared\n",
    );
    t.build_ok(&["-t", "cmo:1"]);
    assert_eq!(
        t.sh("cmo:1", "cat /args /tmp/cache-owner /shared"),
        "[] dflt dflt-env\n1000\nok\n"
    );
    let config = t.config("cmo:1");
    let env = config["Env"].to_string();
    assert!(env.contains("FROM_ARG=dflt-env"), "{env}");
    assert!(
        !env.contains("WITH_DEFAULT"),
        "an ARG leaked into the image's Env: {env}"
    );
});

forgetest!(run_env_from_forge_and_network_none, |t| {
    let out = std::process::Command::new(crate::harness::forge_exe())
        .env("FORGE_ROOT", t.root())
        .env("E2E_PASSED", "through")
        .args([
            "run",
            "--rm",
            "-e",
            "E2E_PASSED",
            "-e",
            "E2E_NOT_SET",
            "busybox:latest",
            "sh",
            "-c",
        ])
        .arg("echo ${E2E_PASSED}; echo ${E2E_NOT_SET-unset}")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through\nunset\n");
    let net = t.forge(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox:latest",
        "sh",
        "-c",
        "ls /sys/class/net",
    ]);
    assert!(net.success(), "{}", net.stderr);
    assert_eq!(
        net.stdout.split_whitespace().collect::<Vec<_>>(),
        ["lo"],
        "{}",
        net.stdout
    );
});

forgetest!(context_tar_on_stdin, |t| {
    t.write("files/in.txt", "from-tar\n");
    t.write(
        "Dockerfile",
        "FROM busybox:latest\nCOPY files/in.txt /in.txt\n",
    );
    t.write(
        "other.Dockerfile",
        "FROM busybox:latest\nCOPY files /files\n",
    );
    for (compress, file, tag) in [
        ("-cf", None, "tar:1"),
        ("-czf", Some("other.Dockerfile"), "tar:2"),
    ] {
        let tar = std::process::Command::new("tar")
            .arg("-C")
            .arg(t.ctx())
            .args([compress, "-", "."])
            .output()
            .unwrap();
        assert!(tar.status.success());
        let mut args = vec!["build", "-q", "-t", tag];
        if let Some(f) = file {
            args.extend(["-f", f]);
        }
        args.push("-");
        let run = t.forge_stdin(&args, Some(&tar.stdout));
        assert!(run.success(), "{}", run.stderr);
    }
    assert_eq!(t.sh("tar:1", "cat /in.txt"), "from-tar\n");
    assert_eq!(t.sh("tar:2", "cat /files/in.txt"), "from-tar\n");
    let leftovers: Vec<_> = std::fs::read_dir(t.root().join("v1/tmp"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name())
                .filter(|n| n.to_string_lossy().starts_with("stdin-context"))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "unpacked contexts left behind: {leftovers:?}"
    );
});

forgetest!(scratch_images_and_the_default_path, |t| {
    t.dockerfile(
        "FROM scratch\n\
         COPY --from=busybox:latest /bin/busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox echo $PATH > /path\"]\n\
         CMD [\"/bin/busybox\", \"cat\", \"/path\"]\n",
    );
    t.build_ok(&["-t", "scratchy:1"]);
    let out = t.run_ok("scratchy:1", &[]);
    assert!(
        out.starts_with("/usr/local/sbin:/usr/local/bin:"),
        "RUN's PATH in a scratch image: {out:?}"
    );
    let config = t.config("scratchy:1");
    let layers = t.inspect("scratchy:1")["Manifest"]["layers"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(layers, 2, "COPY and RUN layers only: {config}");
});

forgetest!(remote_add_is_refused_clearly, |t| {
    t.dockerfile("FROM busybox:latest\nADD https://example.invalid/file.txt /f\n");
    let run = t.build_err(&[]);
    assert!(run.stderr.contains("Dockerfile:2"), "{}", run.stderr);
    assert!(
        run.stderr.contains("https://example.invalid/file.txt"),
        "{}",
        run.stderr
    );
});

forgetest!(platform_args_are_predefined, |t| {
    t.dockerfile(
        "FROM --platform=$BUILDPLATFORM busybox:latest AS b\n\
         ARG TARGETOS\nARG TARGETARCH\nARG TARGETPLATFORM\nARG BUILDOS\n\
         RUN echo \"$TARGETOS $TARGETARCH $TARGETPLATFORM $BUILDOS\" > /p\n\
         FROM busybox:latest\nCOPY --from=b /p /p\n",
    );
    t.build_ok(&["-t", "plat:1"]);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!(
        t.sh("plat:1", "cat /p"),
        format!("linux {arch} linux/{arch} linux\n")
    );
    let inspect = t.inspect("plat:1");
    assert_eq!(inspect["Config"]["architecture"], arch, "{inspect}");
    assert_eq!(inspect["Config"]["os"], "linux", "{inspect}");
});
