//! `forge build --build-context NAME=DIR|docker-image://REF|oci-layout://DIR[:TAG]`: a name
//! no stage defines means the named context in FROM, COPY --from and RUN --mount=from.

use std::process::Command;

use crate::forgetest;
use crate::harness::TestEnv;

forgetest!(
    copy_from_a_directory_context_reruns_only_when_that_directory_changes,
    |t| {
        let assets = t.scratch().join("assets");
        std::fs::create_dir_all(assets.join("sub")).unwrap();
        std::fs::write(assets.join("a.txt"), "named A\n").unwrap();
        std::fs::write(assets.join("sub/b.log"), "named log\n").unwrap();
        // The main context's .dockerignore must not filter the named context.
        t.write(".dockerignore", "*.log\nsub\n");
        t.write("main.txt", "main 1\n");
        t.dockerfile(
            "FROM busybox:latest\n\
         COPY --from=assets . /assets/\n\
         RUN --mount=from=assets,source=sub,target=/m cat /m/b.log > /mounted\n\
         COPY main.txt /main.txt\n",
        );
        let flag = format!("assets={}", assets.display());
        t.build_ok(&["--build-context", &flag, "-t", "named:1"]);
        let out = t.sh(
            "named:1",
            "cat /main.txt /assets/a.txt /assets/sub/b.log /mounted",
        );
        assert_eq!(out, "main 1\nnamed A\nnamed log\nnamed log\n");

        // A change in the main context reruns its own COPY, not the COPY of the named context.
        t.write("main.txt", "main 2\n");
        let b = t.build_ok(&["--build-context", &flag, "-t", "named:2"]);
        assert!(!b.step("COPY main.txt").cached, "{}", b.log);
        assert!(b.step("COPY --from=assets").cached, "{}", b.log);

        assert!(b.step("RUN --mount=from=assets").cached, "{}", b.log);

        // A change in the named directory reruns the COPY that reads it, and says which file.
        std::fs::write(assets.join("a.txt"), "named A2\n").unwrap();
        let b = t.build_ok(&["--build-context", &flag, "-t", "named:3"]);
        let copy = b.step("COPY --from=assets");
        assert!(!copy.cached, "{}", b.log);
        assert!(
            copy.miss.as_deref().is_some_and(|m| m.contains("a.txt")),
            "{}",
            b.log
        );
        assert_eq!(t.sh("named:3", "cat /assets/a.txt"), "named A2\n");
    }
);

forgetest!(from_an_image_context_uses_that_image, |t| {
    t.dockerfile(
        "FROM alpine\n\
         COPY --from=alpine /bin/busybox /copied-busybox\n\
         RUN test -x /copied-busybox && echo ok > /ok\n",
    );
    t.build_ok(&[
        "--build-context",
        "alpine=docker-image://busybox:latest",
        "-t",
        "aliased:1",
    ]);
    assert_eq!(t.sh("aliased:1", "cat /ok"), "ok\n");
});

forgetest!(from_a_directory_context_is_a_clear_error, |t| {
    let dir = t.scratch().join("d");
    std::fs::create_dir_all(&dir).unwrap();
    t.dockerfile("FROM base\n");
    let flag = format!("base={}", dir.display());
    let run = t.build_err(&["--build-context", &flag]);
    assert!(
        run.stderr.contains("is a directory, not an image"),
        "{}",
        run.stderr
    );
});

