//! Writing a big blob past the page cache (`O_DIRECT`), on a thread of its own.
//!
//! A layer the build just exported is not read again by the build: filling the page cache with
//! it only costs time. Measured on the development VM, 300 MB written through the page cache and
//! fsynced took 0.3–1.1 s (each new cache page is a fresh page of guest memory), written with
//! `O_DIRECT` in 4 MiB pieces 0.22–0.29 s. The bytes are gathered into aligned buffers; each full
//! one goes to an I/O thread, so the producer (the layer walker) never waits for the disk unless
//! every buffer is in flight. The tail that does not fill a buffer is written through the cache
//! at [`UncachedWriter::finish`]; a blob smaller than one buffer never uses `O_DIRECT` at all.
//!
//! A filesystem that refuses `O_DIRECT` (when it is set, or at the first write) is written
//! through the cache instead: the same bytes, only slower. Durability is unchanged: the caller
//! still fsyncs the file, which also flushes the disk's own write cache.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread::{self, JoinHandle};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// `O_DIRECT` needs the buffer address, the file offset and the length aligned to the device's
/// logical block size: 4096 covers both 512-byte and 4 KiB devices.
const ALIGN: usize = 4096;

/// Bytes per write: big enough that the device sees deep requests (the kernel splits one write
/// into many), small enough that a few in flight cost little memory.
pub(crate) const PIECE: usize = 4 << 20;

/// Buffers alive at once: one being filled, the rest queued or being written.
const BUFFERS: usize = 3;

/// A [`PIECE`]-sized buffer whose start is aligned to [`ALIGN`] (an over-allocated `Vec`, so no
/// unsafe allocation code is needed).
struct Aligned {
    bytes: Vec<u8>,
    start: usize,
}

impl Aligned {
    fn new() -> Self {
        let bytes = vec![0; PIECE + ALIGN];
        let start = bytes.as_ptr().align_offset(ALIGN);
        Aligned { bytes, start }
    }

    fn piece(&self) -> &[u8] {
        &self.bytes[self.start..self.start + PIECE]
    }

    fn piece_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + PIECE]
    }
}

/// The running I/O thread: full buffers go to it with their offsets, empty ones come back.
struct Io {
    full: SyncSender<(Aligned, u64)>,
    empty: Receiver<Aligned>,
    thread: JoinHandle<io::Result<File>>,
    allocated: usize,
}

/// Streams bytes into `file` from offset 0, whole pieces with `O_DIRECT` on an I/O thread.
pub(crate) struct UncachedWriter {
    /// Held here until the first full piece starts the I/O thread, which owns it from then on.
    file: Option<File>,
    io: Option<Io>,
    buf: Aligned,
    filled: usize,
    /// Offset of `buf` in the file.
    offset: u64,
}

impl UncachedWriter {
    pub(crate) fn new(file: File) -> Self {
        UncachedWriter {
            file: Some(file),
            io: None,
            buf: Aligned::new(),
            filled: 0,
            offset: 0,
        }
    }

    /// Takes as much of `bytes` as fits in the current piece; hands the piece off when full.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.filled == PIECE {
            self.hand_off()?;
        }
        let n = bytes.len().min(PIECE - self.filled);
        self.buf.piece_mut()[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
        self.filled += n;
        Ok(n)
    }

    fn hand_off(&mut self) -> io::Result<()> {
        if self.io.is_none() {
            let file = self
                .file
                .take()
                .expect("the file is here until the thread starts");
            self.io = Some(Io::start(file)?);
        }
        let io = self.io.as_mut().expect("started above");
        let next = match io.empty.try_recv() {
            Ok(buf) => Some(buf),
            Err(TryRecvError::Empty) if io.allocated < BUFFERS => {
                io.allocated += 1;
                Some(Aligned::new())
            }
            Err(TryRecvError::Empty) => io.empty.recv().ok(),
            Err(TryRecvError::Disconnected) => None,
        };
        let sent = next.and_then(|next| {
            let full = std::mem::replace(&mut self.buf, next);
            io.full.send((full, self.offset)).ok()
        });
        if sent.is_none() {
            // The I/O thread stopped: it returns why.
            let io = self.io.take().expect("started above");
            return Err(io.stop().err().unwrap_or_else(|| {
                io::Error::other("the blob's I/O thread stopped without an error")
            }));
        }
        self.offset += PIECE as u64;
        self.filled = 0;
        Ok(())
    }

    /// Waits for the pieces in flight, writes the tail through the page cache and returns the
    /// file (not yet fsynced) with its length.
    pub(crate) fn finish(mut self) -> io::Result<(File, u64)> {
        let file = match self.io.take() {
            Some(io) => {
                let file = io.stop()?;
                set_direct(&file, false)?;
                file
            }
            None => self
                .file
                .take()
                .expect("the file is here until the thread starts"),
        };
        file.write_all_at(&self.buf.piece()[..self.filled], self.offset)?;
        Ok((file, self.offset + self.filled as u64))
    }
}

