//! Snapshot directory -> OCI layer tar: deterministic order, overlay whiteouts and opaque
//! directories turned into `.wh.` entries, hardlinks, xattrs, compression, digests computed while
//! streaming.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::dir::Type;
use nix::fcntl::OFlag;
use oci_spec::image::{Descriptor, Digest, MediaType};
use sha2::{Digest as _, Sha256};

use forge_cache::Store;

use crate::hash::HashingWriter;
use crate::pgzip::ParallelGzEncoder;
use crate::pipe::{pipelined, ChunkHasher, ChunkSink, ChunkWriter, Inline, ToStore};
use crate::prefetch::Prefetcher;
use crate::sys::{self, XattrOf};
use crate::tarfmt::{self, Header, Kind};
use crate::ExportError;

/// How a layer's tar stream is compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar (`application/vnd.oci.image.layer.v1.tar`).
    Uncompressed,
    /// gzip with a fixed header (no name, mtime 0), compressed in parallel in fixed 1 MiB chunks
    /// (pigz style): equal tars give equal blobs whatever the number of cores.
    #[default]
    Gzip,
    /// zstd (`application/vnd.oci.image.layer.v1.tar+zstd`).
    Zstd,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn media_type(self) -> MediaType {
        match self {
            Compression::Uncompressed => MediaType::ImageLayer,
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd => MediaType::ImageLayerZstd,
        }
    }
}

/// Options of [`write_layer`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerOptions {
    pub compression: Compression,
    /// Compression level; `None` is gzip 6 / zstd 3.
    pub level: Option<i32>,
    /// SOURCE_DATE_EPOCH: file mtimes later than this are clamped to it.
    pub source_date_epoch: Option<i64>,
}

/// What [`write_layer`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar (goes into the image config's rootfs.diff_ids).
    pub diff_id: Digest,
    /// sha256 of the blob as written (goes into the manifest).
    pub digest: Digest,
    /// Size of the blob as written.
    pub size: u64,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    pub media_type: MediaType,
}

impl LayerInfo {
    /// The manifest descriptor of this layer blob.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(self.media_type.clone(), self.size, self.digest.clone())
    }
}

