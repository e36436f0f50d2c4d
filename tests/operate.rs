//! Operating a running gateway (issue #8): hot reload by every trigger, refused broken
//! configs, and `herald tap`.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use herald_testkit::wait::{eventually, eventually_async, until};
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
    // The removed sink's backlog must drain, not be buried at `shutdown_timeout`: give it
    // time enough for a disk slowed by the rest of the suite (the test is about routing,
    // not about the drain's deadline).
    let config =
        |name| config_to(name, false).replace("shutdown_timeout: 2s", "shutdown_timeout: 60s");
    let g = Arc::new(Gateway::start(dir.path(), &config("v1")));
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
    // Generous limits: every answer waits for an fsync, which a disk busy with other writes
    // (a parallel test's database, a copy) can slow a hundredfold; they bound a hang, not speed.
    until("some events on v1", Duration::from_secs(120), || {
        records(&g, "v1").len() >= 300
    })
    .await;
    std::fs::write(&g.config, config("v2")).unwrap();
    let (status, body) = reload(&client, &g).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["report"]["added"], serde_json::json!(["v2"]));
    assert_eq!(body["report"]["removed"], serde_json::json!(["v1"]));
    while let Some(r) = senders.join_next().await {
        r.unwrap();
    }

    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while records(&g, "v1").len() + records(&g, "v2").len() < 2000 {
        assert!(
            std::time::Instant::now() < deadline,
            "not all 2,000 delivered: {} to v1, {} to v2; dead letters: {}\n{}",
            records(&g, "v1").len(),
            records(&g, "v2").len(),
            text(&g.cli(&["dlq", "list"]).stdout),
            g.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    until(
        "the event on the old route",
        Duration::from_secs(10),
        || records(&g, "v1").len() == 1,
    )
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
    // Not watching the file: without the signal nothing changes. A watcher would have read
    // the edit within two of its one-second polls; for longer than that, every event still
    // reaches v1 and none reaches v2.
    let observed = std::time::Instant::now();
    while observed.elapsed() < Duration::from_millis(2500) {
        n += 1;
        assert_eq!(post(&client, &g, "reload", n).await, 200);
        let id = format!("reload/{n}");
        let has = |sink: &str| records(&g, sink).iter().any(|r| r["event"]["id"] == id);
        let sink = eventually(
            &format!("event {id} delivered"),
            Duration::from_secs(20),
            || ["v1", "v2"].into_iter().find(|sink| has(sink)),
        )
        .await;
        assert_eq!(sink, "v1", "{}", g.log());
    }
    assert!(!g.log().contains("config reload"), "{}", g.log());
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
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The tap says on standard error when it is attached; events before that are not shown,
    // by design, so nothing is sent until then.
    let stderr = tap.stderr.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.starts_with("tapping the gateway at "))
    });
    let ready = tokio::time::timeout(Duration::from_secs(20), ready)
        .await
        .expect("the tap attaches within 20 s")
        .unwrap();
    assert!(ready.is_some(), "the tap ended without attaching");
    let stdout = tap.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(200)
            .collect::<Vec<String>>()
    });
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
    until("the file sink", Duration::from_secs(10), || {
        records(&g, "keep").len() == 3
    })
    .await;

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
    until(
        "the removed sink's backlog in the dead letters",
        Duration::from_secs(15),
        || {
            letters = serde_json::from_slice(&g.cli(&["dlq", "list", "--json"]).stdout)
                .unwrap_or(Value::Null);
            letters.as_array().is_some_and(|a| a.len() == 3)
        },
    )
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
    until(
        "the kept sink still delivering",
        Duration::from_secs(10),
        || records(&g, "keep").len() == 4,
    )
    .await;
}

// ---- logs as JSON, "needs restart", and the text tap ---------------------------------------

/// The lines a reader yields, sent on a channel by a thread, so that waiting for one can time
/// out instead of hanging the test.
fn line_channel(reader: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next line, or a test failure naming `what` after `secs` seconds.
fn next_line(rx: &std::sync::mpsc::Receiver<String>, secs: u64, what: &str) -> String {
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(line) => line,
        Err(e) => panic!("no line for {what} within {secs}s ({e})"),
    }
}

