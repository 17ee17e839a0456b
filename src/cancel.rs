//! Network transfers (ADD downloads, base image pulls) give up when the build is cancelled:
//! they race against this future, so even a stalled connection stops at Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Completes once `flag` is raised; never, without a flag.
pub(crate) async fn raised(flag: Option<Arc<AtomicBool>>) {
    let Some(flag) = flag else {
        return std::future::pending().await;
    };
    while !flag.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
