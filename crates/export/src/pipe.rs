//! The layer writer's chunked tar stream and where the chunks go. The tree walker fills
//! fixed-size chunks ([`forge_cache::Piece`]s) with tar bytes, reading file contents straight
//! into them. A chunk for the store goes to the store's blob writer as it is ([`ToStore`]): the
//! store hashes and writes it on threads of its own, never copying it. Otherwise each chunk is
//! written out (compressed first, if asked) on the walker's thread and hashed on a second one
//! ([`pipelined`]), so the walk, its file reads and the writes overlap the sha256, which is the
//! biggest single cost. A handful of chunks in flight bound the memory (never a whole layer);
//! chunks are recycled, not reallocated.

use std::fs::File;
use std::io::{self, Read, Write};

use forge_cache::{BlobWriter, Piece};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread;

use sha2::Sha256;

use crate::sys;
use crate::tarfmt;
use crate::ExportError;

/// Bytes per chunk: a store piece (4 MiB), which the store writes to disk as it is.
pub(crate) const CHUNK: usize = forge_cache::PIECE_LEN;

/// Chunks alive at once in a pipeline (being filled, queued, being hashed): its memory bound.
const MAX_CHUNKS: usize = 4;

/// Something that hashes the tar stream, on whichever thread the chunks are hashed.
pub(crate) trait ChunkHasher: Send {
    fn update(&mut self, bytes: &[u8]);
}

impl ChunkHasher for Sha256 {
    fn update(&mut self, bytes: &[u8]) {
        sha2::Digest::update(self, bytes);
    }
}

/// Where full chunks go.
pub(crate) trait ChunkSink {
    /// Takes the first `len` bytes of `chunk`; returns a chunk to fill next.
    fn take(&mut self, chunk: Piece, len: usize) -> io::Result<Piece>;
    /// Takes the last, possibly partial, chunk.
    fn last(&mut self, chunk: Piece, len: usize) -> io::Result<()>;
    /// The first chunk to fill.
    fn first(&mut self) -> io::Result<Piece> {
        Ok(Piece::new())
    }
}

/// The tar stream as the walker writes it: bytes are gathered into chunks; file contents are read
/// straight into the chunk (no bounce buffer).
pub(crate) struct ChunkWriter<S> {
    /// `None` only while a full chunk is being exchanged for an empty one.
    buf: Option<Piece>,
    filled: usize,
    /// Bytes handed to the sink so far.
    total: u64,
    sink: S,
}

impl<S: ChunkSink> ChunkWriter<S> {
    pub(crate) fn new(mut sink: S) -> io::Result<Self> {
        Ok(ChunkWriter {
            buf: Some(sink.first()?),
            filled: 0,
            total: 0,
            sink,
        })
    }

    fn buf(&mut self) -> &mut [u8] {
        self.buf
            .as_mut()
            .expect("a chunk is held between hand-offs")
            .as_mut()
    }

    fn hand_off(&mut self) -> io::Result<()> {
        let full = self.buf.take().expect("a chunk is held between hand-offs");
        self.buf = Some(self.sink.take(full, self.filled)?);
        self.total += self.filled as u64;
        self.filled = 0;
        Ok(())
    }

    /// Copies a file's `size` bytes as entry data, then the padding, its first read taking only
    /// what the page cache holds; returns false when that was nothing (the file's data is on
    /// disk only), after reading it all the ordinary way.
    pub(crate) fn write_file_data(&mut self, file: &File, size: u64) -> io::Result<bool> {
        let mut first = None;
        if size > 0 {
            if self.filled == CHUNK {
                self.hand_off()?;
            }
            let room = (CHUNK - self.filled).min(usize::try_from(size).unwrap_or(usize::MAX));
            let filled = self.filled;
            first = sys::read_cached(file, &mut self.buf()[filled..filled + room])?;
            self.filled += first.unwrap_or(0);
        }
        // What a short first read left (or all of it, after none) is read the ordinary way.
        let left = size - first.unwrap_or(0) as u64;
        self.write_entry_data_from(file, size, left)?;
        Ok(size == 0 || first.is_some())
    }

