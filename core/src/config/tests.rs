use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use super::*;
use crate::event::Event;
use crate::rules::Target;

/// A sink type for these tests: a required `url` and a `text` template.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ChatConfig {
    url: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug)]
struct ChatSpec;

impl SinkSpec for ChatSpec {
    fn build(&self, _: &BuildContext) -> Result<Arc<dyn crate::Sink>, String> {
        Err("not built in these tests".into())
    }
    fn describe(&self) -> String {
        "chat".into()
    }
}

fn registry() -> Registry {
    let mut r = Registry::default();
    r.add_sink(SinkType {
        name: "chat",
        template_fields: &["text", "title"],
        default_policy: || DeliveryPolicy {
            rate_per_second: Some(1.0),
            ..DeliveryPolicy::default()
        },
        validate: |input| {
            input.node.deserialize::<ChatConfig>().map_err(|e| {
                vec![ConfigError::from_de(
                    &format!("sink `{}`", input.name),
                    e,
                    input.node.loc,
                )]
            })?;
            Ok(ValidSink {
                templates: TemplateField::from_node(input.node, "text")
                    .into_iter()
                    .collect(),
                spec: Arc::new(ChatSpec),
            })
        },
    });
    r
}

fn env(name: &str) -> Option<String> {
    (name == "CHAT_URL").then(|| "https://chat.example/hook".to_owned())
}

