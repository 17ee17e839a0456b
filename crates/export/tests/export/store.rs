//! Layers written into the store: the bytes and digests are today's (golden values taken before
//! the pipelined writer existed), the store's blob equals what `write_layer` streams, and a
//! writer killed mid-layer publishes nothing.

use std::fs;
use std::path::Path;

use forge_export::{write_layer_to_store, Compression, LayerOptions};

use crate::tree::{build_rich_tree, layer, require_root, set_all_mtimes, set_xattr, whiteout};

/// A tree of a few MiB that crosses many pipeline chunks: files of every size class (empty, under
/// a block, several MiB), hardlinks, a whiteout, an opaque directory and xattrs.
pub(crate) fn build_chunky_tree(root: &Path) {
    build_rich_tree(root);
    let mut x: u64 = 0x2545f4914f6cdd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for d in 0..5 {
        let dir = root.join(format!("data/d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..30 {
            let len = match next() % 20 {
                0 => 0,
                1..=14 => (next() % 20_000) as usize,
                15..=18 => (next() % 300_000) as usize,
                _ => 1_000_000 + (next() % 1_500_000) as usize,
            };
            let bytes: Vec<u8> = (0..len).map(|i| (next() >> (i % 7)) as u8).collect();
            fs::write(dir.join(format!("f{f:02}")), bytes).unwrap();
        }
        fs::hard_link(dir.join("f03"), dir.join("z-hard")).unwrap();
    }
    whiteout(&root.join("data/d2/gone"));
    set_xattr(&root.join("data/d3"), "trusted.overlay.opaque", b"y");
    set_xattr(&root.join("data/d4/f05"), "user.note", b"chunky");
    set_all_mtimes(root, 1_650_000_000);
}

/// diff_id, then blob digests for gzip and zstd, as the sequential writer made them.
const GOLDEN: [(&str, &str, &str, &str); 2] = [
    (
        "rich",
        "sha256:4c413902356ae8126ae2fde10233382f1ac3912c9ece415a04f7c83093bdd7d3",
        "sha256:cd2c9a9041dd464862bee127f342b29aa4e19ff355425fe69ec649bba0586175",
        "sha256:fa3203ef01061577f3dabf65f5120fd8e9e9e855f5dec0a5217d1ca29e01fd8d",
    ),
    (
        "chunky",
        "sha256:5eae00a0f0c5fece318cf81c5c1de4ffe1feaa0fdeb8eadcc9d2d7694b0cdb4d",
        "sha256:ca6b229598698d886d0730fe783d0134a06c888660301d97b4dc208b4be8e9fb",
        "sha256:2903020fb620392ca642e898bb37ecefe0bc04955fc0e8e8806c1ec204c6302a",
    ),
];

#[test]
fn layer_digests_stay_what_they_were() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    for (name, diff_id, gzip, zstd) in GOLDEN {
        let dir = tmp.path().join(name);
        match name {
            "rich" => build_rich_tree(&dir),
            _ => build_chunky_tree(&dir),
        }
        let (tar, info) = layer(&dir, Compression::Uncompressed);
        assert_eq!(info.diff_id.to_string(), diff_id, "{name}: diff_id changed");
        assert_eq!(
            info.digest, info.diff_id,
            "{name}: an uncompressed blob is its tar"
        );
        assert_eq!(
            crate::tree::sha256(&tar),
            diff_id,
            "{name}: reported digest is not the bytes'"
        );
        assert_eq!(info.size, tar.len() as u64);
        let (_, info) = layer(&dir, Compression::Gzip);
        assert_eq!(info.digest.to_string(), gzip, "{name}: gzip blob changed");
        assert_eq!(info.diff_id.to_string(), diff_id);
        let (_, info) = layer(&dir, Compression::Zstd);
        assert_eq!(info.digest.to_string(), zstd, "{name}: zstd blob changed");
    }
}

#[test]
fn store_layers_are_the_golden_bytes() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = forge_cache::Store::open(tmp.path().join("store")).unwrap();
    for (name, diff_id, gzip, _) in GOLDEN {
        let dir = tmp.path().join(name);
        match name {
            "rich" => build_rich_tree(&dir),
            _ => build_chunky_tree(&dir),
        }
        for compression in [Compression::Uncompressed, Compression::Gzip] {
            let opts = LayerOptions {
                compression,
                ..LayerOptions::default()
            };
            let info = write_layer_to_store(&dir, &store, &opts, None).unwrap();
            assert_eq!(info.diff_id.to_string(), diff_id, "{name} {compression:?}");
            let expected_digest = match compression {
                Compression::Uncompressed => diff_id,
                _ => gzip,
            };
            assert_eq!(
                info.digest.to_string(),
                expected_digest,
                "{name} {compression:?}"
            );
            let (streamed, streamed_info) = layer(&dir, compression);
            assert_eq!(info, streamed_info);
            let stored = fs::read(store.blob_path(&info.digest).unwrap()).unwrap();
            assert!(
                stored == streamed,
                "{name} {compression:?}: stored blob differs"
            );
            assert_eq!(crate::tree::sha256(&stored), expected_digest);
        }
    }
}

/// The child half of [`killed_layer_export_publishes_nothing`]: exports a big layer into the
/// store named by the environment, until it is killed.
fn export_child(store_root: &str, tree: &str) {
    let store = forge_cache::Store::open(store_root).unwrap();
    let opts = LayerOptions {
        compression: Compression::Uncompressed,
        ..LayerOptions::default()
    };
    write_layer_to_store(Path::new(tree), &store, &opts, None).unwrap();
    // Finishing means the parent never saw the blob being staged: it fails on its own.
}

/// Regression guard for the split (two-thread) store writer: SIGKILL mid-export must publish no
/// blob, and the next open of the store removes the staged part.
#[test]
fn killed_layer_export_publishes_nothing() {
    require_root();
    if let (Ok(store), Ok(tree)) = (
        std::env::var("FORGE_EXPORT_CHILD_STORE"),
        std::env::var("FORGE_EXPORT_CHILD_TREE"),
    ) {
        return export_child(&store, &tree);
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    fs::create_dir(&tree).unwrap();
    // Sparse: 4 GiB of tar data that take no disk space to hold and seconds to export.
    let big = fs::File::create(tree.join("sparse")).unwrap();
    big.set_len(4 << 30).unwrap();
    drop(big);
    let root = tmp.path().join("store");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "store::killed_layer_export_publishes_nothing"])
        .args(["--test-threads", "1"])
        .env("FORGE_EXPORT_CHILD_STORE", &root)
        .env("FORGE_EXPORT_CHILD_TREE", &tree)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the blob is being written (some MiB staged), then kill.
    let staged = loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the exporting child ended ({status}) before it could be killed mid-layer");
        }
        let big_staged = fs::read_dir(root.join("v1/tmp"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|d| d.path().is_dir())
            .flat_map(|d| fs::read_dir(d.path()).into_iter().flatten().flatten())
            .find(|f| f.metadata().map(|m| m.len() > 16 << 20).unwrap_or(false));
        if let Some(file) = big_staged {
            break file.path();
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        staged.exists(),
        "the staged blob is there until the next open"
    );
    let blobs = root.join("v1/oci/blobs/sha256");
    assert_eq!(
        fs::read_dir(&blobs).unwrap().count(),
        0,
        "a killed export published a blob"
    );
    let store = forge_cache::Store::open(&root).unwrap();
    assert!(
        !staged.exists(),
        "reopening the store left the dead export's staged blob"
    );
    assert!(store.list_blobs().unwrap().is_empty());
}
