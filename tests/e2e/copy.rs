//! COPY and ADD as Docker defines them, checked inside the built image.

use std::os::unix::fs::symlink;

use crate::forgetest;

forgetest!(copy_sources_wildcards_and_destinations, |t| {
    t.write("a.txt", "A\n");
    t.write("b.txt", "B\n");
    t.write("one.md", "1\n");
    t.write("two.md", "2\n");
    t.write("dir/inner.txt", "inner\n");
    t.write("dir/sub/deep.txt", "deep\n");
    t.dockerfile(
        "FROM busybox:latest\n\
         COPY a.txt b.txt /multi/\n\
         COPY *.md /md/\n\
         COPY dir /contents\n\
         COPY dir/ /contents-slash/\n\
         COPY a.txt /renamed\n\
         COPY a.txt /intodir/\n\
         COPY a.txt /x/y/z/created.txt\n\
         WORKDIR /w\n\
         COPY b.txt rel/\n\
         COPY b.txt .\n",
    );
    t.build_ok(&["-t", "cp:1"]);
    let out = t.sh(
        "cp:1",
        "cat /multi/a.txt /multi/b.txt /md/one.md /md/two.md; \
         ls /contents; cat /contents/sub/deep.txt; ls /contents-slash; \
         test -f /renamed && cat /renamed; cat /intodir/a.txt /x/y/z/created.txt; \
         cat /w/rel/b.txt /w/b.txt; test -e /contents/dir && echo WRONG-dir-itself; true",
    );
    assert_eq!(
        out,
        "A\nB\n1\n2\ninner.txt\nsub\ndeep\ninner.txt\nsub\nA\nA\nA\nB\nB\n"
    );
});

forgetest!(copy_of_several_sources_needs_a_directory_destination, |t| {
    t.write("a.txt", "A\n");
    t.write("b.txt", "B\n");
    t.dockerfile("FROM busybox:latest\nCOPY a.txt b.txt /notadir\n");
    let run = t.build_err(&[]);
    assert!(run.stderr.contains("Dockerfile:2"), "{}", run.stderr);
});

forgetest!(copy_of_a_missing_source_fails_naming_it, |t| {
    t.dockerfile("FROM busybox:latest\nCOPY nothere.txt /x\n");
    let run = t.build_err(&[]);
    assert!(run.stderr.contains("nothere.txt"), "{}", run.stderr);
    assert!(run.stderr.contains("Dockerfile:2"), "{}", run.stderr);
});

forgetest!(copy_chown_and_chmod, |t| {
    t.write("f.txt", "f\n");
    t.write("d/g.txt", "g\n");
    t.dockerfile(
        "FROM busybox:latest\n\
         COPY --chown=app:app f.txt /named\n\
         COPY --chown=1234:5678 f.txt /numeric\n\
         COPY --chown=app f.txt /useronly\n\
         COPY --chmod=640 f.txt /mode\n\
         COPY --chmod=750 --chown=1000 d /dmode\n",
    );
    t.build_ok(&["-t", "own:1"]);
    let out = t.sh(
        "own:1",
        "stat -c '%u:%g %a' /named /numeric /useronly /mode /dmode/g.txt",
    );
    assert_eq!(
        out,
        "1000:1000 644\n1234:5678 644\n1000:1000 644\n0:0 640\n1000:1000 750\n"
    );
});

// BuildKit gives a copied directory itself the --chmod mode too (moby/buildkit#4945, fixed
// in fsutil#228), as it gives it the --chown owner.
forgetest!(copy_chmod_applies_to_the_copied_directory_itself, |t| {
    t.write("d/g.txt", "g\n");
    t.dockerfile("FROM busybox:latest\nCOPY --chmod=750 --chown=1000 d /dmode\n");
    t.build_ok(&["-t", "own:2"]);
    assert_eq!(
        t.sh("own:2", "stat -c '%u:%g %a' /dmode /dmode/g.txt"),
        "1000:1000 750\n1000:1000 750\n"
    );
});

forgetest!(copy_from_stage_link_parents_exclude, |t| {
    t.write("src/a/keep.txt", "keep\n");
    t.write("src/a/drop.log", "drop\n");
    t.write("src/b/c/deep.txt", "deep\n");
    t.dockerfile(
        "# syntax=docker/dockerfile:1.7-labs\n\
         FROM busybox:latest AS gen\n\
         RUN mkdir -p /out && echo generated > /out/gen.txt\n\
         FROM busybox:latest\n\
         COPY --from=gen /out/gen.txt /fromstage.txt\n\
         COPY --from=busybox:latest /etc/group /fromimage\n\
         COPY --link src/a/keep.txt /linked/\n\
         COPY --parents src/b/c/deep.txt /par/\n\
         COPY --exclude=*.log src/a /excl/\n",
    );
    t.build_ok(&["-t", "from:1"]);
    let out = t.sh(
        "from:1",
        "cat /fromstage.txt; head -1 /fromimage; cat /linked/keep.txt /par/src/b/c/deep.txt; ls /excl",
    );
    assert_eq!(out, "generated\nroot:x:0:\nkeep\ndeep\nkeep.txt\n");
});

