//! Every fixture of `tests/fixtures`, sent over HTTP, becomes exactly the event of
//! docs/architecture.md §3; redeliveries and retries become no second event.

use chrono::{DateTime, Utc};
use herald_core::Event;
use serde_json::Value;

use crate::common::*;

const SOURCES: &str = r#"
sources:
  classroom: { type: classroom_pubsub, path: /push/classroom }
  directory:
    type: directory_webhook
    path: /webhook/directory
    channel_tokens: ["398348u3tu83ut8uu38", "245t1234tt83trrt333"]
  directory-sync:
    type: directory_webhook
    path: /webhook/directory-sync
    channel_tokens: ["398348u3tu83ut8uu38"]
    route_sync: true
"#;

fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn classroom_event(notification: Value, id: &str, ty: &str, subject: &str) -> Event {
    let mut event = Event::new(
        id,
        "classroom",
        ty,
        time("2026-11-20T09:15:02.512Z"),
        notification,
    )
    .with_subject(subject);
    for (k, v) in [
        ("registrationId", "Cg0I2fQDEgYIABCA6gcaAA"),
        (
            "subscription",
            "projects/district-edu/subscriptions/classroom-push",
        ),
        ("messageId", id),
        ("publishTime", "2026-11-20T09:15:02.512Z"),
    ] {
        event.meta.insert(k.into(), v.into());
    }
    event
}

#[tokio::test]
async fn the_push_envelope_fixture_becomes_the_roster_event() {
    let gateway = Gateway::start(SOURCES).await;
    let body = std::fs::read(fixture("classroom/push-envelope.json")).unwrap();
    let response = client()
        .post(gateway.url("/push/classroom"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        gateway.ingest.events(),
        [classroom_event(
            read_json("classroom/roster-student-created.json"),
            "2070443601311540",
            "classroom.courses.students.created",
            "courses/12345/students/45678",
        )]
    );
    assert!(gateway.ingest.rejected().is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn each_classroom_notification_fixture_becomes_its_event() {
    let gateway = Gateway::start(SOURCES).await;
    let cases = [
        (
            "classroom/roster-student-created.json",
            "1",
            "classroom.courses.students.created",
            "courses/12345/students/45678",
        ),
        (
            "classroom/coursework-created.json",
            "2",
            "classroom.courses.courseWork.created",
            "courses/12345/courseWork/67890",
        ),
        (
            "classroom/submission-modified.json",
            "3",
            "classroom.courses.courseWork.studentSubmissions.modified",
            "courses/12345/courseWork/67890/studentSubmissions/Cg4I9rq3kLgEEJyX6N3XBQ",
        ),
    ];
    let mut expected = Vec::new();
    for (file, id, ty, subject) in cases {
        let notification = read_json(file);
        let response = client()
            .post(gateway.url("/push/classroom"))
            .body(push_body(&notification, id))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "{file}");
        expected.push(classroom_event(notification, id, ty, subject));
    }
    assert_eq!(gateway.ingest.events(), expected);
    gateway.stop().await;
}

/// The event a Directory fixture must become; `received` is the time the gateway took it.
fn directory_event(
    fixture: &HttpFixture,
    received: DateTime<Utc>,
    expiration: &str,
    uri_meta: &[(&str, &str)],
) -> Event {
    let data: Value = if fixture.body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&fixture.body).unwrap()
    };
    let state = fixture.header("X-Goog-Resource-State");
    let mut event = Event::new(
        format!(
            "{}/{}",
            fixture.header("X-Goog-Channel-ID"),
            fixture.header("X-Goog-Message-Number")
        ),
        "directory",
        format!("directory.users.{state}"),
        received,
        data.clone(),
    );
    if let Some(id) = data.get("id").and_then(Value::as_str) {
        event = event.with_subject(format!("users/{id}"));
    }
    for (k, header) in [
        ("channelId", "X-Goog-Channel-ID"),
        ("resourceId", "X-Goog-Resource-ID"),
        ("resourceUri", "X-Goog-Resource-URI"),
        ("resourceState", "X-Goog-Resource-State"),
        ("messageNumber", "X-Goog-Message-Number"),
    ] {
        event.meta.insert(k.into(), fixture.header(header).into());
    }
    event
        .meta
        .insert("channelExpiration".into(), expiration.into());
    for (k, v) in uri_meta {
        event.meta.insert(k.to_string().into(), (*v).into());
    }
    event
}

