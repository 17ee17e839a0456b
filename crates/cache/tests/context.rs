//! Build-context hashing invariants: what changes a digest and what must not.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use forge_cache::{ContextHasher, EntryKind, PathFilter, Store};

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// The store's one stat memo file (the tests hash one context per store).
fn memo_file(store: &Store) -> std::path::PathBuf {
    let mut memos = store.dir().join("contexts").read_dir().unwrap();
    let memo = memos.next().unwrap().unwrap().path();
    assert!(memos.next().is_none(), "one context, one memo");
    memo
}

fn sample() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "src/main.rs", b"fn main() {}");
    write(dir.path(), "src/lib/util.rs", b"pub fn f() {}");
    write(dir.path(), "README", b"readme");
    write(dir.path(), "target/debug/big", b"build output");
    symlink("../README", dir.path().join("src/readme-link")).unwrap();
    dir
}

fn digest(root: &Path) -> forge_cache::ContentDigest {
    ContextHasher::new(root).hash().unwrap().root_digest()
}

/// A `.dockerignore`-like filter: excludes `target` (and everything below it) and `*.log`.
struct IgnoreTarget;

impl PathFilter for IgnoreTarget {
    fn is_excluded(&self, rel: &str) -> bool {
        rel == "target" || rel.starts_with("target/") || rel.ends_with(".log")
    }
    fn may_include_under(&self, _rel_dir: &str) -> bool {
        false
    }
}

#[test]
fn touching_mtime_keeps_the_digest() {
    let ctx = sample();
    let before = digest(ctx.path());
    let f = std::fs::File::options()
        .write(true)
        .open(ctx.path().join("src/main.rs"))
        .unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(86_400))
        .unwrap();
    assert_eq!(digest(ctx.path()), before);
}

#[test]
fn changing_content_changes_the_file_and_its_parents_only() {
    let ctx = sample();
    let before = ContextHasher::new(ctx.path()).hash().unwrap();
    write(ctx.path(), "src/lib/util.rs", b"pub fn g() {}");
    let after = ContextHasher::new(ctx.path()).hash().unwrap();
    assert_ne!(after.root_digest(), before.root_digest());
    assert_ne!(after.digest("src"), before.digest("src"));
    assert_ne!(
        after.digest("src/lib/util.rs"),
        before.digest("src/lib/util.rs")
    );
    assert_eq!(after.digest("src/main.rs"), before.digest("src/main.rs"));
    assert_eq!(after.digest("README"), before.digest("README"));
    // Same size, different bytes.
    write(ctx.path(), "README", b"README");
    assert_ne!(
        ContextHasher::new(ctx.path())
            .hash()
            .unwrap()
            .digest("README"),
        after.digest("README")
    );
}

#[test]
fn changing_mode_changes_the_digest() {
    let ctx = sample();
    let before = digest(ctx.path());
    std::fs::set_permissions(
        ctx.path().join("README"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    assert_ne!(digest(ctx.path()), before);
}

#[test]
fn changing_owner_changes_the_digest() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root to chown (CI runs as root)"
    );
    let ctx = sample();
    let before = digest(ctx.path());
    std::os::unix::fs::lchown(ctx.path().join("README"), Some(1234), Some(1234)).unwrap();
    assert_ne!(digest(ctx.path()), before);
}

#[test]
fn changing_a_link_target_changes_the_digest() {
    let ctx = sample();
    let before = digest(ctx.path());
    std::fs::remove_file(ctx.path().join("src/readme-link")).unwrap();
    symlink("../README2", ctx.path().join("src/readme-link")).unwrap();
    assert_ne!(digest(ctx.path()), before);
}

#[test]
fn changing_an_xattr_changes_the_digest() {
    let ctx = sample();
    let before = digest(ctx.path());
    xattr::set(ctx.path().join("README"), "user.forge.test", b"1").unwrap();
    assert_ne!(digest(ctx.path()), before);
}