/// The compressing stage of the pipeline.
enum Encoder<W: Write> {
    Plain(W),
    Gzip(ParallelGzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    fn new(inner: W, compression: Compression, level: Option<i32>) -> io::Result<Self> {
        Ok(match compression {
            Compression::Uncompressed => Encoder::Plain(inner),
            Compression::Gzip => {
                let level = level.unwrap_or(6).clamp(0, 9) as u32;
                Encoder::Gzip(ParallelGzEncoder::new(inner, level))
            }
            Compression::Zstd => Encoder::Zstd(zstd_encoder(inner, level.unwrap_or(3))?),
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(gz) => gz.finish(),
            Encoder::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(w) => w.write(buf),
            Encoder::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
        }
    }
}

/// zstd with worker threads. Always at least one worker: zstd's multi-threaded format does not
/// depend on the number of workers (a test holds it to that), but differs from its
/// single-threaded one, so every machine must take the same path for digests to match.
fn zstd_encoder<W: Write>(
    inner: W,
    level: i32,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut encoder = zstd::stream::write::Encoder::new(inner, level)?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    encoder.multithread(workers.max(1))?;
    Ok(encoder)
}

pub(crate) fn write_err(source: io::Error) -> ExportError {
    ExportError::Write {
        what: "layer".to_owned(),
        source,
    }
}

/// Writes the layer tar of `snapshot_dir` to `out` and returns its digests.
///
/// The directory is read in overlayfs upperdir format: a character device 0/0 is a whiteout
/// (`.wh.<name>`), a directory with `trusted.overlay.opaque=y` (or `user.overlay.opaque=y`) is
/// opaque (`<dir>/.wh..wh..opq` after it). A plain directory has neither and is written as it is.
/// Entries come depth first, each directory's entries sorted by name bytes, parents before
/// children. Sockets are skipped, as Docker does.
///
/// The tree is walked, read and written on this thread while a second one computes the diff_id,
/// a few MiB behind at most.
pub fn write_layer(
    snapshot_dir: &Path,
    out: impl Write,
    opts: &LayerOptions,
) -> Result<LayerInfo, ExportError> {
    let streamed = stream_layer(
        &[snapshot_dir],
        out,
        Sha256::new(),
        opts,
        Threads::Two,
        None,
    )?;
    let mut out = streamed.out;
    out.flush().map_err(write_err)?;
    let diff_id = crate::hash::sha256_digest(streamed.tar_hasher);
    Ok(LayerInfo {
        digest: streamed.digest.unwrap_or_else(|| diff_id.clone()),
        diff_id,
        size: streamed.size,
        uncompressed_size: streamed.tar_size,
        media_type: opts.compression.media_type(),
    })
}

/// Writes the layer tar of `snapshot_dir` (the bytes [`write_layer`] gives) into `store` as a
/// blob: staged, fsynced, renamed; if anything fails, nothing is published.
///
/// The tar is hashed once, by the store. Uncompressed, the blob is the tar: the walker fills the
/// store's own write buffers (file contents are read straight into them), and the store hashes
/// and writes each on threads of its own, past the page cache; its digest is also the diff_id.
/// Compressed, the store's writer hashes the compressed bytes as usual and a second thread
/// hashes the tar for the diff_id.
///
/// `cancel`, when given and raised, stops the walk at the next entry with
/// [`ExportError::Cancelled`].
pub fn write_layer_to_store(
    snapshot_dir: &Path,
    store: &Store,
    opts: &LayerOptions,
    cancel: Option<&AtomicBool>,
) -> Result<LayerInfo, ExportError> {
    write_stacked_layer_to_store(&[snapshot_dir], store, opts, cancel)
}

/// [`write_layer_to_store`] for a tree made of several directories laid over one another,
/// topmost first (a snapshot laid over another, `forge_cache::Store::snapshot_tree`): they are
/// merged as overlayfs merges lowerdirs. A name in a higher directory hides the same name below
/// it; a directory merges with the directories of its name below it, down to the first level
/// where the name is something else (or to an opaque directory). The entries written are those
/// of the merged tree, each described by the level it comes from; one directory gives exactly
/// what [`write_layer`] writes.
pub fn write_stacked_layer_to_store(
    tree: &[&Path],
    store: &Store,
    opts: &LayerOptions,
    cancel: Option<&AtomicBool>,
) -> Result<LayerInfo, ExportError> {
    let top = tree.first().copied().unwrap_or(Path::new(""));
    let store_err = |source| ExportError::StoreLayer {
        path: top.to_path_buf(),
        source,
    };
    // The build does not read its layers back: they go past the page cache.
    let mut writer = store.blob_writer_uncached().map_err(store_err)?;
    let media_type = opts.compression.media_type();
    if opts.compression == Compression::Uncompressed {
        let mut chunks = ChunkWriter::new(ToStore(&mut writer)).map_err(write_err)?;
        write_tar(tree, opts, cancel, &mut chunks)?;
        let (_, tar_size) = chunks.finish().map_err(write_err)?;
        let blob = writer.commit(None).map_err(store_err)?;
        return Ok(LayerInfo {
            diff_id: blob.digest.clone(),
            digest: blob.digest,
            size: blob.size,
            uncompressed_size: tar_size,
            media_type,
        });
    }
    let streamed = stream_layer(tree, writer, Sha256::new(), opts, Threads::Two, cancel)?;
    let blob = streamed
        .out
        .commit(streamed.digest.as_ref())
        .map_err(store_err)?;
    Ok(LayerInfo {
        diff_id: crate::hash::sha256_digest(streamed.tar_hasher),
        digest: blob.digest,
        size: blob.size,
        uncompressed_size: streamed.tar_size,
        media_type,
    })
}

/// How many threads a layer is written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Threads {
    /// Everything on one thread: the reference the two-thread writer is tested against.
    #[cfg_attr(not(test), allow(dead_code))]
    One,
    Two,
}

/// A layer stream's result before it becomes a [`LayerInfo`].
struct Streamed<W, H> {
    out: W,
    /// Has seen the whole tar.
    tar_hasher: H,
    /// sha256 of the compressed blob; `None` when uncompressed (the blob is the tar).
    digest: Option<Digest>,
    tar_size: u64,
    size: u64,
}

/// Streams the layer of `tree` into `out`, the tar through `tar_hasher`.
fn stream_layer<W: Write, H: ChunkHasher>(
    tree: &[&Path],
    out: W,
    tar_hasher: H,
    opts: &LayerOptions,
    threads: Threads,
    cancel: Option<&AtomicBool>,
) -> Result<Streamed<W, H>, ExportError> {
    let blob_hasher = match opts.compression {
        Compression::Uncompressed => HashingWriter::counting(out),
        _ => HashingWriter::new(out),
    };
    let encoder = Encoder::new(blob_hasher, opts.compression, opts.level).map_err(write_err)?;
    let tar_out = HashingWriter::counting(encoder);
    let (tar_out, tar_hasher) = match threads {
        Threads::Two => {
            let ((), tar_out, tar_hasher) = pipelined(tar_out, tar_hasher, |chunks| {
                write_tar(tree, opts, cancel, chunks)
            })?;
            (tar_out, tar_hasher)
        }
        Threads::One => {
            let mut chunks = ChunkWriter::new(Inline {
                out: tar_out,
                hasher: tar_hasher,
            })
            .map_err(write_err)?;
            write_tar(tree, opts, cancel, &mut chunks)?;
            let (sink, _) = chunks.finish().map_err(write_err)?;
            (sink.out, sink.hasher)
        }
    };
    let (encoder, _, tar_size) = tar_out.finish();
    let blob_hasher = encoder.finish().map_err(write_err)?;
    let (out, digest, size) = blob_hasher.finish();
    Ok(Streamed {
        out,
        tar_hasher,
        digest,
        tar_size,
        size,
    })
}

/// The whole tar stream of `tree` (directories laid over one another, topmost first): its
/// entries, then the end-of-archive marker.
fn write_tar<S: ChunkSink>(
    tree: &[&Path],
    opts: &LayerOptions,
    cancel: Option<&AtomicBool>,
    chunks: &mut ChunkWriter<S>,
) -> Result<(), ExportError> {
    let top = tree.first().copied().unwrap_or(Path::new(""));
    let mut walker = Walker {
        opts,
        cancel,
        root: top,
        hardlinks: HashMap::new(),
        prefetch: Prefetcher::start(),
    };
    let levels = tree
        .iter()
        .map(|dir| {
            let file = File::open(dir).map_err(|source| ExportError::ReadTree {
                path: dir.to_path_buf(),
                source,
            })?;
            Ok((file, dir.to_path_buf()))
        })
        .collect::<Result<Vec<_>, ExportError>>()?;
    // No directory at all is an empty tree: the end marker alone.
    if !levels.is_empty() {
        walker.walk(&levels, b"", chunks)?;
    }
    tarfmt::write_end(chunks).map_err(write_err)
}

/// One directory of the tree in each level that has it, topmost first: the open directory and
/// its path.
type Levels = [(File, PathBuf)];

/// An entry of a (merged) directory: its name and type, the level it comes from, and the
/// lower levels whose directories of the same name merge with it (for a directory).
struct Entry {
    name: Vec<u8>,
    kind: Option<Type>,
    level: usize,
    merges: Vec<usize>,
}

/// The entries of one directory across `levels`, sorted by name bytes. One level is its
/// listing as it is.
fn merged_listing(levels: &Levels) -> io::Result<Vec<Entry>> {
    if let [(dir, _)] = levels {
        return Ok(sys::list_dir(dir)?
            .into_iter()
            .map(|(name, kind)| Entry {
                name,
                kind,
                level: 0,
                merges: Vec::new(),
            })
            .collect());
    }
    let mut all = Vec::new();
    for (level, (dir, _)) in levels.iter().enumerate() {
        for (name, kind) in sys::list_dir(dir)? {
            let kind = match kind {
                Some(kind) => Some(kind),
                None => kind_at(dir, &name)?,
            };
            all.push((name, kind, level));
        }
    }
    // By name, then level: each name's first occurrence is the one that shows.
    all.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)));
    let mut entries: Vec<Entry> = Vec::new();
    let mut merging = false;
    for (name, kind, level) in all {
        match entries.last_mut() {
            Some(top) if top.name == name => {
                // Below a directory, directories of its name merge until something else
                // hides the rest.
                merging &= kind == Some(Type::Directory);
                if merging {
                    top.merges.push(level);
                }
            }
            _ => {
                merging = kind == Some(Type::Directory);
                entries.push(Entry {
                    name,
                    kind,
                    level,
                    merges: Vec::new(),
                });
            }
        }
    }
    Ok(entries)
}

