//! RUN mounts: secrets reach the step and never a layer; cache mounts outlive builds.

use crate::forgetest;
use crate::harness::contains_bytes;

const SECRET: &str = "s3cr3t-value-9f8e7d6c5b4a";

forgetest!(secret_is_readable_in_run_and_absent_from_every_layer, |t| {
    let file = t.scratch().join("secret.txt");
    std::fs::write(&file, SECRET).unwrap();
    t.dockerfile(
        "FROM busybox:latest\n\
         RUN --mount=type=secret,id=s cat /run/secrets/s > /dev/null && wc -c < /run/secrets/s > /secret-len\n\
         RUN --mount=type=secret,id=s,target=/etc/tok sh -c 'test \"$(cat /etc/tok)\" = \"$(cat /run/secrets/s 2>/dev/null || cat /etc/tok)\"' && echo ok > /target-ok\n\
         RUN ls -A /run/secrets 2>/dev/null | wc -l > /left-behind\n",
    );
    let arg = format!("id=s,src={}", file.display());
    let built = t.build_ok(&["--secret", &arg, "-t", "sec:1"]);
    assert!(
        !built.log.contains(SECRET),
        "the secret is in the build log"
    );
    assert_eq!(
        t.sh("sec:1", "cat /secret-len /target-ok /left-behind")
            .split_whitespace()
            .collect::<Vec<_>>(),
        [SECRET.len().to_string().as_str(), "ok", "0"]
    );
    let layers = t.layer_tars("sec:1");
    assert!(layers.len() >= 2, "expected the base and step layers");
    for (i, layer) in layers.iter().enumerate() {
        assert!(
            !contains_bytes(layer, SECRET.as_bytes()),
            "layer {i} holds the secret"
        );
    }
    let inspect = t.forge(&["inspect", "sec:1"]).stdout;
    assert!(
        !inspect.contains(SECRET),
        "the config or manifest holds the secret"
    );
    // Every blob in the store, config and history included.
    for entry in std::fs::read_dir(t.root().join("v1/oci/blobs/sha256")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!contains_bytes(&bytes, SECRET.as_bytes()));
    }
});

forgetest!(required_secret_missing_fails_naming_it, |t| {
    t.dockerfile(
        "FROM busybox:latest\nRUN --mount=type=secret,id=tok,required=true cat /run/secrets/tok\n",
    );
    let run = t.build_err(&[]);
    assert!(run.stderr.contains("tok"), "{}", run.stderr);
    assert!(run.stderr.contains("Dockerfile:2"), "{}", run.stderr);
});

forgetest!(cache_mount_persists_across_builds, |t| {
    t.dockerfile(
        "FROM busybox:latest\nRUN --mount=type=cache,target=/c echo first-build > /c/stamp\n",
    );
    t.build_ok(&[]);
    t.dockerfile(
        "FROM busybox:latest\n\
         RUN --mount=type=cache,target=/c cat /c/stamp > /seen && echo second >> /c/stamp\n",
    );
    t.build_ok(&["--no-cache", "-t", "cm:1"]);
    assert_eq!(
        t.sh("cm:1", "cat /seen; test -e /c/stamp || echo not-in-image"),
        "first-build\nnot-in-image\n"
    );
    // A third build sees the second's append, again without the layer cache.
    t.dockerfile("FROM busybox:latest\nRUN --mount=type=cache,target=/c cat /c/stamp > /seen3\n");
    t.build_ok(&["--no-cache", "-t", "cm:3"]);
    assert_eq!(t.sh("cm:3", "cat /seen3"), "first-build\nsecond\n");
});

forgetest!(bind_and_tmpfs_mounts, |t| {
    t.write("data/a.txt", "from-context\n");
    t.dockerfile(
        "FROM busybox:latest AS tools\n\
         RUN mkdir /out && echo from-stage > /out/t.txt\n\
         FROM busybox:latest\n\
         RUN --mount=type=bind,source=data,target=/src cat /src/a.txt > /ctx-seen\n\
         RUN --mount=type=bind,from=tools,source=/out,target=/tools cat /tools/t.txt > /stage-seen\n\
         RUN --mount=type=tmpfs,target=/scratch echo x > /scratch/y && mount | grep -c ' /scratch ' > /tmpfs-seen\n",
    );
    t.build_ok(&["-t", "bind:1"]);
    assert_eq!(
        t.sh(
            "bind:1",
            "cat /ctx-seen /stage-seen /tmpfs-seen; ls -A /src /tools /scratch 2>/dev/null | wc -w"
        ),
        "from-context\nfrom-stage\n1\n0\n"
    );
    // A file outside the mounted directory changes: the step stays cached.
    t.write("unrelated.txt", "new\n");
    let unrelated = t.build_ok(&[]);
    assert!(
        unrelated.step("--mount=type=bind,source=data").cached,
        "{}",
        unrelated.log
    );
    // The bind mount reads the context, so a changed file in it reruns its step.
    t.write("data/a.txt", "changed\n");
    let again = t.build_ok(&["-t", "bind:2"]);
    let step = again.step("--mount=type=bind,source=data");
    assert!(!step.cached, "{}", again.log);
    assert_eq!(
        step.miss.as_deref(),
        Some("file \"data/a.txt\" in the build context changed"),
        "{}",
        again.log
    );
    assert!(again.step("[tools 2/2] RUN").cached, "{}", again.log);
    assert_eq!(t.sh("bind:2", "cat /ctx-seen"), "changed\n");
});

forgetest!(secret_as_env_and_ssh_socket, |t| {
    let file = t.scratch().join("secret.txt");
    std::fs::write(&file, SECRET).unwrap();
    let sock_path = t.scratch().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    t.dockerfile(
        "FROM busybox:latest\n\
         RUN --mount=type=secret,id=s,env=TOKEN sh -c 'echo ${#TOKEN}' > /envlen\n\
         RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo agent > /ssh\n\
         RUN echo \"[${TOKEN-}]\" > /later\n",
    );
    let secret = format!("id=s,src={}", file.display());
    let ssh = format!("default={}", sock_path.display());
    let built = t.build_ok(&["--secret", &secret, "--ssh", &ssh, "-t", "envsec:1"]);
    assert!(!built.log.contains(SECRET));
    assert_eq!(
        t.sh(
            "envsec:1",
            "cat /envlen /ssh /later; env | grep -c TOKEN || true"
        ),
        format!("{}\nagent\n[]\n0\n", SECRET.len())
    );
    let inspect = t.forge(&["inspect", "envsec:1"]).stdout;
    assert!(!inspect.contains(SECRET));
    for layer in t.layer_tars("envsec:1") {
        assert!(!contains_bytes(&layer, SECRET.as_bytes()));
    }
});
