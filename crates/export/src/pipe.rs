//! The layer writer's chunked tar stream and its two-thread form. The tree walker fills
//! fixed-size chunks with tar bytes; each chunk is written out (compressed first, if asked) on the
//! walker's thread and hashed on a second one ([`pipelined`]), so the walk, its file reads and the
//! writes overlap the sha256, which is the biggest single cost. A handful of chunks in flight bound
//! the memory (never a whole layer); chunks are recycled, not reallocated.

use std::io::{self, Read, Write};
use std::mem;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread;

use sha2::Sha256;

use crate::tarfmt;
use crate::ExportError;

/// Bytes per chunk: big enough that a write or hash call per chunk costs nothing, and that the
/// store's writer passes each chunk straight to the file.
pub(crate) const CHUNK: usize = 1 << 20;

/// Chunks alive at once in a pipeline (being filled, queued, being hashed): its memory bound.
const MAX_CHUNKS: usize = 6;

/// Something that hashes the tar stream, on whichever thread the chunks are hashed.
pub(crate) trait ChunkHasher: Send {
    fn update(&mut self, bytes: &[u8]);
}

impl ChunkHasher for Sha256 {
    fn update(&mut self, bytes: &[u8]) {
        sha2::Digest::update(self, bytes);
    }
}

impl ChunkHasher for forge_cache::BlobHasher {
    fn update(&mut self, bytes: &[u8]) {
        forge_cache::BlobHasher::update(self, bytes);
    }
}

/// Where full chunks go.
pub(crate) trait ChunkSink {
    /// Takes the first `len` bytes of `chunk`; returns a buffer of [`CHUNK`] bytes to fill next.
    fn take(&mut self, chunk: Vec<u8>, len: usize) -> io::Result<Vec<u8>>;
    /// Takes the last, possibly partial, chunk.
    fn last(&mut self, chunk: Vec<u8>, len: usize) -> io::Result<()>;
}

/// The tar stream as the walker writes it: bytes are gathered into chunks; file contents are read
/// straight into the chunk (no bounce buffer).
pub(crate) struct ChunkWriter<S> {
    buf: Vec<u8>,
    filled: usize,
    sink: S,
}

impl<S: ChunkSink> ChunkWriter<S> {
    pub(crate) fn new(sink: S) -> Self {
        ChunkWriter {
            buf: vec![0; CHUNK],
            filled: 0,
            sink,
        }
    }

    fn hand_off(&mut self) -> io::Result<()> {
        let full = mem::take(&mut self.buf);
        self.buf = self.sink.take(full, self.filled)?;
        self.filled = 0;
        Ok(())
    }

    /// Copies exactly `size` bytes of entry data from `data`, then the padding to the next block;
    /// fails with `UnexpectedEof` if the source is shorter (the file shrank while being read).
    pub(crate) fn write_entry_data(&mut self, mut data: impl Read, size: u64) -> io::Result<()> {
        let mut left = size;
        while left > 0 {
            if self.filled == CHUNK {
                self.hand_off()?;
            }
            let room = (CHUNK - self.filled).min(usize::try_from(left).unwrap_or(usize::MAX));
            match data.read(&mut self.buf[self.filled..self.filled + room]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "expected {size} bytes, found {} (file changed while being read)",
                            size - left
                        ),
                    ))
                }
                Ok(n) => {
                    self.filled += n;
                    left -= n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        tarfmt::write_padding(self, size)
    }

    /// Hands off what is left and returns the sink.
    pub(crate) fn finish(mut self) -> io::Result<S> {
        let last = mem::take(&mut self.buf);
        self.sink.last(last, self.filled)?;
        Ok(self.sink)
    }
}

impl<S: ChunkSink> Write for ChunkWriter<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.filled == CHUNK {
            self.hand_off()?;
        }
        let n = buf.len().min(CHUNK - self.filled);
        self.buf[self.filled..self.filled + n].copy_from_slice(&buf[..n]);
        self.filled += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Each chunk is written to `out` and hashed, both on the walker's thread: the reference that
/// [`pipelined`] is tested against.
pub(crate) struct Inline<W, H> {
    pub(crate) out: W,
    pub(crate) hasher: H,
}

impl<W: Write, H: ChunkHasher> ChunkSink for Inline<W, H> {
    fn take(&mut self, chunk: Vec<u8>, len: usize) -> io::Result<Vec<u8>> {
        self.out.write_all(&chunk[..len])?;
        self.hasher.update(&chunk[..len]);
        Ok(chunk)
    }

    fn last(&mut self, chunk: Vec<u8>, len: usize) -> io::Result<()> {
        self.take(chunk, len).map(drop)
    }
}

/// Each chunk is written to `out` on the walker's thread, then sent to the hashing thread, which
/// sends it back empty.
pub(crate) struct HashAside<W> {
    out: W,
    full: SyncSender<(Vec<u8>, usize)>,
    empty: Receiver<Vec<u8>>,
    allocated: usize,
}

fn hasher_gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the layer's hashing thread stopped",
    )
}

impl<W: Write> ChunkSink for HashAside<W> {
    fn take(&mut self, chunk: Vec<u8>, len: usize) -> io::Result<Vec<u8>> {
        self.out.write_all(&chunk[..len])?;
        self.full.send((chunk, len)).map_err(|_| hasher_gone())?;
        match self.empty.try_recv() {
            Ok(buf) => Ok(buf),
            Err(TryRecvError::Empty) if self.allocated < MAX_CHUNKS => {
                self.allocated += 1;
                Ok(vec![0; CHUNK])
            }
            Err(TryRecvError::Empty) => self.empty.recv().map_err(|_| hasher_gone()),
            Err(TryRecvError::Disconnected) => Err(hasher_gone()),
        }
    }

    fn last(&mut self, chunk: Vec<u8>, len: usize) -> io::Result<()> {
        self.out.write_all(&chunk[..len])?;
        self.full.send((chunk, len)).map_err(|_| hasher_gone())
    }
}

/// Runs `produce` (the walker) on this thread, writing each chunk it fills to `out` here and
/// hashing it with `hasher` on a second thread, in order. Returns what `produce` returned, the
/// writer and the hasher, which has seen exactly the bytes written to `out`.
pub(crate) fn pipelined<W: Write, H: ChunkHasher, T>(
    out: W,
    mut hasher: H,
    produce: impl FnOnce(&mut ChunkWriter<HashAside<W>>) -> Result<T, ExportError>,
) -> Result<(T, W, H), ExportError> {
    let (full_tx, full_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(MAX_CHUNKS - 2);
    let (empty_tx, empty_rx) = mpsc::channel();
    thread::scope(|scope| {
        let hashing = scope.spawn(move || {
            for (chunk, len) in full_rx {
                hasher.update(&chunk[..len]);
                // The walker may be done and gone: then nobody needs the buffer back.
                let _ = empty_tx.send(chunk);
            }
            hasher
        });
        let mut writer = ChunkWriter::new(HashAside {
            out,
            full: full_tx,
            empty: empty_rx,
            allocated: 1,
        });
        let produced = produce(&mut writer)
            .and_then(|value| Ok((value, writer.finish().map_err(crate::layer::write_err)?)));
        // On success `finish` returned the sink, on failure the writer is gone: either way the
        // chunk sender is dropped here, which ends the hashing loop.
        let produced = produced.map(|(value, sink)| (value, sink.out));
        let hasher = hashing
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let (value, out) = produced?;
        Ok((value, out, hasher))
    })
}
