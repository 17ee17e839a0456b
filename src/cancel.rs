//! Network transfers (ADD downloads, base image pulls) give up when the build is cancelled:
//! they race against this future, so even a stalled connection stops at Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Completes once `flag` is raised; never, without a flag.
pub(crate) async fn raised(flag: Option<Arc<AtomicBool>>) {
    loop {
        if flag.as_ref().is_some_and(|f| f.load(Ordering::SeqCst)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