forgetest!(from_an_oci_layout_context_imports_the_image, |t| {
    t.write("marker", "from the layout\n");
    t.dockerfile("FROM busybox:latest\nCOPY marker /marker\n");
    t.build_ok(&["-t", "marked:1"]);

    // A layout skopeo writes from the store (itself an OCI layout).
    let layout = t.scratch().join("layout");
    skopeo_to_layout(t, "docker.io/library/marked:1", &layout);
    t.dockerfile("FROM base\nRUN cat /marker > /seen\n");
    let flag = format!("base=oci-layout://{}:v1", layout.display());
    t.build_ok(&["--build-context", &flag, "-t", "fromlayout:1"]);
    assert_eq!(t.sh("fromlayout:1", "cat /seen"), "from the layout\n");

    // The store's own layout, tag given as the full name it records.
    let flag = format!(
        "base=oci-layout://{}/v1/oci:docker.io/library/marked:1",
        t.root().display()
    );
    t.build_ok(&["--build-context", &flag, "-t", "fromstore:1"]);
    assert_eq!(t.sh("fromstore:1", "cat /seen"), "from the layout\n");

    // A fresh store has none of the layout's blobs: they are copied in, and by digest too.
    let fresh = TestEnv::new("oci_layout_fresh_store");
    fresh.dockerfile("FROM base\nRUN cat /marker > /seen\n");
    let flag = format!("base=oci-layout://{}:v1", layout.display());
    fresh.build_ok(&["--build-context", &flag, "-t", "fresh:1"]);
    assert_eq!(fresh.sh("fresh:1", "cat /seen"), "from the layout\n");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let by_digest = TestEnv::new("oci_layout_by_digest");
    by_digest.dockerfile("FROM base\nRUN cat /marker > /seen\n");
    let flag = format!("base=oci-layout://{}@{manifest_digest}", layout.display());
    by_digest.build_ok(&["--build-context", &flag, "-t", "bydigest:1"]);
    assert_eq!(by_digest.sh("bydigest:1", "cat /seen"), "from the layout\n");

    // A layer whose bytes do not match its digest is refused.
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&manifest_digest)).unwrap()).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let top = blob(layers.last().unwrap()["digest"].as_str().unwrap());
    std::fs::write(&top, b"not the layer").unwrap();
    let corrupt = TestEnv::new("oci_layout_corrupt_blob");
    corrupt.dockerfile("FROM base\n");
    let flag = format!("base=oci-layout://{}:v1", layout.display());
    let run = corrupt.build_err(&["--build-context", &flag]);
    assert!(run.stderr.contains("digest mismatch"), "{}", run.stderr);

    // A tag the layout does not have names what it does have.
    let flag = format!("base=oci-layout://{}:nope", layout.display());
    let run = t.build_err(&["--build-context", &flag]);
    assert!(
        run.stderr.contains("no image tagged \"nope\"") && run.stderr.contains("v1"),
        "{}",
        run.stderr
    );
});

forgetest!(a_bad_build_context_value_names_the_flag, |t| {
    t.dockerfile("FROM busybox:latest\n");
    let run = t.build_err(&["--build-context", "x=nope://thing"]);
    assert!(
        run.stderr.contains("--build-context x=nope://thing")
            && run.stderr.contains("unsupported source"),
        "{}",
        run.stderr
    );
    let run = t.build_err(&["--build-context", "x=/does/not/exist"]);
    assert!(
        run.stderr.contains("--build-context") && run.stderr.contains("not a directory"),
        "{}",
        run.stderr
    );
    let run = t.build_err(&["--build-context", "novalue"]);
    assert!(run.stderr.contains("--build-context"), "{}", run.stderr);
});

forgetest!(a_mount_of_a_directory_context_reruns_when_it_changes, |t| {
    let src = t.scratch().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "one\n").unwrap();
    t.dockerfile("FROM busybox:latest\nRUN --mount=from=src,target=/m cat /m/f > /out\n");
    let flag = format!("src={}", src.display());
    t.build_ok(&["--build-context", &flag, "-t", "mnt:1"]);
    assert_eq!(t.sh("mnt:1", "cat /out"), "one\n");
    let again = t.build_ok(&["--build-context", &flag, "-t", "mnt:1"]);
    assert!(again.step("RUN --mount").cached, "{}", again.log);
    std::fs::write(src.join("f"), "two\n").unwrap();
    let changed = t.build_ok(&["--build-context", &flag, "-t", "mnt:2"]);
    assert!(!changed.step("RUN --mount").cached, "{}", changed.log);
    assert_eq!(t.sh("mnt:2", "cat /out"), "two\n");
});

// `FROM oci-layout://DIR:TAG` directly, without a named context: the image is copied from the
// layout into the store and built on.
forgetest!(from_an_oci_layout_directory_directly, |t| {
    let layout = t.scratch().join("layout");
    skopeo_to_layout(t, "docker.io/library/busybox:latest", &layout);
    let fresh = TestEnv::new("from_oci_layout_fresh_store");
    fresh.dockerfile(&format!(
        "FROM oci-layout://{}:v1\nRUN echo from-layout > /seen\n",
        layout.display()
    ));
    let built = fresh.build_ok(&["-t", "direct:1"]);
    assert!(
        !built.log.contains("InvalidDefaultArgInFrom"),
        "{}",
        built.log
    );
    assert_eq!(fresh.sh("direct:1", "cat /seen"), "from-layout\n");

    fresh.dockerfile(&format!(
        "FROM oci-layout://{}:nosuchtag\n",
        layout.display()
    ));
    let failed = fresh.build_err(&[]);
    assert!(failed.stderr.contains("nosuchtag"), "{}", failed.stderr);
});

/// Copies the store's image `name` into an OCI layout at `layout`, tagged `v1`, with skopeo
/// (an independent writer of layouts; the store is itself a layout skopeo reads).
fn skopeo_to_layout(t: &TestEnv, name: &str, layout: &std::path::Path) {
    let out = Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}/v1/oci:{name}", t.root().display()))
        .arg(format!("oci:{}:v1", layout.display()))
        .output()
        .expect("skopeo is installed (scripts/install-deps)");
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
