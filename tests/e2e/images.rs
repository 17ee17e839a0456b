//! `forge images`, `forge inspect` and `forge import`.

use crate::forgetest;
use crate::harness::busybox_tarball;

forgetest!(images_lists_built_tags, |t| {
    t.dockerfile("FROM busybox:latest\nRUN echo x > /x\n");
    let built = t.build_ok(&["-t", "listed:v7", "-t", "example.com/team/other:v1"]);
    let run = t.forge(&["images"]);
    assert!(run.success(), "{}", run.stderr);
    let short = &built.id["sha256:".len()..][..12];
    let row = |repo: &str, tag: &str| {
        run.stdout.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() >= 3 && cols[0] == repo && cols[1] == tag && cols[2] == short
        })
    };
    assert!(
        row("listed", "v7"),
        "no row for listed:v7 with id {short}:\n{}",
        run.stdout
    );
    assert!(row("example.com/team/other", "v1"), "{}", run.stdout);
    assert!(
        row("busybox", "latest") || run.stdout.contains("busybox"),
        "{}",
        run.stdout
    );
    let full = t.forge(&["images", "--no-trunc"]);
    assert!(
        full.stdout.contains(&built.id["sha256:".len()..]),
        "{}",
        full.stdout
    );
});

forgetest!(inspect_prints_config_and_manifest, |t| {
    t.dockerfile("FROM busybox:latest\nLABEL team=forge\nRUN echo x > /x\nCMD [\"cat\", \"/x\"]\n");
    let built = t.build_ok(&["-t", "insp:1", "--label", "extra=yes"]);
    let v = t.inspect("insp:1");
    assert_eq!(v["Id"], built.id.as_str(), "{v}");
    let config = &v["Config"];
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["cat", "/x"]),
        "{v}"
    );
    assert_eq!(config["config"]["Labels"]["team"], "forge", "{v}");
    assert_eq!(config["config"]["Labels"]["extra"], "yes", "{v}");
    assert_eq!(config["rootfs"]["type"], "layers", "{v}");
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let layers = v["Manifest"]["layers"].as_array().unwrap();
    assert_eq!(diff_ids.len(), layers.len(), "{v}");
    assert_eq!(diff_ids.len(), 2, "busybox's layer and the RUN's: {v}");
    assert!(
        v["Manifest"]["config"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{v}"
    );
    assert!(
        config["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["created_by"]
                .as_str()
                .unwrap_or("")
                .contains("echo x > /x")),
        "{v}"
    );
    let missing = t.forge(&["inspect", "nope:1"]);
    assert!(!missing.success());
    assert!(missing.stderr.contains("nope:1"), "{}", missing.stderr);
});

forgetest!(import_with_changes, |t| {
    let tarball = busybox_tarball().display().to_string();
    let run = t.forge(&[
        "import",
        "-c",
        "CMD [\"sh\", \"-c\", \"echo $GREET from $(pwd)\"]",
        "-c",
        "ENV GREET=imported",
        "-c",
        "WORKDIR /tmp",
        &tarball,
        "imp:1",
    ]);
    assert!(run.success(), "{}", run.stderr);
    assert_eq!(t.run_ok("imp:1", &[]), "imported from /tmp\n");
    let config = t.config("imp:1");
    assert_eq!(config["WorkingDir"], "/tmp", "{config}");
    let bad = t.forge(&["import", "-c", "RUN true", &tarball, "imp:2"]);
    assert!(!bad.success());
    assert!(bad.stderr.contains("RUN"), "{}", bad.stderr);
    // An imported image is a base for builds.
    t.dockerfile("FROM imp:1\nRUN echo built-on-import > /b\n");
    t.build_ok(&["-t", "onimp:1"]);
    assert_eq!(t.sh("onimp:1", "cat /b; pwd"), "built-on-import\n/tmp\n");
});

forgetest!(tag_forms_and_invalid_tags, |t| {
    t.dockerfile("FROM busybox:latest\nRUN echo tagged > /t\n");
    let built = t.build_ok(&[
        "-t",
        "plain",
        "-t",
        "localhost:5000/team/app:v1",
        "-t",
        "docker.io/library/short:2",
    ]);
    let images = t.forge(&["images"]).stdout;
    for (repo, tag) in [
        ("plain", "latest"),
        ("localhost:5000/team/app", "v1"),
        ("short", "2"),
    ] {
        assert!(
            images.lines().any(|l| {
                let c: Vec<&str> = l.split_whitespace().collect();
                c.len() >= 2 && c[0] == repo && c[1] == tag
            }),
            "no {repo} {tag} row:\n{images}"
        );
    }
    assert_eq!(t.sh("plain", "cat /t"), "tagged\n");
    assert_eq!(t.sh("short:2", "cat /t"), "tagged\n");
    assert_eq!(
        t.inspect("localhost:5000/team/app:v1")["Id"],
        built.id.as_str()
    );
    let bad = t.build(&["-t", "Bad:Tag"]);
    assert!(!bad.success());
    assert!(bad.stderr.contains("Bad:Tag"), "{}", bad.stderr);
    assert!(
        !bad.stderr.lines().any(|l| l.starts_with("#1 ")),
        "a step ran before the tag was refused:\n{}",
        bad.stderr
    );
});
