//! Enrichment end to end (docs/architecture.md §11, issue 17): a real gateway process whose
//! Classroom lookups go to the testkit's fake Google, Pub/Sub pushes over real HTTP, a
//! webhook receiver and a file sink.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use herald_testkit::google::{ACCESS_TOKEN, FakeGoogle};
use herald_testkit::receiver::Receiver;
use herald_testkit::wait::until;
use serde_json::json;

const SUBJECT: &str = "admin@example.edu";
const WAIT: Duration = Duration::from_secs(30);

fn write_key(dir: &std::path::Path) {
    let pem = std::fs::read_to_string(repo().join("sources/tests/keys/a.pem")).unwrap();
    let key = json!({
        "type": "service_account",
        "private_key": pem,
        "client_email": "herald@district-edu.iam.gserviceaccount.com",
    });
    std::fs::write(dir.join("sa.json"), key.to_string()).unwrap();
}

async fn fake_google() -> FakeGoogle {
    let google = FakeGoogle::start(
        &std::fs::read(repo().join("sources/tests/keys/a.pub.pem")).unwrap(),
        Arc::new(chrono::Utc::now),
    )
    .await;
    google.add_course("12345", "AP Biology", "Period 3");
    google.add_course("777", "Chemistry", "Period 1");
    google.add_person(
        "students",
        "12345",
        "45678",
        "Jane",
        "Doe",
        "jane.doe@example.edu",
    );
    google.add_person(
        "students",
        "777",
        "45678",
        "Jane",
        "Doe",
        "jane.doe@example.edu",
    );
    google
}

fn config(google: &FakeGoogle, hook: &Receiver, enrich: &str) -> String {
    format!(
        "server: {{ listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, shutdown_timeout: 2s }}\n{}\
sources:\n  classroom:\n    type: classroom_pubsub\n    path: /push/classroom\n    enrich: {enrich}\n\
sinks:\n  hook:\n    type: webhook\n    url: \"{}\"\n    body: \"{{{{ enriched.person.name }}}} joined {{{{ enriched.course.name }}}} ({{{{ enriched.course.section }}}})\"\n  audit: {{ type: file, path: audit.jsonl }}\n\
routes:\n  - name: ap\n    match: {{ enriched.course.name: {{ glob: \"AP *\" }} }}\n    to: [hook, audit]\n  - name: rest\n    to: [audit]\n",
        google.google_yaml("sa.json", SUBJECT),
        hook.url("/hook"),
    )
}

