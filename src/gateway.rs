//! `herald run`: assemble the pipeline from a validated config and run it until a signal.
//!
//! Start: metrics recorder → journal opened (its writer thread starts) → sinks built (by
//! `sinks::Builder`, as a reload builds them, reporting to the journal's readiness) → delivery
//! workers → admin listener → public listener and pull loops → the Google
//! lifecycle (registrations and channels kept alive) → the enrichment task (sources with
//! `enrich:`, docs/architecture.md §11) → `gateway.json`.
//! Stop (SIGTERM/SIGINT): the listeners stop accepting and finish their requests, delivery
//! workers finish in-flight attempts up to `server.shutdown_timeout`, the journal commits what
//! it was sent and closes. Undelivered events stay in the journal for the next start. A second
//! signal exits at once: everything acknowledged is already durable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use herald_core::Config;
use herald_core::config::Registry;
use herald_core::delivery::Engine;
use herald_core::ingest::Ingest;
use herald_core::queue::{self, Queue};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::reload::{self, Reloader};
use crate::sinks;
use herald_sources::google;

/// Where a running gateway can be reached; written to `<queue.path>/gateway.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RuntimeInfo {
    pub pid: u32,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

impl RuntimeInfo {
    pub const FILE: &'static str = "gateway.json";

    pub fn read(queue_dir: &Path) -> anyhow::Result<RuntimeInfo> {
        let path = queue_dir.join(Self::FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    }

    fn write(&self, queue_dir: &Path) -> anyhow::Result<PathBuf> {
        // On the postgres engine nothing else creates the directory (docs/architecture.md §10.2).
        std::fs::create_dir_all(queue_dir)
            .with_context(|| format!("cannot create {}", queue_dir.display()))?;
        let path = queue_dir.join(Self::FILE);
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

pub async fn run(config: Config, registry: Registry) -> anyhow::Result<()> {
    let prometheus = install_metrics()?;
    let render: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(move || prometheus.render());

    let sink_names: Vec<String> = config.sinks.iter().map(|s| s.name.clone()).collect();
    let routes = Arc::new(ArcSwap::from_pointee(config.routes.clone()));
    let templates = Arc::new(ArcSwap::from_pointee(config.templates.clone()));
    // The queue, through the storage boundary: the engine `queue.engine` names (§10).
    let journal: Arc<dyn Queue> = crate::queue::open(&config, routes.clone(), &sink_names).await?;
    // Enrichment routes with the same table as commits, swapped by reload (§11).
    let enrich_routes = routes.clone();

    // The sinks report to the readiness `/readyz` reads, the journal's.
    let stop = CancellationToken::new();
    let builder = sinks::Builder::new(journal.health().clone(), stop.clone());
    let mut running = Vec::with_capacity(config.sinks.len());
    let mut leases = HashMap::with_capacity(config.sinks.len());
    for sink in &config.sinks {
        match builder.build(sink) {
            Ok(built) => {
                running.push(built.running);
                leases.insert(sink.name.clone(), built.lease);
            }
            Err(e) => {
                journal.close().await;
                return Err(anyhow::anyhow!(e));
            }
        }
    }
    let engine = Engine::start(
        journal.clone(),
        running,
        templates.clone(),
        config.server.shutdown_timeout,
    );
    let reloader = Arc::new(Reloader::new(
        config.file.clone(),
        registry,
        config.clone(),
        reload::Running {
            engine,
            leases,
            builder,
        },
        routes,
        templates,
        journal.clone(),
    ));
    reload::on_sighup(reloader.clone());
    if config.server.watch_config {
        reload::watch_file(reloader.clone());
    }

    let google_control = Arc::new(std::sync::OnceLock::new());
    let admin_state = AdminState {
        journal: journal.clone(),
        reloader: reloader.clone(),
        metrics: render.clone(),
        google: google_control.clone(),
        security: Arc::new(crate::console::Security::new(
            config.server.admin_token.clone(),
        )),
        activity: Arc::default(),
        started: chrono::Utc::now(),
    };
    let (admin_addr, admin_task) =
        admin::serve(config.server.admin_listen, admin_state, stop.clone()).await?;
    let ingest: Arc<dyn Ingest> = journal.clone();
    let links = google::Links::default();
    let server =
        herald_sources::serve_linked(&config, ingest, Some(render), links.clone(), stop.clone())
            .await
            .context("cannot start the HTTP server")?;
    // After the listener: a new channel's `sync` must find the source answering.
    let store: Arc<dyn queue::QueueAdmin> = journal.clone();
    let lifecycle = google::start(
        &config,
        store,
        journal.health().clone(),
        links,
        google::Clock::System,
        Some(journal.clone()),
        stop.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("google: {e}"))?;
    // Enrichment (§11): routes the events of sources with `enrich:`; none without.
    let enrich_task =
        herald_sources::enrich::start(&config, journal.clone(), enrich_routes, stop.clone())
            .await
            .map_err(|e| anyhow::anyhow!("enrich: {e}"))?;
    let lifecycle_task = lifecycle.map(|l| {
        let _ = google_control.set(l.control);
        l.task
    });

    let info = RuntimeInfo {
        pid: std::process::id(),
        listen: server.local_addr,
        admin: admin_addr,
    };
    let info_path = info.write(&config.queue.path)?;
    tracing::info!(
        listen = %info.listen,
        admin = %info.admin,
        journal = %config.queue.path.display(),
        sources = config.sources.len(),
        sinks = config.sinks.len(),
        routes = config.routes.routes().len(),
        "herald is running"
    );

    wait_for_signal().await;
    tracing::info!(deadline = ?config.server.shutdown_timeout, "shutting down: no new requests; finishing deliveries in flight");
    tokio::spawn(async {
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now; undelivered events stay in the journal");
        std::process::exit(130);
    });

    stop.cancel();
    server.stopped().await;
    // Deliveries in flight, the Google lifecycle's call in flight and the admin listener's
    // open responses (a `herald tap` stays attached until its client leaves) all get the
    // same deadline, side by side.
    let deadline = config.server.shutdown_timeout;
    let engine = reloader.take_engine().await;
    let deliveries = async {
        if let Some(engine) = engine {
            engine.stop().await;
        }
    };
    let lifecycle = async {
        if let Some(mut task) = lifecycle_task
            && tokio::time::timeout(deadline, &mut task).await.is_err()
        {
            // What it had recorded is in the journal; an unfinished renewal is redone at start.
            tracing::warn!("the Google lifecycle did not finish its call in time; stopped it");
            task.abort();
        }
    };
    let mut admin_task = admin_task;
    let admin = async {
        if tokio::time::timeout(deadline, &mut admin_task)
            .await
            .is_err()
        {
            tracing::info!("closing the admin listener's open streams (tap)");
            admin_task.abort();
        }
    };
    let enrichment = async {
        if let Some(mut task) = enrich_task
            && tokio::time::timeout(deadline, &mut task).await.is_err()
        {
            // Its events stay unrouted in the journal and are enriched at the next start.
            tracing::warn!("enrichment did not finish its lookup in time; stopped it");
            task.abort();
        }
    };
    tokio::join!(deliveries, lifecycle, admin, enrichment);
    journal.close().await;
    let _ = std::fs::remove_file(info_path);
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the gateway can only be killed; nothing acknowledged is lost.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let latency = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];
    let sizes = [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)?
        .set_buckets_for_metric(Matcher::Full("herald_journal_batch_size".into()), &sizes)?
        // Enrichment waits up to `max_wait` (minutes), beyond the latencies' 2.5 s; a full
        // name wins over the suffix.
        .set_buckets_for_metric(
            Matcher::Full(herald_sources::enrich::task::WAIT.into()),
            herald_sources::enrich::task::WAIT_BUCKETS,
        )?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}
