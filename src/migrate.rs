//! `herald migrate [--status]`: bring the postgres queue's schema to this binary's version,
//! or say where it stands (docs/architecture.md §10, "Migrations"). A gateway will also
//! migrate at start, under the same advisory lock, once the engine runs.

use std::process::ExitCode;

use herald_core::config::{self, QueueEngine, Registry};
use herald_queue_postgres as pg;

use crate::cli::MigrateArgs;

pub fn run(args: &MigrateArgs, registry: &Registry) -> anyhow::Result<ExitCode> {
    let config = match config::load(&args.config.path, registry) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let spec = match config.queue.engine {
        QueueEngine::Local => {
            println!(
                "queue engine `local`: nothing to migrate (the embedded journal at {} has no \
                 schema versions)",
                config.queue.path.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        QueueEngine::Postgres => pg::spec_of(&config.queue)
            .ok_or_else(|| anyhow::anyhow!("queue: the postgres config was not validated"))?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut client = pg::connect(spec).await?;
        let target = spec.target();
        let status = pg::status(&client).await?;
        if args.status {
            println!("queue: postgres://{target}");
            println!(
                "schema version {} (this binary's latest: {})",
                status.current, status.latest
            );
            status.check()?;
            let pending: Vec<String> = status
                .pending()
                .map(|(v, name)| format!("{v:04}_{name}"))
                .collect();
            if pending.is_empty() {
                println!("up to date");
            } else {
                println!("pending: {}", pending.join(", "));
            }
            return Ok(ExitCode::SUCCESS);
        }
        let applied = pg::migrate(&mut client).await?;
        if applied.is_empty() {
            println!(
                "queue: postgres://{target}: schema up to date at version {}",
                pg::LATEST
            );
        } else {
            let names: Vec<String> = pg::migrate::MIGRATIONS
                .iter()
                .filter(|(v, _, _)| applied.contains(v))
                .map(|(v, name, _)| format!("{v:04}_{name}"))
                .collect();
            println!(
                "queue: postgres://{target}: applied {}; schema version {}",
                names.join(", "),
                pg::LATEST
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
