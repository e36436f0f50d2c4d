//! Malformed inputs: each gets its documented answer (docs/architecture.md §6) with a reason naming
//! the problem, an authenticated one is kept as a rejected input with that reason, and the
//! server goes on serving the next valid request.

use axum::http::HeaderValue;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::common::*;

const SOURCES: &str = r#"
sources:
  classroom: { type: classroom_pubsub, path: /push/classroom }
  directory:
    type: directory_webhook
    path: /webhook/directory
    channel_tokens: ["398348u3tu83ut8uu38"]
"#;

/// A request body for the push endpoint.
enum Body {
    Text(String),
    Bytes(Vec<u8>),
}

struct Case {
    name: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, HeaderValue)>,
    body: Body,
    status: u16,
    reason: &'static str,
}

fn push(name: &'static str, body: Body, status: u16, reason: &'static str) -> Case {
    Case {
        name,
        path: "/push/classroom",
        headers: Vec::new(),
        body,
        status,
        reason,
    }
}

fn text(s: &str) -> Body {
    Body::Text(s.to_owned())
}

/// A push envelope whose `message` is `message` merged over a valid one.
fn message(change: Value) -> Body {
    let mut message = json!({
        "data": STANDARD.encode(read_json("classroom/roster-student-created.json").to_string()),
        "messageId": "m-1",
        "publishTime": "2026-11-20T09:15:02.512Z",
    });
    for (k, v) in change.as_object().unwrap() {
        if v.is_null() {
            message.as_object_mut().unwrap().remove(k);
        } else {
            message[k] = v.clone();
        }
    }
    Body::Text(json!({ "message": message }).to_string())
}

fn data(bytes: &[u8]) -> Body {
    message(json!({ "data": STANDARD.encode(bytes) }))
}

