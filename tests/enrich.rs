//! Enrichment end to end (docs/architecture.md §11, issue 17): a real gateway process whose
//! Classroom lookups go to the testkit's fake Google, Pub/Sub pushes over real HTTP, a
//! webhook receiver and a file sink. The main behaviours run on both queue engines
//! (`on_both_engines!`: the embedded journal, and the testkit's PostgreSQL with `lease: 1s`);
//! two gateways on one PostgreSQL database share the rate limit.

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

/// A gateway on `yaml` in a directory of its own, with the service-account key the
/// `google:` section names; the directory lives as long as the returned handle.
fn start_gateway(yaml: &str) -> (tempfile::TempDir, Gateway) {
    let dir = tempfile::tempdir().unwrap();
    write_key(dir.path());
    let gateway = Gateway::start(dir.path(), yaml);
    (dir, gateway)
}

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

/// `n` students of course 12345, ids `<prefix>0`…, named "Student 0"….
fn add_students(google: &FakeGoogle, prefix: &str, n: u32) {
    for user in 0..n {
        google.add_person(
            "students",
            "12345",
            &format!("{prefix}{user}"),
            "Student",
            &user.to_string(),
            "x@example.edu",
        );
    }
}

/// [`config`] on `engine`'s queue (a fresh database on postgres).
fn config_on(engine: Engine, google: &FakeGoogle, hook: &Receiver, enrich: &str) -> String {
    format!("{}{}", config(google, hook, enrich), engine.queue(""))
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
    push_roster(client, g, n, "CREATED", course, user).await
}

/// Pushes a `courses.students` notification of `kind` (`CREATED`, `DELETED`); the status.
async fn push_roster(
    client: &reqwest::Client,
    g: &Gateway,
    n: u64,
    kind: &str,
    course: &str,
    user: &str,
) -> u16 {
    let notification = json!({"collection": "courses.students", "eventType": kind,
        "resourceId": {"courseId": course, "userId": user}});
    push_notification(client, g, n, &notification).await
}

