//! The `herald` command: run the gateway, check a config, try an event against the routes,
//! manage dead letters (docs/architecture.md §5), see to the Google subscriptions Herald keeps alive,
//! and migrate the postgres queue's schema (§10).

mod admin;
mod check;
mod cli;
mod console;
mod dlq;
mod forget;
mod gateway;
mod google;
mod journal;
mod migrate;
mod queue;
mod queue_copy;
mod reload;
mod sinks;
mod tap;
mod try_event;

use std::process::ExitCode;

/// mimalloc rather than glibc's allocator: in the ingest benchmark glibc's `malloc`/`free`
/// (chunk consolidation) took a fifth of the gateway's CPU, and with mimalloc the same
/// binary answered 45% more requests (median of 3 alternating runs, 18.4k vs 12.7k/s).
/// Plugins keep their own allocator: each frees the buffers it allocated (plugin/src/abi.rs).
/// Built without transparent huge pages (Cargo.toml, `no_thp`); on a kernel whose THP mode
/// is `always` rather than `madvise`, `MIMALLOC_ALLOW_THP=0` (set in deploy/herald.service
/// and the Dockerfile) keeps them off too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use herald_core::config::Registry;

fn main() -> ExitCode {
    // One rustls crypto provider for the whole process (docs/architecture.md §16: reqwest, the
    // TLS listener and lettre all use aws-lc-rs); installing it first means no library can pick
    // another.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = cli::Cli::parse();
    let registry = registry();
    let result = match &cli.command {
        cli::Command::Check(args) => check::run(args, &registry),
        cli::Command::Test(args) => try_event::run(args, &registry),
        cli::Command::Run(args) => run_gateway(args, &registry),
        cli::Command::Dlq(args) => dlq::run(args, &registry),
        cli::Command::Tap(args) => tap::run(args, &registry),
        cli::Command::Google(args) => google::run(args, &registry),
        cli::Command::Migrate(args) => migrate::run(args, &registry),
        cli::Command::Queue(args) => queue_copy::run(args, &registry),
        cli::Command::Forget(args) => forget::run(args, &registry),
        cli::Command::Journal(args) => journal::run(args, &registry),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("herald: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Every sink, source and queue-engine type this build has.
fn registry() -> Registry {
    let mut registry = Registry::default();
    herald_sinks::register(&mut registry);
    herald_sources::register(&mut registry);
    herald_queue_postgres::register(&mut registry);
    registry
}

fn run_gateway(args: &cli::RunArgs, registry: &Registry) -> anyhow::Result<ExitCode> {
    init_logs(args.log_format);
    let config = match herald_core::config::load(&args.config.path, registry) {
        Ok(config) => config,
        Err(errors) => {
            // Each error is one log line (JSON with --log-format json); the text format adds
            // the summary `herald check` prints.
            for e in &errors.errors {
                tracing::error!("{}:{}: {}", errors.file.display(), e.loc, e.message);
            }
            if args.log_format == cli::LogFormat::Text {
                eprintln!("{errors}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("herald")
        .build()?;
    if let Err(e) = runtime.block_on(gateway::run(config, registry.clone())) {
        // Through the log, so that a JSON log stays JSON lines.
        tracing::error!("herald cannot run: {e:#}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn init_logs(format: cli::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        // A line that cannot be written (stderr on a full disk) is lost, nothing more: the
        // subscriber's own report of it is an `eprintln!`, which panics when stderr fails,
        // in the journal's writer or a request's task alike.
        .log_internal_errors(false);
    match format {
        cli::LogFormat::Text => builder.init(),
        cli::LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