    /// Copies the last `left` of an entry's `size` bytes from `data`, then the padding to the
    /// next block; fails with `UnexpectedEof` if the source is shorter (the file shrank while
    /// being read).
    fn write_entry_data_from(
        &mut self,
        mut data: impl Read,
        size: u64,
        mut left: u64,
    ) -> io::Result<()> {
        while left > 0 {
            if self.filled == CHUNK {
                self.hand_off()?;
            }
            let room = (CHUNK - self.filled).min(usize::try_from(left).unwrap_or(usize::MAX));
            let filled = self.filled;
            match data.read(&mut self.buf()[filled..filled + room]) {
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

    /// Hands off what is left; returns the sink and how many bytes it was given in all.
    pub(crate) fn finish(mut self) -> io::Result<(S, u64)> {
        let last = self.buf.take().expect("a chunk is held between hand-offs");
        self.sink.last(last, self.filled)?;
        Ok((self.sink, self.total + self.filled as u64))
    }
}

impl<S: ChunkSink> Write for ChunkWriter<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.filled == CHUNK {
            self.hand_off()?;
        }
        let n = buf.len().min(CHUNK - self.filled);
        let filled = self.filled;
        self.buf()[filled..filled + n].copy_from_slice(&buf[..n]);
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
    fn take(&mut self, mut chunk: Piece, len: usize) -> io::Result<Piece> {
        self.out.write_all(&chunk.as_mut()[..len])?;
        self.hasher.update(&chunk.as_mut()[..len]);
        Ok(chunk)
    }

    fn last(&mut self, chunk: Piece, len: usize) -> io::Result<()> {
        self.take(chunk, len).map(drop)
    }
}

/// Each chunk goes to the store's blob writer as it is, which hashes and writes it on threads
/// of its own.
pub(crate) struct ToStore<'w, 's>(pub(crate) &'w mut BlobWriter<'s>);

impl ChunkSink for ToStore<'_, '_> {
    fn first(&mut self) -> io::Result<Piece> {
        self.0.take_piece()
    }

    fn take(&mut self, chunk: Piece, len: usize) -> io::Result<Piece> {
        self.0.put_piece(chunk, len)?;
        self.0.take_piece()
    }

    fn last(&mut self, chunk: Piece, len: usize) -> io::Result<()> {
        self.0.put_piece(chunk, len)
    }
}

/// Each chunk is written to `out` on the walker's thread, then sent to the hashing thread, which
/// sends it back empty.
pub(crate) struct HashAside<W> {
    out: W,
    full: SyncSender<(Piece, usize)>,
    empty: Receiver<Piece>,
    allocated: usize,
}

fn hasher_gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the layer's hashing thread stopped",
    )
}

impl<W: Write> ChunkSink for HashAside<W> {
    fn take(&mut self, mut chunk: Piece, len: usize) -> io::Result<Piece> {
        self.out.write_all(&chunk.as_mut()[..len])?;
        self.full.send((chunk, len)).map_err(|_| hasher_gone())?;
        match self.empty.try_recv() {
            Ok(buf) => Ok(buf),
            Err(TryRecvError::Empty) if self.allocated < MAX_CHUNKS => {
                self.allocated += 1;
                Ok(Piece::new())
            }
            Err(TryRecvError::Empty) => self.empty.recv().map_err(|_| hasher_gone()),
            Err(TryRecvError::Disconnected) => Err(hasher_gone()),
        }
    }

    fn last(&mut self, mut chunk: Piece, len: usize) -> io::Result<()> {
        self.out.write_all(&chunk.as_mut()[..len])?;
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
    let (full_tx, full_rx) = mpsc::sync_channel::<(Piece, usize)>(MAX_CHUNKS - 2);
    let (empty_tx, empty_rx) = mpsc::channel();
    thread::scope(|scope| {
        let hashing = scope.spawn(move || {
            for (mut chunk, len) in full_rx {
                hasher.update(&chunk.as_mut()[..len]);
                // The walker may be done and gone: then nobody needs the buffer back.
                let _ = empty_tx.send(chunk);
            }
            hasher
        });
        let writer = ChunkWriter::new(HashAside {
            out,
            full: full_tx,
            empty: empty_rx,
            allocated: 1,
        });
        let produced = writer
            .map_err(crate::layer::write_err)
            .and_then(|mut writer| {
                let value = produce(&mut writer)?;
                Ok((value, writer.finish().map_err(crate::layer::write_err)?))
            });
        // On success `finish` returned the sink, on failure the writer is gone: either way the
        // chunk sender is dropped here, which ends the hashing loop.
        let produced = produced.map(|(value, (sink, _))| (value, sink.out));
        let hasher = hashing
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let (value, out) = produced?;
        Ok((value, out, hasher))
    })
}
