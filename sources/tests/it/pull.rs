//! The pull loop against a Pub/Sub REST server started by the test: events committed before
//! the acknowledgement, hand-back and redelivery, lost acknowledgements, service-account
//! tokens, and stopping.

use std::time::Duration;

use serde_json::json;

use crate::common::*;
use crate::services::{FakePubsub, SERVICE_ACCOUNT, SUBSCRIPTION};
use herald_testkit::wait::until;

const WAIT: Duration = Duration::from_secs(15);

fn pull_source(endpoint: &str, extra: &str) -> String {
    format!(
        "sources:\n  classroom:\n    type: classroom_pubsub\n    pull: {{ subscription: {SUBSCRIPTION}, endpoint: '{endpoint}'{extra} }}\n"
    )
}

fn roster() -> Vec<u8> {
    std::fs::read(fixture("classroom/roster-student-created.json")).unwrap()
}

#[tokio::test]
async fn pulled_messages_become_events_and_are_acknowledged() {
    let (pubsub, _server) = FakePubsub::start(Duration::from_secs(10), false).await;
    pubsub.publish("p-1", &roster());
    pubsub.publish(
        "p-2",
        &std::fs::read(fixture("classroom/coursework-created.json")).unwrap(),
    );
    pubsub.publish("p-3", b"this is not a notification");
    let gateway = Gateway::start(&pull_source(&pubsub.url, ", ack_deadline: 60s")).await;

    until("all three acknowledged", WAIT, || pubsub.unacked() == 0).await;
    let events = gateway.ingest.events();
    let mut ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["p-1", "p-2"]);
    let roster = events.iter().find(|e| e.id == "p-1").unwrap();
    assert_eq!(roster.source, "classroom");
    assert_eq!(roster.ty, "classroom.courses.students.created");
    assert_eq!(
        roster.subject.as_deref(),
        Some("courses/12345/students/45678")
    );
    assert_eq!(roster.time_text(), "2026-11-20T09:15:02.512Z");
    assert_eq!(
        roster.data,
        read_json("classroom/roster-student-created.json")
    );
    assert_eq!(roster.meta["subscription"], SUBSCRIPTION);
    assert_eq!(roster.meta["registrationId"], "reg-pull");
    assert_eq!(roster.meta["messageId"], "p-1");

    let rejected = gateway.ingest.rejected();
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0].reason.starts_with("`message.data` is not JSON"),
        "{}",
        rejected[0].reason
    );
    assert_eq!(rejected[0].meta["messageId"], "p-3");
    assert_eq!(rejected[0].meta["subscription"], SUBSCRIPTION);
    assert!(
        pubsub.calls("modifyAckDeadline") >= 1,
        "ack_deadline is set after the pull"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_message_the_journal_cannot_take_is_handed_back_and_redelivered() {
    let (pubsub, _server) = FakePubsub::start(Duration::from_secs(600), false).await;
    let gateway = Gateway::start(&pull_source(&pubsub.url, "")).await;
    gateway.ingest.set_full(true);
    pubsub.publish("p-1", &roster());

    until("the message handed back", WAIT, || {
        pubsub.calls("modifyAckDeadline") >= 1
    })
    .await;
    assert_eq!(pubsub.unacked(), 1, "not acknowledged while not stored");
    assert!(gateway.ingest.events().is_empty());

    gateway.ingest.set_full(false);
    until("the redelivery acknowledged", WAIT, || {
        pubsub.unacked() == 0
    })
    .await;
    assert!(
        pubsub.deliveries("p-1") >= 2,
        "it came back at once, not after the 600s deadline"
    );
    assert_eq!(gateway.ingest.events().len(), 1);
    gateway.stop().await;
}

#[tokio::test]
async fn a_lost_acknowledgement_brings_the_message_back_as_a_duplicate() {
    let (pubsub, _server) = FakePubsub::start(Duration::from_secs(1), false).await;
    pubsub.lose_next_ack();
    pubsub.publish("p-1", &roster());
    let gateway = Gateway::start(&pull_source(&pubsub.url, "")).await;

    until("the redelivery acknowledged", WAIT, || {
        pubsub.unacked() == 0
    })
    .await;
    assert_eq!(
        pubsub.deliveries("p-1"),
        2,
        "redelivered after the ack deadline"
    );
    let events = gateway.ingest.events();
    assert_eq!(events.len(), 1, "one event for one messageId");
    assert_eq!(events[0].id, "p-1");
    gateway.stop().await;
}

#[tokio::test]
async fn service_account_credentials_are_exchanged_for_a_cached_token() {
    let (pubsub, _server) = FakePubsub::start(Duration::from_secs(10), true).await;
    let dir = tempfile::tempdir().unwrap();
    let key = json!({
        "type": "service_account",
        "project_id": "district-edu",
        "private_key_id": "kid-1",
        "private_key": String::from_utf8(key_pem("a.pem")).unwrap(),
        "client_email": SERVICE_ACCOUNT,
        "token_uri": pubsub.token_uri(),
    });
    std::fs::write(dir.path().join("sa.json"), key.to_string()).unwrap();
    pubsub.publish("p-1", &roster());
    let gateway = Gateway::start_in(&pull_source(&pubsub.url, ", credentials: sa.json"), dir).await;

    until("the first message acknowledged", WAIT, || {
        pubsub.unacked() == 0
    })
    .await;
    pubsub.publish("p-2", &roster());
    until("the second message acknowledged", WAIT, || {
        pubsub.unacked() == 0
    })
    .await;
    assert_eq!(gateway.ingest.events().len(), 2);
    assert_eq!(pubsub.bad_grants(), Vec::<String>::new());
    // Every call carried the granted token (the server answers 401 to any other).
    assert_eq!(pubsub.token_grants(), 1, "the token is cached across calls");
    assert!(pubsub.calls("pull") >= 2);
    gateway.stop().await;
}

#[tokio::test]
async fn the_pull_loop_stops_on_shutdown() {
    let (pubsub, _server) = FakePubsub::start(Duration::from_secs(10), false).await;
    let gateway = Gateway::start(&pull_source(&pubsub.url, "")).await;
    until("a pull", WAIT, || pubsub.calls("pull") >= 1).await;
    gateway.stop().await;
    let pulls = pubsub.calls("pull");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        pubsub.calls("pull"),
        pulls,
        "no pull after the server stopped"
    );
}
