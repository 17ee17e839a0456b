//! Hand-crafted malicious archives are refused, naming the entry, and write nothing outside.

use std::fs;
use std::path::Path;

use forge_export::{apply_layer, unpack_layer, ExportError, UnpackOptions};

use crate::tree::require_root;

/// A raw ustar header: the tar crate's builder refuses these paths, which is the point.
fn header(name: &str, flag: u8, link: &str, size: usize) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[..name.len()].copy_from_slice(name.as_bytes());
    b[100..108].copy_from_slice(b"0000644\0");
    b[108..116].copy_from_slice(b"0000000\0");
    b[116..124].copy_from_slice(b"0000000\0");
    b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    b[136..148].copy_from_slice(b"00000000000\0");
    b[156] = flag;
    b[157..157 + link.len()].copy_from_slice(link.as_bytes());
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    b
}

fn archive(entries: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, flag, link, data) in entries {
        out.extend(header(name, *flag, link, data.len()));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend([0u8; 1024]);
    out
}

/// Unpacks `tar` (both modes) into `<tmp>/dest` and returns the error, checking `<tmp>` gained
/// nothing but `dest`.
fn refused(tar: &[u8], outside_probe: &Path) -> Vec<ExportError> {
    let mut errors = Vec::new();
    for overlay in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        let result = if overlay {
            unpack_layer(tar, &dest, &UnpackOptions::default())
        } else {
            apply_layer(tar, &dest, &UnpackOptions::default())
        };
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["dest"], "something was written next to dest");
        assert!(
            !outside_probe.exists(),
            "{} was written",
            outside_probe.display()
        );
        errors.push(result.expect_err("the archive must be refused"));
    }
    errors
}

#[test]
fn dot_dot_is_refused() {
    require_root();
    let tar = archive(&[("../escape", b'0', "", b"pwned")]);
    for err in refused(&tar, Path::new("/tmp/escape-never-written")) {
        assert!(
            matches!(&err, ExportError::UnsafePath { entry, .. } if entry == Path::new("../escape")),
            "{err}"
        );
        assert!(err.to_string().contains("../escape"), "{err}");
    }
}

#[test]
fn absolute_path_is_refused() {
    require_root();
    let probe = format!("/tmp/forge-abs-{}", std::process::id());
    let tar = archive(&[(&probe, b'0', "", b"pwned")]);
    for err in refused(&tar, Path::new(&probe)) {
        assert!(
            matches!(&err, ExportError::UnsafePath { entry, .. } if entry == Path::new(&probe)),
            "{err}"
        );
    }
}

#[test]
fn symlinked_parent_is_refused() {
    require_root();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().to_str().unwrap().to_owned();
    let tar = archive(&[
        ("link", b'2', &target, b""),
        ("link/file", b'0', "", b"pwned"),
    ]);
    for err in refused(&tar, &outside.path().join("file")) {
        assert!(
            matches!(&err, ExportError::UnsafePath { entry, .. } if entry == Path::new("link/file")),
            "{err}"
        );
        assert!(err.to_string().contains("link/file"), "{err}");
    }
    // A relative symlink climbing out is refused the same way.
    let tar = archive(&[("up", b'2', "../..", b""), ("up/x", b'0', "", b"pwned")]);
    for err in refused(&tar, Path::new("/x")) {
        assert!(
            matches!(&err, ExportError::UnsafePath { entry, .. } if entry == Path::new("up/x")),
            "{err}"
        );
    }
}

#[test]
fn hardlink_outside_is_refused() {
    require_root();
    let tar = archive(&[("x", b'1', "../x", b"")]);
    for err in refused(&tar, Path::new("/tmp/x-never-written")) {
        assert!(
            matches!(&err, ExportError::UnsafeHardlink { entry, target, .. }
                if entry == Path::new("x") && target == Path::new("../x")),
            "{err}"
        );
    }
    let tar = archive(&[("y", b'1', "/etc/passwd", b"")]);
    for err in refused(&tar, Path::new("/tmp/y-never-written")) {
        assert!(matches!(&err, ExportError::UnsafeHardlink { .. }), "{err}");
        assert!(err.to_string().contains("/etc/passwd"), "{err}");
    }
}

#[test]
fn truncated_archive_is_an_error_not_a_panic() {
    require_root();
    let mut tar = archive(&[("file", b'0', "", &[7u8; 2000])]);
    tar.truncate(900);
    let tmp = tempfile::tempdir().unwrap();
    let err = unpack_layer(
        tar.as_slice(),
        &tmp.path().join("d"),
        &UnpackOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ExportError::Unpack { .. } | ExportError::ReadArchive { .. }
        ),
        "{err}"
    );
}
