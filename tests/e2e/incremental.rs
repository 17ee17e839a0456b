//! Incremental COPY: a COPY that runs again links the files it copied last time from the
//! earlier snapshot, and the image is byte for byte what a `--no-cache` build makes.

use crate::forgetest;
use crate::harness::{Built, TestEnv};

/// Every build here pins the image dates, so two builds of the same input have one image id.
const EPOCH: [&str; 2] = ["--build-arg", "SOURCE_DATE_EPOCH=1700000000"];

/// Builds with `extra` arguments as `tag`; the step `copy` must have run again and said
/// `note` about the files it linked.
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
        !fresh.log.contains("unchanged files linked"),
        "--no-cache linked files from an earlier build:\n{}",
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

forgetest!(a_rerun_copy_links_the_unchanged_files, |t| {
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
    let note = "39 unchanged files linked from the last run of this step, 1 copied";
    let incremental = rebuild_linking(t, &[], "incremental:1", "COPY src/", note);
    // The rerun COPY shares the unchanged files' inodes with the first one, not the changed one.
    let unchanged = snapshot_inodes(t, "app/d1/f1.txt");
    assert_eq!(unchanged.len(), 2, "two COPY snapshots hold d1/f1.txt");
    assert_eq!(
        unchanged[0], unchanged[1],
        "d1/f1.txt was linked, not copied"
    );
    let changed = snapshot_inodes(t, "app/d0/f0.txt");
    assert_eq!(changed.len(), 2);
    assert_ne!(changed[0], changed[1], "the changed file was copied afresh");
    assert_eq!(t.sh("incremental:1", "cat /joined"), "changed\nfile 1\n");
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
        let note = "unchanged files linked from the last run";
        let incremental = rebuild_linking(t, &[], "node:1", "COPY . .", note);
        let lib = snapshot_inodes(t, "app/lib/l1.txt");
        assert_eq!(lib.len(), 2, "two COPY snapshots hold lib/l1.txt");
        assert_eq!(lib[0], lib[1], "lib/l1.txt was linked, not copied");
        assert_eq!(
            t.sh("node:1", "cat /joined; ls /app"),
            "{\"name\": \"app\"}\nsrc 3, edited\nlib 1\ndep\n\
         Dockerfile\nlib\nnode_modules\npackage.json\nsrc\n"
        );
        assert_fresh_build_is(t, &[], &incremental);
    }
);

// A COPY that reruns because a step before it changed copies nothing it copied last time.
forgetest!(a_copy_after_a_changed_step_links_every_file, |t| {
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
    let note = "12 unchanged files linked from the last run of this step, 0 copied";
    let rebuilt = rebuild_linking(t, &deps, "deps:2", "COPY src/", note);
    assert_eq!(
        t.sh("deps:2", "cat /deps /src/m7.txt"),
        "deps 2\nmodule 7\n"
    );
    assert_fresh_build_is(t, &deps, &rebuilt);
});
