//! tree -> layer -> unpack gives the same tree; apply_layer flattens.

use std::fs;
use std::io::Write;

use forge_export::{apply_layer, decompress, unpack_layer, Compression, UnpackOptions};
use oci_spec::image::MediaType;

use crate::tree::{
    build_rich_tree, describe, layer, require_root, set_xattr, sha256, tar_names, whiteout,
};

#[test]
fn rich_tree_round_trips_through_each_compression() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_rich_tree(&src);
    let expected = describe(&src);
    for (compression, media_type) in [
        (Compression::Gzip, MediaType::ImageLayerGzip),
        (Compression::Zstd, MediaType::ImageLayerZstd),
        (Compression::Uncompressed, MediaType::ImageLayer),
    ] {
        let (blob, info) = layer(&src, compression);
        assert_eq!(info.media_type, media_type);
        assert_eq!(info.size, blob.len() as u64);
        assert_eq!(info.digest.to_string(), sha256(&blob));
        let mut tar = Vec::new();
        std::io::copy(&mut decompress(blob.as_slice()).unwrap(), &mut tar).unwrap();
        assert_eq!(info.diff_id.to_string(), sha256(&tar), "{compression:?}");
        assert_eq!(info.uncompressed_size, tar.len() as u64);

        let dst = tmp.path().join(format!("dst-{compression:?}"));
        let stats = unpack_layer(blob.as_slice(), &dst, &UnpackOptions::default()).unwrap();
        assert_eq!(stats.whiteouts, 2, "one whiteout and one opaque marker");
        assert_eq!(
            stats.diff_id, info.diff_id,
            "unpack computes the diff_id while reading"
        );
        assert_eq!(stats.uncompressed_size, info.uncompressed_size);
        let actual = describe(&dst);
        assert_eq!(
            actual.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>()
        );
        for (path, node) in &expected {
            assert_eq!(
                &actual[path], node,
                "{path} after a {compression:?} round trip"
            );
        }
    }
}

#[test]
fn layer_uses_oci_whiteouts_and_parents_come_first() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    build_rich_tree(tmp.path());
    let (blob, _) = layer(tmp.path(), Compression::Gzip);
    let names = tar_names(&blob);
    assert!(names.contains(&".wh.gone".to_owned()), "{names:?}");
    let opq = names.iter().position(|n| n == "opq/").unwrap();
    assert_eq!(names[opq + 1], "opq/.wh..wh..opq");
    assert!(!names.iter().any(|n| n == "gone"));
    for (i, name) in names.iter().enumerate() {
        let trimmed = name.trim_end_matches('/');
        if let Some((parent, _)) = trimmed.rsplit_once('/') {
            let parent_at = names
                .iter()
                .position(|n| n == &format!("{parent}/"))
                .unwrap();
            assert!(parent_at < i, "{parent}/ must come before {name}");
        }
    }
    // The hardlink is a link entry, not a second copy of the content.
    let mut archive = tar::Archive::new(decompress(blob.as_slice()).unwrap());
    let entries: Vec<_> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                e.header().entry_type(),
                e.link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned()),
                e.header().username_bytes().map(|u| u.to_vec()),
            )
        })
        .collect();
    // "a/file.txt" sorts before "hard", so it carries the content and "hard" links to it.
    let hard = entries.iter().find(|e| e.0 == "hard").unwrap();
    assert_eq!(hard.1, tar::EntryType::Link);
    assert_eq!(hard.2.as_deref(), Some("a/file.txt"));
    assert!(
        entries
            .iter()
            .all(|e| e.3.as_deref().unwrap_or_default().is_empty()),
        "no user names"
    );
}

#[test]
fn plain_directory_goes_through_the_same_writer() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("copy-result");
    fs::create_dir_all(src.join("app")).unwrap();
    fs::write(src.join("app/main.py"), b"print('hi')\n").unwrap();
    let (blob, _) = layer(&src, Compression::Zstd);
    assert_eq!(tar_names(&blob), vec!["app/", "app/main.py"]);
}