forgetest!(copy_heredoc_sources, |t| {
    t.dockerfile(
        "FROM busybox:latest\n\
         COPY <<EOF /etc/greeting\n\
         hello heredoc\n\
         second line\n\
         EOF\n\
         COPY <<one <<two /many/\n\
         first\n\
         one\n\
         second\n\
         two\n",
    );
    t.build_ok(&["-t", "hd:1"]);
    assert_eq!(
        t.sh("hd:1", "cat /etc/greeting /many/one /many/two"),
        "hello heredoc\nsecond line\nfirst\nsecond\n"
    );
});

forgetest!(add_extracts_a_local_tar_gz, |t| {
    let staging = t.scratch().join("tree");
    std::fs::create_dir_all(staging.join("pkg/bin")).unwrap();
    std::fs::write(staging.join("pkg/bin/tool"), "tool\n").unwrap();
    std::fs::write(staging.join("pkg/README"), "readme\n").unwrap();
    let tarball = t.ctx().join("pkg.tar.gz");
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(&staging)
        .arg("-czf")
        .arg(&tarball)
        .arg("pkg")
        .status()
        .unwrap();
    assert!(st.success());
    t.dockerfile("FROM busybox:latest\nADD pkg.tar.gz /opt/\nCOPY pkg.tar.gz /copied/\n");
    t.build_ok(&["-t", "add:1"]);
    assert_eq!(
        t.sh("add:1", "cat /opt/pkg/bin/tool /opt/pkg/README; ls /copied"),
        "tool\nreadme\npkg.tar.gz\n"
    );
});

forgetest!(symlinks_are_copied_as_symlinks_and_not_followed_out, |t| {
    let outside = t.scratch().join("outside.txt");
    std::fs::write(&outside, "OUTSIDE-SECRET\n").unwrap();
    t.write("tree/real.txt", "real\n");
    symlink("real.txt", t.ctx().join("tree/rel-link")).unwrap();
    symlink(&outside, t.ctx().join("tree/abs-out")).unwrap();
    symlink(
        "../../../../../../etc/hostname",
        t.ctx().join("tree/dotdot"),
    )
    .unwrap();
    symlink("tree/real.txt", t.ctx().join("toplink")).unwrap();
    t.dockerfile("FROM busybox:latest\nCOPY tree /tree\nCOPY toplink /top\n");
    t.build_ok(&["-t", "ln:1"]);
    let out = t.sh(
        "ln:1",
        "readlink /tree/rel-link; cat /tree/rel-link; readlink /tree/abs-out; \
         readlink /tree/dotdot; test -L /top && echo top-is-link || cat /top",
    );
    let expected = format!(
        "real.txt\nreal\n{}\n../../../../../../etc/hostname\n",
        outside.display()
    );
    assert!(out.starts_with(&expected), "got:\n{out}");
    // A top-level symlink source: Docker copies what it points at (inside the context).
    let last = out.strip_prefix(&expected).unwrap();
    assert!(last == "top-is-link\n" || last == "real\n", "got {last:?}");
    for layer in t.layer_tars("ln:1") {
        assert!(
            !crate::harness::contains_bytes(&layer, b"OUTSIDE-SECRET"),
            "a symlink was followed out of the context"
        );
    }
});

forgetest!(hardlinks_are_kept, |t| {
    t.write("hl/one", "same\n");
    std::fs::hard_link(t.ctx().join("hl/one"), t.ctx().join("hl/two")).unwrap();
    t.dockerfile("FROM busybox:latest\nCOPY hl /hl\n");
    t.build_ok(&["-t", "hl:1"]);
    let out = t.sh(
        "hl:1",
        "stat -c %i /hl/one /hl/two | uniq | wc -l; stat -c %h /hl/one",
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["1", "2"],
        "got {out:?}"
    );
});

forgetest!(dockerignore_hides_files_from_copy, |t| {
    t.write(".dockerignore", "secret.txt\n*.log\n");
    t.write("secret.txt", "nope\n");
    t.write("app.log", "nope\n");
    t.write("keep.txt", "keep\n");
    t.dockerfile("FROM busybox:latest\nCOPY . /all/\n");
    t.build_ok(&["-t", "ign:1"]);
    let out = t.sh("ign:1", "ls -A /all");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        [".dockerignore", "Dockerfile", "keep.txt"]
    );
});

// BuildKit fails a COPY whose named source .dockerignore excludes: the file is not in the
// context at all (`"/secret.txt": not found`).
forgetest!(copy_of_an_ignored_file_fails_as_not_found, |t| {
    t.write(".dockerignore", "secret.txt\n");
    t.write("secret.txt", "nope\n");
    t.dockerfile("FROM busybox:latest\nCOPY secret.txt /s\n");
    let run = t.build_err(&[]);
    assert!(run.stderr.contains("secret.txt"), "{}", run.stderr);
    assert!(
        run.stderr.to_lowercase().contains("not found") || run.stderr.contains("no such"),
        "{}",
        run.stderr
    );
});

