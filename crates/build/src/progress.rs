//! What a build tells its caller while it runs. The binary renders these events as a live
//! view, plain numbered lines or JSON; the build itself never prints.

use std::time::Duration;

pub use forge_executor::Stream;

/// One thing that happened during a build.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// The plan is ready: how many steps the build will solve.
    Planned { steps: usize },
    /// A non-fatal message (unused build args, ...).
    Warning { message: &'a str },
    /// A step begins (looked up in the cache, or about to run).
    Started { step: usize, name: &'a str },
    /// A step's result came from the cache.
    Cached { step: usize },
    /// A step missed the cache and will run; `reason` says which input changed.
    Miss { step: usize, reason: &'a str },
    /// Output of a running step.
    Output {
        step: usize,
        stream: Stream,
        data: &'a [u8],
    },
    /// A step finished.
    Done { step: usize, elapsed: Duration },
    /// A step failed.
    Failed {
        step: usize,
        elapsed: Duration,
        error: &'a str,
    },
    /// A phase of the build outside the graph (exporting layers, writing the image).
    Phase { name: &'a str },
}

/// Receives a build's events; called from several worker threads at once.
pub trait Progress: Sync {
    fn event(&self, event: Event<'_>);
}

/// Discards every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _event: Event<'_>) {}
}