fn parse_ok(yaml: &str) -> Config {
    parse(
        yaml,
        Path::new("/etc/herald/routes.yaml"),
        &registry(),
        &env,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn parse_err(yaml: &str) -> Vec<String> {
    let errors =
        parse(yaml, Path::new("routes.yaml"), &registry(), &env).expect_err("config has mistakes");
    errors.to_string().lines().map(str::to_owned).collect()
}

const VALID: &str = r#"
server:
  listen: 0.0.0.0:9000
  body_limit: 2MiB
queue:
  path: data
  retention: 12h
sinks:
  chat:
    type: chat
    url: "${CHAT_URL}"
    text: "{{ type }}"
    delivery: { rate_limit: 30/m, max_attempts: 3 }
  other: { type: chat, url: "${OTHER:-https://other.example}" }
routes:
  - name: admins
    match: { type: { in: [directory.users.makeAdmin] } }
    to: [{ sink: chat, text: "ADMIN {{ data.primaryEmail }}" }]
    continue: true
  - name: everything
    to: [chat, other]
unmatched: [other]
"#;

#[test]
fn a_valid_config_is_fully_read() {
    let config = parse_ok(VALID);
    assert_eq!(config.server.listen.port(), 9000);
    assert_eq!(config.server.body_limit, 2 << 20);
    assert_eq!(
        config.queue.path,
        Path::new("/etc/herald/data"),
        "relative to the config file"
    );
    assert_eq!(config.queue.retention, Duration::from_secs(12 * 3600));

    let chat = config.sink("chat").unwrap();
    assert_eq!(chat.policy.rate_per_second, Some(0.5));
    assert_eq!(chat.policy.max_attempts, 3);
    let other = config.sink("other").unwrap();
    assert_eq!(
        other.policy.rate_per_second,
        Some(1.0),
        "the type's default"
    );

    let event = Event::new(
        "1",
        "directory",
        "directory.users.makeAdmin",
        Utc::now(),
        json!({"primaryEmail": "a@b"}),
    );
    assert_eq!(
        config.routes.targets(&event),
        vec![
            Target {
                route: "admins",
                sink: "chat"
            },
            Target {
                route: "everything",
                sink: "chat"
            },
            Target {
                route: "everything",
                sink: "other"
            },
        ]
    );
    let ctx = Templates::context(&event);
    assert_eq!(
        config
            .templates
            .render("admins", "chat", &ctx)
            .unwrap()
            .get("text"),
        Some("ADMIN a@b")
    );
    assert_eq!(
        config
            .templates
            .render("everything", "chat", &ctx)
            .unwrap()
            .get("text"),
        Some("directory.users.makeAdmin")
    );
}

#[test]
fn an_empty_file_is_a_config_that_drops_everything() {
    let config = parse_ok("");
    assert!(config.sinks.is_empty());
    assert!(config.routes.routes().is_empty());
    assert_eq!(config.server, ServerConfig::default());
}

/// Golden test: every mistake of a file, each with line:column and what was expected.
#[test]
fn every_mistake_is_reported_with_line_and_column() {
    let errors = parse_err(
        r#"
server:
  listen: nowhere
queu: {}
sources:
  classroom: { type: classroom_pubsub, path: /push }
sinks:
  chat: { type: chat, url: "${MISSING}" }
  chat2: { type: chat }
  chat3: { type: chat, url: x, txt: y }
  "bad name": { type: chat, url: x }
  mail: { type: emial }
  tpl: { type: chat, url: x, text: "{% if %}" }
  slow: { type: chat, url: x, delivery: { rate_limit: fast } }
routes:
  - name: r1
    match: { type: { in: x } }
    to: [chat, caht]
  - name: r1
    to: [{ sink: chat, body: "x" }]
  - name: unmatched
    to: []
  - to: [chat]
    continue: yes please
unmatched: maybe
"#,
    );
    let expected = [
        "routes.yaml:3:11: `server`: invalid socket address syntax",
        "routes.yaml:4:1: unknown key `queu`; did you mean `queue`?",
        "routes.yaml:6:22: source `classroom`: unknown source type `classroom_pubsub`; this build has none yet",
        "routes.yaml:8:28: environment variable `MISSING` is not set; set it or write `${MISSING:-default}`",
        "routes.yaml:9:10: sink `chat2`: missing required field `url`",
        "routes.yaml:10:32: sink `chat3`: unknown key `txt`; did you mean `text`?",
        "routes.yaml:11:3: sink name `bad name` may only use letters, digits, `-` and `_`",
        "routes.yaml:12:17: sink `mail`: unknown sink type `emial`; known types: chat",
        "routes.yaml:13:36: sink `tpl`: template `text`: syntax error: unexpected end of block (template line 1)",
        "routes.yaml:14:41: sink `slow`: `delivery`: `fast` is not a rate; write e.g. `1/s`, `30/m`, `100/h` or `none`",
        "routes.yaml:17:26: route `r1`: `in` takes a list of values (`[a, b]`), found a string",
        "routes.yaml:18:16: route `r1`: unknown sink `caht`; did you mean `chat`?",
        "routes.yaml:19:11: duplicate route name `r1` (first at 16:11)",
        "routes.yaml:20:24: route `r1`: sink `chat` (chat) has no template `body`; its templates are: text, title",
        "routes.yaml:21:11: route name `unmatched` is reserved for events no route matched; choose another",
        "routes.yaml:22:9: route `unmatched`: `to` must be a non-empty list of sink names",
        "routes.yaml:23:5: route #4: missing required field `name`",
        "routes.yaml:24:15: route `#4`: `continue` takes true or false, found a string",
        "routes.yaml:25:12: `unmatched` is `drop` or a list of sink names",
    ];
    for (i, line) in expected.iter().enumerate() {
        assert_eq!(
            errors.get(i).map(String::as_str),
            Some(*line),
            "error #{i}; all errors:\n{}",
            errors.join("\n")
        );
    }
    assert_eq!(errors.len(), expected.len(), "{}", errors.join("\n"));
}

#[test]
fn duplicate_keys_are_mistakes() {
    let errors = parse_err("sinks:\n  a: { type: chat, url: x }\n  a: { type: chat, url: y }\n");
    assert_eq!(
        errors,
        ["routes.yaml:3:3: duplicate key `a` (first at 2:3)"]
    );
}

#[test]
fn yaml_syntax_errors_have_a_place() {
    let errors = parse_err("routes:\n  - name: [unclosed\n");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("routes.yaml:"), "{}", errors[0]);
    assert!(errors[0].contains("invalid YAML"), "{}", errors[0]);
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let err = load(Path::new("/nonexistent/routes.yaml"), &registry()).unwrap_err();
    assert!(
        err.to_string().contains("cannot read the config file"),
        "{err}"
    );
}

/// A section another crate owns: `extra: { level: N }`, with N at most 3.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Extra {
    level: u32,
}

