//! Where pulled blobs go and where pushed blobs come from. The client only knows these traits;
//! the store implements them, and `OciDir` is a plain OCI-layout directory that does too.
//!
//! A sink stages every blob and publishes it only after its sha256 checks out, so a pull killed
//! at any instant leaves nothing corrupt; a staged blob left behind by a killed pull is resumed
//! (`BlobWriter::offset`) rather than fetched again from the start.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::BlobError;

/// A content store that pulled blobs are written into.
pub trait BlobSink: Send + Sync {
    /// Whether a verified blob with this digest is already present (then it is not fetched).
    fn has_blob(&self, digest: &str) -> bool;

    /// Starts (or resumes) writing the blob `digest` of `size` bytes. A writer may already hold
    /// bytes staged by an earlier, interrupted attempt: see [`BlobWriter::offset`].
    fn begin_blob(&self, digest: &str, size: u64) -> Result<Box<dyn BlobWriter>, BlobError>;
}

/// A staged blob being written. Dropping it without `commit` or `abort` keeps the staged bytes
/// for a later resume.
pub trait BlobWriter: Write + Send {
    /// How many bytes are already staged; the client continues the download from here.
    fn offset(&self) -> u64;

    /// Verifies the sha256 of everything staged against the digest and publishes the blob;
    /// on a mismatch the staged bytes are discarded and `BlobError::DigestMismatch` returned.
    fn commit(self: Box<Self>) -> Result<(), BlobError>;

    /// Discards everything staged.
    fn abort(self: Box<Self>);
}

/// A content store that pushed blobs are read from. Blobs are given as they are pushed
/// (compressed layers): compressing and memoising compressed layers is the caller's job.
pub trait BlobSource: Send + Sync {
    /// The size in bytes of the blob `digest`.
    fn blob_size(&self, digest: &str) -> Result<u64, BlobError>;

    /// A reader over the blob `digest`, from its start.
    fn open_blob(&self, digest: &str) -> Result<Box<dyn Read + Send>, BlobError>;
}

/// An OCI image layout directory (`oci-layout`, `blobs/<alg>/<hex>`) used as sink and source;
/// staging lives in `<root>/.staging` so every publish is a rename on one filesystem.
#[derive(Debug, Clone)]
pub struct OciDir {
    root: PathBuf,
}

impl OciDir {
    /// Opens `root`, creating the layout if it does not exist yet.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self, BlobError> {
        let root = root.into();
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BlobError::Io { path, source }
        };
        for dir in [root.join("blobs/sha256"), root.join(".staging")] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        let layout = root.join("oci-layout");
        if !layout.exists() {
            fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_err(&layout))?;
        }
        Ok(Self { root })
    }

    /// The layout's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        self.root.join("blobs").join(alg).join(hex)
    }

    /// Stores `data` as a blob and returns its `sha256:` digest.
    pub fn put_blob(&self, data: &[u8]) -> Result<String, BlobError> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(data)));
        let path = self.blob_path(&digest);
        fs::write(&path, data).map_err(|source| BlobError::Io { path, source })?;
        Ok(digest)
    }

    /// Reads a whole blob into memory (for manifests and configs; layers should be streamed).
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, BlobError> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(|source| not_found_or_io(digest, path, source))
    }

    /// The staging file a download of `digest` writes into before it is verified.
    pub fn staging_path(&self, digest: &str) -> PathBuf {
        self.root.join(".staging").join(digest.replace(':', "-"))
    }
}

fn not_found_or_io(digest: &str, path: PathBuf, source: io::Error) -> BlobError {
    if source.kind() == io::ErrorKind::NotFound {
        BlobError::Missing {
            digest: digest.to_string(),
        }
    } else {
        BlobError::Io { path, source }
    }
}

impl BlobSink for OciDir {
    fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_file()
    }

    fn begin_blob(&self, digest: &str, _size: u64) -> Result<Box<dyn BlobWriter>, BlobError> {
        Ok(Box::new(DirBlobWriter {
            staged: StagedBlob::open(self.staging_path(digest), digest)?,
            target: self.blob_path(digest),
        }))
    }
}

