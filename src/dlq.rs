//! `herald dlq`: list, show, replay and purge dead letters.
//!
//! On a stopped gateway the journal is opened directly. While a gateway runs it holds the
//! journal, so the command asks that gateway instead, through its admin listener, whose
//! address it finds in `<queue.path>/gateway.json` (written by `herald run` at start).

use std::process::ExitCode;

use anyhow::{Context, bail};
use herald_core::config::{self, AdminToken, Config, Registry};

use herald_core::queue::{DeadKind, DeadLetter, QueueAdmin, QueueError, ReplayReport, to_time};

use crate::admin::Selection;
use crate::cli::{DlqArgs, DlqCommand};
use crate::gateway::RuntimeInfo;

pub fn run(args: &DlqArgs, registry: &Registry) -> anyhow::Result<ExitCode> {
    let Some(config) = args.config.load(registry) else {
        return Ok(ExitCode::FAILURE);
    };
    let target = Target::open(&config)?;
    match &args.command {
        DlqCommand::List { sink, route, json } => {
            let selection = Selection {
                sink: sink.clone(),
                route: route.clone(),
                ..Selection::default()
            };
            let letters = target.list(&selection)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
            } else {
                print_list(&letters);
            }
        }
        DlqCommand::Show { id, json } => {
            let selection = Selection {
                ids: vec![*id],
                ..Selection::default()
            };
            let Some(letter) = target.list(&selection)?.into_iter().next() else {
                eprintln!("herald: no dead letter {id}");
                return Ok(ExitCode::FAILURE);
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&letter)?);
            } else {
                print_one(&letter);
            }
        }
        DlqCommand::Replay {
            ids,
            sink,
            route,
            all,
        } => {
            if ids.is_empty() && sink.is_none() && route.is_none() && !all {
                bail!("say which dead letters to replay: IDs, --sink S, --route R, or --all");
            }
            let selection = Selection {
                ids: ids.clone(),
                sink: sink.clone(),
                route: route.clone(),
                ..Selection::default()
            };
            let sinks: Vec<String> = config.sinks.iter().map(|s| s.name.clone()).collect();
            let report = target.replay(&selection, &sinks)?;
            println!(
                "replayed {} dead letter{}",
                report.replayed.len(),
                if report.replayed.len() == 1 { "" } else { "s" }
            );
            for (id, why) in &report.skipped {
                println!("  skipped {id}: {why}");
            }
        }
        DlqCommand::Purge { older_than } => {
            let older_than_ms = match older_than {
                Some(text) => Some(
                    i64::try_from(
                        config::units::parse_duration(text)
                            .map_err(anyhow::Error::msg)?
                            .as_millis(),
                    )
                    .unwrap_or(i64::MAX),
                ),
                None => None,
            };
            let n = target.purge(&Selection {
                older_than_ms,
                ..Selection::default()
            })?;
            println!("purged {n} dead letter{}", if n == 1 { "" } else { "s" });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The queue itself (its admin part of the storage boundary, docs/architecture.md §10), or
/// the running gateway that holds it.
pub(crate) enum Target {
    Journal(std::sync::Arc<dyn QueueAdmin>),
    /// The running gateway's admin API, with `server.admin_token` when the config sets one.
    Gateway {
        base: String,
        token: Option<AdminToken>,
    },
}

impl Target {
    pub(crate) fn open(config: &Config) -> anyhow::Result<Target> {
        match crate::queue::open_admin(&config.queue) {
            Ok(j) => Ok(Target::Journal(j)),
            Err(QueueError::Locked { path }) => {
                let info = RuntimeInfo::read(&config.queue.path).with_context(|| {
                    format!(
                        "the journal {path} is in use, and the gateway holding it left no {}",
                        RuntimeInfo::FILE
                    )
                })?;
                Ok(Target::Gateway {
                    base: format!("http://{}", info.admin),
                    token: config.server.admin_token.clone(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    fn list(&self, selection: &Selection) -> anyhow::Result<Vec<DeadLetter>> {
        match self {
            Target::Journal(j) => Ok(block_on(j.dead_letters(&selection.filter()))??),
            Target::Gateway { base, token } => {
                let mut query = Vec::new();
                if let Some(s) = &selection.sink {
                    query.push(("sink", s.clone()));
                }
                if let Some(r) = &selection.route {
                    query.push(("route", r.clone()));
                }
                let url = reqwest::Url::parse_with_params(&format!("{base}/api/dlq"), &query)?;
                let mut letters: Vec<DeadLetter> = http(token.as_ref(), |c| c.get(url))?;
                if !selection.ids.is_empty() {
                    letters.retain(|l| selection.ids.contains(&l.id));
                }
                Ok(letters)
            }
        }
    }

    fn replay(&self, selection: &Selection, sinks: &[String]) -> anyhow::Result<ReplayReport> {
        match self {
            Target::Journal(j) => Ok(block_on(j.replay(&selection.filter(), sinks))??),
            Target::Gateway { base, token } => http(token.as_ref(), |c| {
                c.post(format!("{base}/api/dlq/replay")).json(selection)
            }),
        }
    }

    fn purge(&self, selection: &Selection) -> anyhow::Result<usize> {
        match self {
            Target::Journal(j) => Ok(block_on(j.purge(&selection.filter()))??),
            Target::Gateway { base, token } => {
                let v: serde_json::Value = http(token.as_ref(), |c| {
                    c.post(format!("{base}/api/dlq/purge")).json(selection)
                })?;
                Ok(v["purged"].as_u64().unwrap_or(0) as usize)
            }
        }
    }
}

/// Runs one call of the queue from the (synchronous) CLI.
pub(crate) fn block_on<F: std::future::Future>(work: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(work))
}

/// One request to the running gateway's admin API, with the admin token when there is one.
pub(crate) fn http<T: serde::de::DeserializeOwned>(
    token: Option<&AdminToken>,
    build: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder().no_proxy().build()?;
        let mut request = build(&client);
        if let Some(token) = token {
            request = request.bearer_auth(token.expose());
        }
        let response = request
            .send()
            .await
            .context("the running gateway's admin listener did not answer")?;
        let status = response.status();
        let body = response.text().await?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            bail!(
                "the gateway answered {status}: {body}\n(the admin API wants `server.admin_token` \
                 of the running gateway's config; this config's differs or is not set)"
            );
        }
        if !status.is_success() {
            bail!("the gateway answered {status}: {body}");
        }
        serde_json::from_str(&body)
            .with_context(|| format!("unexpected answer from the gateway: {body}"))
    })
}

fn print_list(letters: &[DeadLetter]) {
    if letters.is_empty() {
        println!("no dead letters");
        return;
    }
    println!(
        "{:>6}  {:<20}  {:<14}  {:<14}  {:<24}  last error",
        "ID", "CREATED", "SINK", "ROUTE", "EVENT"
    );
    for l in letters {
        let created = l.created.format("%Y-%m-%d %H:%M:%S");
        match &l.kind {
            DeadKind::Delivery {
                route, sink, event, ..
            } => {
                println!(
                    "{:>6}  {created:<20}  {sink:<14}  {route:<14}  {:<24}  {}",
                    l.id,
                    event.id,
                    l.summary()
                );
            }
            DeadKind::Rejected { input } => {
                println!(
                    "{:>6}  {created:<20}  {:<14}  {:<14}  {:<24}  {}",
                    l.id,
                    "(rejected)",
                    input.source,
                    "-",
                    l.summary()
                );
            }
        }
    }
}

fn print_one(l: &DeadLetter) {
    println!("dead letter {} created {}", l.id, l.created.to_rfc3339());
    match &l.kind {
        DeadKind::Delivery {
            route,
            sink,
            reason,
            attempts,
            event,
        } => {
            println!("route {route} → sink {sink}: {reason}");
            println!("attempts:");
            for a in attempts {
                println!("  {}  {}", to_time(a.at).to_rfc3339(), a.error);
            }
            println!("event:");
            println!(
                "{}",
                serde_json::to_string_pretty(event).unwrap_or_default()
            );
        }
        DeadKind::Rejected { input } => {
            println!(
                "rejected input from source {} received {}",
                input.source,
                input.received.to_rfc3339()
            );
            println!("reason: {}", input.reason);
            for (k, v) in &input.meta {
                println!("  {k}: {v}");
            }
            println!("body:\n{}", input.body);
        }
    }
}
