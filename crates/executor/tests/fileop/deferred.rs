//! A deferred COPY (a directory into a new or empty directory, finished in the upperdir) makes
//! the same tree as a plain copy, and links only files an earlier copy made exactly alike.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use forge_executor::{copy_or_defer, CopyOptions, Reuse, Staged};

use super::*;

/// Every entry below `root`: path -> (type and mode, uid, gid, size, mtime, content or link).
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let m = fs::symlink_metadata(&path).unwrap();
            let body = if m.is_file() {
                String::from_utf8_lossy(&fs::read(&path).unwrap()).into_owned()
            } else if m.file_type().is_symlink() {
                fs::read_link(&path).unwrap().display().to_string()
            } else {
                stack.push(path.clone());
                String::new()
            };
            // A directory's mtime moves as entries are made in it; files keep their source's.
            let mtime = if m.is_dir() { 0 } else { m.mtime() };
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let line = format!(
                "{:o} {}:{} {} {mtime} {body}",
                m.mode(),
                m.uid(),
                m.gid(),
                if m.is_dir() { 0 } else { m.len() },
            );
            out.insert(rel, line);
        }
    }
    out
}

fn context(t: &Trees) {
    write(&t.src, "app/a.txt", "alpha");
    write(&t.src, "app/sub/b.txt", "beta");
    write(&t.src, "app/sub/deeper/c.txt", "gamma");
    std::os::unix::fs::symlink("sub/b.txt", t.src.join("app/link")).unwrap();
    fs::hard_link(t.src.join("app/a.txt"), t.src.join("app/a-again.txt")).unwrap();
    fs::set_permissions(
        t.src.join("app/sub/b.txt"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
}

fn deferred(staged: Staged) -> Box<forge_executor::DeferredCopy> {
    match staged {
        Staged::Deferred(d) => d,
        Staged::Done(r) => panic!("expected the copy to be deferred, it was done: {r:?}"),
    }
}

#[test]
fn a_deferred_copy_makes_the_same_tree_as_a_plain_copy() {
    let t = trees();
    context(&t);
    let mut s = spec(&["app"], "/srv/app");
    s.chmod = Some(ChmodSpec::parse("go-w").unwrap());
    s.chown = Some("7:8".into());
    let plain = t.outer.join("plain");
    fs::create_dir(&plain).unwrap();
    copy(&s, &t.src, &plain).unwrap();

    let staged = copy_or_defer(&s, &t.src, &t.dest, &CopyOptions::default()).unwrap();
    let d = deferred(staged);
    assert_eq!(d.target(), Path::new("srv/app"));
    // Only the target directory exists until the copy is finished.
    assert_eq!(fs::read_dir(t.dest.join("srv/app")).unwrap().count(), 0);
    let report = d.finish(&t.dest, &CopyOptions::default()).unwrap();
    assert_eq!(snapshot(&t.dest), snapshot(&plain));
    assert_eq!((report.files, report.hardlinks, report.symlinks), (3, 1, 1));
    let a = meta(&t.dest, "srv/app/a.txt");
    assert_eq!(a.ino(), meta(&t.dest, "srv/app/a-again.txt").ino());
}

#[test]
fn only_one_directory_into_a_directory_is_deferred() {
    let t = trees();
    context(&t);
    write(&t.src, "top.txt", "top");
    fs::create_dir_all(t.dest.join("empty")).unwrap();
    let opts = CopyOptions::default();
    let done = |s: CopySpec| {
        let staged = copy_or_defer(&s, &t.src, &t.dest, &opts).unwrap();
        matches!(staged, Staged::Done(_))
    };
    assert!(
        done(spec(&["top.txt"], "/new/")),
        "a file is copied at once"
    );
    assert!(done(spec(&["app", "top.txt"], "/two/")), "two sources");
    let staged = copy_or_defer(&spec(&["app"], "/empty"), &t.src, &t.dest, &opts).unwrap();
    deferred(staged).finish(&t.dest, &opts).unwrap();
    assert_eq!(read(&t.dest, "empty/sub/b.txt"), "beta");
}

#[test]
fn what_the_target_has_is_merged_at_once_and_the_rest_deferred() {
    let t = trees();
    context(&t);
    write(&t.dest, "full/existing", "x");
    write(&t.dest, "full/sub/old.txt", "old");
    // A hardlink with one name in the merged part and one in the deferred part.
    fs::hard_link(t.src.join("app/sub/b.txt"), t.src.join("app/zz-b.txt")).unwrap();
    let opts = CopyOptions::default();
    let staged = copy_or_defer(&spec(&["app"], "/full"), &t.src, &t.dest, &opts).unwrap();
    let d = deferred(staged);
    // sub/ was there: merged now, through the rootfs.
    assert_eq!(read(&t.dest, "full/sub/b.txt"), "beta");
    assert_eq!(read(&t.dest, "full/sub/deeper/c.txt"), "gamma");
    assert!(
        !t.dest.join("full/a.txt").exists(),
        "a.txt is left for finish"
    );
    d.finish(&t.dest, &opts).unwrap();
    assert_eq!(read(&t.dest, "full/a.txt"), "alpha");
    assert_eq!(read(&t.dest, "full/existing"), "x");
    assert_eq!(read(&t.dest, "full/sub/old.txt"), "old");
    let linked = meta(&t.dest, "full/zz-b.txt");
    assert_eq!(linked.ino(), meta(&t.dest, "full/sub/b.txt").ino());
    // The same as a plain copy into the same tree.
    let plain = t.outer.join("plain");
    write(&plain, "full/existing", "x");
    write(&plain, "full/sub/old.txt", "old");
    copy(&spec(&["app"], "/full"), &t.src, &plain).unwrap();
    assert_eq!(snapshot(&t.dest), snapshot(&plain));
}

/// Offers the file at the same place in an earlier tree, for every path listed.
#[derive(Debug)]
struct Earlier {
    root: PathBuf,
    offered: Vec<&'static str>,
    wrote: Mutex<Vec<String>>,
}

impl Reuse for Earlier {
    fn identical(&self, _src: &Path, target: &Path) -> Option<PathBuf> {
        let t = target.to_str()?;
        self.offered.contains(&t).then(|| self.root.join(target))
    }

    fn wrote(&self, _src: &Path, target: &Path) {
        self.wrote
            .lock()
            .unwrap()
            .push(target.display().to_string());
    }
}

#[test]
fn reuse_links_only_files_whose_metadata_matches_and_never_changes_them() {
    let t = trees();
    context(&t);
    let s = spec(&["app"], "/app");
    let earlier = t.outer.join("earlier");
    fs::create_dir(&earlier).unwrap();
    copy(&s, &t.src, &earlier).unwrap();
    let before = snapshot(&earlier);

    // Since the earlier copy: c.txt was touched (new mtime), b.txt changed mode.
    let c = t.src.join("app/sub/deeper/c.txt");
    set_mtime(&c, 1_000_000);
    fs::set_permissions(
        t.src.join("app/sub/b.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let reuse = Earlier {
        root: earlier.clone(),
        offered: vec![
            "app/a-again.txt",
            "app/a.txt",
            "app/sub/b.txt",
            "app/sub/deeper/c.txt",
        ],
        wrote: Mutex::new(Vec::new()),
    };
    let opts = CopyOptions {
        cancel: None,
        reuse: Some(&reuse),
    };
    let staged = copy_or_defer(&s, &t.src, &t.dest, &opts).unwrap();
    let report = deferred(staged).finish(&t.dest, &opts).unwrap();

    // Whichever of a.txt and a-again.txt (hardlinks in the context) is copied first, on
    // whichever thread, is linked to the earlier file, and the other name to it.
    assert_eq!((report.reused, report.hardlinks), (1, 1), "{report:?}");
    let (old_a, new_a) = (meta(&earlier, "app/a.txt"), meta(&t.dest, "app/a.txt"));
    assert_eq!(old_a.ino(), new_a.ino(), "a.txt is linked");
    assert_ne!(
        meta(&earlier, "app/sub/b.txt").ino(),
        meta(&t.dest, "app/sub/b.txt").ino()
    );
    assert_eq!(mode(&t.dest, "app/sub/b.txt"), 0o600);
    assert_eq!(meta(&t.dest, "app/sub/deeper/c.txt").mtime(), 1_000_000);
    // The earlier tree is as it was (apart from link counts), and the new one is what a plain
    // copy makes.
    assert_eq!(snapshot(&earlier), before);
    let plain = t.outer.join("plain");
    fs::create_dir(&plain).unwrap();
    copy(&s, &t.src, &plain).unwrap();
    assert_eq!(snapshot(&t.dest), snapshot(&plain));
    let mut wrote = reuse.wrote.into_inner().unwrap();
    wrote.sort();
    assert_eq!(
        wrote,
        [
            "app/a-again.txt",
            "app/a.txt",
            "app/sub/b.txt",
            "app/sub/deeper/c.txt"
        ]
    );
}

#[test]
fn a_cancelled_copy_stops_with_an_error() {
    let t = trees();
    context(&t);
    let cancel = AtomicBool::new(true);
    let opts = CopyOptions {
        cancel: Some(&cancel),
        reuse: None,
    };
    let s = spec(&["app"], "/app");
    let staged = copy_or_defer(&s, &t.src, &t.dest, &opts).unwrap();
    let err = deferred(staged).finish(&t.dest, &opts).unwrap_err();
    assert!(matches!(err, FileOpError::Cancelled { .. }), "{err}");
    assert_eq!(err.to_string(), "COPY cancelled");
}

fn set_mtime(path: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        None,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}
