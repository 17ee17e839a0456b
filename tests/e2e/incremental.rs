//! Incremental COPY: a COPY that runs again writes only what changed and lays it over its last
//! run's snapshot (or, when that cannot show exactly the new files, links the unchanged ones
//! from it), and the image is byte for byte what a `--no-cache` build makes.

use crate::forgetest;
use crate::harness::{Built, TestEnv};

/// Every build here pins the image dates, so two builds of the same input have one image id.
const EPOCH: [&str; 2] = ["--build-arg", "SOURCE_DATE_EPOCH=1700000000"];

/// Builds with `extra` arguments as `tag`; the step `copy` must have run again and said
/// `note` about the files it kept or linked.
fn rebuild_linking(t: &TestEnv, extra: &[&str], tag: &str, copy: &str, note: &str) -> Built {
    let mut args = EPOCH.to_vec();
    args.extend(extra);
    args.extend(["-t", tag]);
    let built = t.build_ok(&args);
    assert!(!built.step(copy).cached, "{}", built.log);
    assert!(built.log.contains(note), "{}", built.log);
    built
}

/// The same input built from scratch (`--no-cache`) links nothing and gives the same image.
fn assert_fresh_build_is(t: &TestEnv, extra: &[&str], incremental: &Built) {
    let mut args = EPOCH.to_vec();
    args.extend(extra);
    args.push("--no-cache");
    let fresh = t.build_ok(&args);
    assert!(
        !fresh.log.contains("unchanged files linked")
            && !fresh.log.contains("unchanged files kept"),
        "--no-cache used files of an earlier build:\n{}",
        fresh.log
    );
    assert_eq!(fresh.id, incremental.id, "{}", fresh.log);
}

/// The inode of `rel` in every snapshot of the store that has it, sorted.
fn snapshot_inodes(t: &TestEnv, rel: &str) -> Vec<u64> {
    let snapshots = t.root().join("v1/snapshots");
    let mut inodes: Vec<u64> = std::fs::read_dir(&snapshots)
        .unwrap()
        .filter_map(|e| std::fs::metadata(e.unwrap().path().join("fs").join(rel)).ok())
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .collect();
    inodes.sort();
    inodes
}

/// Every snapshot's metadata in the store: (id, the snapshot it is laid over).
fn snapshots_below(t: &TestEnv) -> Vec<(String, Option<String>)> {
    let snapshots = t.root().join("v1/snapshots");
    std::fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path().join("meta.json")).unwrap())
                    .unwrap();
            let below = meta["below"].as_str().map(str::to_owned);
            (e.file_name().to_string_lossy().into_owned(), below)
        })
        .collect()
}

forgetest!(a_rerun_copy_keeps_the_unchanged_files_below_it, |t| {
    for i in 0..40 {
        t.write(&format!("src/d{}/f{i}.txt", i % 4), &format!("file {i}\n"));
    }
    t.dockerfile(
        "FROM busybox:latest\n\
         WORKDIR /app\n\
         COPY src/ ./\n\
         RUN cat d0/f0.txt d1/f1.txt > /joined\n",
    );
    t.build_ok(&EPOCH);
    t.write("src/d0/f0.txt", "changed\n");
    let note = "39 unchanged files kept from the last run of this step (laid over it), 1 copied";
    let incremental = rebuild_linking(t, &[], "incremental:1", "COPY src/", note);
    // The rerun COPY's own tree holds the changed file and is laid over the first one, which
    // alone holds the unchanged files.
    assert_eq!(
        snapshot_inodes(t, "app/d1/f1.txt").len(),
        1,
        "d1/f1.txt is in one tree"
    );
    let changed = snapshot_inodes(t, "app/d0/f0.txt");
    assert_eq!(changed.len(), 2, "both COPY trees hold their own d0/f0.txt");
    assert_ne!(changed[0], changed[1], "the changed file was copied afresh");
    let laid: Vec<_> = snapshots_below(t)
        .into_iter()
        .filter(|s| s.1.is_some())
        .collect();
    assert_eq!(laid.len(), 1, "one snapshot is laid over another: {laid:?}");
    assert_eq!(t.sh("incremental:1", "cat /joined"), "changed\nfile 1\n");
    // forge run mounts both trees too: a kept file and the changed one.
    assert_eq!(
        t.sh("incremental:1", "cat /app/d1/f1.txt /app/d0/f0.txt"),
        "file 1\nchanged\n"
    );
    assert_fresh_build_is(t, &[], &incremental);
});

