//! `herald forget USER_ID`: removes a person from the enrichment cache, stored events, dead
//! letters and rejected inputs (`QueueAdmin::forget`, docs/architecture.md §10.1 and §11).
//! On the local engine the gateway must be stopped (it holds the journal); on postgres the
//! command talks to the database directly.

use std::process::ExitCode;

use herald_core::config::Registry;
use herald_core::queue::QueueError;

use crate::cli::ForgetArgs;
use crate::dlq::block_on;

pub fn run(args: &ForgetArgs, registry: &Registry) -> anyhow::Result<ExitCode> {
    let Some(config) = args.config.load(registry) else {
        return Ok(ExitCode::FAILURE);
    };
    let queue = match crate::queue::open_admin(&config.queue) {
        Ok(queue) => queue,
        Err(QueueError::Locked { path }) => anyhow::bail!(
            "the journal {path} is held by a running gateway: stop it, then run `herald forget` again \
             (the local engine forgets only in a stopped gateway's journal)"
        ),
        Err(e) => return Err(e.into()),
    };
    let report = block_on(queue.forget(&args.user_id))??;
    let user = &args.user_id;
    println!("forgot user {user}:");
    println!("  enrichment cache entries: {}", report.cache_entries);
    println!(
        "  stored events:            {} ({} deliveries dropped undelivered)",
        report.events, report.deliveries_dropped
    );
    println!("  dead letters:             {}", report.dead_letters);
    println!("  rejected inputs:          {}", report.rejected);
    println!(
        "What sinks already received (messages sent, e-mails, Kafka records, webhook receivers' \
         copies) is out of Herald's reach: remove it there."
    );
    Ok(ExitCode::SUCCESS)
}
