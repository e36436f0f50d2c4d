//! `herald journal upgrade [--finalize]`: the local engine's journal of a version before the
//! log converted to the log, and the old file deleted once no downgrade is wanted
//! (core/src/journal/upgrade.rs, README "Upgrading the journal").

use std::process::ExitCode;

use herald_core::config::{QueueEngine, Registry};
use herald_core::journal::{self, JournalError, upgrade};

use crate::cli::{JournalArgs, JournalCommand};

pub fn run(args: &JournalArgs, registry: &Registry) -> anyhow::Result<ExitCode> {
    let Some(config) = args.config.load(registry) else {
        return Ok(ExitCode::FAILURE);
    };
    if config.queue.engine != QueueEngine::Local {
        anyhow::bail!(
            "queue.engine is `{}`: only the local engine keeps a journal to upgrade",
            config.queue.engine.name()
        );
    }
    let dir = &config.queue.path;
    let JournalCommand::Upgrade { finalize } = &args.command;
    if *finalize {
        if !dir.join(journal::ledger::LOG_DIR).exists() {
            anyhow::bail!(
                "{} has not been converted yet: run `herald journal upgrade` (or start the gateway) first",
                dir.display()
            );
        }
        if upgrade::finalize(dir)? {
            println!(
                "deleted {}: the journal cannot be used by an older version any more",
                dir.join(upgrade::PRE_LOG_COPY).display()
            );
        } else {
            println!("no old file to delete in {}", dir.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    match journal::upgrade_stopped(dir) {
        Ok(Some(done)) => {
            println!(
                "converted {}: {} events ({} deliveries pending, {} waiting to be routed) are in the log",
                dir.display(),
                done.events,
                done.pending,
                done.unrouted
            );
            println!(
                "the old file is kept as {}; `herald journal upgrade --finalize` deletes it",
                dir.join(upgrade::PRE_LOG_COPY).display()
            );
        }
        Ok(None) => println!(
            "{} is already on the log: nothing to convert",
            dir.display()
        ),
        Err(JournalError::Locked { path }) => anyhow::bail!(
            "the journal {path} is held by a running gateway: it converted the journal when it \
             started; stop it to run this command"
        ),
        Err(e) => return Err(e.into()),
    }
    Ok(ExitCode::SUCCESS)
}
