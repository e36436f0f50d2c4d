//! The fixtures sent over real HTTP to a real gateway become the events docs/architecture.md §3 describes
//! and reach the sinks their routes name (issue #3), through the journal.

mod common;

use std::time::Duration;

use common::*;
use herald_testkit::wait::until;
use serde_json::json;

fn config() -> String {
    format!(
        "{}  classroom:\n    type: classroom_pubsub\n    path: /push/classroom\nsinks:\n  roster: {{ type: file, path: roster.jsonl }}\n  audit: {{ type: file, path: audit.jsonl }}\nroutes:\n  - name: roster\n    match: {{ type: {{ glob: \"classroom.courses.students.*\" }} }}\n    to: [roster]\n  - name: everything\n    to: [audit]\n",
        config_head()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_becomes_its_event_and_reaches_its_sink() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::start(dir.path(), &config());
    let client = reqwest::Client::new();
    let f = fixtures();

    // Classroom, through the Pub/Sub push endpoint, twice (a redelivery).
    let envelope = std::fs::read_to_string(f.join("classroom/push-envelope.json")).unwrap();
    for _ in 0..2 {
        let r = client
            .post(g.url("/push/classroom"))
            .header("content-type", "application/json")
            .body(envelope.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    // Directory, each .http fixture as Google sends it.
    // user-add twice: a Directory retry of one channel message number is one event, here
    // through the real journal.
    for name in [
        "sync.http",
        "user-add.http",
        "user-add.http",
        "user-delete.http",
    ] {
        let req = HttpRequest::parse(&f.join("directory").join(name));
        let mut r = client.post(g.url("/webhook/directory"));
        for (k, v) in &req.headers {
            if k.eq_ignore_ascii_case("host") || k.eq_ignore_ascii_case("content-length") {
                continue;
            }
            // The fixtures' channel tokens are the operator's secret; this config accepts ours.
            let v = if k.eq_ignore_ascii_case("X-Goog-Channel-Token") {
                TOKEN.to_owned()
            } else {
                v.clone()
            };
            r = r.header(k.as_str(), v);
        }
        assert_eq!(
            r.body(req.body.clone()).send().await.unwrap().status(),
            200,
            "{name}"
        );
    }

    until("the roster event", Duration::from_secs(10), || {
        g.file_records("roster.jsonl").len() == 1
    })
    .await;
    until("two directory events", Duration::from_secs(10), || {
        g.file_records("audit.jsonl").len() == 2
    })
    .await;

    let roster = &g.file_records("roster.jsonl")[0];
    assert_eq!(roster["route"], "roster");
    let e = &roster["event"];
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["id"], "2070443601311540");
    assert_eq!(e["source"], "classroom");
    assert_eq!(e["type"], "classroom.courses.students.created");
    assert_eq!(e["subject"], "courses/12345/students/45678");
    assert_eq!(e["time"], "2026-11-20T09:15:02.512Z");
    assert_eq!(e["datacontenttype"], "application/json");
    assert_eq!(
        e["data"],
        json!({"collection": "courses.students", "eventType": "CREATED", "resourceId": {"courseId": "12345", "userId": "45678"}})
    );
    assert_eq!(e["meta"]["registrationId"], "Cg0I2fQDEgYIABCA6gcaAA");
    assert_eq!(e["meta"]["messageId"], "2070443601311540");
    assert_eq!(
        e["meta"]["subscription"],
        "projects/district-edu/subscriptions/classroom-push"
    );

    let audit = g.file_records("audit.jsonl");
    let add = &audit
        .iter()
        .find(|r| r["event"]["type"] == "directory.users.add")
        .expect("the add")["event"];
    assert_eq!(add["id"], "directoryApiId/10");
    assert_eq!(add["source"], "directory");
    assert_eq!(add["subject"], "users/111220860655841818701");
    assert_eq!(add["data"]["primaryEmail"], "new.student@mydomain.com");
    let meta = &add["meta"];
    assert_eq!(meta["channelId"], "directoryApiId");
    assert_eq!(meta["resourceId"], "ret08u3rv24htgh289g");
    assert_eq!(meta["resourceState"], "add");
    assert_eq!(meta["messageNumber"], "10");
    assert_eq!(meta["domain"], "mydomain.com");
    assert_eq!(meta["event"], "add");
    assert_eq!(meta["channelExpiration"], "2030-10-29T20:32:02Z");
    let text = serde_json::to_string(&audit).unwrap();
    assert!(!text.contains(TOKEN), "the channel token is never stored");
    let delete = &audit
        .iter()
        .find(|r| r["event"]["type"] == "directory.users.delete")
        .expect("the delete")["event"];
    assert_eq!(delete["id"], "deleteChannel/236440");
    assert_eq!(delete["meta"]["domain"], "mydomain.com");
    assert!(
        audit
            .iter()
            .all(|r| r["event"]["type"] != "directory.users.sync"),
        "sync is not routed"
    );
}