forgetest!(dockerignore_applies_inside_a_copied_directory, |t| {
    t.write(".dockerignore", "dir/ignored.txt\n**/*.tmp\n");
    t.write("dir/kept.txt", "kept\n");
    t.write("dir/ignored.txt", "nope\n");
    t.write("dir/sub/x.tmp", "nope\n");
    t.dockerfile("FROM busybox:latest\nCOPY dir /d\n");
    t.build_ok(&["-t", "ign:2"]);
    let out = t.sh("ign:2", "find /d | sort");
    assert_eq!(out, "/d\n/d/kept.txt\n/d/sub\n");
});

forgetest!(copy_link_is_cached_on_a_changed_base, |t| {
    t.write("app.txt", "app\n");
    t.dockerfile(
        "FROM busybox:latest\nCOPY --link app.txt /app/app.txt\nRUN cat /app/app.txt > /after\n",
    );
    let first = t.build_ok(&[]);
    let same = t.build_ok(&[]);
    assert!(same.step("RUN cat").cached, "{}", same.log);
    assert_eq!(first.id, same.id);
    let tarball = crate::harness::busybox_tarball().display().to_string();
    let import = t.forge(&[
        "import",
        "-c",
        "CMD [\"new-base\"]",
        &tarball,
        "busybox:latest",
    ]);
    assert!(import.success(), "{}", import.stderr);
    let again = t.build_ok(&["-t", "link:2"]);
    // BuildKit rebases --link layers: a new base does not rerun the copy, but the RUN after
    // it sees a new filesystem and reruns.
    assert!(again.step("COPY --link").cached, "{}", again.log);
    assert!(!again.step("RUN cat").cached, "{}", again.log);
    let settled = t.build_ok(&["-t", "link:2"]);
    assert!(settled.step("RUN cat").cached, "{}", settled.log);
    assert_eq!(settled.id, again.id);
    assert_eq!(t.config("link:2")["Cmd"], serde_json::json!(["new-base"]));
    assert_eq!(t.sh("link:2", "cat /after; stat -c %a /app"), "app\n755\n");
    // Without --link the same change reruns the copy.
    t.dockerfile("FROM busybox:latest\nCOPY app.txt /app/app.txt\n");
    t.build_ok(&[]);
    let import = t.forge(&[
        "import",
        "-c",
        "CMD [\"third-base\"]",
        &tarball,
        "busybox:latest",
    ]);
    assert!(import.success(), "{}", import.stderr);
    let plain = t.build_ok(&[]);
    assert!(!plain.step("COPY app.txt").cached, "{}", plain.log);
});

forgetest!(
    copy_follows_image_symlinks_in_the_destination_and_overwrites,
    |t| {
        t.write("a.txt", "new\n");
        t.write("tree/x", "x\n");
        t.dockerfile(
        "FROM busybox:latest\n\
         RUN mkdir /real && ln -s /real /link && echo old > /over.txt && mkdir -p /merge/keep && echo k > /merge/keep/k\n\
         COPY a.txt /link/\n\
         COPY a.txt /over.txt\n\
         COPY tree /merge/\n",
    );
        t.build_ok(&["-t", "dst:1"]);
        assert_eq!(
            t.sh(
                "dst:1",
                "cat /real/a.txt /over.txt; test -L /link && echo still-link; ls /merge"
            ),
            "new\nnew\nstill-link\nkeep\nx\n"
        );
    }
);

forgetest!(unknown_users_are_errors_naming_them, |t| {
    t.write("a.txt", "a\n");
    t.dockerfile("FROM busybox:latest\nCOPY --chown=nobody-here a.txt /a\n");
    let run = t.build_err(&[]);
    assert!(run.stderr.contains("nobody-here"), "{}", run.stderr);
    assert!(run.stderr.contains("Dockerfile:2"), "{}", run.stderr);
    t.dockerfile("FROM busybox:latest\nUSER ghost\nRUN true\n");
    let run = t.build_err(&[]);
    assert!(run.stderr.contains("ghost"), "{}", run.stderr);
    let run2 = t.forge(&["run", "--rm", "-u", "ghost", "busybox:latest", "true"]);
    assert_ne!(run2.status, Some(0), "{}", run2.stderr);
    assert!(run2.stderr.contains("ghost"), "{}", run2.stderr);
});

// As in BuildKit, a --link layer is written without its base, so --chown takes ids (a
// name cannot be looked up and is an error), and a relative dest still follows WORKDIR.
forgetest!(copy_link_with_workdir_and_numeric_chown, |t| {
    t.write("a.txt", "a\n");
    t.dockerfile(
        "FROM busybox:latest\nWORKDIR /w\nCOPY --link a.txt rel/\nCOPY --link --chown=1000:1000 a.txt /owned\n",
    );
    t.build_ok(&["-t", "lk:1"]);
    assert_eq!(
        t.sh("lk:1", "cat /w/rel/a.txt; stat -c %u:%g /owned"),
        "a\n1000:1000\n"
    );
    t.dockerfile("FROM busybox:latest\nCOPY --link --chown=app a.txt /named\n");
    let run = t.build_err(&[]);
    assert!(run.stderr.contains("\"app\""), "{}", run.stderr);
});
