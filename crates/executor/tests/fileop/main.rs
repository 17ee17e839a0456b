//! COPY/ADD file operations against small trees, one test per Docker/BuildKit rule. Each test
//! states in one line what Docker does. They need root (chown, mknod): run as root in CI.

use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use forge_executor::{
    copy, list_source_files, resolve_sources, ChmodSpec, CopySource, CopySpec, FileOpError,
};

mod deferred;

/// A build context (`src`) and a target rootfs (`dest`) in one temp dir, so "outside the
/// root" is a place the test can look at.
struct Trees {
    _tmp: tempfile::TempDir,
    outer: PathBuf,
    src: PathBuf,
    dest: PathBuf,
}

fn trees() -> Trees {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the fileop tests chown files and must run as root"
    );
    let tmp = tempfile::tempdir().unwrap();
    let outer = tmp.path().to_path_buf();
    let src = outer.join("context");
    let dest = outer.join("rootfs");
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dest).unwrap();
    Trees {
        _tmp: tmp,
        outer,
        src,
        dest,
    }
}

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

fn read(root: &Path, rel: &str) -> String {
    fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

fn spec(sources: &[&str], dest: &str) -> CopySpec {
    CopySpec {
        sources: sources
            .iter()
            .map(|s| CopySource::Path(s.to_string()))
            .collect(),
        dest: dest.to_string(),
        ..CopySpec::default()
    }
}

fn meta(root: &Path, rel: &str) -> fs::Metadata {
    fs::symlink_metadata(root.join(rel)).unwrap_or_else(|e| panic!("lstat {rel}: {e}"))
}

fn mode(root: &Path, rel: &str) -> u32 {
    meta(root, rel).mode() & 0o7777
}

#[test]
fn directory_source_copies_its_contents_not_itself() {
    // Docker: "If <src> is a directory, the entire contents of the directory are copied ... the directory itself is not copied".
    let t = trees();
    write(&t.src, "dir/a.txt", "a");
    write(&t.src, "dir/sub/b.txt", "b");
    copy(&spec(&["dir"], "/app/"), &t.src, &t.dest).unwrap();
    assert_eq!(read(&t.dest, "app/a.txt"), "a");
    assert_eq!(read(&t.dest, "app/sub/b.txt"), "b");
    assert!(!t.dest.join("app/dir").exists());
    // Without a trailing slash a missing destination becomes that directory too.
    copy(&spec(&["dir/"], "/other"), &t.src, &t.dest).unwrap();
    assert_eq!(read(&t.dest, "other/sub/b.txt"), "b");
}

#[test]
fn file_source_is_renamed_or_copied_into_a_directory() {
    // Docker: `COPY a.txt /x` creates file /x; `/d/` or an existing directory /e receives /d/a.txt, /e/a.txt.
    let t = trees();
    write(&t.src, "a.txt", "A");
    fs::create_dir(t.dest.join("e")).unwrap();
    copy(&spec(&["a.txt"], "/x"), &t.src, &t.dest).unwrap();
    copy(&spec(&["a.txt"], "/d/"), &t.src, &t.dest).unwrap();
    copy(&spec(&["a.txt"], "/e"), &t.src, &t.dest).unwrap();
    assert!(meta(&t.dest, "x").is_file());
    assert_eq!(read(&t.dest, "x"), "A");
    assert_eq!(read(&t.dest, "d/a.txt"), "A");
    assert_eq!(read(&t.dest, "e/a.txt"), "A");
}

#[test]
fn several_sources_need_a_destination_directory() {
    // Docker reference: several sources (listed or by wildcard) need <dest> to be a directory ending in "/".
    let t = trees();
    write(&t.src, "a.txt", "a");
    write(&t.src, "b.txt", "b");
    let err = copy(&spec(&["a.txt", "b.txt"], "/out"), &t.src, &t.dest).unwrap_err();
    assert!(
        err.to_string()
            .contains("When using COPY with more than one source file, the destination must be a directory and end with a /"),
        "{err}"
    );
    let err = copy(&spec(&["*.txt"], "/out"), &t.src, &t.dest).unwrap_err();
    assert!(
        matches!(err, FileOpError::DestinationNotDirectory { .. }),
        "{err}"
    );
    assert!(!t.dest.join("out").exists(), "nothing is written on error");
    copy(&spec(&["*.txt"], "/out/"), &t.src, &t.dest).unwrap();
    assert_eq!(read(&t.dest, "out/a.txt"), "a");
    assert_eq!(read(&t.dest, "out/b.txt"), "b");
}

#[test]
fn wildcards_match_per_component_and_an_empty_copy_is_an_error() {
    // Docker: Go filepath.Match per component; nothing matched at all fails ("no source files were specified"); a missing path fails naming it.
    let t = trees();
    write(&t.src, "pkg/a/package.json", "a");
    write(&t.src, "pkg/b/package.json", "b");
    write(&t.src, "pkg/b/other.json", "o");
    write(&t.src, "f[1].txt", "esc");
    copy(&spec(&["pkg/*/package.json"], "/out/"), &t.src, &t.dest).unwrap();
    // Both matches are files named package.json: the later one wins, as in BuildKit.
    assert_eq!(read(&t.dest, "out/package.json"), "b");
    assert!(!t.dest.join("out/other.json").exists());
    copy(&spec(&["f\\[1\\].txt"], "/esc/"), &t.src, &t.dest).unwrap_err();
    copy(&spec(&["f\\[1]*"], "/esc/"), &t.src, &t.dest).unwrap();
    assert_eq!(read(&t.dest, "esc/f[1].txt"), "esc");

    let err = copy(&spec(&["*.nope"], "/x/"), &t.src, &t.dest).unwrap_err();
    assert!(matches!(err, FileOpError::NoSourceFiles { .. }), "{err}");
    assert!(
        err.to_string().contains("no source files were specified")
            && err.to_string().contains("*.nope"),
        "{err}"
    );
    let err = copy(&spec(&["missing.txt"], "/x/"), &t.src, &t.dest).unwrap_err();
    assert!(
        err.to_string().contains("\"missing.txt\": not found"),
        "{err}"
    );
    let err = copy(&spec(&["nodir/*.txt"], "/x/"), &t.src, &t.dest).unwrap_err();
    assert!(
        err.to_string()
            .contains("lstat nodir: no such file or directory"),
        "{err}"
    );
    let err = copy(&spec(&["[z-a]*"], "/x/"), &t.src, &t.dest).unwrap_err();
    assert!(matches!(err, FileOpError::BadPattern { .. }), "{err}");
    // Names that are not UTF-8 are matched and copied byte for byte.
    let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9.bin");
    fs::write(t.src.join(latin1), "bytes").unwrap();
    copy(&spec(&["caf*"], "/bin8/"), &t.src, &t.dest).unwrap();
    assert_eq!(
        fs::read_to_string(t.dest.join("bin8").join(latin1)).unwrap(),
        "bytes"
    );
    // An optional file by wildcard next to a real one is fine (the `yarn.loc[k]` idiom).
    write(&t.src, "package.json", "p");
    copy(
        &spec(&["package.json", "yarn.loc[k]"], "/y/"),
        &t.src,
        &t.dest,
    )
    .unwrap();
    assert_eq!(read(&t.dest, "y/package.json"), "p");
}

#[test]
fn relative_destination_is_resolved_against_workdir() {
    // Docker: "<dest> is an absolute path, or a path relative to WORKDIR".
    let t = trees();
    write(&t.src, "a.txt", "a");
    let mut s = spec(&["a.txt"], "conf/");
    s.workdir = "/srv/app".into();
    copy(&s, &t.src, &t.dest).unwrap();
    s.dest = ".".into();
    copy(&s, &t.src, &t.dest).unwrap();
    s.dest = "renamed.txt".into();
    copy(&s, &t.src, &t.dest).unwrap();
    assert_eq!(read(&t.dest, "srv/app/conf/a.txt"), "a");
    assert_eq!(read(&t.dest, "srv/app/a.txt"), "a");
    assert_eq!(read(&t.dest, "srv/app/renamed.txt"), "a");
}

#[test]
fn missing_parents_are_created_0755_and_owned_by_chown_user() {
    // BuildKit (fsutil MkdirAll): missing directories get 0755, root-owned, or the --chown owner.
    let t = trees();
    write(&t.src, "a.txt", "a");
    copy(&spec(&["a.txt"], "/a/b/c/"), &t.src, &t.dest).unwrap();
    for d in ["a", "a/b", "a/b/c"] {
        assert_eq!(mode(&t.dest, d), 0o755, "{d}");
        assert_eq!(
            (meta(&t.dest, d).uid(), meta(&t.dest, d).gid()),
            (0, 0),
            "{d}"
        );
    }
    let mut s = spec(&["a.txt"], "/p/q/file");
    s.chown = Some("33:44".into());
    copy(&s, &t.src, &t.dest).unwrap();
    for d in ["p", "p/q", "p/q/file"] {
        assert_eq!(
            (meta(&t.dest, d).uid(), meta(&t.dest, d).gid()),
            (33, 44),
            "{d}"
        );
    }
}

#[test]
fn chown_resolves_names_in_the_target_stage_and_numbers() {
    // Docker: --chown takes names from the stage's /etc/passwd and /etc/group, or numbers; uid alone means gid = uid.
    let t = trees();
    write(&t.src, "a.txt", "a");
    write(
        &t.dest,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\napp:x:1001:1002::/home/app:/bin/sh\n",
    );
    write(&t.dest, "etc/group", "root:x:0:\nstaff:x:50:app\n");
    let cases = [
        ("app", (1001, 1002)),
        ("app:staff", (1001, 50)),
        ("7", (7, 7)),
        ("7:staff", (7, 50)),
        ("8:9", (8, 9)),
    ];
    for (i, (chown, want)) in cases.iter().enumerate() {
        let mut s = spec(&["a.txt"], &format!("/o{i}"));
        s.chown = Some(chown.to_string());
        copy(&s, &t.src, &t.dest).unwrap();
        let m = meta(&t.dest, &format!("o{i}"));
        assert_eq!((m.uid(), m.gid()), *want, "--chown={chown}");
    }
    for (bad, name) in [("ghost", "ghost"), ("app:nogroup", "nogroup")] {
        let mut s = spec(&["a.txt"], "/bad");
        s.chown = Some(bad.into());
        let err = copy(&s, &t.src, &t.dest).unwrap_err();
        assert!(
            err.to_string().contains(name) && err.to_string().contains("etc/"),
            "{err}"
        );
    }
}

#[test]
fn chmod_octal_and_symbolic() {
    // BuildKit: --chmod octal replaces the bits of every copied file and directory; symbolic applies per file, X only to dirs/executables.
    let t = trees();
    write(&t.src, "d/plain", "p");
    write(&t.src, "d/tool", "t");
    fs::set_permissions(t.src.join("d/plain"), fs::Permissions::from_mode(0o666)).unwrap();
    fs::set_permissions(t.src.join("d/tool"), fs::Permissions::from_mode(0o744)).unwrap();
    fs::create_dir(t.src.join("d/sub")).unwrap();
    fs::set_permissions(t.src.join("d/sub"), fs::Permissions::from_mode(0o700)).unwrap();
    let mut s = spec(&["d"], "/oct/");
    s.chmod = Some(ChmodSpec::parse("0640").unwrap());
    copy(&s, &t.src, &t.dest).unwrap();
    assert_eq!(mode(&t.dest, "oct/plain"), 0o640);
    assert_eq!(mode(&t.dest, "oct/sub"), 0o640);
    assert_eq!(
        mode(&t.dest, "oct"),
        0o755,
        "the created destination is not chmodded"
    );
    s.dest = "/sym/".into();
    s.chmod = Some(ChmodSpec::parse("u+x,g-w,o=r").unwrap());
    copy(&s, &t.src, &t.dest).unwrap();
    assert_eq!(mode(&t.dest, "sym/plain"), 0o744);
    assert_eq!(mode(&t.dest, "sym/tool"), 0o744);
    s.dest = "/bigx/".into();
    s.chmod = Some(ChmodSpec::parse("a+X").unwrap());
    copy(&s, &t.src, &t.dest).unwrap();
    assert_eq!(mode(&t.dest, "bigx/plain"), 0o666);
    assert_eq!(mode(&t.dest, "bigx/tool"), 0o755);
    assert_eq!(mode(&t.dest, "bigx/sub"), 0o711);
    assert!(ChmodSpec::parse("99999").is_err());
}

#[test]
fn parents_keep_source_paths_and_honour_the_pivot() {
    // Docker: `COPY --parents x/a.txt y/a.txt /no_pivot/` keeps x/ and y/; `./x/./y/*.txt` keeps only what follows "/./".
    let t = trees();
    write(&t.src, "x/a.txt", "xa");
    write(&t.src, "y/a.txt", "ya");
    write(&t.src, "x/y/b.txt", "xyb");
    fs::set_permissions(t.src.join("x"), fs::Permissions::from_mode(0o750)).unwrap();
    let mut s = spec(&["x/a.txt", "y/a.txt"], "/no_pivot/");
    s.parents = true;
    copy(&s, &t.src, &t.dest).unwrap();
    assert_eq!(read(&t.dest, "no_pivot/x/a.txt"), "xa");
    assert_eq!(read(&t.dest, "no_pivot/y/a.txt"), "ya");
    assert_eq!(
        mode(&t.dest, "no_pivot/x"),
        0o750,
        "parent directories copy their source's mode"
    );
    let mut s = spec(&["./x/./y/*.txt"], "/pivot/");
    s.parents = true;
    copy(&s, &t.src, &t.dest).unwrap();
    assert_eq!(read(&t.dest, "pivot/y/b.txt"), "xyb");
    assert!(!t.dest.join("pivot/x").exists());
    let mut s = spec(&["*/a.txt"], "/wild/");
    s.parents = true;
    copy(&s, &t.src, &t.dest).unwrap();
    assert_eq!(read(&t.dest, "wild/x/a.txt"), "xa");
    assert_eq!(read(&t.dest, "wild/y/a.txt"), "ya");
    assert!(!t.dest.join("wild/x/y").exists());
    // A directory keeps its own name under the destination; `**` reaches any depth.
    let mut s = spec(&["x/y", "**/b.txt"], "/dirs/");
    s.parents = true;
    copy(&s, &t.src, &t.dest).unwrap();
    assert_eq!(read(&t.dest, "dirs/x/y/b.txt"), "xyb");
    assert!(!t.dest.join("dirs/x/a.txt").exists());
}

#[test]
fn exclude_patterns_filter_what_is_copied() {
    // Docker: --exclude uses .dockerignore pattern syntax (`**`, `!`); `COPY --exclude=*.txt hom* /mydir/` skips hom*.txt.
    let t = trees();
    write(&t.src, "app/main.rs", "m");
    write(&t.src, "app/debug.log", "l");
    write(&t.src, "app/sub/trace.log", "l");
    write(&t.src, "app/sub/keep.rs", "k");
    write(&t.src, "app/tmp/junk", "j");
    write(&t.src, "app/tmp/important", "i");
    let mut s = spec(&["app"], "/out/");
    s.exclude = vec!["*.log".into(), "tmp".into(), "!tmp/important".into()];
    copy(&s, &t.src, &t.dest).unwrap();
    assert!(t.dest.join("out/main.rs").exists());
    assert!(!t.dest.join("out/debug.log").exists());
    assert!(
        t.dest.join("out/sub/trace.log").exists(),
        "*.log matches only the top level"
    );
    assert!(!t.dest.join("out/tmp/junk").exists());
    assert!(t.dest.join("out/tmp/important").exists());
    s.dest = "/deep/".into();
    s.exclude = vec!["**/*.log".into()];
    copy(&s, &t.src, &t.dest).unwrap();
    assert!(!t.dest.join("deep/sub/trace.log").exists());
    assert!(t.dest.join("deep/sub/keep.rs").exists());

    write(&t.src, "home.txt", "t");
    write(&t.src, "home.md", "m");
    let mut s = spec(&["hom*"], "/mydir/");
    s.exclude = vec!["*.txt".into()];
    copy(&s, &t.src, &t.dest).unwrap();
    assert!(t.dest.join("mydir/home.md").exists());
    assert!(!t.dest.join("mydir/home.txt").exists());
    assert_eq!(
        resolve_sources(&s, &t.src).unwrap(),
        vec!["home.md".to_string()]
    );
}

#[test]
fn heredoc_source_becomes_a_0644_root_file() {
    // BuildKit: `COPY <<EOF /etc/app.conf` writes a 0644 root-owned file named by the heredoc (into a directory dest, by its name).
    let t = trees();
    let inline = |name: &str, text: &str| CopySource::Inline {
        name: name.into(),
        content: text.as_bytes().to_vec(),
    };
    let s = CopySpec {
        sources: vec![inline("EOF", "hello\n")],
        dest: "/etc/app.conf".into(),
        ..CopySpec::default()
    };
    copy(&s, &t.src, &t.dest).unwrap();
    assert_eq!(read(&t.dest, "etc/app.conf"), "hello\n");
    assert_eq!(mode(&t.dest, "etc/app.conf"), 0o644);
    assert_eq!(meta(&t.dest, "etc/app.conf").uid(), 0);
    let s = CopySpec {
        sources: vec![inline("run.sh", "#!/bin/sh\n"), inline("two.txt", "2")],
        dest: "/bin/".into(),
        chmod: Some(ChmodSpec::parse("755").unwrap()),
        ..CopySpec::default()
    };
    copy(&s, &t.src, &t.dest).unwrap();
    assert_eq!(read(&t.dest, "bin/run.sh"), "#!/bin/sh\n");
    assert_eq!(mode(&t.dest, "bin/run.sh"), 0o755);
    assert_eq!(read(&t.dest, "bin/two.txt"), "2");
}

/// A small tar: a directory, a file with a fixed mtime and owner, a symlink, a hardlink.
fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o750);
    h.set_mtime(1_000_000);
    h.set_size(0);
    b.append_data(&mut h, "pkg/", &[][..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o640);
    h.set_mtime(1_234_567);
    h.set_uid(1234);
    h.set_gid(4321);
    h.set_size(5);
    b.append_data(&mut h, "pkg/file.txt", &b"hello"[..])
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "pkg/link", "file.txt").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    b.append_link(&mut h, "pkg/hard", "pkg/file.txt").unwrap();
    b.into_inner().unwrap()
}