// The usual Node.js shape: the manifest first, dependencies installed, then everything. The
// last COPY merges into a WORKDIR that has files already; what it adds is still linked.
forgetest!(
    copy_dot_into_a_populated_workdir_links_unchanged_files,
    |t| {
        t.write("package.json", "{\"name\": \"app\"}\n");
        for i in 0..10 {
            t.write(&format!("lib/l{i}.txt"), &format!("lib {i}\n"));
            t.write(&format!("src/s{i}.txt"), &format!("src {i}\n"));
        }
        t.dockerfile(
            "FROM busybox:latest\n\
         WORKDIR /app\n\
         COPY package.json ./\n\
         RUN mkdir node_modules && echo dep > node_modules/dep.js\n\
         COPY . .\n\
         RUN cat package.json src/s3.txt lib/l1.txt node_modules/dep.js > /joined\n",
        );
        t.build_ok(&EPOCH);
        t.write("src/s3.txt", "src 3, edited\n");
        // The manifest, also in the workdir before, is copied through the overlay each time.
        let note = "unchanged files kept from the last run of this step (laid over it), 2 copied";
        let incremental = rebuild_linking(t, &[], "node:1", "COPY . .", note);
        let lib = snapshot_inodes(t, "app/lib/l1.txt");
        assert_eq!(
            lib.len(),
            1,
            "lib/l1.txt stays in the first COPY's tree only"
        );
        assert_eq!(
            t.sh("node:1", "cat /joined; ls /app"),
            "{\"name\": \"app\"}\nsrc 3, edited\nlib 1\ndep\n\
         Dockerfile\nlib\nnode_modules\npackage.json\nsrc\n"
        );
        assert_fresh_build_is(t, &[], &incremental);
    }
);

// A COPY that reruns because a step before it changed copies nothing it copied last time.
forgetest!(a_copy_after_a_changed_step_keeps_every_file, |t| {
    for i in 0..12 {
        t.write(&format!("src/m{i}.txt"), &format!("module {i}\n"));
    }
    t.dockerfile(
        "FROM busybox:latest\n\
         ARG DEPS=1\n\
         RUN echo deps $DEPS > /deps\n\
         COPY src/ /src/\n",
    );
    t.build_ok(&EPOCH);
    let deps = ["--build-arg", "DEPS=2"];
    let note = "12 unchanged files kept from the last run of this step (laid over it), 0 copied";
    let rebuilt = rebuild_linking(t, &deps, "deps:2", "COPY src/", note);
    assert_eq!(
        t.sh("deps:2", "cat /deps /src/m7.txt"),
        "deps 2\nmodule 7\n"
    );
    assert_fresh_build_is(t, &deps, &rebuilt);
});

