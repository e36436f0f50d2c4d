//! `herald test`: route one event without sending anything, and show what each sink would get.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use herald_core::config::{Config, Registry};
use herald_core::template::Templates;
use herald_core::{Event, rules::UNMATCHED};
use serde::Serialize;

use crate::cli::TestArgs;

#[derive(Serialize)]
struct Report<'a> {
    event: &'a Event,
    /// What the source's `enrich:` would look up before routing (nothing is called).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    lookups: Vec<LookupReport>,
    /// Routes that matched, in order.
    routes: Vec<&'a str>,
    deliveries: Vec<DeliveryReport<'a>>,
}

#[derive(Serialize)]
struct DeliveryReport<'a> {
    route: &'a str,
    sink: &'a str,
    sink_type: &'a str,
    /// Where it would go, as `herald check` describes it (secrets masked).
    destination: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rendered: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct LookupReport {
    /// The `enriched` member it fills.
    member: &'static str,
    method: &'static str,
    id: String,
    /// The fields kept.
    fields: Vec<String>,
    /// The event's body already carries them: no call.
    from_body: bool,
}

/// What `enrich:` of the event's source would look up (`herald test` calls nothing).
fn lookups(config: &Config, event: &Event) -> Vec<LookupReport> {
    use herald_sources::enrich::lookup::Key;
    use herald_sources::enrich::task::{from_body, keys_of};
    let specs = herald_sources::enrich::specs(config);
    let Some(spec) = specs.get(event.source.as_str()) else {
        return Vec::new();
    };
    keys_of(event, spec)
        .into_iter()
        .map(|(member, key)| {
            let fields = match &key {
                Key::Course { .. } => &spec.course,
                Key::Person { .. } => &spec.person,
                Key::CourseWork { .. } => &spec.coursework,
                Key::Submission { .. } => &spec.submission,
                Key::User { .. } => &spec.user,
            };
            LookupReport {
                member,
                method: key.method(),
                id: key.id().to_owned(),
                fields: fields.clone(),
                from_body: from_body(event, spec, &key).is_some(),
            }
        })
        .collect()
}

