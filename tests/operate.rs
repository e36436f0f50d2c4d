//! Operating a running gateway (issue #8): hot reload by every trigger, refused broken
//! configs, and `herald tap`.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// A config routing everything through route `name` to a file sink writing `<name>.jsonl`.
fn config_to(name: &str, watch: bool) -> String {
    let head = config_head().replacen("sources:", &format!("  watch_config: {watch}\nsources:"), 1);
    format!(
        "{head}sinks:\n  {name}: {{ type: file, path: {name}.jsonl }}\nroutes:\n  - name: {name}\n    to: [{name}]\n"
    )
}

/// Sends events until one is delivered to sink `name`.
async fn until_routed_to(client: &reqwest::Client, g: &Gateway, name: &str, n: &mut u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while records(g, name).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no event reached `{name}`:\n{}",
            g.log()
        );
        *n += 1;
        assert_eq!(post(client, g, "reload", *n).await, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn records(g: &Gateway, name: &str) -> Vec<Value> {
    g.file_records(&format!("{name}.jsonl"))
}

async fn post(client: &reqwest::Client, g: &Gateway, channel: &str, n: u64) -> u16 {
    directory_request(client, g, channel, n)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn reload(client: &reqwest::Client, g: &Gateway) -> (u16, Value) {
    let r = client
        .post(format!("http://{}/-/reload", g.admin))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// 2,000 events sent while the routes change: each is delivered exactly by the table in force
/// when it was routed (all of v1's to sink v1, all of v2's to sink v2), none lost, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_loses_nothing_and_routes_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let g = Arc::new(Gateway::start(dir.path(), &config_to("v1", false)));
    let client = reqwest::Client::new();
    let mut senders = tokio::task::JoinSet::new();
    for c in 0..4u64 {
        let (g, client) = (g.clone(), client.clone());
        senders.spawn(async move {
            for i in 0..500 {
                assert_eq!(post(&client, &g, "load", c * 500 + i + 1).await, 200);
            }
        });
    }
    common::eventually("some events on v1", 30, || records(&g, "v1").len() >= 300).await;
    std::fs::write(&g.config, config_to("v2", false)).unwrap();
    let (status, body) = reload(&client, &g).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["report"]["added"], serde_json::json!(["v2"]));
    assert_eq!(body["report"]["removed"], serde_json::json!(["v1"]));
    while let Some(r) = senders.join_next().await {
        r.unwrap();
    }

    common::eventually("all 2,000 delivered", 30, || {
        records(&g, "v1").len() + records(&g, "v2").len() >= 2000
    })
    .await;
    let (v1, v2) = (records(&g, "v1"), records(&g, "v2"));
    assert!(v1.iter().all(|r| r["route"] == "v1" && r["sink"] == "v1"));
    assert!(v2.iter().all(|r| r["route"] == "v2" && r["sink"] == "v2"));
    assert!(!v2.is_empty(), "events after the reload went to v2");
    let ids: Vec<&str> = v1
        .iter()
        .chain(&v2)
        .map(|r| r["event"]["id"].as_str().unwrap())
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), 2000, "none twice");
    assert_eq!(unique.len(), 2000, "none lost");
    let dead = g.cli(&["dlq", "list"]);
    assert!(
        text(&dead.stdout).contains("no dead letters"),
        "the removed sink drained: {}",
        text(&dead.stdout)
    );
}

/// A broken file changes nothing: the reload answers 400 with every error and its place, the
/// old routes keep working, and the metric says the last reload failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_is_refused_and_the_running_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::start(dir.path(), &config_to("v1", false));
    let client = reqwest::Client::new();
    let broken = config_to("v2", false)
        .replace("type: file", "type: fiel")
        .replace("to: [v2]", "to: [v3]");
    std::fs::write(&g.config, broken).unwrap();
    let (status, body) = reload(&client, &g).await;
    assert_eq!(status, 400, "{body}");
    let errors: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("routes.yaml:12:")
            && errors[0].contains("unknown sink type `fiel`; did you mean `file`?"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("routes.yaml:15:") && errors[1].contains("unknown sink `v3`"),
        "{}",
        errors[1]
    );

    assert_eq!(post(&client, &g, "after", 1).await, 200);
    common::eventually("the event on the old route", 10, || {
        records(&g, "v1").len() == 1
    })
    .await;
    let metrics = client
        .get(format!("http://{}/metrics", g.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("herald_config_reload_success 0"),
        "{metrics}"
    );
    assert!(
        g.log()
            .contains("config reload refused, the running config stays"),
        "{}",
        g.log()
    );
}

