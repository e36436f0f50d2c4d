//! Durable delivery end to end (issue #4): a real gateway process, real HTTP, real crashes.
//!
//! The main behaviours (retries and backoff, dead letters and replay, backpressure, shutdown)
//! run on both queue engines from one set of tests (`on_both_engines!`, issue 16): each is an
//! `async fn(Engine)`, run once with the embedded journal and once on the testkit's real
//! PostgreSQL (a database of its own per test, `lease: 1s`).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use herald_testkit::wait::until;
use herald_testkit::{Answer, Receiver};
use serde_json::Value;

/// Sends `total` events from `clients` concurrent clients until the gateway stops answering;
/// returns the ids whose request got a 2xx. Calls `kill` once `kill_after` were acknowledged.
async fn send_until_killed(
    gateway: &mut Gateway,
    total: u64,
    clients: u64,
    kill_after: u64,
) -> HashSet<String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(clients as usize)
        .build()
        .unwrap();
    let acked = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let count = Arc::new(AtomicU64::new(0));
    let dead = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    let per_client = total / clients;
    // The gateway's address is copied into each task; the kill happens from this task.
    let g = Arc::new((gateway.listen, gateway.dir.clone()));
    for c in 0..clients {
        let (client, acked, count, dead, g) = (
            client.clone(),
            acked.clone(),
            count.clone(),
            dead.clone(),
            g.clone(),
        );
        tasks.spawn(async move {
            for i in 0..per_client {
                if dead.load(Ordering::Relaxed) {
                    break;
                }
                let number = c * per_client + i + 1;
                let url = format!("http://{}/webhook/directory", g.0);
                let fake = FakeGateway { url };
                match fake.post(&client, "crash", number).await {
                    Ok(status) if status.is_success() => {
                        acked.lock().unwrap().insert(format!("crash/{number}"));
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(status) => panic!("unexpected answer {status}"),
                    Err(_) => break, // the gateway is gone
                }
            }
        });
    }
    while count.load(Ordering::Relaxed) < kill_after && !tasks.is_empty() {
        if tasks.try_join_next().is_some() {
            continue;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    gateway.kill9();
    dead.store(true, Ordering::Relaxed);
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    acked.lock().unwrap().clone()
}

/// Posts Directory notifications to a URL (the gateway may be killed under it).
struct FakeGateway {
    url: String,
}

impl FakeGateway {
    async fn post(
        &self,
        client: &reqwest::Client,
        channel: &str,
        number: u64,
    ) -> reqwest::Result<reqwest::StatusCode> {
        client
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("X-Goog-Channel-ID", channel)
            .header("X-Goog-Channel-Token", TOKEN)
            .header("X-Goog-Resource-ID", "r")
            .header("X-Goog-Resource-URI", "https://admin.googleapis.com/admin/directory/v1/users?domain=example.edu&event=add")
            .header("X-Goog-Resource-State", "add")
            .header("X-Goog-Message-Number", number.to_string())
            .body(format!(r#"{{"id":"{number}","primaryEmail":"u{number}@example.edu"}}"#))
            .send()
            .await
            .map(|r| r.status())
    }
}

/// kill -9 in the middle of 5,000 events, at three different moments: every event that got a
/// 2xx is delivered after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_by_a_crash() {
    for kill_after in [300, 1500, 3500] {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "{}sinks:\n  audit: {{ type: file, path: events.jsonl }}\nroutes:\n  - name: all\n    to: [audit]\n",
            config_head()
        );
        let mut gateway = Gateway::start(dir.path(), &yaml);
        let acked = send_until_killed(&mut gateway, 5000, 8, kill_after).await;
        assert!(
            acked.len() as u64 >= kill_after,
            "{} acknowledged before the kill",
            acked.len()
        );

        gateway.restart();
        until(
            "every acknowledged event in the file sink",
            Duration::from_secs(60),
            || {
                let delivered: HashSet<String> =
                    gateway.file_ids("events.jsonl").into_iter().collect();
                acked.is_subset(&delivered)
            },
        )
        .await;
        let all = gateway.file_ids("events.jsonl");
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for id in &all {
            *seen.entry(id).or_default() += 1;
        }
        let twice = seen.values().filter(|n| **n > 1).count();
        println!(
            "kill after {kill_after}: {} acknowledged, {} delivered ({} not acknowledged but committed), {twice} delivered twice",
            acked.len(),
            seen.len(),
            seen.len() - acked.len()
        );
        assert_eq!(gateway.terminate().code(), Some(0), "{}", gateway.log());
    }
}

on_both_engines!(a_sink_outage_delays_but_loses_nothing);

/// A sink that answers 503 for a while, then 429 with `Retry-After: 2`, then recovers: every
/// event arrives, none is dead-lettered, the retry waits out `Retry-After`, and the other sink
/// of the route received everything meanwhile.
async fn a_sink_outage_delays_but_loses_nothing(engine: Engine) {
    let rx = Receiver::start().await;
    rx.script((0..6).map(|_| Answer::status(503, "maintenance")));
    rx.script([Answer::status(429, "slow down").with_header("retry-after", "2")]);
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}{}sinks:\n  hook:\n    type: webhook\n    url: \"{}\"\n    delivery: {{ initial_backoff: 50ms, max_backoff: 400ms, concurrency: 1 }}\n  audit: {{ type: file, path: events.jsonl }}\nroutes:\n  - name: all\n    to: [hook, audit]\n",
        config_head(),
        engine.queue(""),
        rx.url("/hook")
    );
    let gateway = Gateway::start(dir.path(), &yaml);
    let client = reqwest::Client::new();
    for n in 1..=20 {
        let status = directory_request(&client, &gateway, "outage", n)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    until(
        "the healthy sink to have all 20",
        Duration::from_secs(10),
        || gateway.file_records("events.jsonl").len() == 20,
    )
    .await;
    let file_done = Instant::now();

    let got = rx.wait_for(20 + 7).await;
    assert!(
        file_done < got[7].at,
        "the file sink had everything before the webhook recovered"
    );
    let delivered: HashSet<String> = got[7..]
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        delivered.len(),
        20,
        "every event arrived once the receiver recovered"
    );
    let after_429 = got[7].at - got[6].at;
    assert!(
        after_429 >= Duration::from_secs(2),
        "Retry-After: 2 respected, next try after {after_429:?}"
    );
    let out = gateway.cli(&["dlq", "list", "--json"]);
    let letters: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(letters, serde_json::json!([]), "nothing dead-lettered");
}