fn with_extra() -> Registry {
    let mut r = registry();
    r.add_section(SectionType {
        name: "extra",
        validate: |input| {
            let extra: Extra = input
                .node
                .deserialize()
                .map_err(|e| vec![ConfigError::from_de("`extra`", e, input.node.loc)])?;
            if extra.level > 3 {
                let loc = input.node.get("level").map_or(input.node.loc, |n| n.loc);
                return Err(vec![ConfigError::new(loc, "`extra.level` is at most 3")]);
            }
            Ok(Arc::new(extra))
        },
    });
    r
}

#[test]
fn registered_sections_are_validated_by_their_owner_and_read_back_typed() {
    let parse_with = |yaml: &str| parse(yaml, Path::new("routes.yaml"), &with_extra(), &|_| None);
    let config = parse_with("extra: { level: 2 }\n").unwrap();
    assert_eq!(config.section::<Extra>("extra"), Some(&Extra { level: 2 }));
    assert_eq!(config.section::<Extra>("other"), None);
    assert!(config.section::<String>("extra").is_none(), "wrong type");
    assert_ne!(config.section_fingerprint("extra"), "");

    let errors: Vec<String> = parse_with("extra:\n  level: 7\n")
        .unwrap_err()
        .to_string()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(errors, ["routes.yaml:2:10: `extra.level` is at most 3"]);

    // Without the registration the key is unknown, and the message suggests the known ones.
    let errors = parse_err("extra: { level: 2 }\n");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("unknown key `extra`"), "{errors:?}");
}

#[test]
fn unmatched_entries_must_be_sink_names() {
    let errors =
        parse_err("sinks:\n  audit: { type: chat, url: x }\nunmatched: [audit, 3, {x: y}, nope]\n");
    assert_eq!(
        errors,
        [
            "routes.yaml:3:20: `unmatched`: each entry is a sink name (a string)",
            "routes.yaml:3:23: `unmatched`: each entry is a sink name (a string)",
            "routes.yaml:3:31: `unmatched`: unknown sink `nope`",
        ]
    );
}

/// A queue engine registered the way herald-queue-postgres registers: its own keys, read by
/// its own validator.
#[derive(Debug)]
struct FakeEngine {
    url: String,
}

