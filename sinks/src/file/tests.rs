use std::path::Path;

use chrono::Utc;
use herald_core::config::{self, Registry};
use std::sync::Arc;

use herald_core::template::{Rendered, Templates};
use herald_core::{Delivery, Event, Sink};
use serde_json::{Value, json};

fn registry() -> Registry {
    let mut r = Registry::default();
    crate::register(&mut r);
    r
}

fn load(yaml: &str, dir: &Path) -> config::Config {
    config::parse(yaml, &dir.join("routes.yaml"), &registry(), &|_| None)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn event() -> Event {
    Event::new(
        "m1",
        "directory",
        "directory.users.add",
        Utc::now(),
        json!({"primaryEmail": "a@example.edu"}),
    )
}

fn build(config: &config::Config, sink: &str) -> Arc<dyn Sink> {
    config
        .sink(sink)
        .unwrap()
        .spec
        .build(&Default::default())
        .unwrap()
}

/// A delivery of `event` by route `all` to sink `audit`.
fn delivery<'a>(event: &'a Event, json: &'a str, rendered: &'a Rendered) -> Delivery<'a> {
    Delivery {
        event,
        json,
        route: "all",
        sink: "audit",
        rendered,
        turn: &herald_core::sink::ALWAYS,
    }
}

async fn deliver(config: &config::Config, route: &str, sink: &str, event: &Event) {
    let built = build(config, sink);
    let rendered = config
        .templates
        .render(route, sink, &Templates::context(event))
        .unwrap();
    built
        .deliver(Delivery {
            event,
            json: &event.to_json(),
            route,
            sink,
            rendered: &rendered,
            turn: &herald_core::sink::ALWAYS,
        })
        .await
        .unwrap();
    built.flush().await.unwrap();
}

#[tokio::test]
async fn appends_one_json_record_per_delivery_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = load(
        "sinks:\n  audit: { type: file, path: out/events.jsonl }\n",
        dir.path(),
    );
    let e = event();
    deliver(&config, "everything", "audit", &e).await;
    deliver(&config, "again", "audit", &e).await;

    let text = std::fs::read_to_string(dir.path().join("out/events.jsonl")).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["route"], "everything");
    assert_eq!(lines[1]["route"], "again");
    assert_eq!(lines[0]["sink"], "audit");
    let back: Event = serde_json::from_value(lines[0]["event"].clone()).unwrap();
    assert_eq!(back, e);
}

#[tokio::test]
async fn a_batch_is_appended_in_order_with_an_answer_for_each() {
    let dir = tempfile::tempdir().unwrap();
    let config = load(
        "sinks:\n  audit: { type: file, path: events.jsonl }\n",
        dir.path(),
    );
    let built = build(&config, "audit");
    assert!(built.batches());
    let events: Vec<Event> = (0..3)
        .map(|n| {
            let mut e = event();
            e.id = format!("m{n}");
            e
        })
        .collect();
    let json: Vec<String> = events.iter().map(Event::to_json).collect();
    let rendered = Default::default();
    let deliveries: Vec<Delivery> = events
        .iter()
        .zip(&json)
        .map(|(event, json)| delivery(event, json, &rendered))
        .collect();
    let answers = built.deliver_batch(&deliveries).await;
    assert_eq!(answers, vec![Ok(()), Ok(()), Ok(())]);
    built.deliver(deliveries[0]).await.unwrap();

    let text = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|l| {
            let line: Value = serde_json::from_str(l).unwrap();
            line["event"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids, ["m0", "m1", "m2", "m0"]);
}

#[tokio::test]
async fn a_full_disk_fails_every_delivery_of_a_batch_as_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let config = load(
        "sinks:\n  audit: { type: file, path: /dev/full }\n",
        dir.path(),
    );
    let built = build(&config, "audit");
    let (a, b) = (event(), event());
    let (json_a, json_b) = (a.to_json(), b.to_json());
    let rendered = Default::default();
    let answers = built
        .deliver_batch(&[
            delivery(&a, &json_a, &rendered),
            delivery(&b, &json_b, &rendered),
        ])
        .await;
    assert_eq!(answers.len(), 2);
    for answer in answers {
        let e = answer.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(e.message().contains("No space left on device"), "{e}");
    }
}

#[tokio::test]
async fn writes_the_line_template_when_given() {
    let dir = tempfile::tempdir().unwrap();
    let config = load(
        "sinks:\n  log: { type: file, path: log.txt, line: \"{{ type }} {{ data.primaryEmail }}\" }\n",
        dir.path(),
    );
    deliver(&config, "r", "log", &event()).await;
    let text = std::fs::read_to_string(dir.path().join("log.txt")).unwrap();
    assert_eq!(text, "directory.users.add a@example.edu\n");
}

#[test]
fn config_mistakes_are_reported_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let err = config::parse(
        "sinks:\n  a: { type: file }\n  b: { type: file, path: x, lin: y }\n  c: { type: stdout, line: \"{{ oops\" }\n",
        &dir.path().join("routes.yaml"),
        &registry(),
        &|_| None,
    )
    .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.errors.len(), 3, "{text}");
    assert!(
        text.contains("routes.yaml:2:6: sink `a`: missing required field `path`"),
        "{text}"
    );
    assert!(
        text.contains("routes.yaml:3:29: sink `b`: unknown key `lin`; did you mean `line`?"),
        "{text}"
    );
    assert!(
        text.contains("routes.yaml:4:28: sink `c`: template `line`: syntax error"),
        "{text}"
    );
}
