//! What the sink tests share: loading a config of sinks, sending one delivery straight to a
//! sink, running sinks behind the real delivery engine on a real journal, and the real servers
//! the sinks talk to (HTTP receivers from herald-testkit, an SMTP server, a Kafka broker).

pub mod kafka;
pub mod smtp;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use herald_core::config::{self, Config, Registry};
use herald_core::delivery::{Engine, RunningSink};
use herald_core::journal::{DeadFilter, DeadLetter, Journal, Stats};
use herald_core::template::Templates;
use herald_core::{Delivery, Event, Sink, SinkError};
pub use herald_testkit::*;

pub fn registry() -> Registry {
    let mut r = Registry::default();
    crate::register(&mut r);
    r
}

/// Validates a whole routes.yaml text, as `herald check` would (file name `routes.yaml`).
pub fn load(yaml: &str) -> Result<Config, String> {
    config::parse(
        yaml,
        std::path::Path::new("routes.yaml"),
        &registry(),
        &|_| None,
    )
    .map_err(|e| e.to_string())
}

/// Builds sink `name` of `config`.
pub fn build(config: &Config, name: &str) -> Arc<dyn Sink> {
    config
        .sink(name)
        .expect("the sink is in the config")
        .spec
        .build(&Default::default())
        .expect("the sink builds")
}

/// Renders `event` for `sink` through route `r` and delivers it to `built`.
pub async fn deliver(
    config: &Config,
    built: &dyn Sink,
    sink: &str,
    event: &Event,
) -> Result<(), SinkError> {
    deliver_in_turn(config, built, sink, event, &herald_core::sink::ALWAYS).await
}

/// [`deliver`] during a gateway's `turn` at a paced sink (docs/architecture.md §10.2).
pub async fn deliver_in_turn(
    config: &Config,
    built: &dyn Sink,
    sink: &str,
    event: &Event,
    turn: &herald_core::sink::Turn,
) -> Result<(), SinkError> {
    let rendered = config
        .templates
        .render("r", sink, &Templates::context(event))
        .expect("the templates render");
    built
        .deliver(Delivery {
            event,
            json: &event.to_json(),
            route: "r",
            sink,
            rendered: &rendered,
            turn,
        })
        .await
}

/// Test events: `directory.users.add` for `user<n>@example.edu`.
pub fn user_event(n: usize) -> Event {
    let mut e = Event::new(
        format!("chan/{n}"),
        "directory",
        "directory.users.add",
        chrono::Utc::now(),
        serde_json::json!({"primaryEmail": format!("user{n}@example.edu"), "id": n.to_string()}),
    )
    .with_subject(format!("users/{n}"));
    e.meta.insert("resourceState".into(), "add".into());
    e
}

/// Sinks behind the real delivery engine on a real journal: events committed to it are
/// delivered (retried, dead-lettered) exactly as by `herald run`.
pub struct Pipeline {
    journal: Arc<Journal>,
    engine: Option<Engine>,
    _dir: tempfile::TempDir,
}

impl Pipeline {
    /// `sinks` is the `sinks:` section's body (indented by two spaces); one route sends every
    /// event to every sink.
    pub fn start(sinks: &str) -> Pipeline {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let probe = load(&format!("sinks:\n{sinks}")).expect("the sinks are valid");
        let names: Vec<String> = probe.sinks.iter().map(|s| s.name.clone()).collect();
        let yaml = format!(
            "queue:\n  path: \"{}\"\nsinks:\n{sinks}\nroutes:\n  - name: all\n    to: [{}]\n",
            dir.path().display(),
            names.join(", ")
        );
        let config = load(&yaml).expect("the config is valid");
        let routes = Arc::new(ArcSwap::from_pointee(config.routes.clone()));
        let journal =
            Arc::new(Journal::open(&config.queue, routes, &names).expect("the journal opens"));
        let running = config
            .sinks
            .iter()
            .map(|s| RunningSink {
                name: s.name.clone(),
                sink: s.spec.build(&Default::default()).expect("the sink builds"),
                policy: s.policy.clone(),
                pace: s.spec.pace(),
            })
            .collect();
        let templates = Arc::new(ArcSwap::from_pointee(config.templates.clone()));
        let engine = Engine::start(journal.clone(), running, templates, Duration::from_secs(5));
        Pipeline {
            journal,
            engine: Some(engine),
            _dir: dir,
        }
    }

    pub async fn commit(&self, events: impl IntoIterator<Item = Event>) {
        use herald_core::ingest::Ingest;
        for e in events {
            self.journal.commit(e).await.expect("the journal commits");
        }
    }

    pub fn stats(&self) -> Stats {
        self.journal.stats().expect("journal stats")
    }

    /// The attempts made so far on each of `sink`'s pending deliveries, in journal order.
    pub async fn attempts(&self, sink: &str) -> Vec<u32> {
        let pending = self.journal.scan_pending(sink, None, usize::MAX).await;
        let pending = pending.expect("pending deliveries");
        pending.iter().map(|item| item.state.attempts).collect()
    }

    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.journal
            .dead_letters(&DeadFilter::default())
            .expect("dead letters")
    }

    /// Waits until no delivery is pending (delivered or dead-lettered), at most `limit`.
    pub async fn settled(&self, limit: Duration) {
        until("no delivery pending", limit, || {
            self.stats().pending.values().all(|n| *n == 0)
        })
        .await;
    }

    pub async fn stop(mut self) {
        if let Some(engine) = self.engine.take() {
            engine.stop().await;
        }
        self.journal.close().await;
    }
}

pub use herald_testkit::wait::{eventually, eventually_async, until};
