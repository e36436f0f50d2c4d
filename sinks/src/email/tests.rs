//! The email sink against a real SMTP server (aiosmtpd) on 127.0.0.1: plain, STARTTLS and
//! implicit TLS with a private CA, AUTH, 4xx/5xx answers through the delivery engine, digests.

use std::time::{Duration, Instant};

use herald_core::Event;
use serde_json::json;

use crate::testing::smtp::{Options, SmtpServer};
use crate::testing::tls::TestCerts;
use crate::testing::{Pipeline, build, deliver, load, user_event};

fn install_crypto_provider() {
    // As the gateway does at start (src/main.rs).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// `Name <address>` or `address`, as a reader would check them.
fn addresses(list: Option<&mail_parser::Address<'_>>) -> Vec<String> {
    list.map(|l| {
        l.iter()
            .map(|a| match (&a.name, &a.address) {
                (Some(name), Some(address)) => format!("{name} <{address}>"),
                (None, Some(address)) => address.to_string(),
                _ => String::new(),
            })
            .collect()
    })
    .unwrap_or_default()
}

/// The text part as a reader sees it (SMTP carries CRLF line ends).
fn body_text(message: &mail_parser::Message<'_>) -> String {
    message
        .body_text(0)
        .map(|t| t.replace("\r\n", "\n"))
        .unwrap_or_default()
}

fn body_html(message: &mail_parser::Message<'_>) -> String {
    message
        .body_html(0)
        .map(|t| t.replace("\r\n", "\n"))
        .unwrap_or_default()
}

fn teacher_event(n: usize, teacher: &str) -> Event {
    let mut e = user_event(n);
    e.data = json!({
        "primaryEmail": format!("user{n}@example.edu"),
        "name": format!("Student <{n}> & co"),
        "teacher": teacher,
    })
    .into();
    e
}

#[tokio::test]
async fn an_email_arrives_with_its_headers_and_both_parts() {
    let server = SmtpServer::start(Options::default()).await;
    let yaml = format!(
        r#"sinks:
  mail:
    type: email
    url: "smtp://127.0.0.1:{}"
    from: "Herald <herald@example.edu>"
    to: [registrar@example.edu, "{{{{ data.teacher }}}}"]
    cc: "IT Desk <it@example.edu>"
    bcc: [audit@example.edu]
    subject: "{{{{ type }}}} for {{{{ data.primaryEmail }}}}"
    text: "New student: {{{{ data.name }}}}\n"
    html: "<p>New student: <b>{{{{ data.name }}}}</b></p>"
"#,
        server.port
    );
    let config = load(&yaml).unwrap();
    let sink = build(&config, "mail");
    deliver(
        &config,
        sink.as_ref(),
        "mail",
        &teacher_event(7, "Ms Doe <doe@example.edu>"),
    )
    .await
    .unwrap();

    let got = server.wait_for(1).await;
    assert_eq!(got[0].mail_from, "herald@example.edu");
    assert_eq!(
        got[0].rcpt_tos,
        [
            "registrar@example.edu",
            "doe@example.edu",
            "it@example.edu",
            "audit@example.edu"
        ]
    );
    assert!(!got[0].tls, "a loopback relay is plain SMTP");
    let message = got[0].message();
    assert_eq!(addresses(message.from()), ["Herald <herald@example.edu>"]);
    assert_eq!(
        addresses(message.to()),
        ["registrar@example.edu", "Ms Doe <doe@example.edu>"]
    );
    assert_eq!(addresses(message.cc()), ["IT Desk <it@example.edu>"]);
    assert!(message.bcc().is_none(), "Bcc is in the envelope only");
    assert_eq!(
        message.subject(),
        Some("directory.users.add for user7@example.edu")
    );
    assert_eq!(body_text(&message), "New student: Student <7> & co\n");
    assert_eq!(
        body_html(&message),
        "<p>New student: <b>Student &lt;7&gt; &amp; co</b></p>"
    );
    assert!(
        message
            .message_id()
            .is_some_and(|id| id.ends_with(".herald@example.edu")),
        "{:?}",
        message.message_id()
    );
}

#[tokio::test]
async fn without_a_text_template_the_body_summarises_the_event() {
    let server = SmtpServer::start(Options::default()).await;
    let config = load(&format!(
        "sinks:\n  mail: {{ type: email, url: \"smtp://localhost:{}\", from: h@example.edu, to: r@example.edu, subject: \"{{{{ type }}}}\" }}\n",
        server.port
    ))
    .unwrap();
    let sink = build(&config, "mail");
    deliver(&config, sink.as_ref(), "mail", &user_event(3))
        .await
        .unwrap();
    let got = server.wait_for(1).await;
    let text = body_text(&got[0].message());
    assert!(
        text.starts_with("directory.users.add from directory\nsubject: users/3\n"),
        "{text}"
    );
    assert!(
        text.contains("\"primaryEmail\": \"user3@example.edu\""),
        "{text}"
    );
    assert!(
        !got[0].data.contains("text/html"),
        "no HTML part without `html`"
    );
}

#[tokio::test]
async fn starttls_with_a_private_ca_and_a_login() {
    install_crypto_provider();
    let certs = TestCerts::generate();
    let server = SmtpServer::start(Options {
        tls: Some(("starttls", certs.cert.clone(), certs.key.clone())),
        require_starttls: true,
        login: Some(("herald".into(), "s3cret-pw".into())),
        ..Options::default()
    })
    .await;
    let config = load(&format!(
        "sinks:\n  mail: {{ type: email, url: \"smtp://localhost:{}\", tls: required, tls_ca: \"{}\", username: herald, password: s3cret-pw, from: h@example.edu, to: r@example.edu, subject: hi }}\n",
        server.port,
        certs.ca.display()
    ))
    .unwrap();
    let sink = build(&config, "mail");
    deliver(&config, sink.as_ref(), "mail", &user_event(1))
        .await
        .unwrap();
    let got = server.wait_for(1).await;
    assert!(got[0].tls, "the session was upgraded with STARTTLS");
    assert_eq!(got[0].login.as_deref(), Some("herald"));
    let described = config.sink("mail").unwrap().spec.describe();
    assert_eq!(
        described,
        format!(
            "smtp://localhost:{} (STARTTLS required, as herald)",
            server.port
        )
    );
    assert!(
        !format!("{:?}", config.sink("mail").unwrap().spec).contains("s3cret-pw"),
        "the password is not in the debug output"
    );
}

#[tokio::test]
async fn smtps_is_tls_from_the_first_byte() {
    install_crypto_provider();
    let certs = TestCerts::generate();
    let server = SmtpServer::start(Options {
        tls: Some(("implicit", certs.cert.clone(), certs.key.clone())),
        ..Options::default()
    })
    .await;
    let config = load(&format!(
        "sinks:\n  mail: {{ type: email, url: \"smtps://localhost:{}\", tls_ca: \"{}\", from: h@example.edu, to: r@example.edu, subject: over TLS }}\n",
        server.port,
        certs.ca.display()
    ))
    .unwrap();
    let sink = build(&config, "mail");
    deliver(&config, sink.as_ref(), "mail", &user_event(1))
        .await
        .unwrap();
    let got = server.wait_for(1).await;
    assert!(got[0].tls);
    assert_eq!(got[0].message().subject(), Some("over TLS"));
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_refused() {
    install_crypto_provider();
    let certs = TestCerts::generate();
    let server = SmtpServer::start(Options {
        tls: Some(("starttls", certs.cert.clone(), certs.key.clone())),
        ..Options::default()
    })
    .await;
    let config = load(&format!(
        "sinks:\n  mail: {{ type: email, url: \"smtp://localhost:{}\", tls: required, from: h@example.edu, to: r@example.edu, subject: hi }}\n",
        server.port
    ))
    .unwrap();
    let sink = build(&config, "mail");
    let err = deliver(&config, sink.as_ref(), "mail", &user_event(1))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.message().contains("certificate"), "{err}");
    assert!(server.received().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_not_repeated_in_the_error() {
    install_crypto_provider();
    let certs = TestCerts::generate();
    let server = SmtpServer::start(Options {
        tls: Some(("starttls", certs.cert.clone(), certs.key.clone())),
        login: Some(("herald".into(), "right".into())),
        ..Options::default()
    })
    .await;
    let config = load(&format!(
        "sinks:\n  mail: {{ type: email, url: \"smtp://localhost:{}\", tls: required, tls_ca: \"{}\", username: herald, password: wrong-pw-123, from: h@example.edu, to: r@example.edu, subject: hi }}\n",
        server.port,
        certs.ca.display()
    ))
    .unwrap();
    let sink = build(&config, "mail");
    let err = deliver(&config, sink.as_ref(), "mail", &user_event(1))
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "SMTP 535 is permanent: {err}");
    assert!(err.message().contains("535"), "{err}");
    assert!(!err.message().contains("wrong-pw-123"), "{err}");
}

#[tokio::test]
async fn a_451_is_retried_and_the_mail_arrives() {
    let server = SmtpServer::start(Options {
        script: vec!["451 4.3.0 Mailbox busy, try later".into()],
        ..Options::default()
    })
    .await;
    let pipeline = Pipeline::start(&format!(
        "  mail: {{ type: email, url: \"smtp://127.0.0.1:{}\", from: h@example.edu, to: r@example.edu, subject: \"{{{{ data.primaryEmail }}}}\", delivery: {{ initial_backoff: 50ms, max_backoff: 100ms }} }}\n",
        server.port
    ));
    pipeline.commit([user_event(5)]).await;
    pipeline.settled(Duration::from_secs(20)).await;
    let got = server.received();
    assert_eq!(got.len(), 2, "refused once, then accepted");
    assert!(got[0].answer.starts_with("451"));
    assert!(got[1].accepted());
    assert_eq!(got[1].message().subject(), Some("user5@example.edu"));
    assert!(pipeline.dead_letters().is_empty());
    pipeline.stop().await;
}

#[tokio::test]
async fn a_550_dead_letters_with_the_servers_reply() {
    let server = SmtpServer::start(Options {
        script: vec!["550 5.1.1 No such user here".into()],
        ..Options::default()
    })
    .await;
    let pipeline = Pipeline::start(&format!(
        "  mail: {{ type: email, url: \"smtp://127.0.0.1:{}\", from: h@example.edu, to: gone@example.edu, subject: hi, delivery: {{ initial_backoff: 50ms, max_backoff: 100ms }} }}\n",
        server.port
    ));
    pipeline.commit([user_event(5)]).await;
    pipeline.settled(Duration::from_secs(20)).await;
    let dead = pipeline.dead_letters();
    assert_eq!(dead.len(), 1);
    let record = serde_json::to_string(&dead[0].kind).unwrap();
    assert!(
        record.contains("550") && record.contains("No such user here"),
        "{record}"
    );
    assert_eq!(server.received().len(), 1, "a 5xx is not retried");
    pipeline.stop().await;
}

#[tokio::test]
async fn a_digest_sends_50_events_as_one_email() {
    let server = SmtpServer::start(Options::default()).await;
    let pipeline = Pipeline::start(&format!(
        r#"  it:
    type: email
    url: "smtp://127.0.0.1:{}"
    from: h@example.edu
    to: it@example.edu
    subject: "Directory changes"
    text: "{{{{ data.primaryEmail }}}} was added"
    html: "<li>{{{{ data.name }}}}</li>"
    digest: {{ window: 2s, max: 100 }}
"#,
        server.port
    ));
    let start = Instant::now();
    pipeline
        .commit((0..50).map(|n| teacher_event(n, "t@example.edu")))
        .await;
    let got = server.wait_for(1).await;
    let waited = start.elapsed();
    pipeline.settled(Duration::from_secs(10)).await;
    assert!(
        waited >= Duration::from_millis(1900),
        "the digest waited for its window: {waited:?}"
    );
    assert_eq!(server.received().len(), 1, "one email for 50 events");
    let message = got[0].message();
    assert_eq!(
        message.subject(),
        Some("Directory changes (50 notifications)")
    );
    let text = body_text(&message);
    assert!(text.starts_with("50 notifications\n"), "{text}");
    for n in 0..50 {
        assert_eq!(
            text.matches(&format!("user{n}@example.edu was added"))
                .count(),
            1,
            "event {n} listed once"
        );
    }
    let html = body_html(&message);
    assert_eq!(html.matches("<li>").count(), 50);
    assert!(
        html.contains("<li>Student &lt;7&gt; &amp; co</li>"),
        "{html}"
    );
    assert!(pipeline.dead_letters().is_empty());
    pipeline.stop().await;
}

#[tokio::test]
async fn digests_are_per_recipient_and_close_when_full() {
    let server = SmtpServer::start(Options::default()).await;
    let pipeline = Pipeline::start(&format!(
        "  teachers: {{ type: email, url: \"smtp://127.0.0.1:{}\", from: h@example.edu, to: \"{{{{ data.teacher }}}}\", subject: roster, text: \"{{{{ data.primaryEmail }}}}\", digest: {{ window: 10m, max: 10 }} }}\n",
        server.port
    ));
    let events = (0..30).map(|n| {
        let teacher = if n % 3 == 0 {
            "a@example.edu"
        } else {
            "b@example.edu"
        };
        teacher_event(n, teacher)
    });
    pipeline.commit(events).await;
    // 10 for a@, 20 for b@: three full digests, sent long before the 10-minute window.
    let got = server.wait_for(3).await;
    pipeline.settled(Duration::from_secs(10)).await;
    let mut per_teacher: Vec<(String, usize)> = got
        .iter()
        .map(|r| {
            let text = body_text(&r.message());
            (r.rcpt_tos.join(","), text.matches("@example.edu").count())
        })
        .collect();
    per_teacher.sort();
    assert_eq!(
        per_teacher,
        [
            ("a@example.edu".to_owned(), 10),
            ("b@example.edu".to_owned(), 10),
            ("b@example.edu".to_owned(), 10)
        ]
    );
    pipeline.stop().await;
}

#[test]
fn config_mistakes_are_reported_where_they_are() {
    let err = load(concat!(
        "sinks:\n",
        "  a: { type: email, url: \"http://mail.example.edu\", from: h@example.edu, to: r@example.edu, subject: s }\n",
        "  b: { type: email, url: \"smtp://mail.example.edu\", tls: none, username: u, password: p, from: h@example.edu, to: r@example.edu, subject: s }\n",
        "  c: { type: email, url: \"smtp://localhost\", from: h@example.edu, to: [r@example.edu, not-an-address], subject: s }\n",
        "  d: { type: email, url: \"smtp://localhost\", from: h@example.edu, to: r@example.edu }\n",
        "  e: { type: email, url: \"smtp://localhost\", from: h@example.edu, to: r@example.edu, subject: s, digest: { window: soon } }\n",
        "  f: { type: email, url: \"smtp://localhost\", from: h@example.edu, to: r@example.edu, subject: \"{{ x\" }\n",
        "  g: { type: email, url: \"smtp://localhost\", from: h@example.edu, to: r@example.edu, subject: s, digest: { window: 0s, max: 1 }, max_connections: 0 }\n",
        "  h: { type: email, url: \"smtp://localhost\", password: hunter2, from: h@example.edu, to: [], subject: s }\n",
    ))
    .unwrap_err();
    for expected in [
        "routes.yaml:2:26: sink `a`: `url` scheme `http` is not `smtp` or `smtps`",
        "routes.yaml:3:58: sink `b`: a `password` must not be sent unencrypted",
        "routes.yaml:4:87: sink `c`: `to`: `not-an-address` is not an email address",
        "routes.yaml:5:6: sink `d`: missing required field `subject`",
        "routes.yaml:6:116: sink `e`: `soon` is not a duration",
        "routes.yaml:7:95: sink `f`: template `subject`: syntax error",
        "routes.yaml:8:116: sink `g`: `digest.window` must be longer than 0s",
        "routes.yaml:8:125: sink `g`: `digest.max` must be at least 2",
        "routes.yaml:8:147: sink `g`: `max_connections` must be at least 1",
        "routes.yaml:9:56: sink `h`: `password` needs a `username`",
        "routes.yaml:9:90: sink `h`: `to` is empty; give at least one recipient",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test]
async fn digests_adapt_when_the_engine_gives_up_before_the_window_closes() {
    let server = SmtpServer::start(Options::default()).await;
    // A 60 s window but only 2 s per attempt: a misconfiguration the sink survives.
    let pipeline = Pipeline::start(&format!(
        "  it: {{ type: email, url: \"smtp://127.0.0.1:{}\", from: h@example.edu, to: it@example.edu, subject: changes, text: \"{{{{ data.primaryEmail }}}}\", digest: {{ window: 60s, max: 100 }}, delivery: {{ timeout: 2s, initial_backoff: 100ms, max_backoff: 200ms }} }}\n",
        server.port
    ));
    let start = Instant::now();
    pipeline.commit((0..5).map(user_event)).await;
    pipeline.settled(Duration::from_secs(30)).await;
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "delivered in {:?}, long before the 60 s window",
        start.elapsed()
    );
    assert!(pipeline.dead_letters().is_empty());
    let mut listed = Vec::new();
    for r in server.accepted() {
        listed.extend(
            body_text(&r.message())
                .lines()
                .filter(|l| l.ends_with("@example.edu"))
                .map(str::to_owned),
        );
    }
    listed.sort();
    let expected: Vec<String> = (0..5).map(|n| format!("user{n}@example.edu")).collect();
    assert_eq!(listed, expected, "each event in exactly one email");
    pipeline.stop().await;
}
