use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Routes Google Classroom and Workspace notifications to email, Kafka, Slack and plugins"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Run(RunArgs),
    /// Validate the config; print every error with line:column and exit 1 on any.
    Check(CheckArgs),
    /// Show which routes and sinks an event reaches and the rendered messages; sends nothing.
    Test(TestArgs),
    /// List, show, replay and purge dead letters (on a stopped or a running gateway).
    Dlq(DlqArgs),
    /// Print the events a running gateway routes, live, with the routes they matched.
    Tap(TapArgs),
    /// Classroom registrations and Directory channels that Herald keeps alive.
    Google(GoogleArgs),
    /// Apply the postgres queue's pending schema migrations, or show its version (--status).
    Migrate(MigrateArgs),
    /// Move a stopped gateway's queue elsewhere (`copy --to`: a local journal into PostgreSQL).
    Queue(QueueArgs),
    /// Remove a person from the enrichment cache, stored events, dead letters and rejected
    /// inputs (not from what sinks already received); a stopped gateway on the local engine
    Forget(ForgetArgs),
    /// The local engine's journal: convert one of an older version to the log (`upgrade`),
    /// then delete the old file once no downgrade is wanted (`upgrade --finalize`).
    Journal(JournalArgs),
}

#[derive(Debug, Args)]
pub struct JournalArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(subcommand)]
    pub command: JournalCommand,
}

#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// Convert a stopped gateway's journal of a version before the log (events in
    /// `journal.redb`) to the log, keeping the old file as `journal.redb.pre-log`. A gateway
    /// started on such a journal does the same at its first start.
    Upgrade {
        /// Delete the old file kept by the conversion: no downgrade is possible after this.
        #[arg(long)]
        finalize: bool,
    },
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The Google user id (or e-mail address) as the events carry it
    pub user_id: String,
}

#[derive(Debug, Args)]
pub struct QueueArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(subcommand)]
    pub command: QueueCommand,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Copy the local journal's pending deliveries (with their retry state), dead letters,
    /// rejected inputs and Google state into the postgres queue that CONFIG names; running it
    /// twice copies nothing twice. The gateway on the local journal must be stopped.
    Copy {
        /// The config file naming the postgres queue (`queue.engine: postgres`).
        #[arg(long, value_name = "CONFIG")]
        to: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print the database's schema version and this binary's; change nothing.
    #[arg(long)]
    pub status: bool,
}

#[derive(Debug, Args)]
pub struct GoogleArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(subcommand)]
    pub command: GoogleCommand,
}

#[derive(Debug, Subcommand)]
pub enum GoogleCommand {
    /// List registrations and channels with their expiry and health (running or stopped).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Renew one registration or channel now, or all of them (running gateway).
    Renew { name: Option<String> },
    /// Stop a Directory channel (`channels.stop`) and forget it (running gateway).
    Stop { name: String },
}

#[derive(Debug, Args)]
pub struct TapArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only events whose field matches a glob, e.g. --filter 'type=directory.*' (repeatable;
    /// all must match).
    #[arg(long)]
    pub filter: Vec<String>,
    /// Only events that matched this route (repeatable).
    #[arg(long)]
    pub route: Vec<String>,
    /// Print each event as a JSON line (event and deliveries).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The config file.
    #[arg(
        short = 'c',
        long = "config",
        env = "HERALD_CONFIG",
        default_value = "routes.yaml",
        global = true
    )]
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Log lines as text or as JSON objects; the level filter is `RUST_LOG` (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters.
    List {
        #[arg(long)]
        sink: Option<String>,
        #[arg(long)]
        route: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter: its event, route, sink and every attempt.
    Show {
        id: u64,
        #[arg(long)]
        json: bool,
    },
    /// Queue dead letters for delivery again.
    Replay {
        /// Dead-letter IDs.
        ids: Vec<u64>,
        #[arg(long)]
        sink: Option<String>,
        #[arg(long)]
        route: Option<String>,
        /// Every dead delivery.
        #[arg(long)]
        all: bool,
    },
    /// Remove dead letters (all, or those older than a duration such as `7d`).
    Purge {
        #[arg(long)]
        older_than: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// An Event JSON file (or, with --source, a raw payload); `-` or nothing reads standard
    /// input.
    pub file: Option<PathBuf>,
    /// Decode the input as a raw payload of this source (a Pub/Sub push body; a Directory
    /// request body, or a whole HTTP request with its headers) instead of an Event JSON.
    #[arg(long)]
    pub source: Option<String>,
    /// A request header for --source, e.g. -H 'X-Goog-Resource-State: add'.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

impl ConfigArg {
    /// The validated config, or `None` once its errors are printed to standard error (the
    /// command then exits 1).
    pub fn load(&self, registry: &herald_core::config::Registry) -> Option<herald_core::Config> {
        match herald_core::config::load(&self.path, registry) {
            Ok(config) => Some(config),
            Err(errors) => {
                eprintln!("{errors}");
                None
            }
        }
    }
}
