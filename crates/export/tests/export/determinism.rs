//! Two identical trees give byte-identical blobs; SOURCE_DATE_EPOCH makes later mtimes irrelevant.

use std::fs;
use std::path::Path;

use forge_export::{write_layer, Compression, LayerOptions};

use crate::tree::{require_root, set_all_mtimes, set_mtime};

/// The same content, created in a different order (so inode numbers and readdir order differ).
fn build(root: &Path, reverse: bool) {
    let mut names: Vec<String> = (0..50).map(|i| format!("f{i:02}")).collect();
    if reverse {
        names.reverse();
    }
    fs::create_dir_all(root.join("dir")).unwrap();
    for name in &names {
        fs::write(root.join("dir").join(name), name.repeat(100)).unwrap();
    }
    set_all_mtimes(root, 1_700_000_000);
}

fn blob(
    dir: &Path,
    compression: Compression,
    epoch: Option<i64>,
) -> (Vec<u8>, forge_export::LayerInfo) {
    let mut out = Vec::new();
    let opts = LayerOptions {
        compression,
        source_date_epoch: epoch,
        ..LayerOptions::default()
    };
    let info = write_layer(dir, &mut out, &opts).unwrap();
    (out, info)
}

#[test]
fn identical_trees_give_identical_blobs() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    build(&one, false);
    build(&two, true);
    for compression in [
        Compression::Gzip,
        Compression::Zstd,
        Compression::Uncompressed,
    ] {
        let (a, ia) = blob(&one, compression, None);
        let (b, ib) = blob(&two, compression, None);
        assert!(a == b, "{compression:?} blobs differ");
        assert_eq!(ia, ib);
    }
}

#[test]
fn source_date_epoch_clamps_mtimes() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tree");
    build(&dir, false);
    let epoch = Some(1_500_000_000);
    let (before, _) = blob(&dir, Compression::Gzip, epoch);
    let (unclamped_before, _) = blob(&dir, Compression::Gzip, None);
    // Touch a file (mtime now, after the epoch): with the clamp nothing changes.
    set_mtime(&dir.join("dir/f07"), 1_800_000_000);
    let (after, _) = blob(&dir, Compression::Gzip, epoch);
    assert!(
        before == after,
        "clamped layer changed when an mtime changed"
    );
    let (unclamped_after, _) = blob(&dir, Compression::Gzip, None);
    assert!(
        unclamped_before != unclamped_after,
        "without the clamp the mtime is recorded"
    );
    let mut archive = tar::Archive::new(forge_export::decompress(after.as_slice()).unwrap());
    for entry in archive.entries().unwrap() {
        assert_eq!(entry.unwrap().header().mtime().unwrap(), 1_500_000_000);
    }
}
