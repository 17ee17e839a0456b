//! Parallel gzip in the manner of pigz: the stream is cut into fixed 1 MiB chunks, each deflated
//! on the rayon pool with the previous chunk's last 32 KiB as its dictionary and ended by a sync
//! flush, then concatenated in order. The bytes depend only on the input, the level and the chunk
//! size, never on the number of threads, so layer digests stay reproducible.

use std::io::{self, Write};

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use rayon::prelude::*;

const CHUNK: usize = 1 << 20;
const DICT: usize = 32 * 1024;
/// gzip header: magic, deflate, no flags, mtime 0, no extra flags, OS unknown (255).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

pub(crate) struct ParallelGzEncoder<W: Write> {
    inner: W,
    level: u32,
    crc: Crc,
    /// Full chunks waiting for a parallel batch.
    batch: Vec<Vec<u8>>,
    current: Vec<u8>,
    /// The tail of the last chunk compressed: the next chunk's dictionary.
    dict: Vec<u8>,
    header_written: bool,
}

fn deflate_chunk(chunk: &[u8], dict: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(chunk.len() / 2 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        if out.len() == out.capacity() {
            out.reserve(64 * 1024);
        }
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&chunk[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == chunk.len();
        let done = match status {
            Status::StreamEnd => true,
            // A sync flush is complete once all input is in and the output did not fill up.
            _ => !last && all_in && out.len() < out.capacity(),
        };
        if done {
            return Ok(out);
        }
    }
}

impl<W: Write> ParallelGzEncoder<W> {
    pub(crate) fn new(inner: W, level: u32) -> Self {
        ParallelGzEncoder {
            inner,
            level,
            crc: Crc::new(),
            batch: Vec::new(),
            current: Vec::with_capacity(CHUNK),
            dict: Vec::new(),
            header_written: false,
        }
    }

    fn compress_batch(&mut self, last: bool) -> io::Result<()> {
        if !self.header_written {
            self.inner.write_all(&HEADER)?;
            self.header_written = true;
        }
        let mut chunks = std::mem::take(&mut self.batch);
        if last {
            // The final chunk may be empty: it still carries the final deflate block.
            chunks.push(std::mem::take(&mut self.current));
        }
        if chunks.is_empty() {
            return Ok(());
        }
        let n = chunks.len();
        let outputs: Vec<io::Result<Vec<u8>>> = (0..n)
            .into_par_iter()
            .map(|i| {
                let dict = if i == 0 {
                    &self.dict[..]
                } else {
                    let prev = &chunks[i - 1];
                    &prev[prev.len().saturating_sub(DICT)..]
                };
                deflate_chunk(&chunks[i], dict, self.level, last && i == n - 1)
            })
            .collect();
        for out in outputs {
            self.inner.write_all(&out?)?;
        }
        // Chunks before the last are always full, so the last one's tail is the next dictionary.
        let tail = &chunks[n - 1];
        self.dict = tail[tail.len().saturating_sub(DICT)..].to_vec();
        Ok(())
    }

    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.compress_batch(true)?;
        self.inner.write_all(&self.crc.sum().to_le_bytes())?;
        self.inner.write_all(&self.crc.amount().to_le_bytes())?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK - self.current.len());
        self.current.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        if self.current.len() == CHUNK {
            let full = std::mem::replace(&mut self.current, Vec::with_capacity(CHUNK));
            self.batch.push(full);
            if self.batch.len() >= 2 * rayon::current_num_threads() {
                self.compress_batch(false)?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing mid-stream would change the chunking and so the bytes: only finish() emits.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn roundtrip(data: &[u8]) -> Vec<u8> {
        let mut enc = ParallelGzEncoder::new(Vec::new(), 6);
        enc.write_all(data).unwrap();
        let gz = enc.finish().unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn decodes_with_a_standard_gzip_reader() {
        let data: Vec<u8> = (0..5 * CHUNK + 12345)
            .map(|i| ((i * 7) % 251) as u8 ^ (i >> 13) as u8)
            .collect();
        assert_eq!(roundtrip(&data), data);
        assert_eq!(roundtrip(b""), b"");
        let exact = vec![42u8; 3 * CHUNK];
        assert_eq!(roundtrip(&exact), exact);
    }

    #[test]
    fn bytes_do_not_depend_on_the_number_of_threads() {
        let data: Vec<u8> = (0..9 * CHUNK + 777)
            .map(|i| ((i * 31) % 253) as u8 ^ (i >> 11) as u8)
            .collect();
        let compress = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut enc = ParallelGzEncoder::new(Vec::new(), 6);
                // Odd write sizes, so chunk boundaries fall inside writes.
                for piece in data.chunks(100_003) {
                    enc.write_all(piece).unwrap();
                }
                enc.finish().unwrap()
            })
        };
        let one = compress(1);
        assert!(one == compress(3), "1 and 3 threads gave different bytes");
        assert!(one == compress(8), "1 and 8 threads gave different bytes");
    }
}