fn compress(kind: &str, data: &[u8]) -> Vec<u8> {
    match kind {
        "tar" => data.to_vec(),
        "gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "bz2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "xz" => {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "zst" => zstd::encode_all(data, 3).unwrap(),
        other => panic!("unknown compression {other}"),
    }
}

#[test]
fn add_extracts_local_archives_of_every_compression() {
    // Docker: ADD extracts a local tar (identity, gzip, bzip2, xz; zstd in BuildKit) recognised by content, not by name.
    let t = trees();
    for kind in ["tar", "gz", "bz2", "xz", "zst"] {
        // A misleading name: detection must look at the bytes.
        fs::write(
            t.src.join(format!("archive-{kind}.bin")),
            compress(kind, &sample_tar()),
        )
        .unwrap();
        let mut s = spec(&[&format!("archive-{kind}.bin")], &format!("/x/{kind}"));
        s.unpack_archives = true;
        let report = copy(&s, &t.src, &t.dest).unwrap();
        assert_eq!(report.archives, 1, "{kind}");
        let root = t.dest.join("x").join(kind);
        assert_eq!(read(&root, "pkg/file.txt"), "hello", "{kind}");
        let m = meta(&root, "pkg/file.txt");
        assert_eq!(
            (m.mode() & 0o7777, m.mtime(), m.uid(), m.gid()),
            (0o640, 1_234_567, 1234, 4321),
            "{kind}"
        );
        assert_eq!(meta(&root, "pkg").mode() & 0o7777, 0o750, "{kind}");
        assert_eq!(
            meta(&root, "pkg").mtime(),
            1_000_000,
            "{kind}: directory mtime set after its contents"
        );
        assert_eq!(
            fs::read_link(root.join("pkg/link")).unwrap(),
            Path::new("file.txt")
        );
        assert_eq!(
            meta(&root, "pkg/hard").ino(),
            m.ino(),
            "{kind}: hardlink kept"
        );
    }
    // ADD --chown owns the extracted files; a file that only looks like an archive is copied.
    let mut s = spec(&["archive-gz.bin"], "/owned/");
    s.unpack_archives = true;
    s.chown = Some("5:6".into());
    copy(&s, &t.src, &t.dest).unwrap();
    assert_eq!(meta(&t.dest, "owned/pkg/file.txt").uid(), 5);
    write(&t.src, "fake.tar.gz", "not an archive");
    let mut s = spec(&["fake.tar.gz"], "/fake/");
    s.unpack_archives = true;
    copy(&s, &t.src, &t.dest).unwrap();
    assert_eq!(read(&t.dest, "fake/fake.tar.gz"), "not an archive");
    // Whiteout names mean nothing to ADD: `.wh.keep` is just a file and `keep` stays.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    b.append_data(&mut h, ".wh.keep", &b"w"[..]).unwrap();
    fs::write(t.src.join("wh.tar"), b.into_inner().unwrap()).unwrap();
    write(&t.dest, "wh/keep", "kept");
    let mut s = spec(&["wh.tar"], "/wh/");
    s.unpack_archives = true;
    copy(&s, &t.src, &t.dest).unwrap();
    assert_eq!(read(&t.dest, "wh/keep"), "kept");
    assert_eq!(read(&t.dest, "wh/.wh.keep"), "w");
    // COPY never extracts.
    copy(&spec(&["archive-gz.bin"], "/copied/"), &t.src, &t.dest).unwrap();
    assert!(meta(&t.dest, "copied/archive-gz.bin").is_file());
}

#[test]
fn archive_entries_cannot_escape_the_destination() {
    // BuildKit/containerd: entry paths and symlinks are resolved inside the extraction root; `..` stops there.
    let t = trees();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    let name = b"../../../escape.txt";
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    h.set_cksum();
    b.append(&h, &b"evil"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "hostetc", t.outer.join("victim").to_str().unwrap())
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    b.append_data(&mut h, "hostetc/planted", &b"evil"[..])
        .unwrap();
    fs::create_dir(t.outer.join("victim")).unwrap();
    fs::write(t.src.join("evil.tar"), b.into_inner().unwrap()).unwrap();
    let mut s = spec(&["evil.tar"], "/data/");
    s.unpack_archives = true;
    copy(&s, &t.src, &t.dest).unwrap();
    assert!(!t.outer.join("escape.txt").exists());
    assert!(!t.outer.join("rootfs/escape.txt").exists());
    assert_eq!(read(&t.dest, "data/escape.txt"), "evil");
    assert!(
        !t.outer.join("victim/planted").exists(),
        "a symlink in the archive led outside"
    );
    let inside = t
        .dest
        .join("data")
        .join(t.outer.join("victim/planted").strip_prefix("/").unwrap());
    assert_eq!(fs::read_to_string(inside).unwrap(), "evil");
}

#[test]
fn symlinks_inside_sources_are_copied_as_links() {
    // BuildKit: symlinks below a copied directory are recreated as symlinks, never followed (even when they point outside the context).
    let t = trees();
    write(&t.outer, "secret", "host secret");
    write(&t.src, "d/real.txt", "r");
    std::os::unix::fs::symlink("../../secret", t.src.join("d/up")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", t.src.join("d/abs")).unwrap();
    let report = copy(&spec(&["d"], "/out/"), &t.src, &t.dest).unwrap();
    assert_eq!(report.symlinks, 2);
    assert!(meta(&t.dest, "out/up").file_type().is_symlink());
    assert_eq!(
        fs::read_link(t.dest.join("out/up")).unwrap(),
        Path::new("../../secret")
    );
    assert_eq!(
        fs::read_link(t.dest.join("out/abs")).unwrap(),
        Path::new("/etc/passwd")
    );
}

#[test]
fn source_paths_through_symlinks_resolve_inside_the_context() {
    // BuildKit: source paths are resolved like a chroot at the context root (continuity's RootPath); a top-level symlink source is followed there.
    let t = trees();
    write(&t.outer, "secret.txt", "host secret");
    write(&t.src, "secret.txt", "context copy");
    write(&t.src, "real/conf.txt", "conf");
    std::os::unix::fs::symlink("../../..", t.src.join("escape")).unwrap();
    std::os::unix::fs::symlink("/real/conf.txt", t.src.join("link.txt")).unwrap();
    copy(&spec(&["escape/secret.txt"], "/a.txt"), &t.src, &t.dest).unwrap();
    assert_eq!(read(&t.dest, "a.txt"), "context copy");
    std::os::unix::fs::symlink("/nothing-here", t.src.join("dangling")).unwrap();
    let err = copy(
        &spec(&["escape/../../../../etc/passwd"], "/p"),
        &t.src,
        &t.dest,
    )
    .unwrap_err();
    assert!(matches!(err, FileOpError::SourceNotFound { .. }), "{err}");
    // The link is followed inside the context and the copy keeps the link's name.
    copy(&spec(&["link.txt"], "/into/"), &t.src, &t.dest).unwrap();
    assert!(meta(&t.dest, "into/link.txt").is_file());
    assert_eq!(read(&t.dest, "into/link.txt"), "conf");
    assert_eq!(
        resolve_sources(&spec(&["link.txt"], "/"), &t.src).unwrap(),
        vec!["real/conf.txt".to_string()]
    );
    let mut s = spec(&["link.txt"], "/nofollow/");
    s.follow_top_symlink = false;
    copy(&s, &t.src, &t.dest).unwrap();
    assert!(meta(&t.dest, "nofollow/link.txt").file_type().is_symlink());
}

#[test]
fn destination_through_symlinks_resolves_inside_the_rootfs() {
    // BuildKit: the destination is resolved inside the target rootfs; /opt -> /usr/local means <rootfs>/usr/local, never the host's.
    let t = trees();
    write(&t.src, "forge-fileop-probe.txt", "p");
    fs::create_dir_all(t.dest.join("usr/local")).unwrap();
    std::os::unix::fs::symlink("/usr/local", t.dest.join("opt")).unwrap();
    std::os::unix::fs::symlink("../../../../../../..", t.dest.join("up")).unwrap();
    copy(&spec(&["forge-fileop-probe.txt"], "/opt/"), &t.src, &t.dest).unwrap();
    assert_eq!(read(&t.dest, "usr/local/forge-fileop-probe.txt"), "p");
    assert!(!Path::new("/usr/local/forge-fileop-probe.txt").exists());
    assert!(
        meta(&t.dest, "opt").file_type().is_symlink(),
        "the link itself stays"
    );
    copy(
        &spec(&["forge-fileop-probe.txt"], "/up/x/"),
        &t.src,
        &t.dest,
    )
    .unwrap();
    assert_eq!(read(&t.dest, "x/forge-fileop-probe.txt"), "p");
    assert!(!t.outer.join("x").exists());
    // A directory copied onto an existing symlink is refused, as BuildKit refuses it.
    write(&t.src, "tree/opt/f", "f");
    let err = copy(&spec(&["tree"], "/"), &t.src, &t.dest).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot copy to non-directory: /opt",
        "{err}"
    );
}

#[test]
fn hardlinks_stay_hardlinks() {
    // BuildKit (fsutil): files sharing an inode in the source share one in the destination.
    let t = trees();
    write(&t.src, "d/a", "same");
    fs::hard_link(t.src.join("d/a"), t.src.join("d/b")).unwrap();
    let report = copy(&spec(&["d"], "/out/"), &t.src, &t.dest).unwrap();
    assert_eq!((report.files, report.hardlinks), (1, 1));
    assert_eq!(meta(&t.dest, "out/a").ino(), meta(&t.dest, "out/b").ino());
    assert_ne!(meta(&t.dest, "out/a").ino(), meta(&t.src, "d/a").ino());
    // The same directory twice into one place: the second pass replaces the first's files.
    copy(&spec(&["d", "d"], "/twice/"), &t.src, &t.dest).unwrap();
    assert_eq!(read(&t.dest, "twice/b"), "same");
    assert_eq!(
        meta(&t.dest, "twice/a").ino(),
        meta(&t.dest, "twice/b").ino()
    );
}

#[test]
fn mtimes_modes_and_xattrs_are_kept() {
    // BuildKit: copied entries keep mtime (files and directories), mode bits and xattrs.
    let t = trees();
    write(&t.src, "d/sub/f", "f");
    fs::set_permissions(t.src.join("d/sub/f"), fs::Permissions::from_mode(0o4751)).unwrap();
    xattr::set(t.src.join("d/sub/f"), "user.forge", b"yes").unwrap();
    for (rel, secs) in [("d/sub/f", 1_111_111_111i64), ("d/sub", 1_222_222_222)] {
        nix::sys::stat::utimensat(
            None,
            &t.src.join(rel),
            &nix::sys::time::TimeSpec::new(secs, 0),
            &nix::sys::time::TimeSpec::new(secs, 500),
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
    copy(&spec(&["d"], "/out/"), &t.src, &t.dest).unwrap();
    assert_eq!(
        (
            meta(&t.dest, "out/sub/f").mtime(),
            meta(&t.dest, "out/sub/f").mtime_nsec()
        ),
        (1_111_111_111, 500)
    );
    assert_eq!(meta(&t.dest, "out/sub").mtime(), 1_222_222_222);
    assert_eq!(mode(&t.dest, "out/sub/f"), 0o4751);
    assert_eq!(
        xattr::get(t.dest.join("out/sub/f"), "user.forge")
            .unwrap()
            .as_deref(),
        Some(&b"yes"[..])
    );
}

#[test]
fn owners_are_root_for_context_and_kept_for_other_stages() {
    // BuildKit: build-context files arrive as 0:0; COPY --from keeps the stage's uid/gid; --chown overrides both.
    let t = trees();
    write(&t.src, "f", "f");
    std::os::unix::fs::lchown(t.src.join("f"), Some(1500), Some(1600)).unwrap();
    copy(&spec(&["f"], "/ctx"), &t.src, &t.dest).unwrap();
    assert_eq!(
        (meta(&t.dest, "ctx").uid(), meta(&t.dest, "ctx").gid()),
        (0, 0)
    );
    let mut s = spec(&["f"], "/stage");
    s.keep_source_owner = true;
    copy(&s, &t.src, &t.dest).unwrap();
    assert_eq!(
        (meta(&t.dest, "stage").uid(), meta(&t.dest, "stage").gid()),
        (1500, 1600)
    );
}

#[test]
fn remote_sources_are_refused() {
    // BuildKit downloads ADD URLs itself; here the caller must, so a URL is an error naming it.
    let t = trees();
    let mut s = spec(&["https://example.com/x.tar.gz"], "/x/");
    s.unpack_archives = true;
    let err = copy(&s, &t.src, &t.dest).unwrap_err();
    assert!(
        err.to_string().contains("https://example.com/x.tar.gz"),
        "{err}"
    );
}

#[test]
fn resolve_sources_lists_matches_relative_to_the_context() {
    // BuildKit's cache key covers the files each source selects; "." is the whole context.
    let t = trees();
    write(&t.src, "a.go", "a");
    write(&t.src, "b.go", "b");
    write(&t.src, "dir/c.txt", "c");
    let got = resolve_sources(&spec(&["*.go", "dir", "."], "/x/"), &t.src).unwrap();
    assert_eq!(got, vec!["a.go", "b.go", "dir", "."]);
}

#[test]
fn list_source_files_walks_what_the_copy_reads() {
    // BuildKit's COPY cache key covers each selected file (minus --exclude); a symlink counts as a link, not its target.
    let t = trees();
    write(&t.src, "app/main.rs", "m");
    write(&t.src, "app/debug.log", "l");
    write(&t.src, "app/sub/x.rs", "x");
    write(&t.src, "other.txt", "o");
    std::os::unix::fs::symlink("/other.txt", t.src.join("app/link")).unwrap();
    let mut s = spec(&["app", "other.txt"], "/out/");
    s.exclude = vec!["*.log".into()];
    let got = list_source_files(&s, &t.src).unwrap();
    assert_eq!(
        got,
        vec![
            "app",
            "app/link",
            "app/main.rs",
            "app/sub",
            "app/sub/x.rs",
            "other.txt"
        ]
    );
    // And the copy writes exactly those entries.
    copy(&s, &t.src, &t.dest).unwrap();
    assert!(t.dest.join("out/sub/x.rs").exists() && !t.dest.join("out/debug.log").exists());
}

#[test]
fn fifos_and_devices_are_recreated() {
    // BuildKit (fsutil): special files are recreated with mknod, not read.
    let t = trees();
    fs::create_dir(t.src.join("d")).unwrap();
    nix::unistd::mkfifo(
        &t.src.join("d/pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    nix::sys::stat::mknod(
        &t.src.join("d/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    copy(&spec(&["d"], "/dev2/"), &t.src, &t.dest).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(meta(&t.dest, "dev2/pipe").file_type().is_fifo());
    assert_eq!(mode(&t.dest, "dev2/pipe"), 0o640);
    assert!(meta(&t.dest, "dev2/null").file_type().is_char_device());
    assert_eq!(
        meta(&t.dest, "dev2/null").rdev(),
        nix::sys::stat::makedev(1, 3)
    );
}
