//! sha256 computed while bytes stream through, so a layer's diff_id and digest need no second pass.

use std::io::{self, Read, Write};

use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};

/// A writer that hashes (unless told not to) and counts what passes through it.
#[derive(Debug)]
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Option<Sha256>,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Some(Sha256::new()),
            count: 0,
        }
    }

    /// Counts only: for a stream whose digest another stage already computes.
    pub(crate) fn counting(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: None,
            count: 0,
        }
    }

    /// The inner writer, the digest (if hashing) and the byte count.
    pub(crate) fn finish(self) -> (W, Option<Digest>, u64) {
        (self.inner, self.hasher.map(sha256_digest), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what is read through it.
#[derive(Debug)]
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub(crate) fn finish(self) -> (Digest, u64) {
        (sha256_digest(self.hasher), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

pub(crate) fn sha256_digest(hasher: Sha256) -> Digest {
    let hex = hex::encode(hasher.finalize());
    // A 64-digit lowercase hex string always parses as a sha256 digest.
    Digest::try_from(format!("sha256:{hex}")).expect("sha256 hex is a valid digest")
}

/// The sha256 digest of a byte slice (config and manifest JSON).
pub(crate) fn digest_of(bytes: &[u8]) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update(bytes);
    sha256_digest(hasher)
}
