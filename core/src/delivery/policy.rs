//! What to do after an attempt: deliver, retry later (exponential backoff with full jitter,
//! [`crate::backoff`], `Retry-After` honoured), or give up. Pure functions of the attempt's result, the delivery's
//! history and the sink's policy, so they are tested without a clock.

use rand::Rng;

use crate::journal::{Attempt, Millis, Outcome, PendingState};
use crate::sink::{DeliveryPolicy, SinkError};

/// Decides the outcome of an attempt that ended with `result` at `now`.
pub fn decide(
    result: &Result<(), SinkError>,
    state: &PendingState,
    committed_at: Millis,
    now: Millis,
    policy: &DeliveryPolicy,
    rng: &mut impl Rng,
) -> Outcome {
    let error = match result {
        Ok(()) => return Outcome::Delivered,
        Err(e) => e,
    };
    let attempt = Attempt {
        at: now,
        error: error.message().to_owned(),
    };
    let attempts = state.attempts + 1;
    match error {
        SinkError::Permanent { .. } => Outcome::Dead {
            attempt: Some(attempt),
            reason: "permanent error".into(),
        },
        SinkError::Retryable { retry_after, .. } => {
            if attempts >= policy.max_attempts {
                return Outcome::Dead {
                    attempt: Some(attempt),
                    reason: format!("gave up after {attempts} attempts"),
                };
            }
            let mut delay = policy.backoff().jittered(attempts, rng);
            if let Some(asked) = retry_after {
                delay = delay.max(*asked);
            }
            let next_at = now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
            let max_age = i64::try_from(policy.max_age.as_millis()).unwrap_or(i64::MAX);
            if next_at.saturating_sub(committed_at) > max_age {
                return Outcome::Dead {
                    attempt: Some(attempt),
                    reason: format!(
                        "older than max_age ({}s) after {attempts} attempts",
                        policy.max_age.as_secs()
                    ),
                };
            }
            Outcome::Retry { attempt, next_at }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn policy() -> DeliveryPolicy {
        DeliveryPolicy {
            max_attempts: 5,
            max_age: Duration::from_secs(3600),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            ..DeliveryPolicy::default()
        }
    }

    #[test]
    fn success_is_delivered_and_permanent_errors_die_at_once() {
        let mut rng = StdRng::seed_from_u64(1);
        let fresh = PendingState::default();
        assert_eq!(
            decide(&Ok(()), &fresh, 0, 0, &policy(), &mut rng),
            Outcome::Delivered
        );
        let outcome = decide(
            &Err(SinkError::permanent("400 channel_not_found")),
            &fresh,
            0,
            10,
            &policy(),
            &mut rng,
        );
        match outcome {
            Outcome::Dead {
                attempt: Some(a),
                reason,
            } => {
                assert_eq!(reason, "permanent error");
                assert_eq!(a.error, "400 channel_not_found");
            }
            other => panic!("expected a dead letter, got {other:?}"),
        }
    }

    #[test]
    fn retryable_errors_retry_until_the_attempt_budget() {
        let mut rng = StdRng::seed_from_u64(1);
        let err = Err(SinkError::retryable("503"));
        let mut state = PendingState::default();
        for attempt in 1..5 {
            match decide(&err, &state, 0, 1000, &policy(), &mut rng) {
                Outcome::Retry { next_at, .. } => {
                    let ceiling = policy().backoff().ceiling(attempt).as_millis() as i64;
                    assert!(
                        (1000..=1000 + ceiling).contains(&next_at),
                        "attempt {attempt}: {next_at}"
                    );
                }
                other => panic!("attempt {attempt}: expected a retry, got {other:?}"),
            }
            state.attempts = attempt;
        }
        match decide(&err, &state, 0, 1000, &policy(), &mut rng) {
            Outcome::Dead { reason, .. } => assert_eq!(reason, "gave up after 5 attempts"),
            other => panic!("expected a dead letter, got {other:?}"),
        }
    }

    #[test]
    fn retry_after_is_honoured() {
        let mut rng = StdRng::seed_from_u64(1);
        let err = Err(SinkError::Retryable {
            message: "429".into(),
            retry_after: Some(Duration::from_secs(2)),
        });
        match decide(&err, &PendingState::default(), 0, 5000, &policy(), &mut rng) {
            Outcome::Retry { next_at, .. } => assert!(next_at >= 7000, "{next_at}"),
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn deliveries_older_than_max_age_die() {
        let mut rng = StdRng::seed_from_u64(1);
        let err = Err(SinkError::retryable("connection refused"));
        let committed = 0;
        let now = 3600 * 1000 - 10; // a retry would land past the hour
        let p = DeliveryPolicy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
            ..policy()
        };
        let state = PendingState {
            attempts: 1,
            ..PendingState::default()
        };
        let mut saw_dead = false;
        for _ in 0..20 {
            if let Outcome::Dead { reason, .. } = decide(&err, &state, committed, now, &p, &mut rng)
            {
                assert!(reason.starts_with("older than max_age (3600s)"), "{reason}");
                saw_dead = true;
            }
        }
        assert!(saw_dead);
    }
}
