//! Blobs by sha256 digest in `oci/blobs/sha256/<hex>`: written through a staging file that is
//! hashed as it is written, checked against the expected digest, fsynced and renamed into place;
//! read back only after their bytes are hashed again.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::{Digest as _, Sha256};

use crate::error::{Result, StoreError};
use crate::fsutil;
use crate::store::{LeaseItem, Store};
use crate::uncached::{Piece, UncachedWriter};

/// A blob that is in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its sha256 digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
}

/// Streams a new blob into the store (e.g. a layer being compressed): write to it (or fill its
/// pieces in place, [`BlobWriter::take_piece`]), then [`BlobWriter::commit`]. Dropped without
/// commit, it leaves nothing behind.
///
/// Every byte is hashed by the store as it is written: the digest a blob is published under is
/// always the store's own, whoever produced the bytes. Through the page cache
/// ([`Store::blob_writer`]) writeback starts every few MiB, so the fsync of
/// [`BlobWriter::commit`] waits only for the tail of a big blob; past it
/// ([`Store::blob_writer_uncached`]) whole pieces are hashed and written on threads of their own.
#[derive(Debug)]
pub struct BlobWriter<'s> {
    store: &'s Store,
    path: PathBuf,
    out: Option<Out>,
    /// The hash of what went through the page cache; an uncached writer hashes on its own
    /// thread instead (`None` here).
    hasher: Option<Sha256>,
    size: u64,
}

/// Where a blob's bytes go.
enum Out {
    /// Through the page cache, with writeback started as it grows.
    Cached {
        file: BufWriter<File>,
        /// Bytes of the file whose writeback was started.
        writeback_started: u64,
    },
    /// Past it ([`Store::blob_writer_uncached`]).
    Uncached(Box<UncachedWriter>),
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Out::Cached { .. } => "Cached",
            Out::Uncached(_) => "Uncached",
        })
    }
}

/// Writes at least this long skip the writer's buffer (when it is empty): copying them into it
/// first would only add a memcpy. The layer writer hands over 1 MiB chunks.
const DIRECT_WRITE: usize = 64 * 1024;

/// Writeback is started after each this many bytes reach the file.
const WRITEBACK_STEP: u64 = 8 << 20;

impl Out {
    fn write(&mut self, buf: &[u8], size: u64) -> io::Result<usize> {
        let (file, writeback_started) = match self {
            Out::Uncached(out) => return out.write(buf),
            Out::Cached {
                file,
                writeback_started,
            } => (file, writeback_started),
        };
        let n = if buf.len() >= DIRECT_WRITE && file.buffer().is_empty() {
            file.get_mut().write(buf)?
        } else {
            file.write(buf)?
        };
        let on_file = size + n as u64 - file.buffer().len() as u64;
        if on_file - *writeback_started >= WRITEBACK_STEP {
            start_writeback(file.get_ref(), *writeback_started, on_file);
            *writeback_started = on_file;
        }
        Ok(n)
    }