#[test]
fn changing_an_ignored_file_keeps_the_digest() {
    let ctx = sample();
    let hash = || {
        ContextHasher::new(ctx.path())
            .filter(&IgnoreTarget)
            .hash()
            .unwrap()
    };
    let before = hash();
    assert!(before.entry("target").is_none());
    assert!(before.entry("target/debug/big").is_none());
    write(ctx.path(), "target/debug/big", b"different build output");
    write(ctx.path(), "target/new", b"new");
    write(ctx.path(), "build.log", b"log");
    assert_eq!(hash().root_digest(), before.root_digest());
    write(ctx.path(), "build.txt", b"not ignored");
    assert_ne!(hash().root_digest(), before.root_digest());
}

/// Re-includes `keep/me` under an excluded `keep`: the walk must go in.
struct ExcludeButReinclude;

impl PathFilter for ExcludeButReinclude {
    fn is_excluded(&self, rel: &str) -> bool {
        rel.starts_with("keep") && rel != "keep/me"
    }
    fn may_include_under(&self, rel_dir: &str) -> bool {
        rel_dir == "keep"
    }
}

#[test]
fn an_excluded_directory_is_walked_when_it_may_include_paths() {
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "keep/me", b"1");
    write(ctx.path(), "keep/not", b"2");
    let tree = ContextHasher::new(ctx.path())
        .filter(&ExcludeButReinclude)
        .hash()
        .unwrap();
    assert!(tree.entry("keep/me").is_some());
    assert!(tree.entry("keep/not").is_none());
    let under: Vec<&str> = tree.entries_under("keep").map(|(p, _)| p).collect();
    assert_eq!(under, vec!["keep", "keep/me"]);
}

#[test]
fn a_symlink_out_of_the_context_is_hashed_as_a_link_and_not_followed() {
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret", b"outside");
    let ctx = sample();
    symlink(outside.path().join("secret"), ctx.path().join("escape")).unwrap();
    symlink(outside.path(), ctx.path().join("escape-dir")).unwrap();
    let tree = ContextHasher::new(ctx.path()).hash().unwrap();
    let e = tree.entry("escape").unwrap();
    assert_eq!(e.kind, EntryKind::Symlink);
    assert_eq!(
        e.link_target.as_deref(),
        Some(outside.path().join("secret").as_path())
    );
    assert!(e.content.is_none());
    assert!(
        tree.entry("escape-dir/secret").is_none(),
        "a linked directory is not entered"
    );
    // Changing what it points to outside does not change the context.
    write(outside.path(), "secret", b"changed outside");
    assert_eq!(
        ContextHasher::new(ctx.path()).hash().unwrap().root_digest(),
        tree.root_digest()
    );
}

