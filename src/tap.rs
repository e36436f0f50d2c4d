//! `herald tap`: what a running gateway routes right now, one line per event.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, bail};
use herald_core::config::Registry;
use serde_json::Value;

use crate::cli::TapArgs;
use crate::gateway::RuntimeInfo;

pub fn run(args: &TapArgs, registry: &Registry) -> anyhow::Result<ExitCode> {
    let Some(config) = args.config.load(registry) else {
        return Ok(ExitCode::FAILURE);
    };
    // The address the running gateway reported, else the configured one.
    let admin =
        RuntimeInfo::read(&config.queue.path).map_or(config.server.admin_listen, |info| info.admin);
    let mut query: Vec<(&str, String)> =
        args.filter.iter().map(|f| ("filter", f.clone())).collect();
    query.extend(args.route.iter().map(|r| ("route", r.clone())));
    let url = reqwest::Url::parse_with_params(&format!("http://{admin}/-/tap"), &query)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder().no_proxy().build()?;
        let mut request = client.get(url);
        if let Some(token) = &config.server.admin_token {
            request = request.bearer_auth(token.expose());
        }
        let mut response = request
            .send()
            .await
            .with_context(|| format!("no gateway answers on its admin listener {admin}"))?;
        if !response.status().is_success() {
            let status = response.status();
            bail!(
                "the gateway answered {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
        // The ready line: the gateway subscribed this tap before it answered, so every event
        // committed from now on is shown (scripts and tests wait for this line).
        eprintln!("tapping the gateway at {admin}; Ctrl-C to stop");
        let mut pending = Vec::new();
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = response.chunk().await? {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let text = if args.json {
                    line.trim_end().to_owned()
                } else {
                    describe(line.trim_end())
                };
                if writeln!(out, "{text}").and_then(|_| out.flush()).is_err() {
                    return Ok(ExitCode::SUCCESS); // stdout closed (e.g. `| head`)
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `2026-11-20T09:15:02Z directory.users.add users/42 → all(audit, chat)`
fn describe(line: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return line.to_owned();
    };
    if let Some(n) = v.get("lagged") {
        return format!("… {n} events skipped: this tap fell behind");
    }
    let e = &v["event"];
    let mut routes: Vec<(String, Vec<String>)> = Vec::new();
    for d in v["deliveries"].as_array().into_iter().flatten() {
        let (route, sink) = (
            d[0].as_str().unwrap_or("?").to_owned(),
            d[1].as_str().unwrap_or("?").to_owned(),
        );
        match routes.last_mut() {
            Some((r, sinks)) if *r == route => sinks.push(sink),
            _ => routes.push((route, vec![sink])),
        }
    }
    let to = if routes.is_empty() {
        "no route (dropped)".to_owned()
    } else {
        routes
            .iter()
            .map(|(r, s)| format!("{r}({})", s.join(", ")))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "{} {} {} {} → {to}",
        e["time"].as_str().unwrap_or("-"),
        e["id"].as_str().unwrap_or("-"),
        e["type"].as_str().unwrap_or("-"),
        e["subject"].as_str().unwrap_or("-"),
    )
}