/// Pushes `notification` as Pub/Sub does, message id `n`; the status.
async fn push_notification(
    client: &reqwest::Client,
    g: &Gateway,
    n: u64,
    notification: &serde_json::Value,
) -> u16 {
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

fn person_gets(google: &FakeGoogle, course: &str, user: &str) -> usize {
    let path = format!("/v1/courses/{course}/students/{user}");
    google
        .calls(&path)
        .iter()
        .filter(|c| c.path == path)
        .count()
}

fn course_gets(google: &FakeGoogle, course: &str) -> usize {
    let path = format!("/v1/courses/{course}");
    google
        .calls(&path)
        .iter()
        .filter(|c| c.path == path)
        .count()
}

on_both_engines!(a_roster_event_reaches_the_webhook_with_names_routed_on_the_course_name);
async fn a_roster_event_reaches_the_webhook_with_names_routed_on_the_course_name(engine: Engine) {
    let google = fake_google().await;
    let hook = Receiver::start().await;
    let (dir, g) = start_gateway(&config_on(engine, &google, &hook, "true"));
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

    // How long the two events waited for their names, in the wait histogram.
    let metrics = client
        .get(format!("http://{}/metrics", g.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = metrics
        .lines()
        .find(|l| {
            l.starts_with("herald_enrich_wait_seconds_count{")
                && l.contains(r#"source="classroom""#)
                && l.contains(r#"outcome="enriched""#)
        })
        .unwrap_or_else(|| panic!("no wait histogram:\n{metrics}"));
    assert!(count.ends_with(" 2"), "{count}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("herald_enrich_wait_seconds_bucket{")
                && l.contains(r#"le="600""#)
                && l.ends_with(" 2")),
        "buckets up to the default max_wait (10 min):\n{metrics}"
    );
}

on_both_engines!(fifty_events_of_one_course_make_one_call_and_a_429_storm_delays_then_delivers);
async fn fifty_events_of_one_course_make_one_call_and_a_429_storm_delays_then_delivers(
    engine: Engine,
) {
    let google = fake_google().await;
    add_students(&google, "s", 60);
    let hook = Receiver::start().await;
    let (_dir, g) = start_gateway(&config_on(engine, &google, &hook, "true"));
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
    let (_dir, g) = start_gateway(&config(
        &google,
        &hook,
        "{ course: true, person: [name, email], max_wait: 2s }",
    ));
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

on_both_engines!(
    kill_9_mid_enrichment_then_restart_delivers_each_event_once_without_looking_up_again
);
async fn kill_9_mid_enrichment_then_restart_delivers_each_event_once_without_looking_up_again(
    engine: Engine,
) {
    let google = fake_google().await;
    add_students(&google, "k", 20);
    let hook = Receiver::start().await;
    let (_dir, mut g) = start_gateway(&config_on(engine, &google, &hook, "true"));
    let client = reqwest::Client::new();

    // Ten events enriched and delivered: the course and ten people are in the cache.
    for n in 0..10 {
        assert_eq!(push(&client, &g, n, "12345", &format!("k{n}")).await, 204);
    }
    until("the first ten delivered", WAIT, || {
        g.file_records("audit.jsonl").len() == 10
    })
    .await;
    // Ten more acknowledged while Google fails the people: committed, unrouted, waiting.
    google.fail_always(
        "courses.students.get",
        503,
        "The service is currently unavailable.",
    );
    for n in 10..20 {
        assert_eq!(push(&client, &g, n, "12345", &format!("k{n}")).await, 204);
    }
    until("the waiting events were tried", WAIT, || {
        (10..20).all(|n| person_gets(&google, "12345", &format!("k{n}")) >= 1)
    })
    .await;
    assert_eq!(g.file_records("audit.jsonl").len(), 10);

    // kill -9 in the middle, Google recovers, the gateway comes back.
    g.kill9();
    google.recover();
    let failed_before: Vec<usize> = (0..20)
        .map(|n| person_gets(&google, "12345", &format!("k{n}")))
        .collect();
    g.restart();
    until("all twenty delivered after the restart", WAIT, || {
        g.file_records("audit.jsonl").len() >= 20
    })
    .await;
    until("the webhook got all twenty", WAIT, || {
        hook.received().len() >= 20
    })
    .await;

    // Exactly once each, enriched.
    let records = g.file_records("audit.jsonl");
    assert_eq!(records.len(), 20);
    let mut ids: Vec<String> = records
        .iter()
        .map(|r| r["event"]["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "each event routed once");
    for record in &records {
        let event = &record["event"];
        assert_eq!(event["enriched"]["course"]["name"], "AP Biology", "{event}");
        assert!(
            event["enriched"]["person"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("Student ")),
            "{event}"
        );
        assert!(event["meta"].get("enrichment").is_none(), "{event}");
    }
    assert_eq!(hook.received().len(), 20, "each delivered once");
    // Nothing looked up twice without need: the course once over both lives (the cache is
    // durable), the ten people seen before the kill not again, the ten others once more.
    assert_eq!(course_gets(&google, "12345"), 1);
    for n in 0..10 {
        assert_eq!(person_gets(&google, "12345", &format!("k{n}")), 1, "k{n}");
    }
    for (n, before) in failed_before.iter().enumerate().skip(10) {
        assert_eq!(
            person_gets(&google, "12345", &format!("k{n}")),
            before + 1,
            "k{n}: one successful lookup after the restart"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_after_the_student_was_seen_reads_the_name_from_the_cache() {
    let google = fake_google().await;
    let hook = Receiver::start().await;
    let (_dir, g) = start_gateway(&config(&google, &hook, "true"));
    let client = reqwest::Client::new();

    assert_eq!(push(&client, &g, 1, "12345", "45678").await, 204);
    hook.wait_for(1).await;
    // The student leaves the course: Google no longer knows them there.
    google.remove_person("students", "12345", "45678");
    assert_eq!(
        push_roster(&client, &g, 2, "DELETED", "12345", "45678").await,
        204
    );
    let received = hook.wait_for(2).await;
    assert_eq!(received[1].text(), "Jane Doe joined AP Biology (Period 3)");
    let records = g.file_records("audit.jsonl");
    let removal = records
        .iter()
        .find(|r| r["event"]["data"]["eventType"] == "DELETED")
        .expect("the removal");
    assert_eq!(
        removal["event"]["enriched"]["person"],
        json!({"id": "45678", "name": "Jane Doe"})
    );
    assert!(removal["event"]["meta"].get("enrichment").is_none());
    assert_eq!(
        person_gets(&google, "12345", "45678"),
        1,
        "the removal was read from the cache"
    );
    // A student never seen, removed: marked unknown, not failed, and the 404 is cached.
    assert_eq!(
        push_roster(&client, &g, 3, "DELETED", "12345", "99999").await,
        204
    );
    assert_eq!(
        push_roster(&client, &g, 4, "DELETED", "12345", "99999").await,
        204
    );
    until("both unknown removals", WAIT, || {
        g.file_records("audit.jsonl").len() == 4
    })
    .await;
    for record in &g.file_records("audit.jsonl")[2..] {
        assert_eq!(
            record["event"]["meta"]["enrichment"],
            "unknown: courses.students.get not found"
        );
        assert_eq!(
            record["event"]["enriched"]["person"],
            json!({"id": "99999"})
        );
    }
    assert_eq!(person_gets(&google, "12345", "99999"), 1, "404s are cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coursework_and_submission_events_carry_the_title_and_the_state() {
    let google = fake_google().await;
    google.add_course_work("12345", "5550001", "Lab 3: Osmosis");
    google.add_submission("12345", "5550001", "Cg4I_sub", "45678", "TURNED_IN");
    let hook = Receiver::start().await;
    let (_dir, g) = start_gateway(&config(
        &google,
        &hook,
        "{ course: [name], coursework: true, submission: [state, late] }",
    ));
    let client = reqwest::Client::new();
    let work = json!({"collection": "courses.courseWork", "eventType": "CREATED",
        "resourceId": {"courseId": "12345", "id": "5550001"}});
    let submission = json!({"collection": "courses.courseWork.studentSubmissions",
        "eventType": "MODIFIED",
        "resourceId": {"courseId": "12345", "courseWorkId": "5550001", "id": "Cg4I_sub"}});
    assert_eq!(push_notification(&client, &g, 1, &work).await, 204);
    assert_eq!(push_notification(&client, &g, 2, &submission).await, 204);
    until("both routed", WAIT, || {
        g.file_records("audit.jsonl").len() == 2
    })
    .await;
    let records = g.file_records("audit.jsonl");
    let of = |kind: &str| {
        records
            .iter()
            .find(|r| r["event"]["data"]["eventType"] == kind)
            .map(|r| r["event"]["enriched"].clone())
            .expect(kind)
    };
    assert_eq!(
        of("CREATED"),
        json!({"course": {"id": "12345", "name": "AP Biology"},
               "courseWork": {"id": "5550001", "title": "Lab 3: Osmosis", "workType": "ASSIGNMENT",
                              "state": "PUBLISHED", "maxPoints": 100}})
    );
    assert_eq!(
        of("MODIFIED"),
        json!({"course": {"id": "12345", "name": "AP Biology"},
               "courseWork": {"id": "5550001", "title": "Lab 3: Osmosis", "workType": "ASSIGNMENT",
                              "state": "PUBLISHED", "maxPoints": 100},
               "submission": {"id": "Cg4I_sub", "state": "TURNED_IN", "late": false}})
    );
    assert_eq!(
        google
            .calls("/courseWork/5550001")
            .iter()
            .filter(|c| c.path.ends_with("/5550001"))
            .count(),
        1,
        "the coursework looked up once for both events"
    );
    let scope = google.grants()[0]["scope"].as_str().unwrap().to_owned();
    assert!(
        scope.contains("classroom.coursework.students.readonly"),
        "{scope}"
    );
    assert!(!scope.contains("rosters"), "{scope}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_past_cache_ttl_is_looked_up_again() {
    let google = fake_google().await;
    let hook = Receiver::start().await;
    let (_dir, g) = start_gateway(&config(
        &google,
        &hook,
        "{ course: [name, section], cache_ttl: 1s }",
    ));
    let client = reqwest::Client::new();
    assert_eq!(push(&client, &g, 0, "12345", "45678").await, 204);
    until("the first event", WAIT, || {
        g.file_records("audit.jsonl").len() == 1
    })
    .await;
    assert_eq!(course_gets(&google, "12345"), 1);
    // Each event waits for its own delivery; once the answer is older than `cache_ttl`
    // (swept, or no longer used), the next event asks Google again.
    let deadline = std::time::Instant::now() + WAIT;
    let mut n: usize = 1;
    while course_gets(&google, "12345") < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "never looked up again"
        );
        assert_eq!(push(&client, &g, n as u64, "12345", "45678").await, 204);
        n += 1;
        until("the next event", WAIT, || {
            g.file_records("audit.jsonl").len() == n
        })
        .await;
    }
    for record in g.file_records("audit.jsonl") {
        assert_eq!(record["event"]["enriched"]["course"]["name"], "AP Biology");
    }
}

/// Posts a Directory notification (`state` e.g. `add`, `delete`) for user `id` as Google
/// does: the `User` resource's `kind`, `id`, `etag` and `primaryEmail` only; the status.
async fn notify_directory(
    client: &reqwest::Client,
    g: &Gateway,
    n: u64,
    state: &str,
    id: &str,
) -> u16 {
    let body = json!({"kind": "admin#directory#user", "id": id, "etag": "\"e\"",
        "primaryEmail": format!("{id}@example.edu")});
    client
        .post(g.url("/webhook/directory"))
        .header("X-Goog-Channel-ID", "chan-1")
        .header("X-Goog-Channel-Token", "dir-token")
        .header("X-Goog-Channel-Expiration", "Tue, 01 Dec 2099 10:00:00 GMT")
        .header("X-Goog-Resource-ID", "res-1")
        .header(
            "X-Goog-Resource-URI",
            format!("https://admin.googleapis.com/admin/directory/v1/users?domain=example.edu&event={state}&alt=json"),
        )
        .header("X-Goog-Resource-State", state)
        .header("X-Goog-Message-Number", n.to_string())
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn directory_config(google: &FakeGoogle, hook: &Receiver, enrich: &str) -> String {
    format!(
        "server: {{ listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, shutdown_timeout: 2s }}\n{}\
sources:\n  directory:\n    type: directory_webhook\n    channel_tokens: [dir-token]\n    enrich: {enrich}\n\
sinks:\n  hook:\n    type: webhook\n    url: \"{}\"\n    body: \"{{{{ enriched.user.name }}}} ({{{{ enriched.user.orgUnitPath }}}}): {{{{ type }}}}\"\n  audit: {{ type: file, path: audit.jsonl }}\n\
routes:\n  - name: students\n    match: {{ enriched.user.orgUnitPath: {{ glob: \"/Students*\" }} }}\n    to: [hook, audit]\n  - name: rest\n    to: [audit]\n",
        google.google_yaml("sa.json", SUBJECT),
        hook.url("/hook"),
    )
}

fn user_gets(google: &FakeGoogle, id: &str) -> usize {
    let path = format!("/admin/directory/v1/users/{id}");
    google
        .calls(&path)
        .iter()
        .filter(|c| c.path == path)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_event_gets_the_user_and_a_deleted_user_reads_from_the_cache() {
    let google = fake_google().await;
    google.add_user(
        "1001",
        "ann.lee@example.edu",
        "Ann",
        "Lee",
        "/Students/Grade 9",
    );
    google.add_user("1002", "bob.ray@example.edu", "Bob", "Ray", "/Staff");
    let hook = Receiver::start().await;
    let (_dir, g) = start_gateway(&directory_config(&google, &hook, "true"));
    let client = reqwest::Client::new();

    assert_eq!(notify_directory(&client, &g, 1, "add", "1001").await, 200);
    assert_eq!(notify_directory(&client, &g, 2, "add", "1002").await, 200);
    let received = hook.wait_for(1).await;
    assert_eq!(
        received[0].text(),
        "Ann Lee (/Students/Grade 9): directory.users.add"
    );
    until("both events in the audit file", WAIT, || {
        g.file_records("audit.jsonl").len() == 2
    })
    .await;
    let records = g.file_records("audit.jsonl");
    let ann = records
        .iter()
        .find(|r| r["event"]["data"]["id"] == "1001")
        .expect("Ann's event");
    assert_eq!(
        ann["event"]["enriched"]["user"],
        json!({"id": "1001", "name": "Ann Lee", "orgUnitPath": "/Students/Grade 9",
            "suspended": false, "isAdmin": false}),
        "e-mail addresses are opt-in"
    );
    assert_eq!(
        ann["event"]["data"]["primaryEmail"], "1001@example.edu",
        "data is Google's"
    );
    // The lookup asked for the Directory scope, as the subject.
    let grant = google.grants().pop().expect("a token grant");
    assert!(
        grant["scope"]
            .as_str()
            .unwrap_or_default()
            .contains("admin.directory.user.readonly"),
        "{grant}"
    );
    assert_eq!(grant["sub"], SUBJECT);
    assert!(
        google
            .calls("/admin/directory/v1/users/")
            .iter()
            .all(|c| c.bearer.as_deref() == Some(ACCESS_TOKEN))
    );

    // Ann is deleted: users.get answers 404, the name is read from the cache.
    google.delete_user("1001");
    assert_eq!(
        notify_directory(&client, &g, 3, "delete", "1001").await,
        200
    );
    let received = hook.wait_for(2).await;
    assert_eq!(
        received[1].text(),
        "Ann Lee (/Students/Grade 9): directory.users.delete"
    );
    assert_eq!(user_gets(&google, "1001"), 1, "the deletion read the cache");
    // A user never seen, deleted: unknown, not failed.
    assert_eq!(
        notify_directory(&client, &g, 4, "delete", "1003").await,
        200
    );
    until("the unknown deletion", WAIT, || {
        g.file_records("audit.jsonl").len() == 4
    })
    .await;
    let records = g.file_records("audit.jsonl");
    let unknown = records
        .iter()
        .find(|r| r["event"]["data"]["id"] == "1003")
        .expect("the unknown deletion");
    assert_eq!(
        unknown["event"]["meta"]["enrichment"],
        "unknown: users.get not found"
    );
    assert_eq!(unknown["event"]["enriched"]["user"], json!({"id": "1003"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_body_that_carries_the_fields_needs_no_lookup() {
    let google = fake_google().await;
    let hook = Receiver::start().await;
    let (_dir, g) = start_gateway(&directory_config(&google, &hook, "{ user: [email] }"));
    let client = reqwest::Client::new();
    assert_eq!(notify_directory(&client, &g, 1, "add", "2001").await, 200);
    until("the event in the audit file", WAIT, || {
        g.file_records("audit.jsonl").len() == 1
    })
    .await;
    let records = g.file_records("audit.jsonl");
    assert_eq!(
        records[0]["event"]["enriched"]["user"],
        json!({"id": "2001", "email": "2001@example.edu"})
    );
    assert_eq!(user_gets(&google, "2001"), 0, "the body carried it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_rate_limit_spaces_the_calls_instead_of_being_throttled() {
    let google = fake_google().await;
    let hook = Receiver::start().await;
    let (_dir, g) = start_gateway(&config(&google, &hook, "{ course: true, rate_limit: 1/s }"));
    let client = reqwest::Client::new();
    // Four distinct courses: four courses.get, at most one a second (burst 1).
    for (n, course) in ["12345", "777", "888", "999"].iter().enumerate() {
        assert_eq!(push(&client, &g, n as u64 + 1, course, "45678").await, 204);
    }
    until("the four events routed", WAIT, || {
        g.file_records("audit.jsonl").len() == 4
    })
    .await;
    let mut times: Vec<_> = google.calls("/v1/courses/").iter().map(|c| c.at).collect();
    times.sort();
    assert_eq!(times.len(), 4, "one courses.get per course");
    // Ideally 3 s from the first to the last; a generous tolerance for a slow machine's
    // clocks, still far above the few milliseconds unlimited calls take.
    let spread = times[3] - times[0];
    assert!(
        spread >= chrono::TimeDelta::milliseconds(2_000),
        "calls spread over {spread:?}"
    );
    assert!(
        google
            .calls("/v1/courses/")
            .iter()
            .all(|c| c.path.split('/').count() == 4),
        "no person lookups were configured"
    );
}

/// Two gateways on one PostgreSQL database, `rate_limit: 4/s`, events pushed to both while
/// Google throttles `courses.get` (429): the calls to Google from both together never exceed
/// `rate × t + burst` in any window of `t` seconds (docs/architecture.md §11, one caller per
/// cluster), also across a `kill -9` of the gateway that calls, after which the other takes
/// over; once Google recovers every event arrives with names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_keep_one_rate_limit_and_the_other_takes_over_after_kill_9() {
    const RATE: f64 = 4.0;
    const BURST: f64 = 4.0;
    const EVENTS: u64 = 30;
    let google = fake_google().await;
    add_students(&google, "c", EVENTS as u32);
    let hook = Receiver::start().await;
    let yaml = config_on(
        Engine::Postgres,
        &google,
        &hook,
        "{ course: [name, section], person: true, rate_limit: 4/s }",
    );
    let (_a, a) = start_gateway(&yaml);
    let (_b, b) = start_gateway(&yaml);
    let mut gateways = [a, b];
    let client = reqwest::Client::new();
    // A throttling storm on the course while events keep arriving at both gateways (five a
    // second): the events wait, and the course is asked again and again. With a limiter
    // per gateway both would call, each at the rate.
    google.fail_always(
        "courses.get",
        429,
        "Quota exceeded for quota metric 'Read requests'",
    );
    for n in 0..EVENTS {
        let g = &gateways[(n % 2) as usize];
        assert_eq!(push(&client, g, n, "12345", &format!("c{n}")).await, 204);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    until("the course asked again", WAIT, || {
        course_gets(&google, "12345") >= 3
    })
    .await;
    let leads = |g: &Gateway| g.log().contains("this gateway now leads enrichment");
    let leaders: Vec<usize> = (0..2).filter(|&i| leads(&gateways[i])).collect();
    assert_eq!(leaders.len(), 1, "one gateway calls Google");
    let (leader, other) = (leaders[0], 1 - leaders[0]);
    assert!(
        gateways[other]
            .log()
            .contains("another gateway leads enrichment")
    );
    assert!(
        hook.received().is_empty(),
        "nothing routed during the storm"
    );

    // kill -9 the gateway that calls; the other takes over, then Google recovers.
    gateways[leader].kill9();
    let killed_at = chrono::Utc::now();
    until("the other gateway leads", WAIT, || leads(&gateways[other])).await;
    until("the new leader asks Google", WAIT, || {
        google
            .calls("/v1/courses/")
            .iter()
            .any(|c| c.at > killed_at)
    })
    .await;
    google.recover();

    // Every event arrives with its names (at least once: the killed gateway may have had a
    // delivery in flight).
    let expected: std::collections::BTreeSet<String> = (0..EVENTS)
        .map(|n| format!("Student {n} joined AP Biology (Period 3)"))
        .collect();
    until("every event delivered with names", WAIT, || {
        let got: std::collections::BTreeSet<String> =
            hook.received().iter().map(|r| r.text()).collect();
        got == expected
    })
    .await;

    // The window bound over all calls (throttled ones count against the quota too), from
    // both gateways and across the failover. The fake records a call when it arrives: 100 ms
    // of slack for the varying time between the limiter's grant and the arrival.
    let mut times: Vec<_> = google.calls("/v1/courses/").iter().map(|c| c.at).collect();
    times.sort();
    for i in 0..times.len() {
        for j in i..times.len() {
            let t = (times[j] - times[i]).as_seconds_f64();
            let calls = (j - i + 1) as f64;
            assert!(
                calls <= RATE * (t + 0.1) + BURST,
                "{calls} calls within {t:.3} s (calls at {:?})",
                times
                    .iter()
                    .map(|at| (*at - times[0]).as_seconds_f64())
                    .collect::<Vec<_>>()
            );
        }
    }
    assert!(
        !gateways[other].log().contains("Student "),
        "no name in the log"
    );
}
