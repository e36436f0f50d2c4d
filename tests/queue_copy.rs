//! `herald queue copy --to CONFIG` (docs/architecture.md §10.2, issue 16): a local gateway
//! with deliveries pending to a receiver that is down and with dead letters is stopped; its
//! journal is copied into PostgreSQL; a gateway on postgres then delivers every pending
//! delivery and lists the dead letters, and the Google state is there. A second copy copies
//! nothing; a copy while the local gateway runs is refused.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use herald_testkit::postgres::Postgres;
use herald_testkit::wait::until;
use herald_testkit::{Answer, Receiver};
use serde_json::Value;

const EVENTS: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_journal_moves_to_postgres() {
    let bad = Receiver::start().await;
    bad.otherwise(Answer::status(400, "no such user"));
    let local_dir = tempfile::tempdir().unwrap();
    // `hook` points at a port nobody listens on: its deliveries stay pending, retried.
    let local_yaml = format!(
        "{}sinks:\n  hook: {{ type: webhook, url: \"http://127.0.0.1:9/\", delivery: {{ initial_backoff: 50ms, max_backoff: 200ms, max_attempts: 1000 }} }}\n  bad: {{ type: webhook, url: \"{}\" }}\nroutes:\n  - name: odd\n    match: {{ meta.channelId: odd }}\n    to: [bad]\n    continue: true\n  - name: users\n    to: [hook]\n",
        config_head(),
        bad.url("/")
    );
    let mut local = Gateway::start(local_dir.path(), &local_yaml);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for n in 1..=EVENTS {
        let channel = if n % 5 == 0 { "odd" } else { "even" };
        let r = directory_request(&client, &local, channel, n)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    let dead_expected = (EVENTS / 5) as usize;
    until("the dead letters", Duration::from_secs(20), || {
        let out = local.cli(&["dlq", "list", "--json"]);
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            == Some(dead_expected)
    })
    .await;
    // Let a few retries of `hook` be recorded, so retry state is copied too.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let pg = Postgres::shared();
    let url = pg.database("copy");
    let db = url.rsplit('/').next().unwrap().to_owned();
    let rx = Receiver::start().await;
    let pg_dir = tempfile::tempdir().unwrap();
    let pg_yaml = format!(
        "{}queue:\n  engine: postgres\n  url: '{url}'\n  lease: 2s\nsinks:\n  hook: {{ type: webhook, url: \"{}\" }}\n  bad: {{ type: webhook, url: \"{}\" }}\nroutes:\n  - name: odd\n    match: {{ meta.channelId: odd }}\n    to: [bad]\n    continue: true\n  - name: users\n    to: [hook]\n",
        config_head(),
        rx.url("/"),
        bad.url("/")
    );
    let pg_config = pg_dir.path().join("routes.yaml");
    std::fs::write(&pg_config, &pg_yaml).unwrap();
    let copy = |config: &std::path::Path| {
        run(
            &[
                "queue",
                "copy",
                "-c",
                config.to_str().unwrap(),
                "--to",
                pg_config.to_str().unwrap(),
            ],
            None,
        )
    };

    // Refused while the local gateway runs.
    let refused = copy(&local.config);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("in use by a running gateway"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(local.terminate().code(), Some(0), "{}", local.log());

    // Google state, as the lifecycle keeps it (a channel with its token).
    {
        let journal =
            herald_core::journal::open_for_admin(&local_dir.path().join("herald-data")).unwrap();
        journal
            .put_state(
                "google/directory/channel/users",
                Some(br#"{"token":"t0k3n"}"#.as_slice()),
            )
            .unwrap();
    }

    let first = copy(&local.config);
    let out = text(&first.stdout);
    assert!(first.status.success(), "{out}{}", text(&first.stderr));
    println!("{out}");
    assert!(out.contains("state: 1 copied, 0 already there"), "{out}");
    assert!(
        out.contains(&format!(
            "dead letters and rejected inputs: {dead_expected} copied"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "pending: {EVENTS} events with {EVENTS} deliveries copied"
        )),
        "{out}"
    );
    let attempts: i64 = pg
        .psql(&db, "SELECT coalesce(max(attempts), 0) FROM deliveries")
        .parse()
        .unwrap();
    assert!(attempts > 0, "retry state copied");

    let second = copy(&local.config);
    let out = text(&second.stdout);
    assert!(second.status.success(), "{out}{}", text(&second.stderr));
    assert!(out.contains("state: 0 copied, 1 already there"), "{out}");
    assert!(
        out.contains(&format!(
            "dead letters and rejected inputs: 0 copied, {dead_expected} already there"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "pending: 0 events with 0 deliveries copied, {EVENTS} events already there"
        )),
        "{out}"
    );

    // The cluster delivers everything and lists the dead letters.
    let mut gateway = Gateway::start(pg_dir.path(), &pg_yaml);
    let received = rx.wait_for(EVENTS as usize).await;
    let ids: HashSet<String> = received
        .iter()
        .filter_map(|r| r.json()["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), EVENTS as usize, "every pending delivery, once");
    let letters: Value =
        serde_json::from_slice(&gateway.cli(&["dlq", "list", "--json"]).stdout).unwrap();
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), dead_expected);
    assert!(letters.iter().all(|l| l["sink"] == "bad"));
    assert_eq!(
        pg.psql(
            &db,
            "SELECT convert_from(value, 'UTF8') FROM state WHERE key = 'google/directory/channel/users'"
        ),
        r#"{"token":"t0k3n"}"#
    );
    until("the backlog empty", Duration::from_secs(20), || {
        pg.psql(&db, "SELECT count(*) FROM deliveries") == "0"
    })
    .await;
    assert_eq!(gateway.terminate().code(), Some(0), "{}", gateway.log());
}
