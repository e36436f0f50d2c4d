use std::sync::Arc;

use chrono::Utc;
use herald_core::config::{self, Registry};
use herald_core::template::Templates;
use herald_core::{Delivery, Event, Sink, SinkError};
use serde_json::json;

use crate::testing::{Answer, Receiver};

fn registry() -> Registry {
    let mut r = Registry::default();
    crate::register(&mut r);
    r
}

fn load(yaml: &str) -> Result<config::Config, String> {
    config::parse(
        yaml,
        std::path::Path::new("routes.yaml"),
        &registry(),
        &|_| None,
    )
    .map_err(|e| e.to_string())
}

fn event() -> Event {
    let mut e = Event::new(
        "chan/10",
        "directory",
        "directory.users.add",
        Utc::now(),
        json!({"primaryEmail": "new@example.edu"}),
    );
    e.meta.insert("resourceState".into(), "add".into());
    e
}

async fn send(config: &config::Config, sink: &str, event: &Event) -> Result<(), SinkError> {
    let built: Arc<dyn Sink> = config
        .sink(sink)
        .unwrap()
        .spec
        .build(&Default::default())
        .unwrap();
    let rendered = config
        .templates
        .render("r", sink, &Templates::context(event))
        .unwrap();
    built
        .deliver(Delivery {
            event,
            json: &event.to_json(),
            route: "r",
            sink,
            rendered: &rendered,
            turn: &herald_core::sink::ALWAYS,
        })
        .await
}

#[tokio::test]
async fn posts_the_event_as_cloudevents_json() {
    let rx = Receiver::start().await;
    let config = load(&format!(
        "sinks:\n  hook: {{ type: webhook, url: \"{}\" }}\n",
        rx.url("/in")
    ))
    .unwrap();
    let sent = event();
    send(&config, "hook", &sent).await.unwrap();
    let got = rx.wait_for(1).await;
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].uri.path(), "/in");
    assert_eq!(
        got[0].header("content-type"),
        Some("application/cloudevents+json")
    );
    let body: Event = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body, sent);
}

#[tokio::test]
async fn body_and_headers_are_templates() {
    let rx = Receiver::start().await;
    let yaml = format!(
        "sinks:\n  hook:\n    type: webhook\n    url: \"{}\"\n    method: put\n    headers: {{ X-Event-Type: \"{{{{ type }}}}\" }}\n    body: '{{\"who\": \"{{{{ data.primaryEmail }}}}\"}}'\n",
        rx.url("/users")
    );
    let config = load(&yaml).unwrap();
    send(&config, "hook", &event()).await.unwrap();
    let got = rx.wait_for(1).await;
    assert_eq!(got[0].method, "PUT");
    assert_eq!(got[0].header("x-event-type"), Some("directory.users.add"));
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    assert_eq!(got[0].json(), json!({"who": "new@example.edu"}));
}

#[tokio::test]
async fn signatures_verify_with_the_reference_implementation() {
    let rx = Receiver::start().await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let config = load(&format!(
        "sinks:\n  hook: {{ type: webhook, url: \"{}\", secret: \"{secret}\" }}\n",
        rx.url("/")
    ))
    .unwrap();
    send(&config, "hook", &event()).await.unwrap();
    send(&config, "hook", &event()).await.unwrap();
    let got = rx.wait_for(2).await;
    let verifier = standardwebhooks::Webhook::new(secret).unwrap();
    for r in &got {
        verifier
            .verify(&r.body, &r.headers)
            .expect("a valid Standard Webhooks signature");
    }
    assert_eq!(
        got[0].header("webhook-id"),
        got[1].header("webhook-id"),
        "one delivery keeps its id across attempts"
    );
    let wrong = standardwebhooks::Webhook::new("whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY").unwrap();
    assert!(wrong.verify(&got[0].body, &got[0].headers).is_err());
}

#[tokio::test]
async fn answers_decide_retry_or_not() {
    let rx = Receiver::start().await;
    rx.script([
        Answer::status(503, "down for maintenance"),
        Answer::status(429, "slow down").with_header("retry-after", "7"),
        Answer::status(400, "bad field"),
    ]);
    let config = load(&format!(
        "sinks:\n  hook: {{ type: webhook, url: \"{}\" }}\n",
        rx.url("/")
    ))
    .unwrap();
    let e = event();
    assert_eq!(
        send(&config, "hook", &e).await,
        Err(SinkError::retryable(
            "HTTP 503 Service Unavailable: down for maintenance"
        ))
    );
    assert_eq!(
        send(&config, "hook", &e).await,
        Err(SinkError::Retryable {
            message: "HTTP 429 Too Many Requests: slow down".into(),
            retry_after: Some(std::time::Duration::from_secs(7))
        })
    );
    assert_eq!(
        send(&config, "hook", &e).await,
        Err(SinkError::permanent("HTTP 400 Bad Request: bad field"))
    );
    assert_eq!(send(&config, "hook", &e).await, Ok(()));
}

#[tokio::test]
async fn a_closed_port_is_retryable_and_the_url_is_not_in_the_error() {
    let config =
        load("sinks:\n  hook: { type: webhook, url: \"http://127.0.0.1:9/secret-token\" }\n")
            .unwrap();
    let err = send(&config, "hook", &event()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(!err.message().contains("secret-token"), "{err}");
}

#[test]
fn config_mistakes_are_reported() {
    let err = load("sinks:\n  a: { type: webhook, url: \"ftp://x\" }\n  b: { type: webhook, url: \"http://x\", method: DELETE }\n  c: { type: webhook, url: \"http://x\", secret: nope }\n  d: { type: webhook, url: \"http://x\", body: \"{{ bad\" }\n").unwrap_err();
    assert!(
        err.contains("routes.yaml:2:28: sink `a`: `url` must be an http:// or https:// URL"),
        "{err}"
    );
    assert!(
        err.contains("routes.yaml:3:48: sink `b`: method `DELETE` is not POST, PUT or PATCH"),
        "{err}"
    );
    assert!(
        err.contains("routes.yaml:4:48: sink `c`: `secret` must be `whsec_`"),
        "{err}"
    );
    assert!(
        err.contains("routes.yaml:5:46: sink `d`: template `body`: syntax error"),
        "{err}"
    );
}

#[test]
fn describe_masks_the_url() {
    let config =
        load("sinks:\n  a: { type: webhook, url: \"https://sis.example.edu/hooks/T0KEN\" }\n")
            .unwrap();
    assert_eq!(
        config.sink("a").unwrap().spec.describe(),
        "POST https://sis.example.edu/***"
    );
}
