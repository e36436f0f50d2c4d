//! Hot reload of routes.yaml: on SIGHUP, on `POST /-/reload` (admin listener) and when the
//! file changes (`server.watch_config`, polled every second; a change is applied once the
//! file has stayed the same for one more poll, so an editor's save-in-several-writes is read
//! once, whole).
//!
//! The new file is validated completely first; with any error the running config stays, the
//! errors are logged with line:column and `herald_config_reload_success` is 0. A valid file is
//! applied in an order that never strands an event: sinks that are new or changed start first
//! (unchanged sinks keep their worker, connections and queue), then the route table and the
//! templates are swapped atomically (the journal writer routes each batch with the table it
//! loaded for that batch, so an event is routed wholly by the old or wholly by the new one),
//! then removed sinks drain what they hold for up to `server.shutdown_timeout` and what is left
//! becomes dead letters naming the removed sink. Sinks are built as at start-up
//! (`sinks::Builder`); a removed or replaced sink's readiness checks (`kafka:<sink>`) go away
//! with it, so `/readyz` does not stay red for a sink that no longer runs. Changes to the listeners, the journal or the
//! sources need a new listener or journal: they are reported as "needs restart" and not
//! applied, rather than half-applied.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use herald_core::Config;
use herald_core::config::{self, ConfigErrors, Registry};
use herald_core::delivery::{self, Engine};
use herald_core::queue::Queue;
use herald_core::rules::RouteTable;
use herald_core::template::Templates;
use serde::Serialize;
use tokio::sync::Mutex;

use crate::sinks::{Builder, Built, Lease};

/// What a successful reload did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub routes: usize,
    /// Changes that were not applied because they need a restart.
    pub needs_restart: Vec<String>,
}

#[derive(Debug)]
pub enum ReloadError {
    Invalid(ConfigErrors),
    /// Valid, but a sink could not be built (a file that cannot be opened); nothing applied.
    Build(String),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Invalid(errors) => write!(f, "{errors}"),
            ReloadError::Build(e) => f.write_str(e),
        }
    }
}

/// The last reload, for the console's Config page (docs/architecture.md §12).
#[derive(Clone, Debug, Serialize)]
pub struct LastReload {
    pub at: chrono::DateTime<chrono::Utc>,
    pub trigger: String,
    pub applied: bool,
    /// What was applied, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
    /// Each error as `file:line:column: message`, when refused.
    pub errors: Vec<String>,
}

pub struct Reloader {
    path: PathBuf,
    last: std::sync::Mutex<Option<LastReload>>,
    registry: Registry,
    /// The config as started: listeners, journal and sources come from it until a restart.
    started: Config,
    state: Mutex<State>,
    routes: Arc<ArcSwap<RouteTable>>,
    templates: Arc<ArcSwap<Templates>>,
    journal: Arc<dyn Queue>,
}

struct State {
    current: Config,
    engine: Option<Engine>,
    /// One per running sink: replacing or removing it releases what the sink held.
    leases: HashMap<String, Lease>,
    builder: Builder,
}

