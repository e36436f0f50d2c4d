use std::path::Path;

use chrono::Utc;
use herald_core::config::{self, Registry};
use herald_core::template::Templates;
use herald_core::{Delivery, Event};
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

async fn deliver(config: &config::Config, route: &str, sink: &str, event: &Event) {
    let spec = &config.sink(sink).unwrap().spec;
    let built = spec.build(&Default::default()).unwrap();
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