impl QueueSpec for FakeEngine {
    fn describe(&self) -> String {
        format!("fake at {}", self.url)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn with_engine() -> Registry {
    let mut r = registry();
    r.add_queue_engine(QueueEngineType {
        name: "postgres",
        keys: &["url", "pool"],
        validate: |input| {
            let url = input
                .node
                .get("url")
                .and_then(Node::as_str)
                .ok_or_else(|| {
                    vec![ConfigError::new(
                        input.node.loc,
                        "`queue`: `url` is required",
                    )]
                })?;
            Ok(Arc::new(FakeEngine {
                url: url.to_owned(),
            }))
        },
    });
    r
}

fn parse_engine(yaml: &str) -> Result<Config, Vec<String>> {
    parse(yaml, Path::new("routes.yaml"), &with_engine(), &env)
        .map_err(|e| e.to_string().lines().map(str::to_owned).collect())
}

#[test]
fn the_queue_engine_is_local_by_default_and_postgres_only_when_registered() {
    use super::QueueEngine;
    assert_eq!(
        parse_ok("queue: {engine: local}").queue.engine,
        QueueEngine::Local
    );
    assert_eq!(parse_ok("").queue.engine, QueueEngine::Local, "the default");
    assert!(parse_ok("").queue.engine_spec.is_none());
    let errors = parse_err("queue:\n  engine: postgres\n");
    assert_eq!(
        errors,
        ["routes.yaml:2:11: `queue`: the `postgres` engine is not part of this build"]
    );
    let errors = parse_err("queue: {engine: mysql}");
    assert!(
        errors[0]
            .contains("unknown queue engine `mysql`; expected `local` (the default) or `postgres`"),
        "{errors:?}"
    );
}

#[test]
fn a_registered_engine_reads_its_own_keys_and_core_the_shared_ones() {
    let config = parse_engine(
        "queue:\n  engine: postgres\n  url: pg://db\n  pool: 4\n  retention: 1h\n  max_events: 10\n",
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(config.queue.engine, QueueEngine::Postgres);
    assert_eq!(config.queue.retention, Duration::from_secs(3600));
    assert_eq!(config.queue.max_events, Some(10));
    let spec = config
        .queue
        .engine_spec
        .as_ref()
        .expect("the engine's spec");
    assert_eq!(spec.spec.describe(), "fake at pg://db");
    assert_eq!(
        spec.downcast::<FakeEngine>().map(|f| f.url.as_str()),
        Some("pg://db")
    );

    // Equal when written the same (a reload compares queue configs), not otherwise.
    let again = parse_engine(
        "queue: {engine: postgres, url: pg://db, pool: 4, retention: 1h, max_events: 10}",
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(config.queue, again.queue);
    let other = parse_engine(
        "queue: {engine: postgres, url: pg://other, pool: 4, retention: 1h, max_events: 10}",
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_ne!(config.queue, other.queue);
}

#[test]
fn a_key_of_another_engine_is_a_mistake_at_its_place() {
    let errors = parse_engine("queue:\n  engine: postgres\n  url: pg://db\n  path: ./data\n")
        .expect_err("path under postgres");
    assert_eq!(
        errors,
        [
            "routes.yaml:4:3: `queue`: `path` applies only to `engine: local`; this queue's engine is `postgres`"
        ]
    );
    let errors = parse_engine("queue:\n  path: ./data\n  pool: 3\n").expect_err("pool under local");
    assert_eq!(
        errors,
        [
            "routes.yaml:3:3: `queue`: `pool` applies only to `engine: postgres`; this queue's engine is `local`"
        ]
    );
    let errors = parse_engine("queue:\n  engine: postgres\n  url: pg://db\n  retenton: 1h\n")
        .expect_err("a typo");
    assert_eq!(
        errors,
        ["routes.yaml:4:3: `queue`: unknown key `retenton`; did you mean `retention`?"]
    );
    let errors = parse_engine("queue:\n  engine: postgres\n").expect_err("no url");
    assert_eq!(errors, ["routes.yaml:2:3: `queue`: `url` is required"]);
}

/// `server.admin_token` is checked at its place and never shown (docs/architecture.md §12).
#[test]
fn the_admin_token_is_validated_and_masked() {
    let config = parse_ok("server:\n  admin_token: 0123456789abcdef0123\n");
    let token = config.server.admin_token.as_ref().unwrap();
    assert_eq!(token.expose(), "0123456789abcdef0123");
    assert!(!format!("{:?}", config.server).contains("0123456789"));
    assert_eq!(token.to_string(), "***");
    let errors = parse_err("server:\n  admin_token: short\n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("routes.yaml:2:")
            && errors[0].contains("at least 16 characters")
            && !errors[0].contains("short\""),
        "{errors:?}"
    );
    let config = parse_ok("server:\n  admin_token: \"\"\n");
    assert!(config.server.admin_token.is_none(), "empty is unset");
    let errors = parse_err("server:\n  admin_token: \"with spaces in the token\"\n");
    assert!(errors[0].contains("printable ASCII"), "{errors:?}");
}