#[tokio::test]
async fn each_directory_fixture_becomes_its_event() {
    let gateway = Gateway::start(SOURCES).await;
    let cases = [
        (
            "directory/user-add.http",
            "2030-10-29T20:32:02Z",
            [("domain", "mydomain.com"), ("event", "add")],
        ),
        (
            "directory/user-delete.http",
            "2030-12-09T22:24:23Z",
            [("domain", "mydomain.com"), ("event", "delete")],
        ),
    ];
    let mut expected = Vec::new();
    for (file, expiration, uri_meta) in cases {
        let fixture = HttpFixture::read(file);
        let before = Utc::now();
        let response = fixture
            .request(&client(), &gateway.url(""))
            .send()
            .await
            .unwrap();
        let after = Utc::now();
        assert_eq!(response.status(), 200, "{file}");
        let events = gateway.ingest.events();
        let got = events.last().unwrap();
        assert!(
            before <= got.time && got.time <= after,
            "time is when it was received"
        );
        expected.push(directory_event(&fixture, got.time, expiration, &uri_meta));
        assert!(
            !got.to_json()
                .contains(fixture.header("X-Goog-Channel-Token")),
            "the token is not kept"
        );
    }
    assert_eq!(gateway.ingest.events(), expected);
    assert_eq!(
        expected[0].subject.as_deref(),
        Some("users/111220860655841818701")
    );
    assert_eq!(expected[1].id, "deleteChannel/236440");
    gateway.stop().await;
}

#[tokio::test]
async fn sync_is_acknowledged_and_routed_only_with_route_sync() {
    let gateway = Gateway::start(SOURCES).await;
    let sync = HttpFixture::read("directory/sync.http");
    let response = sync
        .request(&client(), &gateway.url(""))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        gateway.ingest.events().is_empty(),
        "sync is not routed by default"
    );

    let mut routed = HttpFixture::read("directory/sync.http");
    routed.path = "/webhook/directory-sync".into();
    let response = routed
        .request(&client(), &gateway.url(""))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = gateway.ingest.events();
    assert_eq!(events.len(), 1);
    let received = events[0].time;
    let mut expected = directory_event(
        &sync,
        received,
        "2030-10-29T20:32:02Z",
        &[("domain", "mydomain.com"), ("event", "add")],
    );
    expected.source = "directory-sync".into();
    assert_eq!(events[0], expected);
    assert_eq!(events[0].ty, "directory.users.sync");
    assert_eq!(events[0].data, Value::Null);
    assert_eq!(events[0].subject, None);

    let metrics = gateway.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("herald_directory_sync_total{source=\"directory\"} ")),
        "{metrics}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_redelivered_message_id_is_one_event() {
    let gateway = Gateway::start(SOURCES).await;
    let body = std::fs::read(fixture("classroom/push-envelope.json")).unwrap();
    for _ in 0..3 {
        let response = client()
            .post(gateway.url("/push/classroom"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }
    let events = gateway.ingest.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id, "2070443601311540");
    gateway.stop().await;
}

#[tokio::test]
async fn a_retried_directory_message_is_one_event() {
    let gateway = Gateway::start(SOURCES).await;
    let fixture = HttpFixture::read("directory/user-add.http");
    for _ in 0..2 {
        let response = fixture
            .request(&client(), &gateway.url(""))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let next = HttpFixture::read("directory/user-add.http")
        .with_header("X-Goog-Message-Number", Some("11"));
    assert_eq!(
        next.request(&client(), &gateway.url(""))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ids: Vec<String> = gateway.ingest.events().into_iter().map(|e| e.id).collect();
    assert_eq!(ids, ["directoryApiId/10", "directoryApiId/11"]);
    gateway.stop().await;
}

#[tokio::test]
async fn channels_outside_channel_ids_are_refused_and_nothing_is_stored() {
    let gateway = Gateway::start(
        r#"
sources:
  directory:
    type: directory_webhook
    path: /webhook/directory
    channel_tokens: ["398348u3tu83ut8uu38", "245t1234tt83trrt333"]
    channel_ids: [directoryApiId]
"#,
    )
    .await;
    let listed = HttpFixture::read("directory/user-add.http");
    let response = listed
        .request(&client(), &gateway.url(""))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let other = HttpFixture::read("directory/user-delete.http");
    let (status, body) = answer(
        other
            .request(&client(), &gateway.url(""))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["reason"],
        "channel `deleteChannel` is not in `channel_ids`"
    );
    let ids: Vec<String> = gateway.ingest.events().into_iter().map(|e| e.id).collect();
    assert_eq!(ids, ["directoryApiId/10"]);
    assert!(
        gateway.ingest.rejected().is_empty(),
        "a refused request is not kept"
    );
    gateway.stop().await;
}
