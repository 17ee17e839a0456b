//! Real OCI tools read what the outputs write: skopeo, umoci.

use std::fs::{self, File};
use std::path::Path;
use std::process::Command;

use forge_export::{
    build_image, write_docker_archive, write_layer, write_oci_archive, write_oci_layout,
    write_rootfs_dir, write_rootfs_tar, BuiltImage, Compression, ImageSpec, LayerOptions,
    MemoryBlobs, UnpackOptions,
};
use oci_spec::image::HistoryBuilder;

use crate::tree::{require_root, whiteout};

/// A two-layer image: the second deletes a file of the first and adds another.
fn two_layer_image(tmp: &Path) -> (BuiltImage, MemoryBlobs<'static>) {
    let l1 = tmp.join("l1");
    fs::create_dir_all(l1.join("etc")).unwrap();
    fs::write(l1.join("hello"), b"hello from layer one\n").unwrap();
    fs::write(l1.join("etc/doomed"), b"deleted by layer two").unwrap();
    let l2 = tmp.join("l2");
    fs::create_dir_all(l2.join("etc")).unwrap();
    whiteout(&l2.join("etc/doomed"));
    fs::write(l2.join("second"), b"layer two").unwrap();
    let mut blobs = MemoryBlobs::new(None);
    let mut layers = Vec::new();
    for (dir, compression) in [(&l1, Compression::Gzip), (&l2, Compression::Uncompressed)] {
        let mut blob = Vec::new();
        let opts = LayerOptions {
            compression,
            source_date_epoch: Some(0),
            ..LayerOptions::default()
        };
        layers.push(write_layer(dir, &mut blob, &opts).unwrap());
        blobs.insert(blob);
    }
    let mut spec: ImageSpec = crate::image::spec();
    spec.layers = layers;
    spec.history = vec![
        HistoryBuilder::default()
            .created_by("COPY hello /")
            .build()
            .unwrap(),
        HistoryBuilder::default()
            .created_by("RUN rm /etc/doomed")
            .build()
            .unwrap(),
    ];
    let image = build_image(&spec).unwrap();
    blobs.insert_image(&image);
    (image, blobs)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{cmd:?} could not start ({e}); scripts/install-deps installs it")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `skopeo inspect IMAGE` as JSON.
fn skopeo_inspect(image: &str) -> serde_json::Value {
    let out = run(Command::new("skopeo").arg("inspect").arg(image));
    serde_json::from_str(&out).unwrap()
}

#[test]
fn skopeo_and_umoci_read_the_oci_layout() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (image, blobs) = two_layer_image(tmp.path());
    let layout = tmp.path().join("layout");
    write_oci_layout(
        &layout,
        &[("latest".to_owned(), image.manifest_descriptor.clone())],
        &blobs,
    )
    .unwrap();
    // Adding a second name keeps the first.
    write_oci_layout(
        &layout,
        &[("other".to_owned(), image.manifest_descriptor.clone())],
        &blobs,
    )
    .unwrap();

    let value = skopeo_inspect(&format!("oci:{}:latest", layout.display()));
    assert_eq!(value["Architecture"], "amd64");
    assert_eq!(value["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(
        value["Digest"],
        image.manifest_descriptor.digest().to_string()
    );
    skopeo_inspect(&format!("oci:{}:other", layout.display()));

    let bundle = tmp.path().join("bundle");
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:latest", layout.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        fs::read(rootfs.join("hello")).unwrap(),
        b"hello from layer one\n"
    );
    assert_eq!(fs::read(rootfs.join("second")).unwrap(), b"layer two");
    assert!(
        !rootfs.join("etc/doomed").exists(),
        "umoci applied our whiteout"
    );
}

#[test]
fn skopeo_reads_the_oci_archive() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (image, blobs) = two_layer_image(tmp.path());
    let archive = tmp.path().join("image.tar");
    write_oci_archive(
        File::create(&archive).unwrap(),
        &[("v1".to_owned(), image.manifest_descriptor.clone())],
        &blobs,
    )
    .unwrap();
    let value = skopeo_inspect(&format!("oci-archive:{}:v1", archive.display()));
    assert_eq!(
        value["Digest"],
        image.manifest_descriptor.digest().to_string()
    );
}

