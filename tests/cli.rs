//! `herald check` and `herald test` run as processes on the shipped routes.yaml, on broken
//! configs, and on events made from the fixtures in tests/fixtures.

mod common;

use base64::Engine;
use common::*;
use serde_json::Value;

fn shipped() -> String {
    repo().join("routes.yaml").display().to_string()
}

#[test]
fn check_passes_on_the_shipped_config() {
    let out = run(&["check", "-c", &shipped()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("OK — 2 sources, 2 sinks, 3 routes"),
        "{stdout}"
    );
    assert!(
        stdout.contains("route roster-changes → console, audit"),
        "{stdout}"
    );
}

#[test]
fn check_prints_every_mistake_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    std::fs::write(
        &path,
        "sinks:\n  audit: { type: file, pth: x.jsonl }\n  log: { type: stdout, line: \"{{ type \" }\nroutes:\n  - name: a\n    match: { tpye: x }\n    to: [lgo]\n  - name: b\n    match: { data.email: { regex: \"(\" } }\n    to: [log]\n",
    )
    .unwrap();
    let out = run(&["check", "-c", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let file = path.display().to_string();
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&file)).collect();
    assert_eq!(lines.len(), 5, "{stderr}");
    let expect = [
        ":2:24: sink `audit`: unknown key `pth`; did you mean `path`?",
        ":3:30: sink `log`: template `line`: syntax error",
        ":6:14: route `a`: unknown field `tpye`",
        ":7:10: route `a`: unknown sink `lgo`; did you mean `log`?",
        ":9:35: route `b`: bad regex `(`: unclosed group",
    ];
    for (line, want) in lines.iter().zip(expect) {
        assert!(
            line.starts_with(&format!("{file}{want}")),
            "{line}\n  expected {want}"
        );
    }
    assert!(stderr.contains("5 errors in"), "{stderr}");
}

#[test]
fn check_refuses_a_missing_file() {
    let out = run(&["check", "-c", "/nonexistent/routes.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read the config file"));
}

/// Each fixture, made into an Event, goes where a reader of the shipped routes.yaml expects.
#[test]
fn test_names_the_routes_a_reader_expects_for_every_fixture() {
    let f = fixtures();
    let mut cases: Vec<(String, Value, Vec<&str>)> = Vec::new();
    let time = "2026-11-20T09:15:02.512Z";
    for (file, routes) in [
        ("roster-student-created.json", vec!["roster-changes"]),
        ("coursework-created.json", vec!["everything"]),
        ("submission-modified.json", vec!["everything"]),
    ] {
        let n = read_json(&f.join("classroom").join(file));
        cases.push((file.into(), classroom_event(&n, "1", time), routes));
    }
    let envelope = read_json(&f.join("classroom/push-envelope.json"));
    let data = base64::engine::general_purpose::STANDARD
        .decode(envelope["message"]["data"].as_str().unwrap())
        .unwrap();
    let n: Value = serde_json::from_slice(&data).unwrap();
    let msg = &envelope["message"];
    cases.push((
        "push-envelope.json".into(),
        classroom_event(
            &n,
            msg["messageId"].as_str().unwrap(),
            msg["publishTime"].as_str().unwrap(),
        ),
        vec!["roster-changes"],
    ));
    for (file, routes) in [
        ("user-add.http", vec!["everything"]),
        ("user-delete.http", vec!["admin-changes"]),
        ("sync.http", vec!["everything"]),
    ] {
        let req = HttpRequest::parse(&f.join("directory").join(file));
        cases.push((file.into(), directory_event(&req, time), routes));
    }

    for (name, event, routes) in cases {
        let out = run(
            &["test", "-c", &shipped(), "--json"],
            Some(&event.to_string()),
        );
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["routes"], serde_json::json!(routes), "{name}");
        let sinks: Vec<&str> = report["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["sink"].as_str().unwrap())
            .collect();
        assert_eq!(sinks, ["console", "audit"], "{name}");
        assert_eq!(report["event"]["type"], event["type"], "{name}");
    }
}