impl Io {
    fn start(file: File) -> io::Result<Io> {
        let (full, full_rx) = mpsc::sync_channel::<(Aligned, u64)>(BUFFERS - 1);
        let (empty_tx, empty) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("blob-io".into())
            .spawn(move || {
                // A filesystem without O_DIRECT refuses the flag here or the first write below.
                let mut direct = set_direct(&file, true).is_ok();
                for (buf, offset) in full_rx {
                    match file.write_all_at(buf.piece(), offset) {
                        Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
                            direct = false;
                            set_direct(&file, false)?;
                            file.write_all_at(buf.piece(), offset)?;
                        }
                        written => written?,
                    }
                    // The writer may be finishing: then nobody needs the buffer back.
                    let _ = empty_tx.send(buf);
                }
                Ok(file)
            })?;
        Ok(Io {
            full,
            empty,
            thread,
            allocated: 1,
        })
    }

    /// Lets the thread write what it has queued, then returns the file or the first error.
    fn stop(self) -> io::Result<File> {
        drop(self.full);
        self.thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

/// Turns `O_DIRECT` on or off for `file`.
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_fd().as_raw_fd();
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    let flags = if on {
        flags | OFlag::O_DIRECT
    } else {
        flags - OFlag::O_DIRECT
    };
    fcntl(fd, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Writes `data` in `step`-byte writes and reads the file back.
    fn round_trip(dir: &std::path::Path, data: &[u8], step: usize) -> Vec<u8> {
        let path = dir.join(format!("blob-{}-{step}", data.len()));
        let mut w = UncachedWriter::new(File::create(&path).unwrap());
        for part in data.chunks(step) {
            let mut part = part;
            while !part.is_empty() {
                let n = w.write(part).unwrap();
                part = &part[n..];
            }
        }
        let (file, len) = w.finish().unwrap();
        assert_eq!(len, data.len() as u64);
        drop(file);
        let mut back = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut back).unwrap();
        back
    }

    #[test]
    fn every_size_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        // Empty, less than a piece, exactly one, several plus an unaligned tail, and enough to
        // recycle every buffer more than once.
        for len in [
            0,
            1000,
            PIECE,
            3 * PIECE + 12345,
            BUFFERS * 3 * PIECE + ALIGN + 1,
        ] {
            let data = pattern(len);
            for step in [1 << 20, 777_777] {
                assert!(
                    round_trip(dir.path(), &data, step) == data,
                    "{len} bytes, {step} per write"
                );
            }
        }
    }

    #[test]
    fn a_failed_write_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        File::create(&path).unwrap();
        // Read-only: the first piece's write fails on the I/O thread; the error comes back.
        let mut w = UncachedWriter::new(File::open(&path).unwrap());
        let data = pattern(PIECE);
        let mut result = Ok(0);
        for _ in 0..(BUFFERS + 2) {
            result = w.write(&data).and_then(|_| w.write(&data[..1]));
            if result.is_err() {
                break;
            }
        }
        let err = match result {
            Err(e) => e,
            Ok(_) => w.finish().map(drop).unwrap_err(),
        };
        assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
    }
}