// Each rerun is laid over the last until the trees are four deep; the next one links every
// unchanged file into a tree of its own, and the one after starts laying over that. A file
// deleted from the context must not show through from below: that rerun links instead. Every
// image is what a build from scratch makes (those builds come last: a build is the last run of
// its COPY, and a --no-cache one would start the rounds afresh).
forgetest!(laid_over_trees_stop_at_four_and_at_a_deleted_file, |t| {
    for i in 0..20 {
        t.write(&format!("src/d{}/f{i}.txt", i % 4), &format!("file {i}\n"));
    }
    t.dockerfile(
        "FROM busybox:latest\n\
         COPY src/ /app/\n\
         RUN cat /app/d0/f0.txt /app/d3/f3.txt > /joined && ls -R /app > /listing\n",
    );
    let mut first = EPOCH.to_vec();
    first.extend(["-t", "rounds:0"]);
    t.build_ok(&first);
    let listing = t.sh("rounds:0", "cat /listing");
    let kept = "19 unchanged files kept from the last run of this step (laid over it), 1 copied";
    let linked = "19 unchanged files linked from the last run of this step, 1 copied";
    let mut rounds = Vec::new();
    for (round, note) in [(1, kept), (2, kept), (3, kept), (4, linked), (5, kept)] {
        t.write("src/d0/f0.txt", &format!("round {round}\n"));
        let tag = format!("rounds:{round}");
        let built = rebuild_linking(t, &[], &tag, "COPY src/", note);
        assert_eq!(
            t.sh(&tag, "cat /joined"),
            format!("round {round}\nfile 3\n")
        );
        assert_eq!(t.sh(&tag, "cat /listing"), listing);
        rounds.push(built);
    }
    // f2 goes, f1 changes: f2 must not show through from the trees below.
    std::fs::remove_file(t.ctx().join("src/d2/f2.txt")).unwrap();
    t.write("src/d1/f1.txt", "file 1, edited\n");
    let note = "18 unchanged files linked from the last run of this step, 1 copied";
    let built = rebuild_linking(t, &[], "rounds:deleted", "COPY src/", note);
    assert_eq!(
        t.sh(
            "rounds:deleted",
            "test ! -e /app/d2/f2.txt && cat /app/d1/f1.txt"
        ),
        "file 1, edited\n"
    );
    assert_fresh_build_is(t, &[], &built);
    // Each round's image, four trees deep included, is the one a build from scratch makes.
    t.write("src/d2/f2.txt", "file 2\n");
    t.write("src/d1/f1.txt", "file 1\n");
    for (round, built) in (1..).zip(&rounds) {
        t.write("src/d0/f0.txt", &format!("round {round}\n"));
        assert_fresh_build_is(t, &[], built);
    }
});

// A --link COPY laid over its last run, then cached on a new base: the rebased copy holds the
// merged tree, the changed file from the top level and the kept ones from below.
forgetest!(a_laid_over_link_copy_rebases_whole, |t| {
    for i in 0..8 {
        t.write(&format!("src/d{}/f{i}.txt", i % 2), &format!("file {i}\n"));
    }
    t.dockerfile(
        "ARG BASE=busybox:latest\n\
         FROM $BASE\n\
         COPY --link src/ /app/\n\
         RUN cat /app/d0/f0.txt /app/d1/f7.txt > /joined && find /app | sort > /listing\n",
    );
    t.build_ok(&EPOCH);
    t.write("src/d0/f0.txt", "changed\n");
    let note = "7 unchanged files kept from the last run of this step (laid over it), 1 copied";
    rebuild_linking(t, &[], "link:1", "COPY --link", note);
    let listing = t.sh("link:1", "cat /listing");
    assert_eq!(listing.lines().count(), 11, "{listing}");
    // Another base: an image with one more layer.
    let base = t.scratch().join("base");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(
        base.join("Dockerfile"),
        "FROM busybox:latest\nRUN touch /marker\n",
    )
    .unwrap();
    let made = t.forge(&["build", "-t", "base2:latest", &base.display().to_string()]);
    assert!(made.success(), "{}", made.stderr);
    let mut args = EPOCH.to_vec();
    args.extend(["--build-arg", "BASE=base2:latest", "-t", "link:2"]);
    let rebased = t.build_ok(&args);
    assert!(rebased.step("COPY --link").cached, "{}", rebased.log);
    assert!(!rebased.step("RUN cat").cached, "{}", rebased.log);
    assert_eq!(
        t.sh("link:2", "cat /joined; ls /marker"),
        "changed\nfile 7\n/marker\n"
    );
    assert_eq!(t.sh("link:2", "cat /listing"), listing);
    assert_fresh_build_is(t, &["--build-arg", "BASE=base2:latest"], &rebased);
});