#[test]
fn subtree_digests_and_entry_listing() {
    let ctx = sample();
    let tree = ContextHasher::new(ctx.path()).hash().unwrap();
    let under: Vec<&str> = tree.entries_under("src").map(|(p, _)| p).collect();
    assert_eq!(
        under,
        vec![
            "src",
            "src/lib",
            "src/lib/util.rs",
            "src/main.rs",
            "src/readme-link"
        ]
    );
    assert_eq!(tree.digest("./src/"), tree.digest("src"));
    assert_eq!(tree.digest("/src/main.rs"), tree.digest("src/main.rs"));
    assert!(tree.digest("../etc").is_none());
    assert_eq!(tree.entries_under("").count(), tree.len());
    // The same subtree elsewhere (another context) has the same digest: names above it do not count.
    let other = tempfile::tempdir().unwrap();
    write(other.path(), "deep/er/src/main.rs", b"fn main() {}");
    write(other.path(), "deep/er/src/lib/util.rs", b"pub fn f() {}");
    symlink("../README", other.path().join("deep/er/src/readme-link")).unwrap();
    for p in ["", "deep", "deep/er", "deep/er/src", "deep/er/src/lib"] {
        std::fs::set_permissions(other.path().join(p), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    for p in ["src", "src/lib"] {
        std::fs::set_permissions(ctx.path().join(p), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    let t1 = ContextHasher::new(ctx.path()).hash().unwrap();
    let t2 = ContextHasher::new(other.path()).hash().unwrap();
    assert_eq!(t1.digest("src"), t2.digest("deep/er/src"));
}

#[test]
fn a_lookup_near_the_last_finds_what_entry_finds() {
    let ctx = sample();
    let tree = ContextHasher::new(ctx.path()).hash().unwrap();
    let all: Vec<&str> = tree.entries_under("").map(|(p, _)| p).collect();
    let same = |a: Option<&forge_cache::ContextEntry>, b: Option<&forge_cache::ContextEntry>| {
        a.map(|e| e.digest) == b.map(|e| e.digest) && a.is_some() == b.is_some()
    };
    // In path order (the hint moves to each), backwards, and from a hint past the end.
    let mut near = 0;
    for (i, p) in all.iter().enumerate() {
        assert!(same(tree.entry_near(p, &mut near), tree.entry(p)), "{p:?}");
        assert_eq!(near, i, "{p:?}");
    }
    for (i, p) in all.iter().enumerate().rev() {
        assert!(same(tree.entry_near(p, &mut near), tree.entry(p)), "{p:?}");
        assert_eq!(near, i, "{p:?}");
    }
    near = all.len() + 10;
    assert!(same(
        tree.entry_near("./src/main.rs", &mut near),
        tree.entry("src/main.rs")
    ));
    assert_eq!(all[near], "src/main.rs");
    // What is not there is not found, and the hint stays.
    let before = near;
    assert!(tree.entry_near("src/nope.rs", &mut near).is_none());
    assert!(tree.entry_near("../etc", &mut near).is_none());
    assert_eq!(near, before);
}

#[test]
fn the_stat_memo_avoids_reads_and_notices_changes() {
    let ctx = sample();
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    // Age the files so the memo trusts them (entries changed within a second are not memoised).
    let old = SystemTime::now() - Duration::from_secs(10);
    std::thread::sleep(Duration::from_millis(1100));
    let cold = ContextHasher::new(ctx.path()).memo(&store).hash().unwrap();
    assert_eq!(cold.stats().files_read, 4);
    let warm = ContextHasher::new(ctx.path()).memo(&store).hash().unwrap();
    assert_eq!(
        warm.stats().files_read,
        0,
        "an unchanged context is read from the memo"
    );
    assert_eq!(warm.root_digest(), cold.root_digest());
    assert!(store.dir().join("contexts").read_dir().unwrap().count() == 1);

    // A same-size rewrite with an old mtime still changes ctime, so it is re-read.
    write(ctx.path(), "README", b"README");
    std::fs::File::options()
        .write(true)
        .open(ctx.path().join("README"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let changed = ContextHasher::new(ctx.path()).memo(&store).hash().unwrap();
    assert_eq!(changed.stats().files_read, 1);
    assert_ne!(changed.root_digest(), cold.root_digest());
    assert_eq!(
        changed.root_digest(),
        ContextHasher::new(ctx.path()).hash().unwrap().root_digest()
    );

    // A damaged memo is ignored, not trusted.
    let memo = memo_file(&store);
    std::fs::write(&memo, b"garbage").unwrap();
    let again = ContextHasher::new(ctx.path()).memo(&store).hash().unwrap();
    assert_eq!(again.root_digest(), changed.root_digest());
}

#[test]
fn a_memo_with_nothing_new_is_kept_until_many_of_its_entries_are_stale() {
    // 30 files and the directory: 31 memo entries, of which more than 3 (one in eight) must be
    // stale for a memo with nothing new to be rewritten.
    let ctx = tempfile::tempdir().unwrap();
    for i in 0..30 {
        write(ctx.path(), &format!("f{i}"), format!("file {i}").as_bytes());
    }
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    ContextHasher::new(ctx.path()).memo(&store).hash().unwrap();
    let memo = memo_file(&store);
    let written = std::fs::read(&memo).unwrap();
    let unchanged = || std::fs::read(&memo).unwrap() == written;
    let hash = || {
        let with_memo = ContextHasher::new(ctx.path()).memo(&store).hash().unwrap();
        let without = ContextHasher::new(ctx.path()).hash().unwrap();
        assert_eq!(with_memo.root_digest(), without.root_digest());
        with_memo.stats().files_read
    };
    // A file changed just now is read, not remembered (it could change again within the same
    // timestamp tick): nothing new, so the memo stays as it was; the next build reads the file
    // again, as its stale entry does not match.
    write(ctx.path(), "f0", b"changed");
    assert_eq!(hash(), 1);
    assert!(unchanged(), "a memo with nothing new was rewritten");
    assert_eq!(hash(), 1);
    // A deleted file makes it and its directory stale: 3 of 31 are still too few; 4 are not.
    std::fs::remove_file(ctx.path().join("f1")).unwrap();
    assert_eq!(hash(), 1);
    assert!(
        unchanged(),
        "a memo with 3 stale entries of 31 was rewritten"
    );
    std::fs::remove_file(ctx.path().join("f2")).unwrap();
    assert_eq!(hash(), 1);
    assert!(!unchanged(), "a memo with 4 stale entries of 31 was kept");
}

#[test]
fn a_missing_context_is_a_clear_error() {
    let err = ContextHasher::new("/nonexistent/forge-context")
        .hash()
        .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/forge-context"),
        "{err}"
    );
}

#[test]
fn paths_come_in_byte_order_with_siblings_that_sort_between_a_directory_and_its_contents() {
    // "a-b" and "a.txt" sort between "a" and "a/x" ('-' and '.' come before '/'); the walk emits
    // a directory and its contents apart, and lookups by binary search depend on that order.
    let dir = tempfile::tempdir().unwrap();
    for rel in ["a/x", "a/y/z", "a-b", "a.txt", "a0", "b/a", "b.c/d"] {
        write(dir.path(), rel, rel.as_bytes());
    }
    let tree = ContextHasher::new(dir.path()).hash().unwrap();
    let all: Vec<&str> = tree.entries_under("").map(|(p, _)| p).collect();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    assert_eq!(all.len(), 12);
    let under: Vec<&str> = tree.entries_under("a").map(|(p, _)| p).collect();
    assert_eq!(under, ["a", "a/x", "a/y", "a/y/z"]);
    for p in &all[1..] {
        assert_eq!(
            tree.entry(p).unwrap().digest,
            tree.digest(p).unwrap(),
            "{p}"
        );
    }
    assert_eq!(tree.entry("a.txt").unwrap().size, 5);
    assert!(tree.entry("a/q").is_none());
}

#[test]
fn names_that_are_not_utf8_still_hash_and_keep_lookups_working() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    // Raw byte order and the order of their lossy forms differ ("\xc0" < "\xe4" but U+FFFD is
    // EF BF BD), and "x\xfe" and "x\xff" become the same string.
    for name in [&b"a\xc0"[..], "a一".as_bytes(), b"x\xfe", b"x\xff", b"b"] {
        std::fs::write(dir.path().join(OsStr::from_bytes(name)), name).unwrap();
    }
    let tree = ContextHasher::new(dir.path()).hash().unwrap();
    let all: Vec<&str> = tree.entries_under("").map(|(p, _)| p).collect();
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(all, sorted);
    assert_eq!(tree.entry("a一").unwrap().size, 4);
    assert_eq!(tree.entry("b").unwrap().size, 1);
    assert!(tree.entry("x\u{FFFD}").is_some());
}
