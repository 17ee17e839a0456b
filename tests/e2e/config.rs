//! Instructions that shape the image config and the environment of later steps: USER,
//! WORKDIR, ENV, ONBUILD, and heredoc RUN scripts (an unquoted `<<EOT cmd` heredoc is
//! expanded by the RUN's own shell before `cmd` reads it, as with BuildKit's `sh -c`).

use crate::forgetest;

forgetest!(user_workdir_env_reach_run_and_the_config, |t| {
    t.dockerfile(
        "FROM busybox:latest\n\
         ENV GREETING=hello NAME=\"forge user\"\n\
         WORKDIR /app\n\
         RUN pwd > /tmp/run-pwd && echo \"$GREETING $NAME\" > /tmp/run-env\n\
         USER app\n\
         RUN id -u > /tmp/run-uid && id -g > /tmp/run-gid\n\
         WORKDIR sub\n\
         RUN pwd > /tmp/run-pwd2\n",
    );
    t.build_ok(&["-t", "cfg:1"]);
    assert_eq!(
        t.sh(
            "cfg:1",
            "cat /tmp/run-pwd /tmp/run-env /tmp/run-uid /tmp/run-gid /tmp/run-pwd2"
        ),
        "/app\nhello forge user\n1000\n1000\n/app/sub\n"
    );
    // The container starts as USER in WORKDIR with ENV.
    assert_eq!(
        t.sh("cfg:1", "id -u; pwd; echo $NAME"),
        "1000\n/app/sub\nforge user\n"
    );
    let config = t.config("cfg:1");
    assert_eq!(config["User"], "app", "{config}");
    assert_eq!(config["WorkingDir"], "/app/sub", "{config}");
    let env: Vec<&str> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"GREETING=hello"), "{env:?}");
    assert!(env.contains(&"NAME=forge user"), "{env:?}");
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
});

forgetest!(onbuild_triggers_run_in_the_child_build, |t| {
    let base_df = t.scratch().join("Dockerfile.base");
    std::fs::write(
        &base_df,
        "FROM busybox:latest\n\
         RUN echo base > /base\n\
         ONBUILD RUN echo triggered > /triggered\n\
         ONBUILD COPY child.txt /from-child.txt\n",
    )
    .unwrap();
    let base_df = base_df.display().to_string();
    let base = t.build_ok(&["-f", &base_df, "-t", "onbase:1"]);
    // The base image itself did not run its triggers, and records them.
    assert_eq!(
        t.sh(
            "onbase:1",
            "cat /base; test -e /triggered || echo untriggered"
        ),
        "base\nuntriggered\n"
    );
    let config = t.config("onbase:1");
    let onbuild = config["OnBuild"]
        .as_array()
        .unwrap_or_else(|| panic!("no OnBuild in {config}"));
    assert_eq!(onbuild.len(), 2, "{config}");
    assert!(!base.id.is_empty());

    t.write("child.txt", "child\n");
    t.dockerfile("FROM onbase:1\nRUN echo child-step > /child\n");
    t.build_ok(&["-t", "onchild:1"]);
    assert_eq!(
        t.sh("onchild:1", "cat /base /triggered /from-child.txt /child"),
        "base\ntriggered\nchild\nchild-step\n"
    );
    // Triggers fire once: the child does not pass them on.
    let child_config = t.config("onchild:1");
    let inherited = child_config["OnBuild"]
        .as_array()
        .map(|a| a.len())
        .unwrap_or(0);
    assert_eq!(inherited, 0, "{child_config}");
});

forgetest!(heredoc_run_scripts, |t| {
    t.dockerfile(
        "FROM busybox:latest\n\
         RUN <<EOF\n\
         echo line-one > /script-out\n\
         echo line-two >> /script-out\n\
         EOF\n\
         RUN <<'EOT' sh\n\
         set -e\n\
         for i in 1 2 3; do echo $i; done > /loop\n\
         EOT\n\
         RUN <<EOT sh\n\
         echo \"[$i]\" > /outer-expanded\n\
         EOT\n\
         RUN cat <<EOF > /via-stdin\n\
         piped text\n\
         EOF\n",
    );
    t.build_ok(&["-t", "hdrun:1"]);
    assert_eq!(
        t.sh(
            "hdrun:1",
            "cat /script-out /loop /via-stdin /outer-expanded"
        ),
        "line-one\nline-two\n1\n2\n3\npiped text\n[]\n"
    );
});

forgetest!(user_forms_and_workdir_ownership, |t| {
    t.dockerfile(
        "FROM busybox:latest\n\
         USER 4321\n\
         RUN id -u > /tmp/numeric\n\
         USER app:root\n\
         RUN echo \"$(id -u):$(id -g)\" > /tmp/pair\n\
         USER app\n\
         WORKDIR /made-by-app\n\
         USER root\n",
    );
    t.build_ok(&["-t", "users:1"]);
    assert_eq!(
        t.sh(
            "users:1",
            "cat /tmp/numeric /tmp/pair; stat -c %u:%g /made-by-app"
        ),
        "4321\n1000:0\n1000:1000\n"
    );
});