/// Pushes a `courses.students` CREATED notification as Pub/Sub does; the status.
async fn push(client: &reqwest::Client, g: &Gateway, n: u64, course: &str, user: &str) -> u16 {
    let notification = json!({"collection": "courses.students", "eventType": "CREATED",
        "resourceId": {"courseId": course, "userId": user}});
    let envelope = json!({
        "message": {
            "data": base64::engine::general_purpose::STANDARD.encode(notification.to_string()),
            "messageId": format!("{n}"),
            "publishTime": "2026-11-20T09:15:02.512Z",
        },
        "subscription": "projects/district-edu/subscriptions/classroom-push",
    });
    client
        .post(g.url("/push/classroom"))
        .json(&envelope)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn course_gets(google: &FakeGoogle, course: &str) -> usize {
    let path = format!("/v1/courses/{course}");
    google
        .calls(&path)
        .iter()
        .filter(|c| c.path == path)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roster_event_reaches_the_webhook_with_names_routed_on_the_course_name() {
    let google = fake_google().await;
    let hook = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_key(dir.path());
    let g = Gateway::start(dir.path(), &config(&google, &hook, "true"));
    let client = reqwest::Client::new();

    assert_eq!(push(&client, &g, 1, "12345", "45678").await, 204);
    assert_eq!(push(&client, &g, 2, "777", "45678").await, 204);
    let received = hook.wait_for(1).await;
    assert_eq!(received[0].text(), "Jane Doe joined AP Biology (Period 3)");
    until("both events in the audit file", WAIT, || {
        g.file_records("audit.jsonl").len() == 2
    })
    .await;
    let records = g.file_records("audit.jsonl");
    let chemistry = records
        .iter()
        .find(|r| r["event"]["enriched"]["course"]["name"] == "Chemistry")
        .expect("the Chemistry event");
    assert_eq!(
        chemistry["route"], "rest",
        "a route on enriched.course.name selects"
    );
    let event = &chemistry["event"];
    assert_eq!(
        event["enriched"],
        json!({"course": {"id": "777", "name": "Chemistry", "section": "Period 1", "room": "204",
                          "ownerId": "107000000000000000001"},
               "person": {"id": "45678", "name": "Jane Doe"}})
    );
    assert_eq!(
        event["data"],
        json!({"collection": "courses.students", "eventType": "CREATED",
               "resourceId": {"courseId": "777", "userId": "45678"}}),
        "data stays what Google sent"
    );
    assert!(event["meta"].get("enrichment").is_none());
    assert_eq!(hook.received().len(), 1, "Chemistry did not match `AP *`");

    // E-mail addresses are opt-in: neither the sinks, the journal's cache nor the log saw one.
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(!audit.contains("jane.doe@example.edu"));
    assert!(!hook.received()[0].text().contains("@"));
    let log = g.log();
    assert!(
        !log.contains("Jane") && !log.contains("AP Biology"),
        "{log}"
    );
    // Read-only scopes, the fake's token on every call.
    let scope = google.grants()[0]["scope"].as_str().unwrap().to_owned();
    assert!(scope.contains("classroom.courses.readonly"), "{scope}");
    assert!(scope.contains("classroom.rosters.readonly"), "{scope}");
    assert!(!scope.contains("profile.emails"), "{scope}");
    let calls = google.calls("/v1/courses/");
    assert!(!calls.is_empty());
    assert!(
        calls
            .iter()
            .all(|c| c.bearer.as_deref() == Some(ACCESS_TOKEN))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_events_of_one_course_make_one_call_and_a_429_storm_delays_then_delivers() {
    let google = fake_google().await;
    for user in 0..60 {
        google.add_person(
            "students",
            "12345",
            &format!("s{user}"),
            "Student",
            &user.to_string(),
            "x@example.edu",
        );
    }
    let hook = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_key(dir.path());
    let g = Gateway::start(dir.path(), &config(&google, &hook, "true"));
    let client = reqwest::Client::new();

    for n in 0..50 {
        assert_eq!(push(&client, &g, n, "12345", &format!("s{n}")).await, 204);
    }
    hook.wait_for(50).await;
    assert_eq!(
        course_gets(&google, "12345"),
        1,
        "one courses.get for 50 events"
    );

    // A 429 storm on the course: the events wait (acknowledged at once), then all arrive.
    google.fail_always(
        "courses.get",
        429,
        "Quota exceeded for quota metric 'Read requests'",
    );
    for n in 100..110 {
        assert_eq!(push(&client, &g, n, "777", "45678").await, 204);
    }
    until("retries during the storm", WAIT, || {
        course_gets(&google, "777") >= 3
    })
    .await;
    assert_eq!(
        g.file_records("audit.jsonl").len(),
        50,
        "nothing routed while Google throttles"
    );
    google.recover();
    until("all delivered after the storm", WAIT, || {
        g.file_records("audit.jsonl").len() == 60
    })
    .await;
    for record in g.file_records("audit.jsonl") {
        assert!(
            record["event"]["meta"].get("enrichment").is_none(),
            "{record}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_past_max_wait_delivers_with_the_failure_marker_and_the_ids() {
    let google = fake_google().await;
    let hook = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_key(dir.path());
    let g = Gateway::start(
        dir.path(),
        &config(
            &google,
            &hook,
            "{ course: true, person: [name, email], max_wait: 2s }",
        ),
    );
    google.fail_always("courses.get", 503, "The service is currently unavailable.");
    google.fail_always(
        "courses.students.get",
        503,
        "The service is currently unavailable.",
    );
    let client = reqwest::Client::new();
    assert_eq!(push(&client, &g, 1, "12345", "45678").await, 204);
    until("routed after max_wait", WAIT, || {
        g.file_records("audit.jsonl").len() == 1
    })
    .await;
    let record = g.file_records("audit.jsonl")[0].clone();
    assert_eq!(record["route"], "rest", "no name, no `AP *` match");
    let event = record["event"].clone();
    let marker = event["meta"]["enrichment"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(marker.starts_with("failed: "), "{event}");
    assert!(marker.contains("503"), "{marker}");
    assert_eq!(event["enriched"]["course"], json!({"id": "12345"}));
    assert!(hook.received().is_empty(), "no name, no `AP *` match");
    assert!(
        course_gets(&google, "12345") >= 2,
        "retried before giving up"
    );

    // Back up: with e-mail opted in, the address reaches the sink.
    google.recover();
    assert_eq!(push(&client, &g, 2, "777", "45678").await, 204);
    until("the second event", WAIT, || {
        g.file_records("audit.jsonl").len() == 2
    })
    .await;
    let second = g.file_records("audit.jsonl")[1]["event"].clone();
    assert_eq!(
        second["enriched"]["person"]["email"],
        "jane.doe@example.edu"
    );
    let scope = google.grants()[0]["scope"].as_str().unwrap().to_owned();
    assert!(scope.contains("classroom.profile.emails"), "{scope}");
}