/// The type of `name` in `dir`, for a filesystem whose listings do not say.
fn kind_at(dir: &File, name: &[u8]) -> io::Result<Option<Type>> {
    let name = std::ffi::CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
    let st = nix::sys::stat::fstatat(
        Some(std::os::fd::AsRawFd::as_raw_fd(dir)),
        name.as_c_str(),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    Ok(Some(match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Type::Directory,
        libc::S_IFREG => Type::File,
        libc::S_IFLNK => Type::Symlink,
        libc::S_IFCHR => Type::CharacterDevice,
        libc::S_IFBLK => Type::BlockDevice,
        libc::S_IFIFO => Type::Fifo,
        _ => Type::Socket,
    }))
}

struct Walker<'a> {
    opts: &'a LayerOptions,
    cancel: Option<&'a AtomicBool>,
    /// The tree being written (named by a cancelled export).
    root: &'a Path,
    /// (dev, ino) of multiply-linked files -> the tar path of their first occurrence.
    hardlinks: HashMap<(u64, u64), Vec<u8>>,
    prefetch: Prefetcher,
}

const OPAQUE_XATTRS: [&[u8]; 2] = [b"trusted.overlay.opaque", b"user.overlay.opaque"];

/// Attributes that describe the build host rather than the file: overlayfs bookkeeping, and the
/// host's SELinux label (it would make layers differ between hosts).
fn is_host_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.")
        || name.starts_with(b"user.overlay.")
        || name == b"security.selinux"
}