#[test]
fn apply_layer_deletes_whiteouts_and_empties_opaque_dirs() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    fs::create_dir_all(base.join("etc/old")).unwrap();
    fs::write(base.join("etc/old/conf"), b"old").unwrap();
    fs::write(base.join("etc/keep"), b"keep").unwrap();
    fs::create_dir_all(base.join("var/cache")).unwrap();
    fs::write(base.join("var/cache/stale"), b"stale").unwrap();
    fs::write(base.join("replace-me"), b"file").unwrap();

    let upper = tmp.path().join("upper");
    fs::create_dir_all(upper.join("etc")).unwrap();
    whiteout(&upper.join("etc/old"));
    fs::create_dir_all(upper.join("var/cache")).unwrap();
    set_xattr(&upper.join("var/cache"), "trusted.overlay.opaque", b"y");
    fs::write(upper.join("var/cache/fresh"), b"fresh").unwrap();
    fs::create_dir(upper.join("replace-me")).unwrap();
    fs::write(upper.join("replace-me/inside"), b"now a dir").unwrap();
    let (blob, _) = layer(&upper, Compression::Gzip);

    let stats = apply_layer(blob.as_slice(), &base, &UnpackOptions::default()).unwrap();
    assert_eq!(stats.whiteouts, 2);
    assert!(
        !base.join("etc/old").exists(),
        "whited-out directory deleted"
    );
    assert_eq!(fs::read(base.join("etc/keep")).unwrap(), b"keep");
    assert!(
        !base.join("var/cache/stale").exists(),
        "opaque directory emptied of old content"
    );
    assert_eq!(fs::read(base.join("var/cache/fresh")).unwrap(), b"fresh");
    assert_eq!(
        fs::read(base.join("replace-me/inside")).unwrap(),
        b"now a dir"
    );
    // No overlay markers leak into a flattened tree.
    assert!(crate::tree::xattrs(&base.join("var/cache")).is_empty());
}

#[test]
fn archives_for_add_unpack_in_every_compression() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("pkg")).unwrap();
    fs::write(src.join("pkg/readme"), b"archive content").unwrap();
    let (tar, _) = layer(&src, Compression::Uncompressed);
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    bz.write_all(&tar).unwrap();
    let mut xz = xz2::write::XzEncoder::new(Vec::new(), 6);
    xz.write_all(&tar).unwrap();
    let (gz, _) = layer(&src, Compression::Gzip);
    let (zst, _) = layer(&src, Compression::Zstd);
    for (name, bytes) in [
        ("plain", tar.clone()),
        ("bzip2", bz.finish().unwrap()),
        ("xz", xz.finish().unwrap()),
        ("gzip", gz),
        ("zstd", zst),
    ] {
        let dst = tmp.path().join(name);
        apply_layer(bytes.as_slice(), &dst, &UnpackOptions::default()).unwrap();
        assert_eq!(
            fs::read(dst.join("pkg/readme")).unwrap(),
            b"archive content",
            "{name}"
        );
    }
}

#[test]
fn apply_layer_links_to_files_of_earlier_layers() {
    require_root();
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rootfs");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("bin/tool"), b"#!/bin/sh\n").unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    // new_ustar leaves uid/gid/mtime blank, as some writers do: those must read as 0, not fail.
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    h.set_mode(0o755);
    h.set_cksum();
    builder
        .append_link(&mut h, "bin/alias", "bin/tool")
        .unwrap();
    let tar = builder.into_inner().unwrap();
    apply_layer(tar.as_slice(), &root, &UnpackOptions::default()).unwrap();
    let (a, b) = (
        fs::metadata(root.join("bin/alias")).unwrap(),
        fs::metadata(root.join("bin/tool")).unwrap(),
    );
    assert_eq!(
        a.ino(),
        b.ino(),
        "alias is a hardlink to the earlier layer's file"
    );

    // In overlay format the layer stands alone: a link to a file it does not contain is refused.
    let err = unpack_layer(
        tar.as_slice(),
        &tmp.path().join("snapshot"),
        &UnpackOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, forge_export::ExportError::UnsafeHardlink { entry, .. } if entry.ends_with("bin/alias")),
        "{err}"
    );
}
