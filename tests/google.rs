//! `herald google status | renew | stop` against a real gateway process whose Google calls
//! go to the local fake (herald-testkit), issue #7.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use herald_testkit::google::FakeGoogle;
use herald_testkit::wait::until;
use serde_json::{Value, json};

const SUBJECT: &str = "admin@example.edu";
const CHANNEL: &str = "directory/add/example.edu";
const REGISTRATION: &str = "classroom/DOMAIN_ROSTER_CHANGES";

fn write_key(dir: &std::path::Path) {
    let pem = std::fs::read_to_string(repo().join("sources/tests/keys/a.pem")).unwrap();
    let key = json!({
        "type": "service_account",
        "private_key": pem,
        "client_email": "herald@district-edu.iam.gserviceaccount.com",
    });
    std::fs::write(dir.join("sa.json"), key.to_string()).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(google: &FakeGoogle, port: u16) -> String {
    let sources = [
        "sources:",
        "  classroom:",
        "    type: classroom_pubsub",
        "    topic: projects/district-edu/topics/classroom",
        "    registrations: [{feed: DOMAIN_ROSTER_CHANGES}]",
        "  directory:",
        "    type: directory_webhook",
        &format!("    address: http://127.0.0.1:{port}/webhook/directory"),
        "    watch: [{event: add, domain: example.edu}]",
        "sinks:",
        "  audit: { type: file, path: audit.jsonl }",
        "routes:",
        "  - name: everything",
        "    to: [audit]",
    ];
    format!(
        "server: {{ listen: 127.0.0.1:{port}, admin_listen: 127.0.0.1:0, shutdown_timeout: 2s }}\n{}{}\n",
        google.google_yaml("sa.json", SUBJECT),
        sources.join("\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_renew_and_stop_on_a_running_and_a_stopped_gateway() {
    let google = FakeGoogle::start(
        &std::fs::read(repo().join("sources/tests/keys/a.pub.pem")).unwrap(),
        Arc::new(chrono::Utc::now),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    write_key(dir.path());
    let mut g = Gateway::start(dir.path(), &config(&google, free_port()));
    until(
        "the registration and the channel",
        Duration::from_secs(20),
        || google.registrations().len() == 1 && google.syncs().iter().any(|(_, s)| *s == 200),
    )
    .await;

    // A change on the channel Herald opened reaches the sink.
    let first = google.channels()[0].clone();
    let user = json!({"kind": "admin#directory#user", "id": "7", "etag": "\"e7\"", "primaryEmail": "new@example.edu"});
    assert_eq!(google.notify("add", &user).await, [(first.id.clone(), 200)]);
    until("the change delivered", Duration::from_secs(20), || {
        g.file_records("audit.jsonl").len() == 1
    })
    .await;
    assert_eq!(
        g.file_records("audit.jsonl")[0]["event"]["type"],
        "directory.users.add"
    );

    let out = g.cli(&["google", "status"]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for expected in [
        REGISTRATION,
        CHANNEL,
        "registration",
        "channel",
        "ok",
        "RENEWED",
        "1m ago",
        &first.id,
    ] {
        assert!(said.contains(expected), "`{expected}` missing in:\n{said}");
    }
    let out = g.cli(&["google", "status", "--json"]);
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 2);
    let channel = rows.iter().find(|r| r["name"] == CHANNEL).unwrap();
    assert_eq!(channel["id"], first.id.as_str());
    assert_eq!(channel["health"], "ok");
    assert!(channel["expires"].as_str().is_some());

    // `renew` opens a new channel now; the old one is stopped once the new one synced.
    let out = g.cli(&["google", "renew", CHANNEL]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("renewed {CHANNEL}"));
    assert_eq!(google.calls("/users/watch").len(), 2);
    until("the old channel stopped", Duration::from_secs(20), || {
        google.calls("/channels/stop").len() == 1
    })
    .await;
    assert_eq!(
        google.calls("/channels/stop")[0].body["id"],
        first.id.as_str()
    );

    // `stop` stops the open channel; since the watch is still configured, a fresh one opens.
    let second = google.channels()[1].clone();
    let out = g.cli(&["google", "stop", CHANNEL]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains(&format!("stopped channel {}", second.id)),
        "{said}"
    );
    assert!(said.contains("still in routes.yaml"), "{said}");
    assert!(google.channels()[1].stopped);
    until("a fresh channel", Duration::from_secs(20), || {
        google.channels().len() == 3
    })
    .await;

    let out = g.cli(&["google", "renew", "directory/nope"]);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("no registration or channel `directory/nope`"),
        "{said}"
    );

    // Stopped: status reads the journal; renew needs the running gateway.
    assert!(g.terminate().success());
    let out = g.cli(&["google", "status"]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        said.contains(REGISTRATION) && said.contains(CHANNEL),
        "{said}"
    );
    assert!(said.contains("the gateway is not running"), "{said}");
    let out = g.cli(&["google", "renew"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("needs the running gateway"));
    assert!(
        !g.log().contains(&first.token),
        "a channel token reached the log"
    );
}

#[test]
fn watching_without_credentials_stops_run_with_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "server: { listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0 }\nsources:\n  directory:\n    type: directory_webhook\n    address: https://herald.example.edu/webhook/directory\n    watch: [{event: add, domain: example.edu}]\nsinks:\n  audit: { type: file, path: audit.jsonl }\nroutes: [{ name: all, to: [audit] }]\n";
    let config = dir.path().join("routes.yaml");
    std::fs::write(&config, yaml).unwrap();
    let out = herald()
        .args(["run", "-c", config.to_str().unwrap()])
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("set `google.credentials` or $GOOGLE_APPLICATION_CREDENTIALS"),
        "{said}"
    );
}

/// Two gateways on one PostgreSQL queue (issue 16): only the leader calls Google; when it is
/// killed with `kill -9` the other takes over and renews before expiry, and no two renewals
/// of the registration overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gateway_leads_the_lifecycle_and_another_takes_over() {
    // Registrations live 7 days on the fake's clock; running it 7 days minus 10 s behind makes
    // them expire 10 s after they are made, so Herald renews them every 8 s.
    let behind = chrono::TimeDelta::days(7) - chrono::TimeDelta::seconds(10);
    let google = FakeGoogle::start(
        &std::fs::read(repo().join("sources/tests/keys/a.pub.pem")).unwrap(),
        Arc::new(move || chrono::Utc::now() - behind),
    )
    .await;
    let url = herald_testkit::postgres::Postgres::shared().database("google_leader");
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports = [free_port(), free_port()];
    // The same routes.yaml on both (the channel's address is the first gateway's).
    let mut gateways: Vec<Gateway> = dirs
        .iter()
        .zip(ports)
        .map(|(d, port)| {
            write_key(d.path());
            let yaml = config(&google, ports[0]).replacen(
                &format!("listen: 127.0.0.1:{}", ports[0]),
                &format!("listen: 127.0.0.1:{port}"),
                1,
            );
            let yaml = format!("{yaml}queue:\n  engine: postgres\n  url: '{url}'\n  lease: 1s\n");
            Gateway::start(d.path(), &yaml)
        })
        .collect();
    let creates = || -> Vec<herald_testkit::google::Call> {
        google
            .calls("/v1/registrations")
            .into_iter()
            .filter(|c| c.method.as_str() == "POST")
            .collect()
    };
    until(
        "the registration renewed twice",
        Duration::from_secs(40),
        || creates().len() >= 3,
    )
    .await;
    let leads = |g: &Gateway| {
        g.log()
            .contains("this gateway now leads the Google lifecycle")
    };
    let leaders: Vec<usize> = (0..2).filter(|&i| leads(&gateways[i])).collect();
    assert_eq!(leaders.len(), 1, "exactly one gateway leads");
    let (leader, other) = (leaders[0], 1 - leaders[0]);
    assert!(
        gateways[other]
            .log()
            .contains("another gateway leads the Google lifecycle")
    );
    assert_eq!(google.calls("/users/watch").len(), 1, "one channel opened");

    // Killed between a renewal's call to Google and its record, the leader would leave the
    // next one to renew again at once (it cannot know of a renewal not recorded): the kill
    // waits for the leader to have recorded (and logged) every renewal Google has seen.
    let recorded = |g: &Gateway| {
        g.log()
            .matches("Classroom registration created or renewed")
            .count()
    };
    until(
        "the leader recorded its renewals",
        Duration::from_secs(10),
        || recorded(&gateways[leader]) >= creates().len(),
    )
    .await;
    let before = creates().len();
    gateways[leader].kill9();
    until("the other gateway leads", Duration::from_secs(20), || {
        leads(&gateways[other])
    })
    .await;
    until(
        "two renewals after the kill",
        Duration::from_secs(40),
        || creates().len() >= before + 2,
    )
    .await;
    // Renewed before expiry (10 s), never twice at once.
    let calls = creates();
    for pair in calls.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap > chrono::TimeDelta::seconds(3) && gap < chrono::TimeDelta::seconds(10),
            "renewals {gap} apart: {:?}",
            calls.iter().map(|c| c.at).collect::<Vec<_>>()
        );
    }
    assert_eq!(google.calls("/users/watch").len(), 1, "the channel kept");
    let out = gateways[other].cli(&["google", "status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = text(&out.stdout);
    assert!(status.contains(REGISTRATION), "{status}");
    // It names the gateway that renews (holder `host/pid/start`): the survivor.
    let survivor = format!("/{}/", gateways[other].pid());
    assert!(
        status.contains("renewed by the leading gateway") && status.contains(&survivor),
        "{status}"
    );
}