/// A child process that is killed when the test ends, passed or failed.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `herald run --log-format json` on `yaml` (written as `dir/routes.yaml`), its standard error
/// in `dir/stderr.jsonl`; returns the process and its public listener once it is up.
fn start_json_gateway(dir: &std::path::Path, yaml: &str) -> (KillOnDrop, std::net::SocketAddr) {
    let config = dir.join("routes.yaml");
    std::fs::write(&config, yaml).unwrap();
    let stderr = std::fs::File::create(dir.join("stderr.jsonl")).unwrap();
    let child = herald()
        .args([
            "run",
            "-c",
            config.to_str().unwrap(),
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "info")
        .env_remove("HERALD_CONFIG")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("herald starts");
    let mut child = KillOnDrop(child);
    let log = || std::fs::read_to_string(dir.join("stderr.jsonl")).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("herald-data/gateway.json"))
            && let Ok(info) = serde_json::from_str::<Value>(&text)
            && info["pid"] == child.0.id()
        {
            return (child, info["listen"].as_str().unwrap().parse().unwrap());
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("the gateway exited with {status} at start:\n{}", log());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not start:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// With `--log-format json` every line on standard error is one JSON object, from start to
/// shutdown; a request with a wrong channel token gets 403 and exactly one line naming the
/// source and the status, and neither the token sent nor the configured one is ever logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_json_lines_and_name_the_rejected_source_without_the_token() {
    const WRONG: &str = "wrong-token-4c1e97d2";
    let dir = tempfile::tempdir().unwrap();
    let (mut gateway, listen) = start_json_gateway(dir.path(), &config_to("v1", false));
    let client = reqwest::Client::new();
    let status = client
        .post(format!("http://{listen}/webhook/directory"))
        .header("Content-Type", "application/json; utf-8")
        .header("X-Goog-Channel-ID", "intruder")
        .header("X-Goog-Channel-Token", WRONG)
        .header("X-Goog-Resource-ID", "ret08u3rv24htgh289g")
        .header(
            "X-Goog-Resource-URI",
            "https://admin.googleapis.com/admin/directory/v1/users?domain=example.edu&event=add",
        )
        .header("X-Goog-Resource-State", "add")
        .header("X-Goog-Message-Number", "1")
        .body(r#"{"kind":"admin#directory#user","id":"1","primaryEmail":"user1@example.edu"}"#)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 403);
    let log_path = dir.path().join("stderr.jsonl");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    until(
        "the rejected request's log line",
        Duration::from_secs(10),
        || log().contains("\"status\":403"),
    )
    .await;

    // Stop it, so that the shutdown lines are checked too.
    let pid = gateway.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = gateway.0.wait().unwrap();
    assert!(exit.success(), "{exit}:\n{}", log());

    let log = log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v) if v.is_object() => v,
            _ => panic!("not a JSON object on stderr: {l:?}\n{log}"),
        })
        .collect();
    assert!(
        lines.len() >= 3,
        "start, the rejection and the stop are logged:\n{log}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string()),
        "{log}"
    );
    let rejected: Vec<&Value> = lines
        .iter()
        .filter(|l| l["status"] == 403 || l["status"] == 401)
        .collect();
    assert_eq!(rejected.len(), 1, "one line per rejected request:\n{log}");
    let line = rejected[0];
    assert_eq!(line["source"], "directory", "{line}");
    assert_eq!(line["status"], 403, "{line}");
    assert_eq!(line["level"], "WARN", "{line}");
    assert!(
        line["message"]
            .as_str()
            .is_some_and(|m| m.contains("X-Goog-Channel-Token")),
        "the line says what was wrong: {line}"
    );
    assert!(!log.contains(WRONG), "the token sent is logged:\n{log}");
    assert!(!log.contains(TOKEN), "a configured token is logged:\n{log}");
}

/// A reload whose `server.listen` and source (its channel tokens) changed applies the routes
/// and sinks, answers and logs that the rest needs a restart, and leaves the rest running:
/// the old listener still serves with the old token, the new token is still refused, and
/// `gateway.json` still names the old address. The report compares with the config the
/// gateway started with, so reloading again says it again, and going back says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_needs_a_restart_applies_the_routes_and_keeps_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::start(dir.path(), &config_to("v1", false));
    let client = reqwest::Client::new();
    let mut n = 0;
    until_routed_to(&client, &g, "v1", &mut n).await;

    // An address of our own, so the new one is certainly not the running one.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let new_listen = elsewhere.local_addr().unwrap();
    assert_ne!(new_listen, g.listen);
    let moved = config_to("v2", false)
        .replacen(
            "  listen: 127.0.0.1:0\n",
            &format!("  listen: {new_listen}\n"),
            1,
        )
        .replace(TOKEN, "rotated-channel-token");
    assert!(moved.contains(&format!("  listen: {new_listen}\n")) && !moved.contains(TOKEN));
    std::fs::write(&g.config, &moved).unwrap();
    let (status, body) = reload(&client, &g).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "reloaded", "{body}");
    let restart = serde_json::json!([
        "server.listen / server.tls (the public listener)",
        "sources"
    ]);
    assert_eq!(body["report"]["needs_restart"], restart, "{body}");
    assert_eq!(body["report"]["added"], serde_json::json!(["v2"]), "{body}");
    assert_eq!(
        body["report"]["removed"],
        serde_json::json!(["v1"]),
        "{body}"
    );
    assert_eq!(body["report"]["routes"], 1, "{body}");
    for what in [
        "server.listen / server.tls (the public listener)",
        "sources",
    ] {
        assert!(
            g.log().contains(&format!(
                "config change not applied, needs a restart: {what}"
            )),
            "{what}:\n{}",
            g.log()
        );
    }

    // The routes part is in force, on the old listener, with the old token.
    until_routed_to(&client, &g, "v2", &mut n).await;
    let info = read_json(&dir.path().join("herald-data/gateway.json"));
    assert_eq!(info["listen"], g.listen.to_string(), "{info}");
    // The source did not change: the new token is not accepted yet.
    let mut rotated = directory_request(&client, &g, "rotated", 1)
        .build()
        .unwrap();
    rotated.headers_mut().insert(
        "X-Goog-Channel-Token",
        "rotated-channel-token".parse().unwrap(),
    );
    assert_eq!(client.execute(rotated).await.unwrap().status(), 403);
    assert_eq!(post(&client, &g, "old-token", 1).await, 200);

    // Still not applied, so a second reload says so again.
    let (status, body) = reload(&client, &g).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["report"]["needs_restart"], restart, "{body}");
    assert_eq!(body["report"]["added"], serde_json::json!([]), "{body}");

    // Back to the listener and source it runs with: nothing needs a restart.
    std::fs::write(&g.config, config_to("v3", false)).unwrap();
    let (status, body) = reload(&client, &g).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["report"]["needs_restart"],
        serde_json::json!([]),
        "{body}"
    );
    until_routed_to(&client, &g, "v3", &mut n).await;
    drop(elsewhere);
}

