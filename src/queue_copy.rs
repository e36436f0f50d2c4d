//! `herald queue copy --to CONFIG` (docs/architecture.md §10.2): a stopped gateway's local
//! journal into the postgres queue CONFIG names, so a cluster starts with the backlog, the
//! dead letters and the Google channels the single gateway had. Read through the journal's
//! admin handle (which holds the file's lock, so no gateway starts on it meanwhile), written
//! through the postgres engine's [`pg::Importer`], idempotently.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use herald_core::config::{self, QueueEngine, Registry};
use herald_core::journal::{self, AdminJournal};
use herald_core::queue::{DeadFilter, DeliveryKey, QueueError};
use herald_queue_postgres as pg;

use crate::cli::{QueueArgs, QueueCommand};

/// Pending deliveries read per page, and events imported per transaction.
const PAGE: usize = 1000;
const BATCH: usize = 500;

pub fn run(args: &QueueArgs, registry: &Registry) -> anyhow::Result<ExitCode> {
    let QueueCommand::Copy { to } = &args.command;
    let Some(from) = args.config.load(registry) else {
        return Ok(ExitCode::FAILURE);
    };
    let Some(target) = load(to, registry) else {
        return Ok(ExitCode::FAILURE);
    };
    if from.queue.engine != QueueEngine::Local {
        anyhow::bail!(
            "{}: queue copy reads a `local` queue; this config's engine is `{}`",
            from.file.display(),
            from.queue.engine.name()
        );
    }
    if target.queue.engine != QueueEngine::Postgres {
        anyhow::bail!(
            "{}: queue copy writes to a `postgres` queue; this config's engine is `{}`",
            target.file.display(),
            target.queue.engine.name()
        );
    }
    let spec =
        pg::spec_of(&target.queue).context("queue: the postgres config was not validated")?;
    let local = match journal::open_for_admin(&from.queue.path) {
        Ok(local) => local,
        Err(QueueError::Locked { .. }) => anyhow::bail!(
            "the local journal at {} is in use by a running gateway: stop it first (a copy \
             of a queue that is still delivering would deliver twice)",
            from.queue.path.display()
        ),
        Err(e) => return Err(e.into()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(copy(&local, &from.queue.path, spec))
}

fn load(path: &Path, registry: &Registry) -> Option<herald_core::Config> {
    match config::load(path, registry) {
        Ok(config) => Some(config),
        Err(errors) => {
            eprintln!("{errors}");
            None
        }
    }
}

async fn copy(local: &AdminJournal, path: &Path, spec: &pg::PgSpec) -> anyhow::Result<ExitCode> {
    let mut importer = pg::Importer::open(spec).await?;
    println!(
        "copying the local journal at {} to postgres://{}",
        path.display(),
        spec.target()
    );

    // Google state: registrations and channels, with their tokens.
    let (mut state_new, mut state_there) = (0, 0);
    for (key, value) in local.list_state("")? {
        if importer.state(&key, &value).await? {
            state_new += 1;
        } else {
            state_there += 1;
        }
    }
    println!("state: {state_new} copied, {state_there} already there");

    // Dead letters and rejected inputs.
    let (mut dead_new, mut dead_there) = (0, 0);
    for letter in local.dead_letters(&DeadFilter::default())? {
        if importer.dead_letter(&letter).await? {
            dead_new += 1;
        } else {
            dead_there += 1;
        }
    }
    println!("dead letters and rejected inputs: {dead_new} copied, {dead_there} already there");

    // Pending deliveries with their events, grouped by event.
    let stats = local.stats()?;
    let mut events: BTreeMap<u64, pg::ImportEvent> = BTreeMap::new();
    let mut damaged = 0;
    for sink in stats.pending.keys() {
        let mut after: Option<DeliveryKey> = None;
        loop {
            let (items, bad) = local.pending(sink, after.as_ref(), PAGE)?;
            damaged += bad;
            let Some(last) = items.last() else { break };
            after = Some(last.key.clone());
            let full = items.len() >= PAGE;
            for item in items {
                let entry = events
                    .entry(item.key.seq)
                    .or_insert_with(|| pg::ImportEvent {
                        source: item.event.source.to_string(),
                        event_id: item.event.id.clone(),
                        committed_at: item.committed_at,
                        json: item.json.to_string(),
                        deliveries: Vec::new(),
                    });
                entry.deliveries.push((
                    item.key.route.to_string(),
                    item.key.sink.to_string(),
                    item.state,
                ));
            }
            if !full {
                break;
            }
        }
    }
    let events: Vec<pg::ImportEvent> = events.into_values().collect();
    let (mut new, mut deliveries) = (0, 0);
    for chunk in events.chunks(BATCH) {
        let (n, d) = importer.events(chunk).await?;
        new += n;
        deliveries += d;
    }
    println!(
        "pending: {} events with {deliveries} deliveries copied, {} events already there",
        new,
        events.len() - new
    );
    if damaged > 0 {
        println!("{damaged} pending deliveries whose event cannot be read were left out");
    }
    let unrouted = local.unrouted()?;
    if unrouted > 0 {
        println!(
            "{unrouted} events waiting to be enriched were not copied (the postgres engine \
             does not enrich yet): run the local gateway until they are routed, then copy again"
        );
    }
    println!(
        "done; the local journal is unchanged: do not start a gateway on it again (its \
         deliveries would be made twice)"
    );
    Ok(ExitCode::SUCCESS)
}