#[test]
fn test_shows_rendered_messages_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    std::fs::write(
        &path,
        "sinks:\n  out: { type: file, path: out.jsonl, line: \"{{ data.primaryEmail }} is {{ meta.resourceState }}\" }\nroutes:\n  - name: deletes\n    match: { type: directory.users.delete }\n    to: [{ sink: out, line: \"gone: {{ data.primaryEmail }}\" }]\n  - name: rest\n    to: [out]\n",
    )
    .unwrap();
    let req = HttpRequest::parse(&fixtures().join("directory/user-delete.http"));
    let event_file = dir.path().join("event.json");
    std::fs::write(
        &event_file,
        directory_event(&req, "2026-11-20T09:15:02Z").to_string(),
    )
    .unwrap();

    let out = run(
        &[
            "test",
            "-c",
            path.to_str().unwrap(),
            event_file.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .contains(&format!("route deletes\n  → sink out (file): appends the `line` template to {}\n      line: gone: user@mydomain.com\n", dir.path().join("out.jsonl").display())),
        "{stdout}"
    );

    let req = HttpRequest::parse(&fixtures().join("directory/user-add.http"));
    let out = run(
        &["test", "-c", path.to_str().unwrap(), "-"],
        Some(&directory_event(&req, "2026-11-20T09:15:02Z").to_string()),
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "route rest\n  → sink out (file): appends the `line` template to {}\n      line: new.student@mydomain.com is add\n",
            dir.path().join("out.jsonl").display()
        )),
        "{stdout}"
    );
    assert!(
        !dir.path().join("out.jsonl").exists(),
        "herald test must not deliver"
    );
}

