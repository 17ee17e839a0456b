//! Building test trees (as root: mknod, chown, trusted.* xattrs) and describing trees for comparison.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt};
use std::path::Path;

use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

pub(crate) fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "forge-export tests need root: they create device nodes, chown files and set trusted.* xattrs"
    );
}

pub(crate) fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated and `value` is valid for its length.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

pub(crate) fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 4096];
    // SAFETY: `names` is writable for its length; `p` is NUL-terminated.
    let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "listxattr {}", path.display());
    let mut out = Vec::new();
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let cname = CString::new(name).unwrap();
        let mut value = vec![0u8; 4096];
        // SAFETY: as above.
        let len = unsafe {
            libc::lgetxattr(
                p.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert!(len >= 0);
        value.truncate(len as usize);
        out.push((String::from_utf8_lossy(name).into_owned(), value));
    }
    out.sort();
    out
}

pub(crate) fn set_mtime(path: &Path, secs: i64) {
    let t = TimeSpec::new(secs, 0);
    utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink).unwrap();
}

pub(crate) fn whiteout(path: &Path) {
    mknod(path, SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
}

/// A tree with every kind of entry a layer carries, in overlay upperdir format.
pub(crate) fn build_rich_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::write(root.join("a/file.txt"), b"hello layer\n").unwrap();
    fs::write(
        root.join("a/b/big.bin"),
        (0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    fs::write(root.join("setuid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(
        root.join("setuid"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    fs::hard_link(root.join("a/file.txt"), root.join("hard")).unwrap();
    symlink("a/file.txt", root.join("rel-link")).unwrap();
    symlink("/etc/passwd", root.join("abs-link")).unwrap();
    symlink("t".repeat(150), root.join("long-target")).unwrap();
    mknod(
        &root.join("fifo"),
        SFlag::S_IFIFO,
        Mode::from_bits_truncate(0o640),
        0,
    )
    .unwrap();
    fs::create_dir(root.join("dev")).unwrap();
    mknod(
        &root.join("dev/null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .unwrap();
    mknod(
        &root.join("dev/loop0"),
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o660),
        makedev(7, 0),
    )
    .unwrap();
    whiteout(&root.join("gone"));
    fs::create_dir(root.join("opq")).unwrap();
    set_xattr(&root.join("opq"), "trusted.overlay.opaque", b"y");
    fs::write(root.join("opq/keep"), b"kept").unwrap();
    fs::create_dir(root.join("empty")).unwrap();
    set_xattr(&root.join("a/file.txt"), "user.test", b"hello\0binary");
    set_xattr(&root.join("a"), "user.dir", b"1");
    // Longer than ustar's 100-byte name and than prefix+name: PAX path records.
    let deep = root.join("d".repeat(120)).join("e".repeat(90));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("f".repeat(99)), b"deep").unwrap();
    std::os::unix::fs::lchown(root.join("a/file.txt"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::lchown(root.join("a"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::lchown(root.join("abs-link"), Some(33), Some(34)).unwrap();
    std::os::unix::fs::lchown(root.join("dev/loop0"), Some(3_000_000), Some(6)).unwrap();
    // chown cleared the set-uid bit? It was set on a root-owned file, so set it again to be sure.
    fs::set_permissions(
        root.join("setuid"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    set_all_mtimes(root, 1_600_000_000);
}

/// Gives every entry a fixed mtime, children before their directories.
pub(crate) fn set_all_mtimes(root: &Path, secs: i64) {
    for entry in fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            set_all_mtimes(&path, secs);
        }
        set_mtime(&path, secs);
    }
}

/// Everything about one entry that a layer must preserve.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) kind: &'static str,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: i64,
    pub(crate) content: Vec<u8>,
    pub(crate) link: String,
    pub(crate) rdev: u64,
    pub(crate) xattrs: Vec<(String, Vec<u8>)>,
    /// The first path (in sorted order) sharing this entry's inode, for hardlinked files.
    pub(crate) inode_group: String,
}

pub(crate) fn describe(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    walk(root, root, &mut out, &mut inodes);
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, Node>,
    inodes: &mut BTreeMap<u64, String>,
) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let meta = fs::symlink_metadata(&path).unwrap();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let inode_group = if ft.is_file() && meta.nlink() > 1 {
            inodes
                .entry(meta.ino())
                .or_insert_with(|| rel.clone())
                .clone()
        } else {
            String::new()
        };
        out.insert(
            rel.clone(),
            Node {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: meta.mtime(),
                content: if ft.is_file() {
                    fs::read(&path).unwrap()
                } else {
                    Vec::new()
                },
                link: if ft.is_symlink() {
                    fs::read_link(&path).unwrap().to_string_lossy().into_owned()
                } else {
                    String::new()
                },
                rdev: meta.rdev(),
                xattrs: xattrs(&path),
                inode_group,
            },
        );
        if ft.is_dir() {
            walk(root, &path, out, inodes);
        }
    }
}

/// The entry names of a (possibly compressed) layer, in order.
pub(crate) fn tar_names(blob: &[u8]) -> Vec<String> {
    let reader = forge_export::decompress(blob).unwrap();
    let mut archive = tar::Archive::new(reader);
    archive
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect()
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// The layer of `dir` written into memory with `compression`, and what `write_layer` reports.
pub(crate) fn layer(
    dir: &Path,
    compression: forge_export::Compression,
) -> (Vec<u8>, forge_export::LayerInfo) {
    let mut blob = Vec::new();
    let opts = forge_export::LayerOptions {
        compression,
        ..forge_export::LayerOptions::default()
    };
    let info = forge_export::write_layer(dir, &mut blob, &opts).unwrap();
    (blob, info)
}