pub fn run(args: &TestArgs, registry: &Registry) -> anyhow::Result<ExitCode> {
    let Some(config) = args.config.load(registry) else {
        return Ok(ExitCode::FAILURE);
    };
    let input = read_input(args)?;
    let shown = with_report(
        &config,
        &input,
        args.source.as_deref(),
        &args.headers,
        |report| {
            let failed = report.deliveries.iter().any(|d| d.error.is_some());
            if args.json {
                println!("{}", serde_json::to_string_pretty(report)?);
            } else {
                print_text(report);
            }
            anyhow::Ok(failed)
        },
    )?;
    match shown {
        None => {
            println!(
                "a sync message: the source acknowledges it and routes nothing (route_sync is false)"
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(failed) => Ok(if failed? {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }),
    }
}

/// What `herald test --json` prints for `input` (an Event JSON, or with `source` a raw
/// payload of that source); `None` for a sync message that routes nothing. The console's
/// "Try a route" (docs/architecture.md §12).
pub fn evaluate(
    config: &Config,
    input: &str,
    source: Option<&str>,
    headers: &[String],
) -> anyhow::Result<Option<serde_json::Value>> {
    with_report(config, input, source, headers, |report| {
        serde_json::to_value(report).map_err(anyhow::Error::from)
    })?
    .transpose()
}

/// Decodes the input, routes it and hands the report to `show`.
fn with_report<R>(
    config: &Config,
    input: &str,
    source: Option<&str>,
    headers: &[String],
    show: impl FnOnce(&Report<'_>) -> R,
) -> anyhow::Result<Option<R>> {
    let event: Event = match source {
        None => serde_json::from_str(input).context("the input is not an Event JSON")?,
        Some(name) => match decode_source(config, name, input, headers)? {
            Some(event) => event,
            None => return Ok(None),
        },
    };
    // As when a lookup fails: each `enriched` member holds only the id it stands for, which
    // a template reading a missing field renders.
    let found = lookups(config, &event);
    let mut event = event;
    for l in &found {
        event
            .enriched
            .entry(l.member.to_owned())
            .or_insert_with(|| serde_json::json!({ "id": l.id }));
    }
    let mut report = route(config, &event);
    report.lookups = found;
    Ok(Some(show(&report)))
}

/// Decodes a raw payload as the running source `name` would (nothing is authenticated).
fn decode_source(
    config: &Config,
    name: &str,
    input: &str,
    header_args: &[String],
) -> anyhow::Result<Option<Event>> {
    let Some(source) = config.source(name) else {
        let known: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
        anyhow::bail!(
            "no source `{name}` in the config; its sources are: {}",
            known.join(", ")
        );
    };
    let mut headers = Vec::new();
    for h in header_args {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("-H `{h}` is not `Name: value`"))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    // A whole HTTP request (as in tests/fixtures/directory/*.http): take its headers too.
    let mut body = input;
    let normalized;
    if input.starts_with("POST ") || input.starts_with("PUT ") {
        normalized = input.replace("\r\n", "\n");
        let (head, rest) = normalized.split_once("\n\n").unwrap_or((&normalized, ""));
        for line in head.lines().skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        body = rest;
    }
    herald_sources::decode_raw(source.spec.as_ref(), name, body.trim().as_bytes(), &headers)
        .map_err(|e| anyhow::anyhow!("source `{name}` cannot decode the input: {e}"))
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
            let sink = config.sink(target.sink);
            let sink_type = sink.map_or("?", |s| s.type_name);
            let destination = sink.map(|s| s.spec.describe()).unwrap_or_default();
            let (rendered, error) =
                match config.templates.render(target.route, target.sink, &context) {
                    Ok(r) => (
                        Some(r.iter().map(|(k, v)| (k.to_owned(), shown(k, v))).collect()),
                        None,
                    ),
                    Err(e) => (None, Some(e.to_string())),
                };
            DeliveryReport {
                route: target.route,
                sink: target.sink,
                sink_type,
                destination,
                rendered,
                error,
            }
        })
        .collect();
    Report {
        event,
        lookups: Vec::new(),
        routes,
        deliveries,
    }
}

/// A rendered field as shown: the value of a header that carries a credential
/// (`Authorization`, a token, a key, a secret, a cookie) is masked, since `${VAR}` put a
/// secret there.
fn shown(field: &str, value: &str) -> serde_json::Value {
    let secret = field.strip_prefix("headers.").is_some_and(|name| {
        let name = name.to_ascii_lowercase();
        [
            "authorization",
            "token",
            "secret",
            "key",
            "cookie",
            "password",
            "signature",
        ]
        .iter()
        .any(|word| name.contains(word))
    });
    if secret {
        let scheme = match value.split_once(' ') {
            Some((scheme, _)) if field.eq_ignore_ascii_case("headers.authorization") => {
                format!("{scheme} ")
            }
            _ => String::new(),
        };
        serde_json::Value::from(format!("{scheme}***"))
    } else {
        serde_json::Value::from(value)
    }
}

fn print_text(report: &Report<'_>) {
    let e = report.event;
    println!("event {} {} from {}", e.id, e.ty, e.source);
    if let Some(subject) = &e.subject {
        println!("  subject {subject}");
    }
    if !report.lookups.is_empty() {
        println!(
            "enrichment (source `{}` has enrich:; herald test looks nothing up: routes and \
             templates below see only the ids, as after a failed lookup):",
            e.source
        );
        for l in &report.lookups {
            let how = if l.from_body {
                "from the event's body, no call".to_owned()
            } else {
                format!("{} {}", l.method, l.id)
            };
            println!("  enriched.{} ← {how}: {}", l.member, l.fields.join(", "));
        }
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
        println!("  → sink {} ({}): {}", d.sink, d.sink_type, d.destination);
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