    /// Writes out what is buffered and returns the file, not yet fsynced, with the hash and
    /// length of its bytes when this side hashed them.
    fn finish(self) -> io::Result<(File, Option<(Sha256, u64)>)> {
        match self {
            Out::Cached { file, .. } => file
                .into_inner()
                .map(|file| (file, None))
                .map_err(|e| e.into_error()),
            Out::Uncached(out) => out
                .finish()
                .map(|(file, len, sha)| (file, Some((sha, len)))),
        }
    }
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = self.out.as_mut().expect("open until commit");
        let n = out.write(buf, self.size)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut().expect("open until commit") {
            Out::Cached { file, .. } => file.flush(),
            // Its pieces are written as they fill; the tail at commit.
            Out::Uncached(_) => Ok(()),
        }
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        if self.out.is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl<'s> BlobWriter<'s> {
    /// A [`Piece`] to fill with the blob's next bytes in place, then hand back with
    /// [`BlobWriter::put_piece`]: a producer that reads its bytes from files (the layer
    /// exporter) reads them straight into the buffer the disk write is made from.
    pub fn take_piece(&mut self) -> io::Result<Piece> {
        match self.out.as_mut().expect("open until commit") {
            Out::Uncached(out) => out.take(),
            Out::Cached { .. } => Ok(Piece::new()),
        }
    }

    /// The blob's next `len` bytes are the first `len` of `piece` (a whole piece, except for
    /// the last). They are hashed by the store as any other bytes.
    pub fn put_piece(&mut self, mut piece: Piece, len: usize) -> io::Result<()> {
        match self.out.as_mut().expect("open until commit") {
            Out::Uncached(out) => out.put(piece, len)?,
            Out::Cached { .. } => self.write_all(&piece.as_mut()[..len])?,
        }
        if matches!(self.out, Some(Out::Uncached(_))) {
            self.size += len as u64;
        }
        Ok(())
    }

    /// Finishes the blob: checks it against `expected` (digest and size) when given, fsyncs it,
    /// and publishes it under its digest. Returns its digest and size.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<BlobInfo> {
        let out = self.out.take().expect("open until commit");
        let refuse = |path: &Path, err: StoreError| {
            let _ = fs::remove_file(path);
            Err(err)
        };
        let (file, hashed) = match out.finish() {
            Ok(done) => done,
            Err(e) => return refuse(&self.path, StoreError::io("write", &self.path)(e)),
        };
        let (hasher, hashed) = match (hashed, self.hasher.take()) {
            (Some(hashed), _) => hashed,
            (None, Some(hasher)) => (hasher, self.size),
            (None, None) => unreachable!("a cached blob writer hashes as it writes"),
        };
        let hex = hex::encode(hasher.finalize());
        let digest = sha256_digest(&hex);
        if hashed != self.size {
            return refuse(
                &self.path,
                StoreError::SizeMismatch {
                    digest: digest.to_string(),
                    expected: self.size,
                    actual: hashed,
                },
            );
        }
        if let Some(expected) = expected {
            if expected != &digest {
                return refuse(
                    &self.path,
                    StoreError::DigestMismatch {
                        expected: expected.to_string(),
                        actual: digest.to_string(),
                    },
                );
            }
        }
        if let Err(e) = file.sync_all() {
            return refuse(&self.path, StoreError::io("fsync", &self.path)(e));
        }
        let store = self.store;
        let target = store.blob_path(&digest)?;
        let _gc = store.gc_shared()?;
        {
            let _entry = store.entry_lock(&format!("blob-{hex}"))?;
            // Renaming over an existing blob is fine: same digest, and a verified copy replaces a
            // possibly damaged one.
            fsutil::rename(&self.path, &target)?;
        }
        fsutil::fsync_dir(target.parent().expect("blob paths have a parent"))?;
        store.pin(LeaseItem::Blob(digest.clone()))?;
        Ok(BlobInfo {
            digest,
            size: self.size,
        })
    }
}

/// Asks the kernel to start writing `from..to` of `file` to disk now, without waiting for it
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so a big blob's pages go out while the rest is being
/// produced and the fsync at commit has little left to do. Only a head start: durability still
/// comes from that fsync, which also reports any I/O error, so a failure here is ignored.
fn start_writeback(file: &File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(from),
        libc::off64_t::try_from(to - from),
    ) else {
        return;
    };
    // SAFETY: the descriptor is open (borrowed from `file` for the call); sync_file_range reads
    // no memory of ours.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

pub(crate) fn sha256_digest(hex: &str) -> Digest {
    Digest::from_str(&format!("sha256:{hex}")).expect("64 hex digits make a valid sha256 digest")
}

fn sha256_hex(digest: &Digest) -> Result<&str> {
    match digest.algorithm() {
        DigestAlgorithm::Sha256 => Ok(digest.digest()),
        _ => Err(StoreError::UnsupportedDigest {
            digest: digest.to_string(),
        }),
    }
}

/// sha256 of a file's bytes, as hex.
pub(crate) fn hash_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