/// SIGHUP reloads the config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::start(dir.path(), &config_to("v1", false));
    let client = reqwest::Client::new();
    std::fs::write(&g.config, config_to("v2", false)).unwrap();
    let mut n = 0;
    // Not watching the file: without the signal nothing changes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    until_routed_to(&client, &g, "v1", &mut n).await;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &g.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    until_routed_to(&client, &g, "v2", &mut n).await;
    assert!(
        g.log().contains("trigger=\"SIGHUP\"") || g.log().contains("trigger=SIGHUP"),
        "{}",
        g.log()
    );
}

/// With `watch_config: true`, saving the file reloads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_edit_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::start(dir.path(), &config_to("v1", true));
    let client = reqwest::Client::new();
    let mut n = 0;
    until_routed_to(&client, &g, "v1", &mut n).await;
    std::fs::write(&g.config, config_to("v2", true)).unwrap();
    until_routed_to(&client, &g, "v2", &mut n).await;
    assert!(g.log().contains("file change"), "{}", g.log());
}

/// `herald tap` attached to a gateway under load prints the events sent, with their routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_shows_what_is_routed() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::start(dir.path(), &config_to("v1", false));
    let mut tap = herald()
        .args([
            "tap",
            "--json",
            "--filter",
            "type=directory.users.*",
            "-c",
            g.config.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = tap.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(200)
            .collect::<Vec<String>>()
    });
    // Give the tap a moment to attach; events before it are not shown, by design.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = reqwest::Client::new();
    for n in 1..=200 {
        assert_eq!(post(&client, &g, "tapped", n).await, 200);
    }
    let lines = tokio::task::spawn_blocking(move || lines.join().unwrap())
        .await
        .unwrap();
    let _ = tap.kill();
    let _ = tap.wait();
    assert_eq!(lines.len(), 200);
    let first: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["event"]["id"], "tapped/1");
    assert_eq!(first["deliveries"], serde_json::json!([["v1", "v1"]]));
    let ids: HashSet<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["event"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 200);

    // A filter that matches nothing shows nothing; the text form names the routes.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "tap",
            "--filter",
            "tpye=x",
            "-c",
            g.config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("did you mean `type`?"),
        "{}",
        text(&out.stderr)
    );
}

/// An unchanged sink keeps running across a reload; a removed sink that cannot deliver its
/// backlog leaves it in the dead letters, naming the sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_unchanged_sinks_and_buries_a_removed_sinks_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let head = config_head().replacen("sources:", "  watch_config: false\nsources:", 1);
    let v1 = format!(
        "{head}sinks:\n  keep: {{ type: file, path: keep.jsonl }}\n  gone: {{ type: webhook, url: \"http://127.0.0.1:9/\", delivery: {{ max_attempts: 1000 }} }}\nroutes:\n  - name: all\n    to: [keep, gone]\n"
    );
    let g = Gateway::start(dir.path(), &v1);
    let client = reqwest::Client::new();
    for n in 1..=3 {
        assert_eq!(post(&client, &g, "bury", n).await, 200);
    }
    common::eventually("the file sink", 10, || records(&g, "keep").len() == 3).await;

    let v2 = format!(
        "{head}sinks:\n  keep: {{ type: file, path: keep.jsonl }}\nroutes:\n  - name: all\n    to: [keep]\n  - name: unused\n    match: {{ type: never }}\n    to: [keep]\n"
    );
    std::fs::write(&g.config, v2).unwrap();
    let (status, body) = reload(&client, &g).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["report"]["changed"],
        serde_json::json!([]),
        "`keep` is unchanged: {body}"
    );
    assert_eq!(body["report"]["added"], serde_json::json!([]));
    assert_eq!(body["report"]["removed"], serde_json::json!(["gone"]));
    assert_eq!(body["report"]["routes"], 2);

    // The removed sink had 2 s (server.shutdown_timeout) to deliver; then its 3 are dead.
    let mut letters = Value::Null;
    common::eventually("the removed sink's backlog in the dead letters", 15, || {
        letters = serde_json::from_slice(&g.cli(&["dlq", "list", "--json"]).stdout)
            .unwrap_or(Value::Null);
        letters.as_array().is_some_and(|a| a.len() == 3)
    })
    .await;
    for l in letters.as_array().unwrap() {
        assert_eq!(l["sink"], "gone");
        assert!(
            l["reason"]
                .as_str()
                .unwrap()
                .contains("sink `gone` was removed from the config"),
            "{l}"
        );
    }
    assert_eq!(post(&client, &g, "bury", 4).await, 200);
    common::eventually("the kept sink still delivering", 10, || {
        records(&g, "keep").len() == 4
    })
    .await;
}