/// `herald tap --route alpha` (text) on a gateway with two routes prints the events routed by
/// `alpha` only, one line each: time, id, type, subject and the route with its sinks; the
/// other route's events are routed (they reach their sink) but not shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_with_a_route_prints_only_that_routes_events_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let head = config_head().replacen("sources:", "  watch_config: false\nsources:", 1);
    let yaml = format!(
        "{head}sinks:\n  a: {{ type: file, path: a.jsonl }}\n  both: {{ type: file, path: both.jsonl }}\n  b: {{ type: file, path: b.jsonl }}\nroutes:\n  - name: alpha\n    match: {{ meta.channelId: alpha }}\n    to: [a, both]\n  - name: beta\n    match: {{ meta.channelId: beta }}\n    to: [b, both]\n"
    );
    let g = Gateway::start(dir.path(), &yaml);
    let mut tap = KillOnDrop(
        herald()
            .args(["tap", "--route", "alpha", "-c", g.config.to_str().unwrap()])
            .env_remove("HERALD_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let out = line_channel(tap.0.stdout.take().unwrap());
    let err = line_channel(tap.0.stderr.take().unwrap());
    // The tap says so once the gateway has answered, i.e. once it is subscribed.
    let attached = next_line(&err, 20, "the tap attaching");
    assert!(attached.starts_with("tapping the gateway at"), "{attached}");

    let client = reqwest::Client::new();
    // Odd numbers on channel alpha, even ones on beta; the last one is alpha's.
    for n in 1..=9u64 {
        let channel = if n % 2 == 1 { "alpha" } else { "beta" };
        assert_eq!(post(&client, &g, channel, n).await, 200);
    }
    until("every event delivered", Duration::from_secs(20), || {
        records(&g, "a").len() == 5 && records(&g, "b").len() == 4
    })
    .await;
    let times: std::collections::HashMap<String, String> = records(&g, "a")
        .iter()
        .map(|r| {
            (
                r["event"]["id"].as_str().unwrap().to_owned(),
                r["event"]["time"].as_str().unwrap().to_owned(),
            )
        })
        .collect();

    let mut lines = Vec::new();
    for n in [1u64, 3, 5, 7, 9] {
        let line = next_line(&out, 10, &format!("event alpha/{n}"));
        let id = format!("alpha/{n}");
        let time = times.get(&id).unwrap_or_else(|| panic!("{id} in a.jsonl"));
        assert_eq!(
            line,
            format!("{time} {id} directory.users.add users/{n} → alpha(a, both)"),
            "events so far: {lines:?}"
        );
        lines.push(line);
    }
    // beta's events were routed in between, and nothing else follows alpha/9.
    if let Ok(extra) = out.recv_timeout(Duration::from_millis(500)) {
        panic!("the tap printed more than alpha's events: {extra:?} after {lines:?}");
    }
    assert!(
        tap.0.try_wait().unwrap().is_none(),
        "the tap keeps streaming"
    );
}

/// A tap still attached when SIGTERM comes does not hold the gateway up: its stream is cut at
/// `server.shutdown_timeout` (2 s in `config_head`) and the gateway exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attached_tap_does_not_hold_up_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Gateway::start(dir.path(), &config_to("v1", false));
    let client = reqwest::Client::new();
    let tap = client
        .get(format!("http://{}/-/tap", g.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(tap.status(), 200);
    let started = std::time::Instant::now();
    let status = g.terminate();
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "{}", g.log());
    assert!(
        took < Duration::from_secs(8),
        "shutdown took {took:?} with a tap attached"
    );
    drop(tap);
}

// ---- sinks' readiness checks reach /readyz ---------------------------------------------------

/// `/readyz`: the status and the reason when not ready.
async fn readyz(client: &reqwest::Client, g: &Gateway) -> (u16, String) {
    let r = client
        .get(format!("http://{}/readyz", g.admin))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (
        status,
        body["reason"].as_str().unwrap_or_default().to_owned(),
    )
}

/// A Kafka sink built the way `herald run` and a reload build every sink reports its missing
/// topic as `/readyz`'s `kafka:<sink>` check; a reload that changes the sink or removes it
/// takes the old sink's check away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_sinks_missing_topic_shows_in_readyz_until_the_sink_changes_or_goes() {
    let broker = herald_testkit::tansu::Tansu::start().await;
    broker.create_topic("edu.present", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let head = config_head().replacen("sources:", "  watch_config: false\nsources:", 1);
    let with_topic = |topic: &str| {
        format!(
            "{head}sinks:\n  keep: {{ type: file, path: keep.jsonl }}\n  bus: {{ type: kafka, brokers: \"{}\", topic: {topic} }}\nroutes:\n  - name: all\n    to: [keep, bus]\n",
            broker.brokers()
        )
    };
    let g = Gateway::start(dir.path(), &with_topic("edu.missing"));
    let client = reqwest::Client::new();
    let (c, gw) = (&client, &g);
    let not_ready = |want: &'static str| {
        eventually_async(want, Duration::from_secs(30), move || async move {
            let (status, reason) = readyz(c, gw).await;
            (status == 503 && reason.contains(want)).then_some(reason)
        })
    };
    let ready = || {
        eventually_async(
            "/readyz to be ready",
            Duration::from_secs(30),
            move || async move { (readyz(c, gw).await.0 == 200).then_some(()) },
        )
    };

    let reason = not_ready("kafka:bus: topic `edu.missing` does not exist on the brokers").await;
    assert!(!reason.contains("edu.present"), "{reason}");

    // The sink changed to a topic that exists: the old sink's check went with it.
    std::fs::write(&g.config, with_topic("edu.present")).unwrap();
    let (status, body) = reload(&client, &g).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["report"]["changed"], serde_json::json!(["bus"]));
    ready().await;

    // Missing again, then the sink removed: ready, though nobody created the topic.
    std::fs::write(&g.config, with_topic("edu.other")).unwrap();
    assert_eq!(reload(&client, &g).await.0, 200);
    not_ready("kafka:bus: topic `edu.other` does not exist on the brokers").await;
    let without = format!(
        "{head}sinks:\n  keep: {{ type: file, path: keep.jsonl }}\nroutes:\n  - name: all\n    to: [keep]\n"
    );
    std::fs::write(&g.config, without).unwrap();
    let (status, body) = reload(&client, &g).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["report"]["removed"], serde_json::json!(["bus"]));
    ready().await;
}