impl BlobSource for OciDir {
    fn blob_size(&self, digest: &str) -> Result<u64, BlobError> {
        let path = self.blob_path(digest);
        fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|source| not_found_or_io(digest, path, source))
    }

    fn open_blob(&self, digest: &str) -> Result<Box<dyn Read + Send>, BlobError> {
        let path = self.blob_path(digest);
        let file = fs::File::open(&path).map_err(|source| not_found_or_io(digest, path, source))?;
        Ok(Box::new(io::BufReader::with_capacity(1 << 20, file)))
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

/// A blob being downloaded into a staging file: reopening the same file resumes it (the hash
/// covers the bytes an earlier attempt staged), and [`StagedBlob::verify`] checks the sha256
/// before the caller publishes it. Sinks build their [`BlobWriter`] on it.
#[derive(Debug)]
pub struct StagedBlob {
    file: fs::File,
    staging: PathBuf,
    digest: String,
    hasher: Sha256,
    offset: u64,
}

impl StagedBlob {
    /// Opens (or resumes) the staging file of `digest`.
    pub fn open(staging: PathBuf, digest: &str) -> Result<Self, BlobError> {
        let io_err = |source| BlobError::Io {
            path: staging.clone(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&staging)
            .map_err(io_err)?;
        let mut hasher = Sha256::new();
        let offset = io::copy(&mut file, &mut HashWriter(&mut hasher)).map_err(io_err)?;
        Ok(StagedBlob {
            file,
            staging,
            digest: digest.to_string(),
            hasher,
            offset,
        })
    }

    /// Bytes staged so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Checks the staged bytes against the digest and syncs them; returns the staging path,
    /// ready to be published. On a mismatch the staging file is removed.
    pub fn verify(self) -> Result<PathBuf, BlobError> {
        let actual = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        if actual != self.digest {
            drop(self.file);
            let _ = fs::remove_file(&self.staging);
            return Err(BlobError::DigestMismatch {
                digest: self.digest,
                actual,
            });
        }
        self.file.sync_all().map_err(|source| BlobError::Io {
            path: self.staging.clone(),
            source,
        })?;
        Ok(self.staging)
    }

    /// Throws the staged bytes away.
    pub fn abort(self) {
        drop(self.file);
        let _ = fs::remove_file(&self.staging);
    }
}

impl Write for StagedBlob {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.offset += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

struct DirBlobWriter {
    staged: StagedBlob,
    target: PathBuf,
}

impl Write for DirBlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.staged.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.staged.flush()
    }
}

impl BlobWriter for DirBlobWriter {
    fn offset(&self) -> u64 {
        self.staged.offset()
    }

    fn commit(self: Box<Self>) -> Result<(), BlobError> {
        let staging = self.staged.verify()?;
        fs::rename(&staging, &self.target).map_err(|source| BlobError::Io {
            path: self.target.clone(),
            source,
        })
    }

    fn abort(self: Box<Self>) {
        self.staged.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_blob_resumes_and_verifies() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = OciDir::create(tmp.path()).unwrap();
        let data = b"hello, layer";
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(data)));
        let mut w = dir.begin_blob(&digest, data.len() as u64).unwrap();
        w.write_all(&data[..5]).unwrap();
        drop(w); // a killed pull
        assert!(!dir.has_blob(&digest));
        let mut w = dir.begin_blob(&digest, data.len() as u64).unwrap();
        assert_eq!(w.offset(), 5);
        w.write_all(&data[5..]).unwrap();
        w.commit().unwrap();
        assert_eq!(dir.read_blob(&digest).unwrap(), data);
        assert!(!dir.staging_path(&digest).exists());
    }

    #[test]
    fn wrong_bytes_are_discarded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = OciDir::create(tmp.path()).unwrap();
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(b"right")));
        let mut w = dir.begin_blob(&digest, 5).unwrap();
        w.write_all(b"wrong").unwrap();
        let err = w.commit().unwrap_err();
        assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");
        assert!(!dir.has_blob(&digest));
        assert!(!dir.staging_path(&digest).exists());
    }
}
