//! `herald google status | renew [NAME] | stop NAME`: the Classroom registrations and
//! Directory channels Herald keeps alive (herald_sources::google).
//!
//! `status` works on a stopped gateway too (from the records in its journal); `renew` and
//! `stop` ask the running gateway, through its admin listener, since it holds the
//! credentials' tokens and the channels' state.

use std::process::ExitCode;

use anyhow::bail;
use herald_core::config::{AdminToken, QueueEngine, Registry};
use herald_sources::google::state::{self, CHANNEL_PREFIX, REGISTRATION_PREFIX};
use herald_sources::google::status_rows;
use herald_sources::google::{self, Status};
use serde_json::json;

use crate::cli::{GoogleArgs, GoogleCommand};
use crate::dlq::{Target, block_on, http};

pub fn run(args: &GoogleArgs, registry: &Registry) -> anyhow::Result<ExitCode> {
    let Some(config) = args.config.load(registry) else {
        return Ok(ExitCode::FAILURE);
    };
    let target = Target::open(&config)?;
    match &args.command {
        GoogleCommand::Status { json } => {
            let rows: Vec<Status> = match &target {
                Target::Gateway { base, token } => {
                    http(token.as_ref(), |c| c.get(format!("{base}/api/google")))?
                }
                Target::Journal(journal) => {
                    let (registrations, watches) = google::declared(&config);
                    let regs: Vec<state::RegistrationRecord> =
                        block_on(state::load(&**journal, REGISTRATION_PREFIX))?
                            .map_err(anyhow::Error::msg)?;
                    let chans: Vec<state::ChannelRecord> =
                        block_on(state::load(&**journal, CHANNEL_PREFIX))?
                            .map_err(anyhow::Error::msg)?;
                    status_rows(
                        regs.iter(),
                        chans.iter(),
                        &registrations,
                        &watches,
                        chrono::Utc::now(),
                    )
                }
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let renewing = match &target {
                    Target::Gateway { .. } => Renewing::ThisGateway,
                    Target::Journal(queue) => match queue.engine() {
                        QueueEngine::Local => Renewing::Stopped,
                        _ => match block_on(queue.leader(google::manager::LEADERSHIP))?? {
                            Some((holder, until)) => Renewing::Leader { holder, until },
                            None => Renewing::Nobody,
                        },
                    },
                };
                print_status(&rows, &renewing);
            }
        }
        GoogleCommand::Renew { name } => {
            let (base, token) = running(&target, "renew")?;
            let answer: serde_json::Value = http(token, |c| {
                c.post(format!("{base}/api/google/renew"))
                    .json(&json!({"name": name}))
            })?;
            for name in answer["renewed"].as_array().into_iter().flatten() {
                println!("renewed {}", name.as_str().unwrap_or_default());
            }
        }
        GoogleCommand::Stop { name } => {
            let (base, token) = running(&target, "stop")?;
            let answer: serde_json::Value = http(token, |c| {
                c.post(format!("{base}/api/google/stop"))
                    .json(&json!({"name": name}))
            })?;
            println!("{}", answer["stopped"].as_str().unwrap_or_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn running<'t>(
    target: &'t Target,
    what: &str,
) -> anyhow::Result<(&'t str, Option<&'t AdminToken>)> {
    match target {
        Target::Gateway { base, token } => Ok((base, token.as_ref())),
        Target::Journal(_) => bail!(
            "`herald google {what}` needs the running gateway (it calls Google with the \
             gateway's credentials and keeps the channels' state); start it with `herald run`"
        ),
    }
}

/// Who keeps the registrations and channels alive, as `status` can tell.
enum Renewing {
    /// The gateway `status` asked (a local journal in use).
    ThisGateway,
    /// On a shared queue, the gateway leading the Google lifecycle, until its lease ends.
    Leader { holder: String, until: i64 },
    /// The local journal, not in use: its gateway is stopped.
    Stopped,
    /// On a shared queue, no gateway leads.
    Nobody,
}

fn print_status(rows: &[Status], renewing: &Renewing) {
    if rows.is_empty() {
        println!("no Classroom registrations or Directory channels are declared or recorded");
        return;
    }
    let now = chrono::Utc::now();
    println!(
        "{:<44}  {:<12}  {:<22}  {:<10}  {:<10}  {:<16}  ID",
        "NAME", "KIND", "EXPIRES", "IN", "RENEWED", "HEALTH"
    );
    for row in rows {
        let expires = row
            .expires
            .map(|e| e.format("%Y-%m-%d %H:%M:%SZ").to_string())
            .unwrap_or_else(|| "-".into());
        let left = row
            .expires
            .map(|e| human((e - now).num_seconds()))
            .unwrap_or_else(|| "-".into());
        let renewed = row
            .renewed
            .map(|r| format!("{} ago", human((now - r).num_seconds().max(60))))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<44}  {:<12}  {:<22}  {:<10}  {:<10}  {:<16}  {}",
            row.name,
            row.kind,
            expires,
            left,
            renewed,
            row.health,
            row.id.as_deref().unwrap_or("-")
        );
        if let Some(error) = &row.last_error {
            println!("    last error ({} failures): {error}", row.failures);
        }
    }
    match renewing {
        Renewing::ThisGateway => {}
        Renewing::Leader { holder, until } => {
            let until = chrono::DateTime::from_timestamp_millis(*until)
                .map(|t| t.format("%H:%M:%SZ").to_string())
                .unwrap_or_else(|| "?".into());
            println!("(renewed by the leading gateway {holder}, its lease running until {until})");
        }
        Renewing::Stopped => println!("(the gateway is not running: nothing is being renewed)"),
        Renewing::Nobody => {
            println!("(no gateway leads the Google lifecycle: nothing is being renewed)")
        }
    }
}

fn human(seconds: i64) -> String {
    match seconds {
        s if s <= 0 => "expired".into(),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}
