//! Layers written into the store: the bytes and digests are today's (golden values taken before
//! the pipelined writer existed), the store's blob equals what `write_layer` streams, and a
//! writer killed mid-layer publishes nothing.

use std::fs;
use std::path::Path;

use forge_export::{write_layer, Compression, LayerOptions};

use crate::tree::{build_rich_tree, require_root, set_all_mtimes, set_xattr, whiteout};

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

fn layer(dir: &Path, compression: Compression) -> (Vec<u8>, forge_export::LayerInfo) {
    let mut blob = Vec::new();
    let opts = LayerOptions {
        compression,
        ..LayerOptions::default()
    };
    let info = write_layer(dir, &mut blob, &opts).unwrap();
    (blob, info)
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
