//! `herald test`: route one event without sending anything, and show what each sink would get.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use herald_core::config::{self, Config, Registry};
use herald_core::template::Templates;
use herald_core::{Event, rules::UNMATCHED};
use serde::Serialize;

use crate::cli::TestArgs;

#[derive(Serialize)]
struct Report<'a> {
    event: &'a Event,
    /// Routes that matched, in order.
    routes: Vec<&'a str>,
    deliveries: Vec<DeliveryReport<'a>>,
}

#[derive(Serialize)]
struct DeliveryReport<'a> {
    route: &'a str,
    sink: &'a str,
    sink_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rendered: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn run(args: &TestArgs, registry: &Registry) -> anyhow::Result<ExitCode> {
    let config = match config::load(&args.config.path, registry) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let input = read_input(args)?;
    let event: Event = serde_json::from_str(&input).context("the input is not an Event JSON")?;
    let report = route(&config, &event);
    let failed = report.deliveries.iter().any(|d| d.error.is_some());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn read_input(args: &TestArgs) -> anyhow::Result<String> {
    match args.file.as_deref() {
        Some(path) if path.as_os_str() != "-" => {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
        }
        _ => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read standard input")?;
            Ok(text)
        }
    }
}

fn route<'a>(config: &'a Config, event: &'a Event) -> Report<'a> {
    let routes = config
        .routes
        .matching_routes(event)
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    let context = Templates::context(event);
    let deliveries = config
        .routes
        .targets(event)
        .into_iter()
        .map(|target| {
            let sink_type = config.sink(target.sink).map_or("?", |s| s.type_name);
            let (rendered, error) =
                match config.templates.render(target.route, target.sink, &context) {
                    Ok(r) => (
                        Some(
                            r.iter()
                                .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
                                .collect(),
                        ),
                        None,
                    ),
                    Err(e) => (None, Some(e.to_string())),
                };
            DeliveryReport {
                route: target.route,
                sink: target.sink,
                sink_type,
                rendered,
                error,
            }
        })
        .collect();
    Report {
        event,
        routes,
        deliveries,
    }
}

fn print_text(report: &Report<'_>) {
    let e = report.event;
    println!("event {} {} from {}", e.id, e.ty, e.source);
    if let Some(subject) = &e.subject {
        println!("  subject {subject}");
    }
    if report.deliveries.is_empty() {
        println!("no route matched; unmatched events are dropped (nothing would be sent)");
        return;
    }
    let mut current_route = None;
    for d in &report.deliveries {
        if current_route != Some(d.route) {
            current_route = Some(d.route);
            if d.route == UNMATCHED {
                println!("no route matched → unmatched");
            } else {
                println!("route {}", d.route);
            }
        }
        println!("  → sink {} ({})", d.sink, d.sink_type);
        if let Some(error) = &d.error {
            println!("      error: {error}");
        }
        if d.rendered.as_ref().is_some_and(|r| r.is_empty()) {
            println!("      (the event as a JSON record)");
        }
        for (field, value) in d.rendered.iter().flatten() {
            let text = value.as_str().unwrap_or_default();
            let mut lines = text.lines();
            println!("      {field}: {}", lines.next().unwrap_or(""));
            for line in lines {
                println!("      {:width$}  {line}", "", width = field.len());
            }
        }
    }
}
