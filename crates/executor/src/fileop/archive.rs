//! ADD of local tar archives: detection by content (a tar header after optional gzip, bzip2,
//! xz or zstd compression, as BuildKit's `isArchivePath` does) and a path-safe extraction:
//! every entry's parent is resolved inside the extraction directory (`..` and absolute symlinks
//! cannot lead out), existing entries are replaced without following them, and overlay
//! whiteout names get no special meaning. Owners come from `--chown` or the archive.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag};
use tar::EntryType;

use super::error::FileOpError;
use super::owner::Owner;
use super::scoped::resolve_in_root;
use super::tree::{create_new, set_times};

const GZIP: &[u8] = &[0x1f, 0x8b];
const BZIP2: &[u8] = b"BZh";
const XZ: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Opens `path` through the decompressor its first bytes call for.
fn open_decompressed(path: &Path) -> io::Result<Box<dyn Read>> {
    let mut file = File::open(path)?;
    let mut magic = [0u8; 6];
    let mut n = 0;
    while n < magic.len() {
        match file.read(&mut magic[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let head = &magic[..n];
    let file = BufReader::new(io::Cursor::new(magic[..n].to_vec()).chain(file));
    Ok(if head.starts_with(GZIP) {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else if head.starts_with(BZIP2) {
        Box::new(bzip2::read::MultiBzDecoder::new(file))
    } else if head.starts_with(XZ) {
        Box::new(xz2::read::XzDecoder::new_multi_decoder(file))
    } else if head.starts_with(ZSTD) {
        Box::new(zstd::stream::read::Decoder::new(file)?)
    } else {
        Box::new(file)
    })
}

/// True when `path` is a regular file holding a (possibly compressed) tar archive.
pub(crate) fn is_archive(path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => {}
        _ => return false,
    }
    let Ok(reader) = open_decompressed(path) else {
        return false;
    };
    let mut archive = tar::Archive::new(reader);
    let first = archive.entries().ok().and_then(|mut e| e.next());
    matches!(first, Some(Ok(_)))
}

/// Extracts `archive` into the existing directory `dest`.
pub(crate) fn extract(
    archive: &Path,
    dest: &Path,
    chown: Option<Owner>,
    report: &mut super::CopyReport,
) -> Result<(), FileOpError> {
    let reader = open_decompressed(archive).map_err(|source| FileOpError::Archive {
        archive: archive.to_path_buf(),
        source,
    })?;
    let mut tar = tar::Archive::new(reader);
    let read_err = |source| FileOpError::Archive {
        archive: archive.to_path_buf(),
        source,
    };
    // Directory times are set last, once nothing more is written inside them.
    let mut dir_times: Vec<(PathBuf, i64)> = Vec::new();
    for entry in tar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let entry_err = |op: &'static str| {
            let entry = raw_name.clone();
            move |source: io::Error| FileOpError::ArchiveEntry {
                archive: archive.to_path_buf(),
                entry,
                op,
                source,
            }
        };
        let parts = normalize(&raw_name);
        let Some((base, parent)) = parts.split_last() else {
            continue; // the archive's root directory: dest already exists
        };
        let parent_host = resolve_in_root(dest, parent.join("/"), true)?;
        mkdir_parents(&parent_host, dest).map_err(entry_err("create parent directories"))?;
        let target = parent_host.join(base);
        let header = entry.header().clone();
        let kind = header.entry_type();
        let existing = fs::symlink_metadata(&target).ok();
        if kind.is_dir() {
            match existing {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    remove_any(&target).map_err(entry_err("replace"))?;
                    fs::create_dir(&target).map_err(entry_err("mkdir"))?;
                }
                None => fs::create_dir(&target).map_err(entry_err("mkdir"))?,
            }
        } else {
            if existing.is_some() {
                remove_any(&target).map_err(entry_err("replace"))?;
            }
            match kind {
                EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                    let mut out = create_new(&target)?;
                    report.bytes += io::copy(&mut entry, &mut out).map_err(entry_err("write"))?;
                    report.files += 1;
                }
                EntryType::Symlink => {
                    let link = entry
                        .link_name()
                        .map_err(entry_err("read link name"))?
                        .unwrap_or_default();
                    std::os::unix::fs::symlink(&link, &target).map_err(entry_err("symlink"))?;
                    report.symlinks += 1;
                }
                EntryType::Link => {
                    let link = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    let link_parts = normalize(&link);
                    let source = resolve_in_root(dest, link_parts.join("/"), false)?;
                    fs::hard_link(&source, &target).map_err(entry_err("hard link"))?;
                    report.hardlinks += 1;
                    continue; // shares the inode, and so the metadata, of its source
                }
                EntryType::Char | EntryType::Block | EntryType::Fifo => {
                    let sflag = match kind {
                        EntryType::Char => SFlag::S_IFCHR,
                        EntryType::Block => SFlag::S_IFBLK,
                        _ => SFlag::S_IFIFO,
                    };
                    let major = header.device_major().ok().flatten().unwrap_or(0);
                    let minor = header.device_minor().ok().flatten().unwrap_or(0);
                    nix::sys::stat::mknod(
                        &target,
                        sflag,
                        Mode::from_bits_truncate(0o600),
                        libc::makedev(major, minor),
                    )
                    .map_err(|e| entry_err("mknod")(io::Error::from(e)))?;
                    report.files += 1;
                }
                _ => continue, // pax/GNU metadata entries are consumed by the tar crate
            }
        }
        let owner = chown.unwrap_or(Owner {
            uid: header
                .uid()
                .ok()
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0),
            gid: header
                .gid()
                .ok()
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0),
        });
        std::os::unix::fs::lchown(&target, Some(owner.uid), Some(owner.gid))
            .map_err(entry_err("chown"))?;
        if kind != EntryType::Symlink {
            let mode = header.mode().map_err(entry_err("read mode"))? & 0o7777;
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                .map_err(entry_err("chmod"))?;
        }
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                if let (Ok(key), value) = (ext.key(), ext.value_bytes()) {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        match xattr::set(&target, name, value) {
                            Ok(()) => report.xattrs += 1,
                            Err(_) => report.xattrs_skipped += 1,
                        }
                    }
                }
            }
        }
        let mtime = header.mtime().unwrap_or(0) as i64;
        if kind.is_dir() {
            dir_times.push((target, mtime));
        } else {
            set_times(&target, mtime, 0, mtime, 0)?;
        }
    }
    for (dir, mtime) in dir_times.into_iter().rev() {
        set_times(&dir, mtime, 0, mtime, 0)?;
    }
    report.archives += 1;
    Ok(())
}

/// An entry name as components, with `.` dropped and `..` clamped at the extraction root.
fn normalize(name: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p.to_string()),
        }
    }
    out
}

/// Creates missing directories from `root` down to `dir` (0755, root-owned, like
/// containerd's extraction does for parents absent from the archive).
fn mkdir_parents(dir: &Path, root: &Path) -> io::Result<()> {
    if dir == root || fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if parent.starts_with(root) {
            mkdir_parents(parent, root)?;
        }
    }
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            fs::remove_file(dir)?;
            fs::create_dir(dir)
        }
        Err(_) => {
            fs::create_dir(dir)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        }
    }
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
