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
    let routes = config.routes.routes();
    println!(
        "{}: OK — {} source{}, {} sink{}, {} route{}",
        config.file.display(),
        config.sources.len(),
        plural(config.sources.len()),
        config.sinks.len(),
        plural(config.sinks.len()),
        routes.len(),
        plural(routes.len()),
    );
    // The queue, with any secret masked by the engine's own `describe` (§10).
    match &config.queue.engine_spec {
        Some(engine) => println!(
            "  queue ({}): {}",
            config.queue.engine.name(),
            engine.spec.describe()
        ),
        None => println!(
            "  queue ({}): {}",
            config.queue.engine.name(),
            config.queue.path.display()
        ),
    }
    for source in &config.sources {
        println!(
            "  source {} ({}): {}",
            source.name,
            source.type_name,
            source.spec.describe()
        );
    }
    for sink in &config.sinks {
        println!(
            "  sink {} ({}): {}",
            sink.name,
            sink.type_name,
            sink.spec.describe()
        );
    }
    for route in routes {
        let cont = if route.continue_matching {
            ", continue"
        } else {
            ""
        };
        println!("  route {} → {}{cont}", route.name, route.sinks.join(", "));
    }
    match config.routes.unmatched() {
        [] => println!("  unmatched events are dropped"),
        sinks => println!("  unmatched → {}", sinks.join(", ")),
    }
    Ok(ExitCode::SUCCESS)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