on_both_engines!(a_retry_falls_due_while_new_events_keep_coming);

/// A failed delivery is tried again when its backoff ends, even while new events keep
/// waking the worker (on postgres a woken worker reads only from the new deliveries on; the
/// pass from the start that finds a due retry must still come, docs/architecture.md §10.2).
async fn a_retry_falls_due_while_new_events_keep_coming(engine: Engine) {
    let rx = Receiver::start().await;
    rx.script([Answer::status(503, "one moment")]);
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}{}sinks:\n  hook:\n    type: webhook\n    url: \"{}\"\n    delivery: {{ initial_backoff: 300ms, max_backoff: 300ms, concurrency: 1 }}\nroutes:\n  - name: all\n    to: [hook]\n",
        config_head(),
        engine.queue(""),
        rx.url("/hook")
    );
    let gateway = Gateway::start(dir.path(), &yaml);
    let client = reqwest::Client::new();
    let post = |n: u64| {
        let request = directory_request(&client, &gateway, "stream", n);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(post(1).await, 200);
    let first = rx.wait_for(1).await.remove(0);
    let id = first.json()["id"].as_str().unwrap().to_owned();
    // A new event every 200 ms for 6 s: the worker is woken far more often than its
    // 5 s rescan.
    for n in 2..=31 {
        assert_eq!(post(n).await, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = rx.received();
    let retried = got
        .iter()
        .skip(1)
        .find(|r| r.json()["id"] == id.as_str())
        .unwrap_or_else(|| {
            panic!("the failed delivery was not tried again while events kept coming")
        });
    let after = retried.at - first.at;
    assert!(
        after < Duration::from_secs(3),
        "tried again {after:?} after the 503 (backoff 300 ms)"
    );
    let ids: HashSet<String> = rx
        .wait_for(32)
        .await
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 31, "every event arrived");
}

on_both_engines!(permanent_failures_dead_letter_and_replay);

/// A receiver answering 400 sends the delivery to the dead letters at once; after the
/// receiver is fixed, `herald dlq replay` delivers it and the dead letters are empty.
async fn permanent_failures_dead_letter_and_replay(engine: Engine) {
    let rx = Receiver::start().await;
    rx.otherwise(Answer::status(400, "unknown field `primaryEmail`"));
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}{}sinks:\n  hook: {{ type: webhook, url: \"{}\" }}\nroutes:\n  - name: users\n    to: [hook]\n",
        config_head(),
        engine.queue(""),
        rx.url("/")
    );
    let mut gateway = Gateway::start(dir.path(), &yaml);
    let client = reqwest::Client::new();
    directory_request(&client, &gateway, "perm", 7)
        .send()
        .await
        .unwrap();

    let mut letters = Value::Null;
    until("a dead letter", Duration::from_secs(10), || {
        letters = serde_json::from_slice(&gateway.cli(&["dlq", "list", "--json"]).stdout)
            .unwrap_or(Value::Null);
        letters.as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    assert_eq!(rx.received().len(), 1, "a permanent error is not retried");
    let letter = &letters[0];
    assert_eq!(letter["sink"], "hook");
    assert_eq!(letter["route"], "users");
    assert_eq!(letter["reason"], "permanent error");
    assert_eq!(letter["event"]["id"], "perm/7");
    assert_eq!(
        letter["attempts"][0]["error"],
        "HTTP 400 Bad Request: unknown field `primaryEmail`"
    );

    let show = gateway.cli(&["dlq", "show", &letter["id"].to_string()]);
    let shown = text(&show.stdout);
    assert!(
        shown.contains("route users → sink hook: permanent error"),
        "{shown}"
    );
    assert!(shown.contains("HTTP 400 Bad Request"), "{shown}");

    // Fixed; replay through the running gateway.
    rx.otherwise(Answer::status(200, "ok"));
    let replay = gateway.cli(&["dlq", "replay", "--all"]);
    assert!(
        text_of(&replay).contains("replayed 1 dead letter"),
        "{}",
        text_of(&replay)
    );
    let got = rx.wait_for(2).await;
    assert_eq!(got[1].json()["id"], "perm/7");
    let list = gateway.cli(&["dlq", "list"]);
    assert!(
        text(&list.stdout).contains("no dead letters"),
        "{}",
        text(&list.stdout)
    );

    // And on a stopped gateway's journal.
    rx.otherwise(Answer::status(400, "still broken"));
    directory_request(&client, &gateway, "perm", 8)
        .send()
        .await
        .unwrap();
    until("a second dead letter", Duration::from_secs(10), || {
        text(&gateway.cli(&["dlq", "list"]).stdout).contains("perm/8")
    })
    .await;
    assert_eq!(gateway.terminate().code(), Some(0));
    let stopped = gateway.cli(&["dlq", "list"]);
    assert!(
        text(&stopped.stdout).contains("perm/8"),
        "{}",
        text_of(&stopped)
    );
    rx.otherwise(Answer::status(200, "ok"));
    let replay = gateway.cli(&["dlq", "replay", "--sink", "hook"]);
    assert!(
        text_of(&replay).contains("replayed 1 dead letter"),
        "{}",
        text_of(&replay)
    );
    gateway.restart();
    let got = rx.wait_for(4).await;
    assert_eq!(got[3].json()["id"], "perm/8");
}

on_both_engines!(a_full_queue_answers_503_and_memory_stays_bounded);

/// With a tiny queue and a dead sink, the gateway answers 503 once full, says why on
/// /readyz, and its memory stays bounded however much more is sent.
async fn a_full_queue_answers_503_and_memory_stays_bounded(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}{}sinks:\n  dead: {{ type: webhook, url: \"http://127.0.0.1:9/\", delivery: {{ max_attempts: 1000 }} }}\nroutes:\n  - name: all\n    to: [dead]\n",
        config_head(),
        engine.queue("  max_events: 50\n")
    );
    let gateway = Gateway::start(dir.path(), &yaml);
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for n in 1..=60 {
        statuses.push(
            directory_request(&client, &gateway, "full", n)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert!(statuses[..50].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(statuses[50..].iter().all(|s| *s == 503), "{statuses:?}");
    let ready = client.get(gateway.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let why = ready.text().await.unwrap();
    assert!(why.contains("max_events is 50"), "{why}");

    let before = gateway.rss_kib();
    let start = Instant::now();
    let mut refused = 0;
    for n in 61..=3000 {
        let status = directory_request(&client, &gateway, "full", n)
            .send()
            .await
            .unwrap()
            .status();
        refused += usize::from(status == 503);
    }
    let after = gateway.rss_kib();
    println!(
        "RSS {before} KiB → {after} KiB after {refused} refused requests in {:?}",
        start.elapsed()
    );
    assert_eq!(refused, 2940);
    assert!(after < 100 * 1024, "RSS stays under 100 MiB: {after} KiB");
    assert!(
        after < before + 20 * 1024,
        "RSS grew by more than 20 MiB: {before} → {after} KiB"
    );
}

fn text_of(out: &std::process::Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// A loopback server that accepts requests and never answers: a delivery to it stays in
/// flight. The connections are held until the test ends.
async fn black_hole() -> (String, Arc<std::sync::Mutex<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let accepted = Arc::new(std::sync::Mutex::new(0usize));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            *counter.lock().unwrap() += 1;
            held.push(stream);
        }
    });
    (url, accepted)
}

fn hook_config(url: &str, shutdown_timeout: &str, queue: &str) -> String {
    format!(
        "{}{queue}sinks:\n  hook: {{ type: webhook, url: \"{url}\", delivery: {{ timeout: 60s }} }}\nroutes:\n  - name: users\n    to: [hook]\n",
        config_head().replace(
            "shutdown_timeout: 2s",
            &format!("shutdown_timeout: {shutdown_timeout}")
        )
    )
}

fn sigterm(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

on_both_engines!(sigterm_waits_out_the_deadline_and_a_second_signal_exits_at_once);

/// SIGTERM with a delivery in flight waits for it up to `server.shutdown_timeout`, then exits
/// 0; a second SIGTERM exits at once (130). Either way the event is delivered after the
/// next start.
async fn sigterm_waits_out_the_deadline_and_a_second_signal_exits_at_once(engine: Engine) {
    for second_signal in [false, true] {
        let (hole, accepted) = black_hole().await;
        let dir = tempfile::tempdir().unwrap();
        let deadline = if second_signal { "30s" } else { "3s" };
        let queue = engine.queue("");
        let mut gateway = Gateway::start(dir.path(), &hook_config(&hole, deadline, &queue));
        let client = reqwest::Client::new();
        let number = if second_signal { 2 } else { 1 };
        let sent = directory_request(&client, &gateway, "stop", number)
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 200);
        until("the delivery in flight", Duration::from_secs(10), || {
            *accepted.lock().unwrap() > 0
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;

        let started = Instant::now();
        let status = if second_signal {
            sigterm(gateway.pid());
            tokio::time::sleep(Duration::from_millis(300)).await;
            sigterm(gateway.pid());
            gateway.terminate()
        } else {
            gateway.terminate()
        };
        let took = started.elapsed();
        println!("second signal: {second_signal}: exited {status} after {took:?}");
        if second_signal {
            assert_eq!(status.code(), Some(130), "{}", gateway.log());
            assert!(
                took < Duration::from_secs(5),
                "took {took:?} after the second signal"
            );
            assert!(
                gateway.log().contains("second signal: exiting now"),
                "{}",
                gateway.log()
            );
        } else {
            assert_eq!(status.code(), Some(0), "{}", gateway.log());
            assert!(
                took >= Duration::from_millis(2500) && took < Duration::from_secs(10),
                "took {took:?} with a 3 s deadline"
            );
        }

        // The destination works again: the next start delivers the acknowledged event.
        let rx = Receiver::start().await;
        std::fs::write(&gateway.config, hook_config(&rx.url("/"), "2s", &queue)).unwrap();
        gateway.restart();
        let got = rx.wait_for(1).await;
        assert_eq!(got[0].json()["id"], format!("stop/{number}"));
        assert_eq!(gateway.terminate().code(), Some(0));
    }
}

/// `dlq list --route/--sink` select, on a running and on a stopped gateway, and `dlq purge
/// --older-than` removes only dead letters older than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_filters_and_purge_by_age() {
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    a.otherwise(Answer::status(400, "a refuses"));
    b.otherwise(Answer::status(400, "b refuses"));
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}sinks:\n  a: {{ type: webhook, url: \"{}\" }}\n  b: {{ type: webhook, url: \"{}\" }}\nroutes:\n  - name: ra\n    match: {{ meta.channelId: chan-a }}\n    to: [a]\n  - name: rb\n    to: [b]\n",
        config_head(),
        a.url("/"),
        b.url("/")
    );
    let mut gateway = Gateway::start(dir.path(), &yaml);
    let client = reqwest::Client::new();
    for (channel, number) in [("chan-a", 1), ("chan-b", 2), ("chan-b", 3)] {
        let r = directory_request(&client, &gateway, channel, number)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let list = |g: &Gateway, args: &[&str]| -> Vec<Value> {
        let mut all = vec!["dlq", "list", "--json"];
        all.extend_from_slice(args);
        serde_json::from_slice(&g.cli(&all).stdout).unwrap_or_default()
    };
    until("three dead letters", Duration::from_secs(10), || {
        list(&gateway, &[]).len() == 3
    })
    .await;

    for stopped in [false, true] {
        let ra = list(&gateway, &["--route", "ra"]);
        assert_eq!(ra.len(), 1, "stopped: {stopped}");
        assert_eq!(
            (ra[0]["route"].as_str(), ra[0]["sink"].as_str()),
            (Some("ra"), Some("a"))
        );
        let b_letters = list(&gateway, &["--sink", "b"]);
        let ids: HashSet<&str> = b_letters
            .iter()
            .filter_map(|l| l["event"]["id"].as_str())
            .collect();
        assert_eq!(
            ids,
            HashSet::from(["chan-b/2", "chan-b/3"]),
            "stopped: {stopped}"
        );
        assert!(list(&gateway, &["--route", "nope"]).is_empty());
        let purge = gateway.cli(&["dlq", "purge", "--older-than", "1h"]);
        assert_eq!(text(&purge.stdout).trim(), "purged 0 dead letters");
        assert_eq!(list(&gateway, &[]).len(), 3);
        if !stopped {
            assert_eq!(gateway.terminate().code(), Some(0));
        }
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    let purge = gateway.cli(&["dlq", "purge", "--older-than", "1s"]);
    assert_eq!(text(&purge.stdout).trim(), "purged 3 dead letters");
    assert!(list(&gateway, &[]).is_empty());
}