#[test]
fn skopeo_reads_and_copies_the_docker_archive() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (image, blobs) = two_layer_image(tmp.path());
    let archive = tmp.path().join("docker.tar");
    write_docker_archive(
        File::create(&archive).unwrap(),
        &image.manifest_descriptor,
        &["forge.test/img:1".to_owned()],
        &blobs,
    )
    .unwrap();
    let value = skopeo_inspect(&format!("docker-archive:{}", archive.display()));
    assert_eq!(value["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(value["Architecture"], "amd64");
    // Copying out of it makes skopeo verify every layer against the config's diff_ids.
    let copy = tmp.path().join("copied");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("docker-archive:{}", archive.display()))
        .arg(format!("oci:{}:copied", copy.display())));
    let bundle = tmp.path().join("bundle");
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:copied", copy.display()))
        .arg(&bundle));
    assert_eq!(
        fs::read(bundle.join("rootfs/second")).unwrap(),
        b"layer two"
    );

    // And skopeo's own docker-archive from our OCI layout is readable as well.
    let layout = tmp.path().join("layout");
    write_oci_layout(
        &layout,
        &[("latest".to_owned(), image.manifest_descriptor.clone())],
        &blobs,
    )
    .unwrap();
    let skopeo_archive = tmp.path().join("skopeo.tar");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!(
            "docker-archive:{}:forge.test/img:2",
            skopeo_archive.display()
        )));
    assert!(fs::metadata(&skopeo_archive).unwrap().len() > 0);
}

#[test]
fn rootfs_outputs_are_flattened() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (image, blobs) = two_layer_image(tmp.path());
    let local = tmp.path().join("local");
    write_rootfs_dir(
        &local,
        &image.manifest_descriptor,
        &blobs,
        &UnpackOptions::default(),
    )
    .unwrap();
    assert_eq!(
        fs::read(local.join("hello")).unwrap(),
        b"hello from layer one\n"
    );
    assert!(!local.join("etc/doomed").exists());
    assert!(local.join("etc").is_dir());

    let mut tar = Vec::new();
    write_rootfs_tar(
        &mut tar,
        &image.manifest_descriptor,
        &blobs,
        &tmp.path().join("scratch"),
        &LayerOptions {
            compression: Compression::Uncompressed,
            ..LayerOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        crate::tree::tar_names(&tar),
        vec!["etc/", "hello", "second"]
    );
    assert_eq!(
        fs::read_dir(tmp.path().join("scratch")).unwrap().count(),
        0,
        "scratch cleaned up"
    );
}

/// Serves every blob from `inner` except one, whose bytes are replaced.
struct Corrupt<'a> {
    inner: &'a MemoryBlobs<'static>,
    bad: oci_spec::image::Digest,
}

impl forge_export::BlobSource for Corrupt<'_> {
    fn open_blob(
        &self,
        digest: &oci_spec::image::Digest,
    ) -> std::io::Result<Box<dyn std::io::Read + '_>> {
        if digest == &self.bad {
            return Ok(Box::new(&b"not the layer you asked for"[..]));
        }
        self.inner.open_blob(digest)
    }
}

#[test]
fn corrupt_blob_is_refused_and_leaves_nothing() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (image, blobs) = two_layer_image(tmp.path());
    let bad = image.manifest.layers()[1].digest().clone();
    let source = Corrupt {
        inner: &blobs,
        bad: bad.clone(),
    };
    let layout = tmp.path().join("layout");
    let err = write_oci_layout(
        &layout,
        &[("x".to_owned(), image.manifest_descriptor.clone())],
        &source,
    )
    .unwrap_err();
    assert!(
        matches!(&err, forge_export::ExportError::DigestMismatch { expected, .. } if expected == &bad.to_string()),
        "{err}"
    );
    let names: Vec<_> = fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(bad.digest())), "{names:?}");
    assert!(
        !layout.join("index.json").exists(),
        "no index naming an incomplete image"
    );
    let mut archive = Vec::new();
    let err =
        write_docker_archive(&mut archive, &image.manifest_descriptor, &[], &source).unwrap_err();
    assert!(
        matches!(err, forge_export::ExportError::DigestMismatch { .. }),
        "{err}"
    );
}

#[test]
fn gnu_tar_and_gzip_read_our_layer() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    crate::tree::build_rich_tree(&tree);
    let blob = tmp.path().join("layer.tar.gz");
    write_layer(
        &tree,
        File::create(&blob).unwrap(),
        &LayerOptions::default(),
    )
    .unwrap();
    run(Command::new("gzip").arg("-t").arg(&blob));
    let listing = run(Command::new("tar").arg("-tvzf").arg(&blob));
    assert!(listing.contains("hard link to a/file.txt"), "{listing}");
    assert!(
        listing.contains(&"f".repeat(99)),
        "long PAX path listed: {listing}"
    );
    assert!(listing.contains(".wh.gone"), "{listing}");
    assert!(
        listing.contains("1234/5678"),
        "numeric owner of a/file.txt: {listing}"
    );
}
