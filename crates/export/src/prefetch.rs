//! Read-ahead for the layer walker. The walker reads files one at a time, in tar order: when
//! they are not in the page cache (a layer exported long after its snapshot was written, or on a
//! host that reclaims cache eagerly), every small file is a disk round trip that the walker, and
//! behind it the whole export, waits for. A second thread asks the kernel for the next files'
//! pages ahead of the walker (`posix_fadvise(WILLNEED)`, which queues the reads and returns), so
//! the disk sees many requests at once and the walker mostly finds its pages there.
//!
//! The thread stays at most [`AHEAD`] files in front, and asks for at most [`SPAN`] bytes of
//! each (a big file's tail is the kernel's own read-ahead's business): a bounded amount of cache
//! whatever the layer. It only ever reads, and ignores every error: the walker's own reads are
//! the ones that count.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Files the read-ahead may be in front of the walker.
const AHEAD: usize = 128;

/// Bytes asked for per file.
const SPAN: libc::off_t = 1 << 20;

/// The walker's side: hand it each directory's regular files, in the order they will be read,
/// and count each file as it is read.
pub(crate) struct Prefetcher {
    files: Option<Sender<Vec<PathBuf>>>,
    read: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Prefetcher {
    pub(crate) fn start() -> Self {
        let (files, rx) = mpsc::channel::<Vec<PathBuf>>();
        let read = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (walker_read, stopped) = (Arc::clone(&read), Arc::clone(&stop));
        let thread = thread::Builder::new()
            .name("layer-prefetch".into())
            .spawn(move || {
                let mut asked = 0usize;
                for batch in rx {
                    for path in batch {
                        while asked >= walker_read.load(Ordering::Relaxed) + AHEAD {
                            if stopped.load(Ordering::Relaxed) {
                                return;
                            }
                            thread::sleep(Duration::from_micros(200));
                        }
                        if stopped.load(Ordering::Relaxed) {
                            return;
                        }
                        asked += 1;
                        if let Ok(file) = File::open(&path) {
                            // SAFETY: the descriptor is open for the call; fadvise reads no
                            // memory of ours. A failure only means no read-ahead.
                            unsafe {
                                libc::posix_fadvise(
                                    file.as_raw_fd(),
                                    0,
                                    SPAN,
                                    libc::POSIX_FADV_WILLNEED,
                                );
                            }
                        }
                    }
                }
            })
            .ok();
        Prefetcher {
            files: thread.is_some().then_some(files),
            read,
            stop,
            thread,
        }
    }

    /// The regular files of the directory the walker is about to go through, in its order.
    pub(crate) fn directory(&self, files: Vec<PathBuf>) {
        if let Some(tx) = &self.files {
            if !files.is_empty() {
                let _ = tx.send(files);
            }
        }
    }

    /// The walker is done with one of the files it announced.
    pub(crate) fn read_one(&self) {
        self.read.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // The walker is done (or failed): whatever is still announced is not needed.
        self.stop.store(true, Ordering::Relaxed);
        drop(self.files.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
