//! A circuit breaker per sink: after a run of failures the sink is left alone for a cool-down,
//! then probed with one delivery; success closes the circuit, failure opens it for longer.
//! A sink that asks to be left alone (`Retry-After`) is paused for that long without counting
//! a failure.

use std::time::Duration;

use tokio::time::Instant;

/// Consecutive retryable failures that open the circuit.
pub const FAILURE_THRESHOLD: u32 = 5;
const FIRST_COOLDOWN: Duration = Duration::from_secs(2);
const MAX_COOLDOWN: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    /// No attempts until then.
    Open {
        until: Instant,
    },
    /// One probe is allowed; `probing` while it is in flight.
    HalfOpen {
        probing: bool,
    },
}

/// What the worker may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    Go,
    /// Go, as the single probe of a half-open circuit.
    Probe,
    Wait(Duration),
}

#[derive(Debug)]
pub struct Breaker {
    state: State,
    failures: u32,
    cooldown: Duration,
    paused_until: Option<Instant>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: State::Closed,
            failures: 0,
            cooldown: FIRST_COOLDOWN,
            paused_until: None,
        }
    }
}

impl Breaker {
    pub fn state(&self) -> State {
        self.state
    }

    /// Closed and not paused: every attempt may start, whatever the time. The workers ask
    /// this first and read the clock only when it is not so (one reading per delivery
    /// otherwise, on the path of every event).
    pub fn at_rest(&self) -> bool {
        self.paused_until.is_none() && matches!(self.state, State::Closed)
    }

    /// How long no attempt may start, without taking the half-open probe (`None`: one may).
    pub fn blocked_for(&self, now: Instant) -> Option<Duration> {
        if let Some(until) = self.paused_until.filter(|u| now < *u) {
            return Some(until - now);
        }
        match self.state {
            State::Open { until } if now < until => Some(until - now),
            State::HalfOpen { probing: true } => Some(Duration::from_millis(100)),
            _ => None,
        }
    }

    /// May an attempt start at `now`? Takes the probe of a half-open circuit.
    pub fn gate(&mut self, now: Instant) -> Gate {
        if let Some(until) = self.paused_until {
            if now < until {
                return Gate::Wait(until - now);
            }
            self.paused_until = None;
        }
        match self.state {
            State::Closed => Gate::Go,
            State::Open { until } if now < until => Gate::Wait(until - now),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                Gate::Probe
            }
            // Wait for the probe's result; the worker is woken when it ends.
            State::HalfOpen { probing: true } => Gate::Wait(Duration::from_millis(100)),
        }
    }

    pub fn on_success(&mut self) {
        self.failures = 0;
        self.cooldown = FIRST_COOLDOWN;
        self.state = State::Closed;
    }

    /// A retryable failure at `now`.
    pub fn on_failure(&mut self, now: Instant) {
        self.failures += 1;
        match self.state {
            State::HalfOpen { .. } => {
                self.cooldown = (self.cooldown * 2).min(MAX_COOLDOWN);
                self.state = State::Open {
                    until: now + self.cooldown,
                };
            }
            State::Closed if self.failures >= FAILURE_THRESHOLD => {
                self.state = State::Open {
                    until: now + self.cooldown,
                };
            }
            _ => {}
        }
    }

    /// The sink asked for `delay` before the next request (HTTP 429 `Retry-After`).
    pub fn pause(&mut self, now: Instant, delay: Duration) {
        let until = now + delay;
        if self.paused_until.is_none_or(|p| p < until) {
            self.paused_until = Some(until);
        }
        // The probe's answer was "later": probe again once the pause is over.
        if let State::HalfOpen { .. } = self.state {
            self.state = State::Open { until };
        }
    }

    /// For the `herald_circuit_state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn metric(&self) -> f64 {
        match self.state {
            State::Closed => 0.0,
            State::HalfOpen { .. } => 1.0,
            State::Open { .. } => 2.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_a_run_of_failures_and_probes_after_the_cooldown() {
        let mut b = Breaker::default();
        let now = Instant::now();
        assert!(b.at_rest());
        for _ in 0..FAILURE_THRESHOLD - 1 {
            b.on_failure(now);
            assert!(b.at_rest(), "closed still");
            assert_eq!(b.gate(now), Gate::Go);
        }
        b.on_failure(now);
        assert!(!b.at_rest(), "open");
        assert_eq!(b.gate(now), Gate::Wait(FIRST_COOLDOWN));

        tokio::time::advance(FIRST_COOLDOWN).await;
        let later = Instant::now();
        assert_eq!(b.blocked_for(later), None, "a probe may go");
        assert_eq!(
            b.blocked_for(later),
            None,
            "looking does not take the probe"
        );
        assert_eq!(b.gate(later), Gate::Probe);
        assert!(b.blocked_for(later).is_some(), "the probe is out");
        assert!(
            matches!(b.gate(later), Gate::Wait(_)),
            "one probe at a time"
        );

        b.on_failure(later);
        assert_eq!(
            b.gate(later),
            Gate::Wait(FIRST_COOLDOWN * 2),
            "the cooldown doubles"
        );

        tokio::time::advance(FIRST_COOLDOWN * 2).await;
        assert_eq!(b.gate(Instant::now()), Gate::Probe);
        b.on_success();
        assert!(b.at_rest(), "closed again");
        assert_eq!(b.gate(Instant::now()), Gate::Go);
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_failure_count() {
        let mut b = Breaker::default();
        let now = Instant::now();
        for _ in 0..FAILURE_THRESHOLD - 1 {
            b.on_failure(now);
        }
        b.on_success();
        b.on_failure(now);
        assert_eq!(b.gate(now), Gate::Go);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_answered_with_retry_after_probes_again_after_it() {
        let mut b = Breaker::default();
        let now = Instant::now();
        for _ in 0..FAILURE_THRESHOLD {
            b.on_failure(now);
        }
        tokio::time::advance(FIRST_COOLDOWN).await;
        assert_eq!(b.gate(Instant::now()), Gate::Probe);
        b.pause(Instant::now(), Duration::from_secs(2));
        assert_eq!(b.gate(Instant::now()), Gate::Wait(Duration::from_secs(2)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            b.gate(Instant::now()),
            Gate::Probe,
            "not stuck waiting for a probe that ended"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_without_counting_a_failure() {
        let mut b = Breaker::default();
        let now = Instant::now();
        b.pause(now, Duration::from_secs(2));
        assert!(!b.at_rest(), "paused, though closed");
        assert_eq!(b.gate(now), Gate::Wait(Duration::from_secs(2)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(b.gate(Instant::now()), Gate::Go);
        assert!(b.at_rest(), "the pause is over once an attempt went");
        assert_eq!(b.state(), State::Closed);
    }
}
