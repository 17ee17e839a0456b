//! Streaming a step's stdout and stderr to the caller while keeping the tail of both for the
//! error report of a failing step.

use std::io::Read;
use std::sync::mpsc;

use crate::spec::Stream;

/// How much combined output is kept for the tail.
const TAIL_BYTES: usize = 16 * 1024;
/// How many lines a failing step reports.
pub(crate) const TAIL_LINES: usize = 20;

/// Reads both pipes until they close (every process holding them has exited), calling
/// `output` on the caller's thread for each chunk. Returns the last lines seen.
pub(crate) fn pump(
    stdout: impl Read + Send + 'static,
    stderr: impl Read + Send + 'static,
    output: &mut dyn FnMut(Stream, &[u8]),
) -> String {
    // Bounded, so a step that prints faster than the caller consumes waits on its pipe.
    let (tx, rx) = mpsc::sync_channel::<(Stream, Vec<u8>)>(64);
    let readers = [
        spawn_reader(Stream::Stdout, Box::new(stdout), tx.clone()),
        spawn_reader(Stream::Stderr, Box::new(stderr), tx),
    ];
    let mut tail: Vec<u8> = Vec::new();
    for (stream, chunk) in rx {
        output(stream, &chunk);
        tail.extend_from_slice(&chunk);
        if tail.len() > TAIL_BYTES {
            tail.drain(..tail.len() - TAIL_BYTES);
        }
    }
    for reader in readers {
        let _ = reader.join();
    }
    last_lines(&tail, TAIL_LINES)
}

fn spawn_reader(
    stream: Stream,
    mut pipe: Box<dyn Read + Send>,
    tx: mpsc::SyncSender<(Stream, Vec<u8>)>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send((stream, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    })
}

/// The last `n` lines of `bytes`, lossily decoded.
pub(crate) fn last_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.trim_end_matches('\n').lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(last_lines(b"a\nb\nc\nd\n", 2), "c\nd");
        assert_eq!(last_lines(b"only", 5), "only");
    }

    #[test]
    fn pump_delivers_both_streams() {
        let mut seen = Vec::new();
        let tail = pump(&b"out\n"[..], &b"err\n"[..], &mut |s, b| {
            seen.push((s, b.to_vec()))
        });
        seen.sort_by_key(|(s, _)| *s == Stream::Stderr);
        assert_eq!(
            seen,
            vec![
                (Stream::Stdout, b"out\n".to_vec()),
                (Stream::Stderr, b"err\n".to_vec())
            ]
        );
        assert!(tail.contains("out") && tail.contains("err"));
    }
}