/// The user-add fixture with `change` applied to its headers, and `body`.
fn directory(
    name: &'static str,
    change: &[(&'static str, Option<HeaderValue>)],
    body: Body,
    status: u16,
    reason: &'static str,
) -> Case {
    let fixture = HttpFixture::read("directory/user-add.http");
    let mut headers: Vec<(&'static str, HeaderValue)> = fixture
        .headers
        .iter()
        .filter(|(k, _)| !change.iter().any(|(c, _)| c.eq_ignore_ascii_case(k)))
        .map(|(k, v)| (leak(k), HeaderValue::from_str(v).unwrap()))
        .collect();
    for (k, v) in change {
        if let Some(v) = v {
            headers.push((k, v.clone()));
        }
    }
    Case {
        name,
        path: "/webhook/directory",
        headers,
        body,
        status,
        reason,
    }
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

fn value(s: &str) -> Option<HeaderValue> {
    Some(HeaderValue::from_str(s).unwrap())
}

fn user_body() -> Body {
    text(&HttpFixture::read("directory/user-add.http").body)
}

fn cases() -> Vec<Case> {
    let ten_mb = vec![b'x'; 10 << 20];
    vec![
        // Pub/Sub push: acknowledged (202) and kept, so Pub/Sub does not redeliver forever.
        push("truncated JSON", text(r#"{"message": {"data": "ab"#), 202, "the body is not JSON"),
        push("empty body", text(""), 202, "the body is not JSON"),
        push("JSON array body", text("[1, 2]"), 202, "found an array"),
        push("no message", text(r#"{"subscription": "projects/p/subscriptions/s"}"#), 202, "`message` is missing"),
        push("message is a string", text(r#"{"message": "hello"}"#), 202, "`message` must be an object"),
        push("subscription is a number", text(r#"{"message": {}, "subscription": 5}"#), 202, "`subscription` must be a string"),
        push("messageId is a number", message(json!({"messageId": 12})), 202, "`message.messageId` must be a string"),
        push("no messageId", message(json!({"messageId": null})), 202, "`message.messageId` is missing"),
        push("publishTime is not a time", message(json!({"publishTime": "yesterday"})), 202, "`message.publishTime` is not an RFC 3339 time"),
        push("no data", message(json!({"data": null})), 202, "`message.data` is missing"),
        push("data is an object", message(json!({"data": {"a": 1}})), 202, "`message.data` must be a base64 string"),
        push("invalid base64", message(json!({"data": "not base64!"})), 202, "`message.data` is not valid base64"),
        push("data is not JSON", data(b"hello, world"), 202, "`message.data` is not JSON"),
        push("data is not UTF-8", data(&[0xff, 0xfe, 0x00, 0x7b]), 202, "`message.data` is not JSON"),
        push("data is a JSON string", data(br#""courses.students""#), 202, "must be a Classroom notification (a JSON object), found a string"),
        push("notification without collection", data(br#"{"eventType": "CREATED"}"#), 202, "`message.data.collection` is missing"),
        push("collection is a number", data(br#"{"collection": 7, "eventType": "CREATED"}"#), 202, "`message.data.collection` must be a string"),
        push("unknown collection name", data(br#"{"collection": "courses/../admin", "eventType": "CREATED"}"#), 202, "is not a Classroom collection name"),
        push("known collection without its ids", data(br#"{"collection": "courses.students", "eventType": "CREATED", "resourceId": {"courseId": "1"}}"#), 202, "`message.data.resourceId.userId` is missing"),
        push("resourceId is a list", data(br#"{"collection": "courses.students", "eventType": "CREATED", "resourceId": []}"#), 202, "`message.data.resourceId` must be an object"),
        push("attribute is not a string", message(json!({"attributes": {"registrationId": 5}})), 202, "`message.attributes.registrationId` must be a string"),
        push("non-UTF-8 body", Body::Bytes(vec![0xc3, 0x28, 0xa0, 0xa1]), 202, "the body is not JSON"),
        push("10 MB body", Body::Bytes(ten_mb.clone()), 413, "larger than the limit of 1048576 bytes"),
        // Directory: 400 naming the header or field (kept too, since Google does not retry a 4xx).
        directory("missing channel id", &[("X-Goog-Channel-ID", None)], user_body(), 400, "missing header X-Goog-Channel-ID"),
        directory("missing message number", &[("X-Goog-Message-Number", None)], user_body(), 400, "missing header X-Goog-Message-Number"),
        directory("non-numeric message number", &[("X-Goog-Message-Number", value("ten"))], user_body(), 400, "header X-Goog-Message-Number must be a number"),
        directory("missing resource state", &[("X-Goog-Resource-State", None)], user_body(), 400, "missing header X-Goog-Resource-State"),
        directory("missing resource URI", &[("X-Goog-Resource-URI", None)], user_body(), 400, "missing header X-Goog-Resource-URI"),
        directory("resource URI is not a URL", &[("X-Goog-Resource-URI", value("users?domain=x"))], user_body(), 400, "header X-Goog-Resource-URI is not a URL"),
        directory("expiration is not a date", &[("X-Goog-Channel-Expiration", value("next week"))], user_body(), 400, "header X-Goog-Channel-Expiration is not an HTTP date"),
        directory("huge header", &[("X-Goog-Channel-ID", value(&"c".repeat(16 << 10)))], user_body(), 400, "header X-Goog-Channel-ID is too long"),
        directory("non-ASCII header", &[("X-Goog-Resource-ID", Some(HeaderValue::from_bytes(b"r\xe9sum\xe9").unwrap()))], user_body(), 400, "header X-Goog-Resource-ID is not ASCII text"),
        directory("body is not JSON", &[], text("primaryEmail=a@b"), 400, "the body is not JSON"),
        directory("truncated body", &[], text(r#"{"id": "1", "primaryEmail": "#), 400, "the body is not JSON"),
        directory("body is a list", &[], text("[]"), 400, "the body must be a JSON object"),
        directory("body id is a number", &[], text(r#"{"id": 5}"#), 400, "body field `id` must be a string"),
        directory("non-UTF-8 body", &[], Body::Bytes(vec![b'{', 0xff, b'}']), 400, "the body is not JSON"),
        directory("10 MB body", &[], Body::Bytes(ten_mb), 413, "larger than the limit of 1048576 bytes"),
        // Directory without a valid token: refused, nothing kept.
        directory("missing token", &[("X-Goog-Channel-Token", None)], user_body(), 401, "missing header X-Goog-Channel-Token"),
        directory("wrong token", &[("X-Goog-Channel-Token", value("guessed"))], user_body(), 403, "matches none of `channel_tokens`"),
        directory("wrong token and no headers", &[("X-Goog-Channel-Token", value("guessed")), ("X-Goog-Channel-ID", None)], text("junk"), 403, "matches none of `channel_tokens`"),
        // The server's own answers.
        Case { name: "unknown path", path: "/push/nowhere", headers: vec![], body: text("{}"), status: 404, reason: "nothing is served at /push/nowhere" },
    ]
}

#[tokio::test]
async fn each_malformed_input_gets_its_answer_and_the_server_keeps_serving() {
    let gateway = Gateway::start(SOURCES).await;
    let client = client();
    let cases = cases();
    assert!(cases.len() >= 25);
    let mut kept = Vec::new();
    for (i, case) in cases.into_iter().enumerate() {
        let mut request = client.post(gateway.url(case.path));
        for (k, v) in &case.headers {
            request = request.header(*k, v.clone());
        }
        request = match case.body {
            Body::Text(t) => request.body(t),
            Body::Bytes(b) => request.body(b),
        };
        let (status, body) = answer(request.send().await.unwrap()).await;
        assert_eq!(status, case.status, "{}: {body}", case.name);
        let reason = body["reason"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no JSON reason: {body}", case.name));
        assert!(reason.contains(case.reason), "{}: {reason}", case.name);
        assert!(body["error"].is_string(), "{}: {body}", case.name);
        assert!(
            !reason.contains("398348u3tu83ut8uu38"),
            "{}: the token leaked",
            case.name
        );
        if matches!(status, 202 | 400) {
            kept.push(reason.to_owned());
        }

        // The next valid request is served.
        let id = format!("valid-{i}");
        let response = client
            .post(gateway.url("/push/classroom"))
            .body(push_body(
                &read_json("classroom/roster-student-created.json"),
                &id,
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "after {}", case.name);
        assert_eq!(gateway.ingest.events().last().unwrap().id, id);
    }
    let rejected = gateway.ingest.rejected();
    let reasons: Vec<String> = rejected.iter().map(|r| r.reason.clone()).collect();
    assert_eq!(
        reasons, kept,
        "each authenticated undecodable input is kept with its reason"
    );
    for input in &rejected {
        assert!(input.source == "classroom" || input.source == "directory");
        assert!(
            !input
                .meta
                .values()
                .any(|v| v.contains("398348u3tu83ut8uu38")),
            "the token is never kept"
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn a_get_on_a_source_is_405_and_a_header_past_the_server_limit_is_431() {
    let gateway = Gateway::start(SOURCES).await;
    let response = client()
        .get(gateway.url("/push/classroom"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "POST");
    let (status, body) = answer(response).await;
    assert_eq!(status, 405);
    assert_eq!(body["reason"], "/push/classroom answers POST only");
    // Counted as the source's answers are.
    let metrics = gateway.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("herald_source_requests_total")
                && l.contains("source=\"classroom\"")
                && l.contains("status=\"405\"")),
        "{metrics}"
    );

    // hyper refuses a head larger than its buffer before any handler runs.
    let response = client()
        .post(gateway.url("/webhook/directory"))
        .header("X-Goog-Channel-ID", "c".repeat(1 << 20))
        .body("")
        .send()
        .await;
    assert_eq!(response.unwrap().status(), 431);
    let response = client()
        .post(gateway.url("/push/classroom"))
        .body(push_body(
            &read_json("classroom/roster-student-created.json"),
            "after-431",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    gateway.stop().await;
}