impl Walker<'_> {
    fn mtime(&self, meta: &fs::Metadata) -> i64 {
        match self.opts.source_date_epoch {
            Some(epoch) => meta.mtime().min(epoch),
            None => meta.mtime(),
        }
    }

    /// Writes the entries of one directory, open in each of `levels` that has it (named `rel`
    /// in the tar). Entries are opened relative to their directory: a file is looked up by its
    /// name alone, not by a path walked from `/`, and its metadata and xattrs come from the
    /// open descriptor.
    fn walk<S: ChunkSink>(
        &mut self,
        levels: &Levels,
        rel: &[u8],
        sink: &mut ChunkWriter<S>,
    ) -> Result<(), ExportError> {
        let read_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ExportError::ReadTree { path, source }
        };
        let entries = merged_listing(levels).map_err(read_err(&levels[0].1))?;
        for (level, (dir, _)) in levels.iter().enumerate() {
            self.prefetch.directory(
                dir,
                entries
                    .iter()
                    .filter(|e| e.level == level && e.kind == Some(Type::File))
                    .map(|e| e.name.clone())
                    .collect(),
            );
        }
        for Entry {
            name,
            kind,
            level,
            merges,
        } in entries
        {
            let (dir, dir_path) = &levels[level];
            if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(ExportError::Cancelled {
                    path: self.root.to_path_buf(),
                });
            }
            if kind == Some(Type::File) {
                self.prefetch.read_one();
            }
            let path = dir_path.join(OsStr::from_bytes(&name));
            // Files and directories are opened (never through a symlink) and described by the
            // descriptor; anything else, or an entry that could not be opened, by its path.
            let flags = match kind {
                Some(Type::File) => Some(OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK),
                Some(Type::Directory) => {
                    Some(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW)
                }
                _ => None,
            };
            let opened = flags
                .and_then(|flags| sys::openat(dir.as_fd(), &name, flags).ok())
                .map(File::from);
            let meta = match &opened {
                Some(file) => file.metadata(),
                None => fs::symlink_metadata(&path),
            }
            .map_err(read_err(&path))?;
            let mut tar_path = rel.to_vec();
            tar_path.extend_from_slice(&name);
            let ft = meta.file_type();
            if ft.is_char_device() && meta.rdev() == 0 {
                let mut wh = rel.to_vec();
                wh.extend_from_slice(b".wh.");
                wh.extend_from_slice(&name);
                let mut h = Header::file(&wh, 0);
                h.mode = meta.mode() & 0o7777;
                h.mtime = self.mtime(&meta);
                tarfmt::write_header(sink, &h).map_err(write_err)?;
                continue;
            }
            if ft.is_socket() {
                continue;
            }
            let xattrs = match &opened {
                Some(file) => sys::list_xattrs(XattrOf::Fd(file.as_fd())),
                None => {
                    sys::list_xattrs(XattrOf::Path(&sys::cpath(&path).map_err(read_err(&path))?))
                }
            }
            .map_err(read_err(&path))?;
            let opaque = ft.is_dir()
                && xattrs
                    .iter()
                    .any(|(k, v)| OPAQUE_XATTRS.contains(&k.as_slice()) && v == b"y");
            // An overlay "xwhiteout" (regular file marked by xattr) is a whiteout too.
            if ft.is_file()
                && xattrs
                    .iter()
                    .any(|(k, _)| k.ends_with(b".overlay.whiteout"))
                && meta.len() == 0
            {
                let mut wh = rel.to_vec();
                wh.extend_from_slice(b".wh.");
                wh.extend_from_slice(&name);
                let mut h = Header::file(&wh, 0);
                h.mtime = self.mtime(&meta);
                tarfmt::write_header(sink, &h).map_err(write_err)?;
                continue;
            }
            let xattrs: Vec<_> = xattrs
                .into_iter()
                .filter(|(k, _)| !is_host_xattr(k))
                .collect();
            let mut h = Header {
                path: b"",
                link: b"",
                kind: Kind::File,
                mode: meta.mode() & 0o7777,
                uid: u64::from(meta.uid()),
                gid: u64::from(meta.gid()),
                size: 0,
                mtime: self.mtime(&meta),
                dev_major: 0,
                dev_minor: 0,
                xattrs: &xattrs,
            };
            if ft.is_dir() {
                let mut dir_path = tar_path.clone();
                dir_path.push(b'/');
                h.kind = Kind::Dir;
                h.path = &dir_path;
                tarfmt::write_header(sink, &h).map_err(write_err)?;
                if opaque {
                    let mut opq = dir_path.clone();
                    opq.extend_from_slice(b".wh..wh..opq");
                    let mut oh = Header::file(&opq, 0);
                    oh.mtime = h.mtime;
                    tarfmt::write_header(sink, &oh).map_err(write_err)?;
                }
                let sub = match opened {
                    Some(file) => file,
                    None => File::open(&path).map_err(read_err(&path))?,
                };
                let mut sub_levels = vec![(sub, path)];
                // An opaque directory hides what is below it in lower levels too.
                for lower in merges.into_iter().filter(|_| !opaque) {
                    let (lower_dir, lower_path) = &levels[lower];
                    let path = lower_path.join(OsStr::from_bytes(&name));
                    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
                    let file =
                        sys::openat(lower_dir.as_fd(), &name, flags).map_err(read_err(&path))?;
                    sub_levels.push((File::from(file), path));
                }
                self.walk(&sub_levels, &dir_path, sink)?;
                continue;
            }
            let link_target;
            h.path = &tar_path;
            if ft.is_file() {
                if meta.nlink() > 1 {
                    if let Some(first) = self.hardlinks.get(&(meta.dev(), meta.ino())) {
                        link_target = first.clone();
                        h.kind = Kind::Hardlink;
                        h.link = &link_target;
                        tarfmt::write_header(sink, &h).map_err(write_err)?;
                        continue;
                    }
                    self.hardlinks
                        .insert((meta.dev(), meta.ino()), tar_path.clone());
                }
                h.size = meta.len();
                tarfmt::write_header(sink, &h).map_err(write_err)?;
                let file = match opened {
                    Some(file) => file,
                    None => File::open(&path).map_err(read_err(&path))?,
                };
                let cached = sink.write_file_data(&file, meta.len()).map_err(|source| {
                    if source.kind() == io::ErrorKind::UnexpectedEof {
                        ExportError::ReadTree {
                            path: path.clone(),
                            source,
                        }
                    } else {
                        write_err(source)
                    }
                })?;
                if !cached {
                    self.prefetch.missed();
                }
                continue;
            }
            if ft.is_symlink() {
                link_target = fs::read_link(&path)
                    .map_err(read_err(&path))?
                    .as_os_str()
                    .as_bytes()
                    .to_vec();
                h.kind = Kind::Symlink;
                h.link = &link_target;
            } else if ft.is_char_device() || ft.is_block_device() {
                h.kind = if ft.is_char_device() {
                    Kind::Char
                } else {
                    Kind::Block
                };
                h.dev_major = nix::sys::stat::major(meta.rdev());
                h.dev_minor = nix::sys::stat::minor(meta.rdev());
            } else if ft.is_fifo() {
                h.kind = Kind::Fifo;
            }
            tarfmt::write_header(sink, &h).map_err(write_err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write;
    use std::path::Path;

    use super::*;

    /// Hardlinks, a whiteout, an opaque directory, xattrs, and files that straddle chunk borders.
    fn tricky_tree(root: &Path) {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root: it makes a whiteout device and sets trusted.* xattrs"
        );
        fs::create_dir_all(root.join("a/b")).unwrap();
        for (i, len) in [0usize, 511, 512, 513, 1 << 20, (1 << 20) - 700, 2_500_123]
            .into_iter()
            .enumerate()
        {
            let bytes: Vec<u8> = (0..len).map(|j| (j * 31 + i) as u8).collect();
            fs::write(root.join(format!("a/f{i}")), bytes).unwrap();
        }
        fs::hard_link(root.join("a/f6"), root.join("a/b/hard")).unwrap();
        fs::hard_link(root.join("a/f1"), root.join("z-hard")).unwrap();
        nix::sys::stat::mknod(
            &root.join("a/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        fs::create_dir(root.join("opq")).unwrap();
        let cpath = |p: &str| sys::cpath(&root.join(p)).unwrap();
        sys::set_xattr_path(&cpath("opq"), b"trusted.overlay.opaque", b"y").unwrap();
        sys::set_xattr_path(&cpath("a/f2"), b"user.note", b"x\0y").unwrap();
        std::os::unix::fs::symlink("a/f3", root.join("link")).unwrap();
    }

    #[test]
    fn two_threads_give_the_bytes_and_digests_of_one() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        tricky_tree(&tree);
        for compression in [
            Compression::Uncompressed,
            Compression::Gzip,
            Compression::Zstd,
        ] {
            let opts = LayerOptions {
                compression,
                ..LayerOptions::default()
            };
            let one = stream_layer(
                &[&tree],
                Vec::new(),
                Sha256::new(),
                &opts,
                Threads::One,
                None,
            )
            .unwrap();
            let two = stream_layer(
                &[&tree],
                Vec::new(),
                Sha256::new(),
                &opts,
                Threads::Two,
                None,
            )
            .unwrap();
            assert!(one.out == two.out, "{compression:?}: the blobs differ");
            assert_eq!(one.tar_size, two.tar_size);
            assert_eq!(one.digest, two.digest);
            let (one_id, two_id) = (
                crate::hash::sha256_digest(one.tar_hasher),
                crate::hash::sha256_digest(two.tar_hasher),
            );
            assert_eq!(one_id, two_id, "{compression:?}: diff_ids differ");
            // Both are right: the public writer's blob, hashed afresh, gives the same ids.
            let mut blob = Vec::new();
            let info = write_layer(&tree, &mut blob, &opts).unwrap();
            assert!(blob == one.out);
            assert_eq!(info.diff_id, one_id);
            assert_eq!(info.digest, crate::hash::digest_of(&blob));

            let store = forge_cache::Store::open(tmp.path().join("store")).unwrap();
            let stored = write_layer_to_store(&tree, &store, &opts, None).unwrap();
            assert_eq!(stored, info, "{compression:?}: the store's layer differs");
            let file = fs::read(store.blob_path(&stored.digest).unwrap()).unwrap();
            assert!(file == blob, "{compression:?}: the stored blob differs");
        }
        let tar = stream_layer(
            &[&tree],
            Vec::new(),
            Sha256::new(),
            &LayerOptions {
                compression: Compression::Uncompressed,
                ..LayerOptions::default()
            },
            Threads::Two,
            None,
        )
        .unwrap()
        .out;
        let mut names = Vec::new();
        let mut links = 0;
        for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
            let entry = entry.unwrap();
            links += usize::from(entry.header().entry_type() == tar::EntryType::Link);
            names.push(String::from_utf8_lossy(&entry.path_bytes()).into_owned());
        }
        for expected in ["a/.wh.gone", "opq/.wh..wh..opq", "a/b/hard", "z-hard"] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
        assert_eq!(links, 2, "both hardlinks are link entries");
    }

    /// Thousands of small directories (node_modules-like): every file is in the layer, and the
    /// read-ahead's queue of open directories stays bounded whatever its pace.
    #[test]
    fn a_tree_of_many_small_directories_exports_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        for i in 0..3000 {
            let dir = tree.join(format!("m{:02}/p{i:04}", i % 37));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("index.js"), format!("module {i}\n")).unwrap();
        }
        let store = forge_cache::Store::open(tmp.path().join("store")).unwrap();
        let opts = LayerOptions {
            compression: Compression::Uncompressed,
            ..LayerOptions::default()
        };
        let info = write_layer_to_store(&tree, &store, &opts, None).unwrap();
        let blob = fs::read(store.blob_path(&info.digest).unwrap()).unwrap();
        let mut files = 0;
        for entry in tar::Archive::new(&blob[..]).entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.header().entry_type().is_file() {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
                let path = entry.path().unwrap().display().to_string();
                let i: usize = path[5..9].parse().unwrap();
                assert_eq!(text, format!("module {i}\n"), "{path}");
                files += 1;
            }
        }
        assert_eq!(files, 3000);
    }

    #[test]
    fn a_cancelled_export_publishes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        tricky_tree(&tree);
        let store = forge_cache::Store::open(tmp.path().join("store")).unwrap();
        let opts = LayerOptions {
            compression: Compression::Uncompressed,
            ..LayerOptions::default()
        };
        let raised = AtomicBool::new(true);
        let err = write_layer_to_store(&tree, &store, &opts, Some(&raised)).unwrap_err();
        assert!(
            matches!(&err, ExportError::Cancelled { path } if path == &tree),
            "{err:?}"
        );
        assert_eq!(store.list_blobs().unwrap(), Vec::new());
        // A flag that stays down changes nothing.
        let down = AtomicBool::new(false);
        let info = write_layer_to_store(&tree, &store, &opts, Some(&down)).unwrap();
        assert_eq!(store.list_blobs().unwrap(), vec![info.digest]);
    }

    /// A tree of two directories laid over one another gives, byte for byte, the layer of what
    /// overlayfs itself shows for them: names hidden and shown, directories merged (metadata
    /// from the top), a file hiding a directory, an opaque directory, hardlinks below.
    #[test]
    fn a_stacked_tree_exports_as_overlayfs_merges_it() {
        use nix::mount::{mount, umount, MsFlags};
        use std::os::unix::fs::PermissionsExt;
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root: it mounts an overlay to compare with"
        );
        let tmp = tempfile::tempdir().unwrap();
        let (upper, lower, merged) = (
            tmp.path().join("upper"),
            tmp.path().join("lower"),
            tmp.path().join("merged"),
        );
        for dir in [
            "lower/a", "lower/c", "lower/d", "lower/o", "upper/a", "upper/e", "upper/o",
        ] {
            fs::create_dir_all(tmp.path().join(dir)).unwrap();
        }
        for (path, text) in [
            ("lower/a/keep", "kept below"),
            ("lower/a/over", "old"),
            ("lower/b", "only below"),
            ("lower/c/x", "hidden by the file c"),
            ("lower/d/y", "a directory only below"),
            ("lower/o/z", "hidden by the opaque o"),
            ("lower/hard1", "linked twice"),
            ("upper/a/over", "new"),
            ("upper/a/new", "only above"),
            ("upper/c", "a file over a directory"),
        ] {
            fs::write(tmp.path().join(path), text).unwrap();
        }
        fs::hard_link(lower.join("hard1"), lower.join("hard2")).unwrap();
        fs::set_permissions(lower.join("a"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(upper.join("a"), fs::Permissions::from_mode(0o751)).unwrap();
        let cpath = |p: &Path| sys::cpath(p).unwrap();
        sys::set_xattr_path(&cpath(&upper.join("o")), b"trusted.overlay.opaque", b"y").unwrap();
        let opts = LayerOptions {
            compression: Compression::Uncompressed,
            ..LayerOptions::default()
        };
        let store = forge_cache::Store::open(tmp.path().join("store")).unwrap();
        let stacked = write_stacked_layer_to_store(&[&upper, &lower], &store, &opts, None).unwrap();

        fs::create_dir(&merged).unwrap();
        let options = format!("lowerdir={}:{}", upper.display(), lower.display());
        mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            MsFlags::MS_RDONLY,
            Some(options.as_str()),
        )
        .unwrap();
        let flat = write_layer_to_store(&merged, &store, &opts, None);
        umount(&merged).unwrap();
        let flat = flat.unwrap();
        // Each entry as the tar has it: path, type, mode, mtime, link target and content.
        type Row = (String, u8, u32, u64, String, Vec<u8>);
        let entries = |info: &LayerInfo| -> Vec<Row> {
            let blob = fs::read(store.blob_path(&info.digest).unwrap()).unwrap();
            let mut rows = Vec::new();
            for entry in tar::Archive::new(&blob[..]).entries().unwrap() {
                let mut entry = entry.unwrap();
                let h = entry.header().clone();
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
                rows.push((
                    String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                    h.entry_type().as_byte(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                    String::from_utf8_lossy(&entry.link_name_bytes().unwrap_or_default())
                        .into_owned(),
                    data,
                ));
            }
            rows
        };
        let stacked_rows = entries(&stacked);
        let names: Vec<&str> = stacked_rows.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "a/",
                "a/keep",
                "a/new",
                "a/over",
                "b",
                "c",
                "d/",
                "d/y",
                "e/",
                "hard1",
                "hard2",
                "o/",
                "o/.wh..wh..opq"
            ]
        );
        assert_eq!(stacked_rows[3].5, b"new", "the upper a/over shows");
        assert_eq!(
            stacked_rows[0].2, 0o751,
            "a merged directory has the upper's mode"
        );
        assert_eq!(stacked_rows[10].4, "hard1", "hard2 is a link to hard1");
        // The overlay mount shows the opaque directory without its marker; past that, every
        // entry is the same.
        let overlay_rows = entries(&flat);
        let without_marker: Vec<Row> = stacked_rows
            .into_iter()
            .filter(|r| r.0 != "o/.wh..wh..opq")
            .collect();
        assert_eq!(without_marker, overlay_rows);
        // No directory at all: an empty layer, not a panic.
        let empty = write_stacked_layer_to_store(&[], &store, &opts, None).unwrap();
        assert_eq!(
            empty.uncompressed_size, 1024,
            "just the end-of-archive blocks"
        );
        let one_level = write_stacked_layer_to_store(&[&lower], &store, &opts, None).unwrap();
        assert_eq!(
            one_level,
            write_layer_to_store(&lower, &store, &opts, None).unwrap()
        );
    }

    #[test]
    fn zstd_bytes_do_not_depend_on_the_number_of_workers() {
        let data: Vec<u8> = (0..24u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 & 0x3f)
            .collect();
        let compress = |workers: u32| {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            e.multithread(workers).unwrap();
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let one = compress(1);
        assert!(
            one == compress(2),
            "1 and 2 zstd workers gave different bytes"
        );
        assert!(
            one == compress(5),
            "1 and 5 zstd workers gave different bytes"
        );
    }
}