impl Store {
    /// Starts a new blob to be streamed in.
    pub fn blob_writer(&self) -> Result<BlobWriter<'_>> {
        let path = self.staging.join(fsutil::unique_name("blob"));
        let file = File::create(&path).map_err(StoreError::io("create", &path))?;
        Ok(BlobWriter {
            store: self,
            path,
            out: Some(Out::Cached {
                file: BufWriter::with_capacity(1 << 20, file),
                writeback_started: 0,
            }),
            hasher: Some(Sha256::new()),
            size: 0,
        })
    }

    /// Starts a new blob that is written past the page cache (see the `uncached` module): for a
    /// big blob this process will not read back, such as a layer the build just exported. The
    /// bytes, the hashing and the publishing are those of [`Store::blob_writer`].
    pub fn blob_writer_uncached(&self) -> Result<BlobWriter<'_>> {
        let mut writer = self.blob_writer()?;
        if let Some(Out::Cached { file, .. }) = writer.out.take() {
            let file = file
                .into_inner()
                .map_err(|e| StoreError::io("create", &writer.path)(e.into_error()))?;
            writer.out = Some(Out::Uncached(Box::new(UncachedWriter::new(file))));
            // It hashes on a thread of its own.
            writer.hasher = None;
        }
        Ok(writer)
    }

    /// Copies a blob in from `reader`, checking it against `expected` when given (a blob pulled
    /// from a registry is always checked: pass its descriptor's digest).
    pub fn put_blob_from_reader(
        &self,
        mut reader: impl Read,
        expected: Option<&Digest>,
    ) -> Result<BlobInfo> {
        let mut w = self.blob_writer()?;
        let path = w.path.clone();
        io::copy(&mut reader, &mut w).map_err(StoreError::io("write blob", path))?;
        w.commit(expected)
    }

    /// Stores a blob held in memory (a manifest, a config).
    pub fn put_blob_bytes(&self, bytes: &[u8]) -> Result<BlobInfo> {
        let mut w = self.blob_writer()?;
        let path = w.path.clone();
        w.write_all(bytes)
            .map_err(StoreError::io("write blob", path))?;
        w.commit(None)
    }

    /// Where a blob lives (or would live); only sha256 digests are supported.
    pub fn blob_path(&self, digest: &Digest) -> Result<PathBuf> {
        let hex = sha256_hex(digest)?;
        Ok(self.oci_dir().join("blobs/sha256").join(hex))
    }

    /// Whether the blob is present (not whether its bytes are intact: see [`Store::verify_blob`]).
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// The size of a present blob.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let path = self.blob_path(digest)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::BlobNotFound {
                digest: digest.to_string(),
            }),
            Err(e) => Err(StoreError::io("stat", path)(e)),
        }
    }

    /// Hashes a blob's bytes; a blob that no longer matches its digest is removed and reported
    /// as [`StoreError::CorruptBlob`], so the caller refetches or rebuilds it.
    pub fn verify_blob(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest)?;
        let actual = match hash_file(&path) {
            Ok(h) => h,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::BlobNotFound {
                    digest: digest.to_string(),
                })
            }
            Err(e) => return Err(StoreError::io("read blob", path)(e)),
        };
        if actual == sha256_hex(digest)? {
            return Ok(());
        }
        self.remove_corrupt(digest, &path)?;
        Err(StoreError::CorruptBlob {
            digest: digest.to_string(),
            actual: format!("sha256:{actual}"),
            path,
        })
    }

    /// Opens a blob for reading after checking its bytes (see [`Store::verify_blob`]); the file is
    /// positioned at its start. It is also pinned by this store's session lease.
    pub fn open_blob_verified(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest)?;
        {
            let _gc = self.gc_shared()?;
            if !path.is_file() {
                return Err(StoreError::BlobNotFound {
                    digest: digest.to_string(),
                });
            }
            self.pin(LeaseItem::Blob(digest.clone()))?;
        }
        // Hash the very file we hand out, so a swap between check and open cannot slip through.
        let mut file = File::open(&path).map_err(StoreError::io("open blob", &path))?;
        let mut h = Sha256::new();
        io::copy(&mut file, &mut HashWriter(&mut h)).map_err(StoreError::io("read blob", &path))?;
        let actual = hex::encode(h.finalize());
        if actual != sha256_hex(digest)? {
            drop(file);
            self.remove_corrupt(digest, &path)?;
            return Err(StoreError::CorruptBlob {
                digest: digest.to_string(),
                actual: format!("sha256:{actual}"),
                path,
            });
        }
        file.rewind().map_err(StoreError::io("seek blob", &path))?;
        Ok(file)
    }

    /// Reads a whole (small) blob after checking it: manifests, configs, indexes.
    pub fn read_blob_verified(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut f = self.open_blob_verified(digest)?;
        let path = self.blob_path(digest)?;
        let mut out = Vec::new();
        f.read_to_end(&mut out)
            .map_err(StoreError::io("read blob", path))?;
        Ok(out)
    }

    /// Removes a damaged blob, unless a good copy replaced it meanwhile (checked under its lock).
    fn remove_corrupt(&self, digest: &Digest, path: &Path) -> Result<()> {
        let hex = sha256_hex(digest)?;
        let _gc = self.gc_shared()?;
        let _entry = self.entry_lock(&format!("blob-{hex}"))?;
        match hash_file(path) {
            Ok(h) if h == hex => Ok(()),
            Ok(_) => fsutil::remove_any(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("read blob", path)(e)),
        }
    }

    /// Every blob digest in the store.
    pub fn list_blobs(&self) -> Result<Vec<Digest>> {
        let dir = self.oci_dir().join("blobs/sha256");
        Ok(crate::store::read_dir_names(&dir)?
            .into_iter()
            .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|n| sha256_digest(&n))
            .collect())
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