/// The sinks as the gateway started them.
pub struct Running {
    pub engine: Engine,
    pub leases: HashMap<String, Lease>,
    /// Builds the sinks a reload adds or changes, as the start-up built the first ones.
    pub builder: Builder,
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        registry: Registry,
        config: Config,
        running: Running,
        routes: Arc<ArcSwap<RouteTable>>,
        templates: Arc<ArcSwap<Templates>>,
        journal: Arc<dyn Queue>,
    ) -> Reloader {
        Reloader {
            path,
            last: std::sync::Mutex::new(None),
            registry,
            started: config.clone(),
            state: Mutex::new(State {
                current: config,
                engine: Some(running.engine),
                leases: running.leases,
                builder: running.builder,
            }),
            routes,
            templates,
            journal,
        }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The config in force (the console's Config and Try pages).
    pub async fn current(&self) -> Config {
        self.state.lock().await.current.clone()
    }

    /// The last reload since start, if any.
    pub fn last_reload(&self) -> Option<LastReload> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The sinks of the config in force (for `dlq replay`).
    pub async fn sink_names(&self) -> Vec<String> {
        self.state
            .lock()
            .await
            .current
            .sinks
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    /// Takes the engine out for shutdown; reloads after this do nothing.
    pub async fn take_engine(&self) -> Option<Engine> {
        self.state.lock().await.engine.take()
    }

    /// Loads, validates and applies the config file. `trigger` says what asked (for the log).
    pub async fn reload(&self, trigger: &str) -> Result<Report, ReloadError> {
        let mut state = self.state.lock().await;
        let result = self.apply(&mut state).await;
        let last = LastReload {
            at: chrono::Utc::now(),
            trigger: trigger.to_owned(),
            applied: result.is_ok(),
            report: result
                .as_ref()
                .ok()
                .and_then(|r| serde_json::to_value(r).ok()),
            errors: match &result {
                Ok(_) => Vec::new(),
                Err(e) => e.to_string().lines().map(str::to_owned).collect(),
            },
        };
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(last);
        match &result {
            Ok(report) => {
                metrics::gauge!("herald_config_reload_success").set(1.0);
                metrics::counter!("herald_config_reloads_total", "result" => "applied")
                    .increment(1);
                tracing::info!(
                    trigger,
                    added = ?report.added,
                    changed = ?report.changed,
                    removed = ?report.removed,
                    routes = report.routes,
                    "config reloaded"
                );
                for what in &report.needs_restart {
                    tracing::warn!(
                        trigger,
                        "config change not applied, needs a restart: {what}"
                    );
                }
            }
            Err(ReloadError::Invalid(errors)) => {
                metrics::gauge!("herald_config_reload_success").set(0.0);
                metrics::counter!("herald_config_reloads_total", "result" => "invalid")
                    .increment(1);
                for e in &errors.errors {
                    tracing::error!(
                        trigger,
                        "config reload refused, the running config stays: {}:{}: {}",
                        errors.file.display(),
                        e.loc,
                        e.message
                    );
                }
            }
            Err(ReloadError::Build(e)) => {
                metrics::gauge!("herald_config_reload_success").set(0.0);
                metrics::counter!("herald_config_reloads_total", "result" => "failed").increment(1);
                tracing::error!(trigger, error = %e, "config reload failed, the running config stays");
            }
        }
        result
    }

    async fn apply(&self, state: &mut State) -> Result<Report, ReloadError> {
        let path = self.path.clone();
        let registry = self.registry.clone();
        let new = tokio::task::spawn_blocking(move || config::load(&path, &registry))
            .await
            .map_err(|e| ReloadError::Build(e.to_string()))?
            .map_err(ReloadError::Invalid)?;
        let Some(engine) = state.engine.as_mut() else {
            return Err(ReloadError::Build("the gateway is shutting down".into()));
        };
        let mut report = Report {
            routes: new.routes.routes().len(),
            needs_restart: self.needs_restart(&new),
            ..Report::default()
        };

        // Build every new or changed sink before touching anything running. If one fails,
        // those already built are dropped with their leases: nothing of them stays.
        let mut built = Vec::new();
        for sink in &new.sinks {
            let old = state.current.sink(&sink.name);
            if old
                .is_some_and(|o| o.fingerprint == sink.fingerprint && o.type_name == sink.type_name)
            {
                continue;
            }
            let sink = state.builder.build(sink).map_err(ReloadError::Build)?;
            built.push((old.is_some(), sink));
        }
        for (replaces, Built { running, lease }) in built {
            let name = running.name.clone();
            if replaces {
                report.changed.push(name.clone());
                if let Some(old) = engine.take(&name) {
                    old.stop().await;
                }
            } else {
                report.added.push(name.clone());
            }
            engine.add(running);
            // The replaced sink's lease (if any) is dropped here, after its worker stopped.
            state.leases.insert(name, lease);
        }

        self.templates.store(Arc::new(new.templates.clone()));
        self.routes.store(Arc::new(new.routes.clone()));

        for old in &state.current.sinks {
            if new.sink(&old.name).is_none()
                && let Some(worker) = engine.take(&old.name)
            {
                report.removed.push(old.name.clone());
                // Its readiness checks go now; its backlog drains (or is buried) below.
                state.leases.remove(&old.name);
                let drain = self.started.server.shutdown_timeout;
                tokio::spawn(delivery::retire(
                    self.journal.clone(),
                    old.name.clone(),
                    worker,
                    drain,
                ));
            }
        }
        // A shared queue tells the other gateways which sinks this one has now
        // (docs/architecture.md §10.2, "Sinks some gateways lack").
        let names: Vec<String> = new.sinks.iter().map(|s| s.name.clone()).collect();
        let bytes = std::fs::read(&self.path).unwrap_or_else(|_| names.join("\n").into());
        if let Err(e) = self
            .journal
            .register(&names, &herald_queue_postgres::fingerprint(&bytes))
            .await
        {
            tracing::warn!(error = %e, "cannot record this gateway's sinks in the shared queue");
        }
        state.current = new;
        Ok(report)
    }

    /// What in `new` differs from the running listeners, journal and sources.
    fn needs_restart(&self, new: &Config) -> Vec<String> {
        let (old, mut out) = (&self.started, Vec::new());
        if old.server.listen != new.server.listen || old.server.tls != new.server.tls {
            out.push("server.listen / server.tls (the public listener)".into());
        }
        if old.server.admin_listen != new.server.admin_listen {
            out.push("server.admin_listen".into());
        }
        if old.server.body_limit != new.server.body_limit
            || old.server.request_timeout != new.server.request_timeout
        {
            out.push("server.body_limit / server.request_timeout".into());
        }
        if old.server.shutdown_timeout != new.server.shutdown_timeout {
            out.push("server.shutdown_timeout".into());
        }
        if old.server.watch_config != new.server.watch_config {
            out.push("server.watch_config".into());
        }
        if old.queue != new.queue {
            out.push("queue (the journal)".into());
        }
        if old.section_fingerprint("google") != new.section_fingerprint("google") {
            out.push("google (the credentials of the Google lifecycle)".into());
        }
        let fingerprints = |c: &Config| {
            c.sources
                .iter()
                .map(|s| (s.name.clone(), s.fingerprint.clone()))
                .collect::<Vec<_>>()
        };
        if fingerprints(old) != fingerprints(new) {
            out.push("sources".into());
        }
        out
    }
}

/// Reloads on SIGHUP until the process ends.
pub fn on_sighup(reloader: Arc<Reloader>) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload with POST /-/reload instead");
            return;
        };
        while hup.recv().await.is_some() {
            let _ = reloader.reload("SIGHUP").await;
        }
    });
}

/// Reloads when the config file's content changes and then stays the same for a poll.
pub fn watch_file(reloader: Arc<Reloader>) {
    tokio::spawn(async move {
        const POLL: Duration = Duration::from_secs(1);
        let read = |p: &std::path::Path| std::fs::read(p).ok();
        let mut applied = read(reloader.path());
        let mut seen = applied.clone();
        loop {
            tokio::time::sleep(POLL).await;
            let now = read(reloader.path());
            if now.is_some() && now == seen && now != applied {
                applied = now.clone();
                let _ = reloader.reload("file change").await;
            }
            seen = now;
        }
    });
}
