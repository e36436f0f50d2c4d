//! Starting the configured sinks for the running gateway: the one way, at start-up
//! (`gateway.rs`) and on reload (`reload.rs`).
//!
//! Each sink is built with a [`BuildContext`] of its own: the gateway's readiness checks (the
//! [`Health`] `/readyz` reads) as that sink's own checks, and a stop token for its background
//! tasks. The [`Lease`] kept beside the running sink hands both back when it is dropped: when
//! a reload removes or replaces the sink, when a reload fails after building it, and at
//! shutdown. So `/readyz` never stays red for a sink that no longer runs.

use herald_core::config::{BuildContext, SinkConfig};
use herald_core::delivery::RunningSink;
use herald_core::health::Health;
use tokio_util::sync::CancellationToken;

/// Builds sinks for one gateway.
#[derive(Clone, Debug)]
pub struct Builder {
    health: Health,
    stop: CancellationToken,
}

/// A built sink, ready for the delivery engine, and what to release when it goes.
pub struct Built {
    pub running: RunningSink,
    pub lease: Lease,
}

/// What one running sink holds of the gateway; dropping it releases the sink's readiness
/// checks and stops its background tasks.
#[derive(Debug)]
pub struct Lease {
    context: BuildContext,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.context.stop.cancel();
        self.context.health.release();
    }
}

impl Builder {
    /// Sinks built by this report to `health` and stop their background tasks with `stop`.
    pub fn new(health: Health, stop: CancellationToken) -> Builder {
        Builder { health, stop }
    }

    /// Builds `sink`. Validation already happened: an error here is about the environment
    /// (a file that cannot be opened), and names the sink.
    pub fn build(&self, sink: &SinkConfig) -> Result<Built, String> {
        let context = BuildContext {
            health: self.health.owned(),
            stop: self.stop.child_token(),
        };
        // Leased before building: a sink that fails to build may have started something.
        let lease = Lease {
            context: context.clone(),
        };
        let built = sink
            .spec
            .build(&context)
            .map_err(|e| format!("sink `{}`: {e}", sink.name))?;
        Ok(Built {
            running: RunningSink {
                name: sink.name.clone(),
                sink: built,
                policy: sink.policy.clone(),
                pace: sink.spec.pace(),
            },
            lease,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use herald_core::Sink;
    use herald_core::config::SinkSpec;

    use super::*;

    /// Raises a check while building, then fails.
    #[derive(Debug)]
    struct Raises;

    impl SinkSpec for Raises {
        fn build(&self, context: &BuildContext) -> Result<Arc<dyn Sink>, String> {
            context.health.fail("test:s", "not yet");
            Err("cannot open `out.jsonl`".into())
        }
        fn describe(&self) -> String {
            String::new()
        }
    }

    #[test]
    fn a_sink_that_fails_to_build_leaves_no_check_behind() {
        let health = Health::default();
        let builder = Builder::new(health.clone(), CancellationToken::new());
        let sink = SinkConfig {
            name: "s".into(),
            type_name: "test",
            policy: Default::default(),
            spec: Arc::new(Raises),
            fingerprint: String::new(),
        };
        let err = builder.build(&sink).err();
        assert_eq!(err.as_deref(), Some("sink `s`: cannot open `out.jsonl`"));
        assert_eq!(health.check(), Ok(()));
    }

    #[test]
    fn dropping_the_lease_releases_the_sinks_checks_and_stops_it() {
        let (health, stop) = (Health::default(), CancellationToken::new());
        let context = BuildContext {
            health: health.owned(),
            stop: stop.child_token(),
        };
        let lease = Lease {
            context: context.clone(),
        };
        context.health.fail("kafka:bus", "topic `t` does not exist");
        assert!(health.check().is_err());
        drop(lease);
        assert_eq!(health.check(), Ok(()));
        assert!(context.stop.is_cancelled());
        assert!(!stop.is_cancelled(), "the gateway's own token stays");
    }
}
