//! `herald check`: validate a config and say what it sets up.

use std::process::ExitCode;

use herald_core::config::{self, Registry};

use crate::cli::CheckArgs;

pub fn run(args: &CheckArgs, registry: &Registry) -> anyhow::Result<ExitCode> {
    let config = match config::load(&args.config.path, registry) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            let n = errors.errors.len();
            eprintln!(
                "{n} error{} in {}",
                if n == 1 { "" } else { "s" },
                errors.file.display()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    for line in summary(&config) {
        println!("{line}");
    }
    if let Some(token) = &config.server.admin_token {
        println!(
            "  admin listener {}: API and console want the admin token ({token})",
            config.server.admin_listen
        );
    } else {
        println!(
            "  admin listener {}: open API, console off (no server.admin_token)",
            config.server.admin_listen
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// What `herald check` says a valid config sets up, one line each, secrets masked by each
/// part's own `describe` (also the console's Config page, docs/architecture.md §12).
pub fn summary(config: &herald_core::Config) -> Vec<String> {
    let mut lines = Vec::new();
    let routes = config.routes.routes();
    lines.push(format!(
        "{}: OK — {} source{}, {} sink{}, {} route{}",
        config.file.display(),
        config.sources.len(),
        plural(config.sources.len()),
        config.sinks.len(),
        plural(config.sinks.len()),
        routes.len(),
        plural(routes.len()),
    ));
    // The queue, with any secret masked by the engine's own `describe` (§10).
    match &config.queue.engine_spec {
        Some(engine) => lines.push(format!(
            "  queue ({}): {}",
            config.queue.engine.name(),
            engine.spec.describe()
        )),
        None => lines.push(format!(
            "  queue ({}): {}",
            config.queue.engine.name(),
            config.queue.path.display()
        )),
    }
    for source in &config.sources {
        lines.push(format!(
            "  source {} ({}): {}",
            source.name,
            source.type_name,
            source.spec.describe()
        ));
    }
    for sink in &config.sinks {
        lines.push(format!(
            "  sink {} ({}): {}",
            sink.name,
            sink.type_name,
            sink.spec.describe()
        ));
    }
    for route in routes {
        let cont = if route.continue_matching {
            ", continue"
        } else {
            ""
        };
        lines.push(format!(
            "  route {} → {}{cont}",
            route.name,
            route.sinks.join(", ")
        ));
    }
    match config.routes.unmatched() {
        [] => lines.push("  unmatched events are dropped".to_owned()),
        sinks => lines.push(format!("  unmatched → {}", sinks.join(", "))),
    }
    lines
}
