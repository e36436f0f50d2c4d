//! The lifecycle's wall clock: the system's, or one that follows tokio's clock so that tests
//! with `tokio::time::pause()` move Google's expiries along with it.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// The loop wakes at least this often, so a jump of the wall clock is noticed.
pub(super) const TICK: Duration = Duration::from_secs(60);

/// Wall-clock time for the lifecycle. `Tokio` follows tokio's clock from a starting wall
/// time, so that tests with `tokio::time::pause()` move Google's expiries along with it.
#[derive(Clone, Copy, Debug)]
pub enum Clock {
    System,
    Tokio {
        wall: DateTime<Utc>,
        start: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that starts at the current wall time and then follows tokio's clock.
    pub fn tokio() -> Clock {
        Clock::Tokio {
            wall: Utc::now(),
            start: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Tokio { wall, start } => {
                let elapsed = tokio::time::Instant::now() - *start;
                *wall + TimeDelta::from_std(elapsed).unwrap_or(TimeDelta::MAX)
            }
        }
    }

    /// Sleeps until `when`, or at most [`TICK`].
    pub(super) async fn sleep_until(&self, when: DateTime<Utc>) {
        let wait = (when - self.now()).to_std().unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait.min(TICK)).await;
    }
}
