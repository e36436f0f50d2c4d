//! The web console in real headless Chromium against the real gateway binary
//! (docs/architecture.md §12): log in, see an event live, replay a dead letter, renew a
//! Google subscription, try a route. The ignored `screenshots` test is scripts/screenshots.sh's.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::sync::Arc;
use std::time::Duration;

use browser::{Browser, PAGE, click, log_in, type_into, wait_text};
use common::*;
use fantoccini::Locator;
use herald_testkit::google::FakeGoogle;
use herald_testkit::receiver::{Answer, Receiver};
use herald_testkit::wait::{eventually_async, until};
use serde_json::json;

const ADMIN_TOKEN: &str = "browser-test-admin-token-0123456789";

fn with_token(yaml: String) -> String {
    yaml.replacen(
        "server:\n",
        &format!("server:\n  admin_token: {ADMIN_TOKEN}\n"),
        1,
    )
}

/// A Directory change whose fields carry HTML and script.
async fn send_hostile_event(g: &Gateway, number: u64) {
    let r = directory_request(&reqwest::Client::new(), g, "chan-1", number)
        .body(json!({"kind": "admin#directory#user", "id": format!("4{number}"), "primaryEmail": "<img src=x onerror=alert(2)>@example.edu", "name": {"fullName": "<script>alert(1)</script>"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_and_see_an_event_appear_live_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::start(
        dir.path(),
        &with_token(
            config_head()
                + "sinks:\n  audit: { type: file, path: audit.jsonl }\nroutes:\n  - name: everything\n    to: [audit]\n",
        ),
    );
    Browser::run(
        "log_in_and_see_an_event_appear_live_escaped",
        |c| async move {
            log_in(&c, g.admin, ADMIN_TOKEN).await;
            wait_text(&c, "#sources", "none since start").await;
            wait_text(&c, "#sinks tr[data-sink=audit]", "closed").await;

            send_hostile_event(&g, 1).await;
            // Within the next polls, without a reload: the source's last event, the recent list,
            // the delivery; the HTML shows as text.
            let source = wait_text(&c, "#sources tr[data-source=directory]", "users/41").await;
            assert!(source.contains("directory.users.add"), "{source}");
            wait_text(&c, "#sinks tr[data-sink=audit] [data-col=delivered]", "1").await;
            let recent = wait_text(&c, "#recent", "users/41").await;
            assert!(recent.contains("everything(audit)"), "{recent}");
            assert!(
                c.find_all(Locator::Css("#main script, #main img"))
                    .await
                    .unwrap()
                    .is_empty(),
                "the event's HTML is not markup"
            );
            // Opened, the event is its JSON.
            click(&c, "#recent summary").await;
            let json = wait_text(&c, "#recent pre", "primaryEmail").await;
            assert!(
                json.contains("<img src=x onerror=alert(2)>@example.edu"),
                "{json}"
            );
            assert!(json.contains("<script>alert(1)</script>"), "{json}");
            assert!(
                c.find_all(Locator::Css("#main script, #main img"))
                    .await
                    .unwrap()
                    .is_empty(),
                "the event's HTML is not markup"
            );

            // The live view: events routed from now on.
            c.goto(&format!("http://{}/console#live", g.admin))
                .await
                .unwrap();
            wait_text(&c, "#live-state", "Watching").await;
            send_hostile_event(&g, 2).await;
            let line = wait_text(&c, "#live-events", "directory.users.add").await;
            assert!(line.contains("users/42"), "{line}");
            click(&c, "#live-events summary").await;
            wait_text(&c, "#live-events pre", "<script>alert(1)</script>").await;
            assert!(
                c.find_all(Locator::Css("#main script, #main img"))
                    .await
                    .unwrap()
                    .is_empty(),
                "the event's HTML is not markup"
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sinks_dead_letter_is_replayed_after_the_receiver_is_fixed() {
    let rx = Receiver::start().await;
    rx.otherwise(Answer::status(400, "no such hook"));
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_head()
        + &format!(
            "sinks:\n  hook:\n    type: webhook\n    url: {}\n    delivery: {{ max_attempts: 1 }}\nroutes:\n  - name: to-hook\n    to: [hook]\n",
            rx.url("/hook")
        );
    let g = Gateway::start(dir.path(), &with_token(yaml));
    let client = reqwest::Client::new();
    let r = directory_request(&client, &g, "chan-1", 7)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    Browser::run("a_failing_sinks_dead_letter_is_replayed", |c| async move {
        log_in(&c, g.admin, ADMIN_TOKEN).await;
        wait_text(&c, "#sinks tr[data-sink=hook] [data-col=dead]", "1").await;
        c.goto(&format!("http://{}/console#dlq", g.admin))
            .await
            .unwrap();
        let row = wait_text(&c, "#dlq-table tbody tr", "hook").await;
        assert!(row.contains("to-hook") && row.contains("400"), "{row}");
        // Every attempt with its error.
        click(&c, "#dlq-table tbody tr button").await;
        let detail = wait_text(&c, "#dlq-detail", "Attempts").await;
        assert!(
            detail.contains("Route to-hook → sink hook") && detail.contains("no such hook"),
            "{detail}"
        );

        // The receiver is fixed; replay the one dead letter from the page.
        rx.otherwise(Answer::status(200, "ok"));
        let replay = eventually_async("the Replay button", PAGE, || async {
            c.find(Locator::XPath(
                "//table[@id='dlq-table']//button[text()='Replay']",
            ))
            .await
            .ok()
        })
        .await;
        replay.click().await.unwrap();
        wait_text(&c, "#dlq-result", "Replayed 1 dead letter").await;
        wait_text(&c, "#dlq-empty", "No dead letters.").await;
        until("the receiver got it", Duration::from_secs(20), || {
            rx.received().len() >= 2
        })
        .await;

        c.goto(&format!("http://{}/console#overview", g.admin))
            .await
            .unwrap();
        wait_text(&c, "#sinks tr[data-sink=hook] [data-col=delivered]", "1").await;
        wait_text(&c, "#sinks tr[data-sink=hook] [data-col=pending]", "0").await;
        wait_text(&c, "#queue", "0 dead letter(s)").await;
    })
    .await;
    assert!(g.log().contains("action=\"replay\""), "audited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_a_subscription_against_the_fake_google() {
    let google = FakeGoogle::start(
        &std::fs::read(repo().join("sources/tests/keys/a.pub.pem")).unwrap(),
        Arc::new(chrono::Utc::now),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let pem = std::fs::read_to_string(repo().join("sources/tests/keys/a.pem")).unwrap();
    let key = json!({"type": "service_account", "private_key": pem, "client_email": "herald@district-edu.iam.gserviceaccount.com"});
    std::fs::write(dir.path().join("sa.json"), key.to_string()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:{port}, admin_listen: 127.0.0.1:0, shutdown_timeout: 2s, admin_token: {ADMIN_TOKEN} }}\n{}sources:\n  directory:\n    type: directory_webhook\n    address: http://127.0.0.1:{port}/webhook/directory\n    watch: [{{event: add, domain: example.edu}}]\nsinks:\n  audit: {{ type: file, path: audit.jsonl }}\nroutes:\n  - name: everything\n    to: [audit]\n",
        google.google_yaml("sa.json", "admin@example.edu")
    );
    let g = Gateway::start(dir.path(), &yaml);
    until("the channel opened", Duration::from_secs(20), || {
        google.channels().len() == 1
    })
    .await;

    Browser::run("renew_a_subscription", |c| async move {
        log_in(&c, g.admin, ADMIN_TOKEN).await;
        c.goto(&format!("http://{}/console#google", g.admin))
            .await
            .unwrap();
        let row = wait_text(
            &c,
            "#google-table tr[data-name='directory/add/example.edu']",
            "channel",
        )
        .await;
        assert!(row.contains("ok"), "{row}");
        // The countdown counts.
        let expires = c
            .find(Locator::Css("#google-table [data-expires]"))
            .await
            .unwrap();
        let first = expires.text().await.unwrap();
        assert!(first.contains('h') && first.contains('m'), "{first}");
        eventually_async("the countdown to move", PAGE, || async {
            (expires.text().await.ok()? != first).then_some(())
        })
        .await;

        click(
            &c,
            "#google-table tr[data-name='directory/add/example.edu'] button",
        )
        .await;
        wait_text(&c, "#google-result", "Renewed directory/add/example.edu").await;
        assert_eq!(
            google.calls("/users/watch").len(),
            2,
            "a new channel was opened"
        );
    })
    .await;
    assert!(g.log().contains("action=\"renew\""), "audited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_a_route_shows_the_rendered_messages_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_head()
        + "sinks:\n  audit: { type: file, path: audit.jsonl }\n  log: { type: stdout, line: \"{{ type }} for {{ data.primaryEmail }}\" }\nroutes:\n  - name: new-users\n    match: { type: directory.users.add }\n    to: [log, audit]\n";
    let g = Gateway::start(dir.path(), &with_token(yaml));
    Browser::run("try_a_route", |c| async move {
        log_in(&c, g.admin, ADMIN_TOKEN).await;
        c.goto(&format!("http://{}/console#try", g.admin)).await.unwrap();
        wait_text(&c, "#try-source", "directory").await;
        let event = json!({
            "specversion": "1.0", "id": "e-1", "source": "directory", "type": "directory.users.add",
            "subject": "users/9", "time": "2026-11-20T09:15:02Z", "datacontenttype": "application/json",
            "data": {"primaryEmail": "<b>ada</b>@example.edu"}, "meta": {}
        });
        type_into(&c, "#try-input", &event.to_string()).await;
        click(&c, "#try-form button[type=submit]").await;
        let result = wait_text(&c, "#try-result", "route new-users → sink log (stdout)").await;
        assert!(result.contains("Matching routes: new-users"), "{result}");
        assert!(result.contains("directory.users.add for <b>ada</b>@example.edu"), "{result}");
        assert!(result.contains("route new-users → sink audit (file)"), "{result}");
        assert!(c.find_all(Locator::Css("#try-result b")).await.unwrap().is_empty(), "text, not markup");

        // A raw notification of the source, decoded as the source would.
        type_into(&c, "#try-input", "not json").await;
        click(&c, "#try-form button[type=submit]").await;
        wait_text(&c, "#try-result", "the input is not an Event JSON").await;
    })
    .await;
    let written = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap_or_default();
    assert!(written.is_empty(), "nothing was sent: {written}");
}

/// Not a test: scripts/screenshots.sh runs it to take the README's pictures of each page of
/// the console on the shipped routes.yaml (`HERALD_SCREENSHOTS` names the directory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "scripts/screenshots.sh runs it"]
async fn screenshots() {
    let out =
        std::path::PathBuf::from(std::env::var("HERALD_SCREENSHOTS").expect("HERALD_SCREENSHOTS"));
    let token = std::env::var("HERALD_ADMIN_TOKEN").expect("HERALD_ADMIN_TOKEN");
    std::fs::create_dir_all(&out).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(repo().join("routes.yaml")).unwrap();
    let g = Gateway::start(dir.path(), &shipped);
    let client = reqwest::Client::new();
    for n in 1..=3 {
        let r = client
            .post(g.url("/webhook/directory"))
            .header("Content-Type", "application/json")
            .header("X-Goog-Channel-ID", "chan-1")
            .header("X-Goog-Channel-Token", "local-test-token")
            .header("X-Goog-Resource-ID", "ret08u3rv24htgh289g")
            .header("X-Goog-Resource-URI", "https://admin.googleapis.com/admin/directory/v1/users?domain=example.edu&event=add")
            .header("X-Goog-Resource-State", "add")
            .header("X-Goog-Message-Number", n.to_string())
            .body(json!({"kind": "admin#directory#user", "id": format!("10{n}"), "primaryEmail": format!("student{n}@example.edu")}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    Browser::run("screenshots", |c| async move {
        c.set_window_size(1280, 900).await.unwrap();
        log_in(&c, g.admin, &token).await;
        wait_text(&c, "#sources", "directory.users.add").await;
        let shot = |name: &'static str| {
            let c = c.clone();
            let out = out.clone();
            async move {
                std::fs::write(out.join(format!("{name}.png")), c.screenshot().await.unwrap()).unwrap();
            }
        };
        shot("overview").await;
        for page in ["dlq", "google", "config", "live"] {
            c.goto(&format!("http://{}/console#{page}", g.admin)).await.unwrap();
            wait_text(&c, &format!("#h-{page}"), "").await;
            let settled = match page {
                "dlq" => ("#dlq-empty", "No dead letters."),
                "google" => ("#google-empty", "No Classroom"),
                "config" => ("#config-summary", "OK"),
                _ => ("#live-state", "Watching"),
            };
            wait_text(&c, settled.0, settled.1).await;
            shot(page).await;
        }
        c.goto(&format!("http://{}/console#try", g.admin)).await.unwrap();
        wait_text(&c, "#try-source", "classroom").await;
        let event = std::fs::read_to_string(repo().join("tests/fixtures/events/directory-add.json")).unwrap_or_else(|_| json!({
            "specversion": "1.0", "id": "e-1", "source": "directory", "type": "directory.users.makeAdmin",
            "subject": "users/42", "time": "2026-11-20T09:15:02Z", "datacontenttype": "application/json",
            "data": {"primaryEmail": "ada@example.edu"}, "meta": {}
        }).to_string());
        type_into(&c, "#try-input", &event).await;
        click(&c, "#try-form button[type=submit]").await;
        wait_text(&c, "#try-result", "sink").await;
        shot("try").await;
    })
    .await;
}
