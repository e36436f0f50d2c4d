//! The journal of a version before the log (events in `journal.redb`), converted by `herald
//! journal upgrade` and by a gateway's first start, through the binary (docs/architecture.md
//! §10.3). The fixture `tests/fixtures/journal-before-log/journal.redb` was written by the
//! previous version's gateway: three Directory notifications (channel `ch1`, message numbers
//! 1–3) acknowledged while its only sink, a webhook, was down, so all three were pending
//! with failed attempts.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use herald_testkit::receiver::Receiver;

fn config(hook: &str) -> String {
    format!(
        "{}sinks:\n  hook:\n    type: webhook\n    url: {hook}\n    delivery: {{ initial_backoff: 10ms, max_backoff: 10ms, max_attempts: 100000 }}\nroutes:\n  - name: everything\n    to: [hook]\n",
        config_head()
    )
}

fn old_journal(dir: &Path) {
    let data = dir.join("herald-data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(
        fixtures().join("journal-before-log/journal.redb"),
        data.join("journal.redb"),
    )
    .unwrap();
}

fn emails(received: &[herald_testkit::receiver::Received]) -> Vec<String> {
    let mut emails: Vec<String> = received
        .iter()
        .map(|r| {
            let event: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            event["data"]["primaryEmail"]
                .as_str()
                .unwrap_or("?")
                .to_owned()
        })
        .collect();
    emails.sort();
    emails
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_journal_upgrade_converts_an_old_journal_and_finalize_deletes_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    old_journal(dir.path());
    let hook = Receiver::start().await;
    std::fs::write(dir.path().join("routes.yaml"), config(&hook.url("/h"))).unwrap();
    let cfg = dir.path().join("routes.yaml");
    let cfg = cfg.to_str().unwrap();

    let out = run(&["journal", "upgrade", "-c", cfg], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("3 events (3 deliveries pending, 0 waiting to be routed)"),
        "{said}"
    );
    let copy = dir.path().join("herald-data/journal.redb.pre-log");
    assert!(copy.exists(), "the old file is kept until --finalize");
    let again = text(&run(&["journal", "upgrade", "-c", cfg], None).stdout);
    assert!(again.contains("nothing to convert"), "{again}");

    // The gateway delivers what the old one had pending, and its duplicate window came
    // along: the same notification again is acknowledged and not delivered twice.
    let gateway = Gateway::start(dir.path(), &config(&hook.url("/h")));
    let received = hook.wait_for(3).await;
    assert_eq!(
        emails(&received),
        [
            "user1@example.edu",
            "user2@example.edu",
            "user3@example.edu"
        ]
    );
    let client = reqwest::Client::new();
    let resent = directory_request(&client, &gateway, "ch1", 2)
        .send()
        .await
        .unwrap();
    assert_eq!(resent.status(), 200);
    let fresh = directory_request(&client, &gateway, "ch1", 4)
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 200);
    let received = hook.wait_for(4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        emails(&hook.received()),
        [
            "user1@example.edu",
            "user2@example.edu",
            "user3@example.edu",
            "user4@example.edu"
        ],
        "{} received",
        received.len()
    );

    let running = run(&["journal", "upgrade", "--finalize", "-c", cfg], None);
    assert!(running.status.success(), "{}", text(&running.stderr));
    assert!(!copy.exists());
    let nothing = text(&run(&["journal", "upgrade", "--finalize", "-c", cfg], None).stdout);
    assert!(nothing.contains("no old file to delete"), "{nothing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_started_on_an_old_journal_converts_it_first() {
    let dir = tempfile::tempdir().unwrap();
    old_journal(dir.path());
    let hook = Receiver::start().await;
    let mut gateway = Gateway::start(dir.path(), &config(&hook.url("/h")));
    let received = hook.wait_for(3).await;
    assert_eq!(received.len(), 3);
    assert!(
        gateway
            .log()
            .contains("the journal was converted to the log"),
        "{}",
        gateway.log()
    );
    assert!(dir.path().join("herald-data/journal.redb.pre-log").exists());
    assert_eq!(gateway.terminate().code(), Some(0));
    // The old tables are emptied: a second start converts nothing and sends nothing again.
    let gateway = Gateway::start(dir.path(), &config(&hook.url("/h")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook.received().len(), 3);
    drop(gateway);
}

/// A full disk, as `RLIMIT_FSIZE` makes one (with `SIGXFSZ` ignored, so a write past the
/// limit fails with `EFBIG` as one past the free space fails with `ENOSPC`): the source
/// answers 503 for what the journal cannot take and the gateway keeps serving; restarted
/// with room, it delivers everything it acknowledged, and nothing it refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_events_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // The sink is down while the disk fills (nothing listens on port 9), so every event
    // stays pending in the journal.
    let down = config("http://127.0.0.1:9/down");
    let limit = 3 * 1024 * 1024;
    let wrapper = format!("trap '' XFSZ; exec prlimit --fsize={limit} -- \"$@\"");
    let gateway = Gateway::start_through(dir.path(), &down, &["sh", "-c", &wrapper, "sh"]);
    let client = reqwest::Client::new();
    let padding = "x".repeat(1500);
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for n in 1..=5000u64 {
        let sent = directory_request(&client, &gateway, "full", n)
            .body(format!(
                r#"{{"kind":"admin#directory#user","id":"{n}","primaryEmail":"user{n}@example.edu","notes":"{padding}"}}"#
            ))
            .send()
            .await
            .unwrap();
        match sent.status().as_u16() {
            200 => acknowledged.push(n.to_string()),
            503 => {
                refused += 1;
                if refused >= 5 {
                    break;
                }
            }
            other => panic!("event {n} answered {other}"),
        }
    }
    assert!(
        refused >= 5,
        "the disk never filled: {} acknowledged",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() > 100,
        "{} acknowledged",
        acknowledged.len()
    );
    assert!(
        gateway.log().contains("File too large"),
        "the refusal names the cause:\n{}",
        gateway.log()
    );
    // Still serving, and not ready: a load balancer sends the requests elsewhere.
    let health = client
        .get(format!("http://{}/healthz", gateway.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = client.get(gateway.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let why = ready.text().await.unwrap();
    assert!(
        why.contains("a commit failed") && why.contains("File too large"),
        "{why}"
    );
    drop(gateway);

    // Restarted with room and the sink up: every acknowledged event is delivered, and none
    // of those refused.
    let hook = Receiver::start().await;
    let gateway = Gateway::start(dir.path(), &config(&hook.url("/h")));
    let ready = client.get(gateway.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "ready with room");
    let ids = || {
        let mut ids: Vec<String> = hook
            .received()
            .iter()
            .filter_map(|r| {
                let event: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
                Some(event["data"]["id"].as_str()?.to_owned())
            })
            .collect();
        ids.sort_by_key(|id| id.parse::<u64>().unwrap_or(0));
        ids.dedup();
        ids
    };
    herald_testkit::wait::until(
        "every acknowledged event delivered",
        Duration::from_secs(30),
        || ids().len() >= acknowledged.len(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ids(), acknowledged);
}
