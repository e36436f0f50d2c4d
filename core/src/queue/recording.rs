//! [`Recording`]: the future of [`super::Queue::record_then`], ready at once on the common
//! path so that handing an outcome over allocates nothing (docs/architecture.md §10).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;

use super::QueueError;

/// An outcome being handed to the queue: already taken, or waiting for room.
#[must_use = "an outcome is handed over only when this is awaited"]
pub struct Recording<'a>(State<'a>);

enum State<'a> {
    /// Taken (or refused) without waiting; `None` once returned.
    Done(Option<Result<(), QueueError>>),
    /// The engine must wait (e.g. for room in its writer's channel).
    Waiting(BoxFuture<'a, Result<(), QueueError>>),
}

impl<'a> Recording<'a> {
    /// The outcome was taken (or refused) at once.
    pub fn done(result: Result<(), QueueError>) -> Self {
        Recording(State::Done(Some(result)))
    }

    /// The outcome is taken once `wait` completes.
    pub fn waiting(wait: impl Future<Output = Result<(), QueueError>> + Send + 'a) -> Self {
        Recording(State::Waiting(Box::pin(wait)))
    }

    /// Whether it completed without waiting (for tests of the no-allocation path).
    pub fn is_done(&self) -> bool {
        matches!(self.0, State::Done(_))
    }
}

impl Future for Recording<'_> {
    type Output = Result<(), QueueError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            // Polled again after it completed: nothing more to report.
            State::Done(result) => Poll::Ready(result.take().unwrap_or(Ok(()))),
            State::Waiting(wait) => wait.as_mut().poll(cx),
        }
    }
}