/// A log that cannot be written (stderr on a full disk: `/dev/full` fails every write with
/// ENOSPC) costs the log lines and nothing else: the gateway starts, refuses a wrong token,
/// answers 200 and delivers what it acknowledged, and stops on SIGTERM as usual.
/// tracing-subscriber reports a failed write with `eprintln!`, which panics when stderr
/// fails, in whichever thread logged: the journal's writer, a request's task (`init_logs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_written_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Gateway::start_through(
        dir.path(),
        &config_to("logless", false),
        &["sh", "-c", "exec \"$@\" 2>/dev/full", "sh"],
    );
    let client = reqwest::Client::new();
    let mut wrong = directory_request(&client, &g, "logless", 1)
        .build()
        .unwrap();
    wrong.headers_mut().insert(
        "X-Goog-Channel-Token",
        reqwest::header::HeaderValue::from_static("not-the-token"),
    );
    let refused = client.execute(wrong).await.unwrap();
    assert_eq!(refused.status(), 403, "a refusal is logged, and answered");
    for n in 1..=20 {
        assert_eq!(post(&client, &g, "logless", n).await, 200);
    }
    let delivered = eventually("all 20 delivered", Duration::from_secs(20), || {
        let records = records(&g, "logless");
        (records.len() == 20).then_some(records)
    })
    .await;
    let ids: HashSet<&str> = delivered
        .iter()
        .filter_map(|r| r["event"]["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 20, "each once");
    let (status, _) = readyz(&client, &g).await;
    assert_eq!(status, 200);
    assert!(g.terminate().success(), "a clean stop");
}