#[test]
fn test_reports_a_template_that_cannot_render() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    std::fs::write(&path, "sinks:\n  out: { type: stdout, line: \"{{ data.resourceId.nothing.here }}\" }\nroutes:\n  - name: all\n    to: [out]\n").unwrap();
    let n = read_json(&fixtures().join("classroom/coursework-created.json"));
    let out = run(
        &["test", "-c", path.to_str().unwrap()],
        Some(&classroom_event(&n, "1", "2026-11-20T09:15:02Z").to_string()),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("error: template `line`: undefined value"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn test_refuses_input_that_is_not_an_event() {
    let out = run(&["test", "-c", &shipped()], Some("{\"id\": 1}"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("the input is not an Event JSON"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn version_is_printed() {
    let out = run(&["--version"], None);
    assert!(
        text(&out.stdout).starts_with("herald 0."),
        "{}",
        text(&out.stdout)
    );
}

/// `herald test --source NAME` decodes a raw payload as the running source would.
#[test]
fn test_decodes_raw_payloads_of_a_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    std::fs::write(
        &path,
        "sources:\n  directory: { type: directory_webhook, channel_tokens: [\"t\"] }\n  classroom: { type: classroom_pubsub }\nsinks:\n  out: { type: stdout, line: \"{{ type }} {{ subject }}\" }\nroutes:\n  - name: all\n    to: [out]\n",
    )
    .unwrap();
    let config = path.to_str().unwrap();
    let f = fixtures();

    let out = run(
        &[
            "test",
            "-c",
            config,
            "--source",
            "directory",
            f.join("directory/user-delete.http").to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("line: directory.users.delete users/111220860655841818702"),
        "{}",
        text(&out.stdout)
    );

    let out = run(
        &[
            "test",
            "-c",
            config,
            "--source",
            "classroom",
            "--json",
            f.join("classroom/push-envelope.json").to_str().unwrap(),
        ],
        None,
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["event"]["id"], "2070443601311540");
    assert_eq!(
        report["event"]["meta"]["registrationId"],
        "Cg0I2fQDEgYIABCA6gcaAA"
    );
    assert_eq!(
        report["deliveries"][0]["rendered"]["line"],
        "classroom.courses.students.created courses/12345/students/45678"
    );

    let body = r#"{"id": "99", "primaryEmail": "x@example.edu"}"#;
    let headers = [
        "X-Goog-Channel-ID: c",
        "X-Goog-Resource-ID: r",
        "X-Goog-Resource-URI: https://admin.googleapis.com/admin/directory/v1/users?domain=example.edu&event=add",
        "X-Goog-Resource-State: add",
        "X-Goog-Message-Number: 3",
    ];
    let mut args = vec!["test", "-c", config, "--source", "directory"];
    for h in &headers {
        args.extend(["-H", h]);
    }
    let out = run(&args, Some(body));
    assert!(
        text(&out.stdout).contains("line: directory.users.add users/99"),
        "{}",
        text(&out.stdout)
    );

    let out = run(
        &[
            "test",
            "-c",
            config,
            "--source",
            "directory",
            f.join("directory/sync.http").to_str().unwrap(),
        ],
        None,
    );
    assert!(
        text(&out.stdout).contains("a sync message"),
        "{}",
        text(&out.stdout)
    );

    let out = run(&["test", "-c", config, "--source", "directory"], Some(body));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("missing header X-Goog-"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&["test", "-c", config, "--source", "nope"], Some(body));
    assert!(
        text(&out.stderr).contains("no source `nope` in the config"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn test_shows_each_sinks_destination_with_its_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    std::fs::write(
        &path,
        "sinks:\n  hook: { type: webhook, url: \"https://sis.example.edu/hooks/x?key=url-secret\", headers: { Authorization: \"Bearer ${SIS_TOKEN}\", X-Api-Key: \"${SIS_TOKEN}\", X-Course: \"{{ data.primaryEmail }}\" } }\n  chat: { type: slack, webhook_url: \"https://hooks.slack.com/services/T0/B0/slack-secret\", text: \"{{ type }}\" }\nroutes:\n  - name: all\n    to: [hook, chat]\n",
    )
    .unwrap();
    let req = HttpRequest::parse(&fixtures().join("directory/user-add.http"));
    let event = directory_event(&req, "2026-11-20T09:15:02Z").to_string();
    for json in [false, true] {
        let mut args = vec!["test", "-c", path.to_str().unwrap(), "-"];
        if json {
            args.push("--json");
        }
        let out = herald()
            .args(&args)
            .env("SIS_TOKEN", "token-secret")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(event.as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success());
        let stdout = text(&out.stdout);
        for secret in ["token-secret", "url-secret", "slack-secret"] {
            assert!(!stdout.contains(secret), "`{secret}` shown:\n{stdout}");
        }
        if !json {
            for shown in [
                "→ sink hook (webhook): POST https://sis.example.edu/***",
                "headers.Authorization: Bearer ***",
                "headers.X-Api-Key: ***",
                "headers.X-Course: new.student@mydomain.com",
                "→ sink chat (slack): https://hooks.slack.com/services/***",
                "text: directory.users.add",
            ] {
                assert!(stdout.contains(shown), "`{shown}` missing:\n{stdout}");
            }
        }
    }
}

#[test]
fn test_shows_what_enrichment_would_look_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    std::fs::write(
        &path,
        "sources:\n  classroom: { type: classroom_pubsub, enrich: { course: [name], person: [name, email] } }\nsinks:\n  out: { type: stdout, line: \"{{ enriched.person.name }}\" }\nroutes:\n  - name: all\n    to: [out]\n",
    )
    .unwrap();
    let n = read_json(&fixtures().join("classroom/roster-student-created.json"));
    let event = classroom_event(&n, "1", "2026-11-20T09:15:02Z").to_string();
    let out = run(&["test", "-c", path.to_str().unwrap()], Some(&event));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("  enriched.course ← courses.get 12345: name\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  enriched.person ← courses.students.get 45678: name, email\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("      line: 45678\n"),
        "the id stands in: {stdout}"
    );
    let out = run(
        &["test", "-c", path.to_str().unwrap(), "--json"],
        Some(&event),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["lookups"][1]["method"], "courses.students.get");
    assert_eq!(report["lookups"][1]["from_body"], false);
}
