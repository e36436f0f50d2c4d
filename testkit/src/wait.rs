//! Waiting on state, not on time: the one poll-until helper every Herald test uses.
//!
//! A test that sleeps "long enough" either waits longer than it must or fails on a slow
//! machine; these poll the state the test expects and fail with what it was waiting for.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often the state is looked at.
const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it returns `Some`, at most `limit`; panics naming `what` after that.
pub async fn eventually<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `condition` until it holds, at most `limit`; panics naming `what` after that.
pub async fn until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    eventually(what, limit, || condition().then_some(())).await
}

/// Awaits `check` until it returns `Some`, at most `limit` (for state read over the network
/// or from a file); panics naming `what` after that.
pub async fn eventually_async<T, F: Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The same, blocking the thread (for tests that drive a child process synchronously).
pub fn eventually_blocking<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}
