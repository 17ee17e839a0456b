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
//!
//! It starts idle, keeping pace with the walker without asking for anything: a tree whose files
//! are all in the page cache (a layer exported right after its step) needs no read-ahead, and
//! opening every file twice would only cost CPU the export competes for. A file the walker finds
//! on disk only ([`Prefetcher::missed`]) sets it going for the next [`WINDOW`] files; each
//! further miss extends that. A tree that is all on disk keeps it going, at the price of one
//! file read without read-ahead per window; a few pages reclaimed here and there in a cached
//! tree (this project's VM pages out cache it judges cold, a minute or so after its last use)
//! cost one window each, not a second open of every file left in the walk. Seen on the 280 MB
//! benchmark's one-file-changed build when it ran slowly (traced): 3 to 13 such misses, after
//! the first of which the read-ahead opened the rest of the tree's 20,000 files a second time.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use nix::fcntl::OFlag;

use crate::sys;

/// Files the read-ahead may be in front of the walker.
const AHEAD: usize = 128;

/// Files after a miss the read-ahead goes for (then stops, unless the walker misses again).
const WINDOW: usize = 4 * AHEAD;

/// Directories queued for the read-ahead at most.
const QUEUED: usize = 32;

/// Bytes asked for per file.
const SPAN: libc::off_t = 1 << 20;

/// The walker's side: hand it each directory's regular files, in the order they will be read,
/// and count each file as it is read.
pub(crate) struct Prefetcher {
    /// Directories announced and not yet gone through, each with a descriptor of its own:
    /// bounded, so a read-ahead that falls behind never holds more than [`QUEUED`] open.
    files: Option<SyncSender<(File, Vec<Vec<u8>>)>>,
    read: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// The thread reads ahead while the walker is before this file (counted as `read` counts):
    /// a miss moves it to [`WINDOW`] files past the walker.
    until: Arc<AtomicUsize>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Prefetcher {
    pub(crate) fn start() -> Self {
        let (files, rx) = mpsc::sync_channel::<(File, Vec<Vec<u8>>)>(QUEUED);
        let read = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let until = Arc::new(AtomicUsize::new(0));
        let (walker_read, stopped, going_until) =
            (Arc::clone(&read), Arc::clone(&stop), Arc::clone(&until));
        let thread = thread::Builder::new()
            .name("layer-prefetch".into())
            .spawn(move || {
                let mut asked = 0usize;
                for (dir, names) in rx {
                    for name in names {
                        // Idle, the thread waits at the walker's own file; going, up to AHEAD
                        // files in front of it.
                        let wanted = loop {
                            if stopped.load(Ordering::Relaxed) {
                                return;
                            }
                            let read = walker_read.load(Ordering::Relaxed);
                            if asked < read {
                                break false;
                            }
                            if asked < going_until.load(Ordering::Relaxed) {
                                if asked < read + AHEAD {
                                    break true;
                                }
                                thread::sleep(Duration::from_micros(200));
                            } else {
                                thread::sleep(Duration::from_millis(1));
                            }
                        };
                        asked += 1;
                        if !wanted {
                            continue;
                        }
                        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
                        if let Ok(file) = sys::openat(dir.as_fd(), &name, flags) {
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
            until,
            thread,
        }
    }

    /// The regular files (by name) of the directory open as `dir` that the walker is about to
    /// go through, in its order.
    pub(crate) fn directory(&self, dir: &File, files: Vec<Vec<u8>>) {
        if let Some(tx) = &self.files {
            if !files.is_empty() {
                // A full queue means the read-ahead is behind: this directory goes without.
                if let Ok(dir) = dir.try_clone() {
                    let _ = tx.try_send((dir, files));
                }
            }
        }
    }

    /// The walker found a file's data on disk only: the read-ahead starts (or goes on) for the
    /// next [`WINDOW`] files.
    pub(crate) fn missed(&self) {
        let read = self.read.load(Ordering::Relaxed);
        self.until.fetch_max(read + WINDOW, Ordering::Relaxed);
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
