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
            // Events/s over the last minute: one event in 60 s.
            wait_text(
                &c,
                "#sources tr[data-source=directory] [data-col=rate]",
                "0.02",
            )
            .await;
            // The last hour's chart has this minute's delivery as a bar, and says so.
            eventually_async("a delivered bar in the chart", PAGE, || async {
                let bars = c
                    .find_all(Locator::Css(
                        "#sinks tr[data-sink=audit] svg.chart rect.delivered",
                    ))
                    .await
                    .ok()?;
                (bars.len() == 1).then_some(())
            })
            .await;
            wait_text(
                &c,
                "#sinks tr[data-sink=audit] [data-col=chart]",
                "1 delivered, 0 failed in the last hour",
            )
            .await;
            assert!(
                !c.find(Locator::Css("#cluster"))
                    .await
                    .unwrap()
                    .is_displayed()
                    .await
                    .unwrap(),
                "a local queue has no cluster to describe"
            );
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
            // Opened, it lists the deliveries it produced and how each ended.
            wait_text(
                &c,
                "#live-events .deliveries",
                "route everything → sink audit: delivered",
            )
            .await;
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

/// A gateway whose only sink, a webhook, answers 400: every event becomes a dead letter
/// at its first attempt. The directory must outlive the gateway.
async fn failing_hook() -> (Receiver, tempfile::TempDir, Gateway) {
    let rx = Receiver::start().await;
    rx.otherwise(Answer::status(400, "no such hook"));
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_head()
        + &format!(
            "sinks:\n  hook:\n    type: webhook\n    url: {}\n    delivery: {{ max_attempts: 1 }}\nroutes:\n  - name: to-hook\n    to: [hook]\n",
            rx.url("/hook")
        );
    let g = Gateway::start(dir.path(), &with_token(yaml));
    (rx, dir, g)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sinks_dead_letter_is_replayed_after_the_receiver_is_fixed() {
    let (rx, _dir, g) = failing_hook().await;
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
        // When it was made (or last renewed): the channel's creation.
        let renewed = "#google-table tr[data-name='directory/add/example.edu'] [data-col=renewed]";
        wait_text(&c, renewed, "s ago").await;
        let made = c
            .find(Locator::Css(renewed))
            .await
            .unwrap()
            .attr("title")
            .await
            .unwrap()
            .unwrap_or_default();
        assert!(made.starts_with("20"), "an RFC 3339 time: {made}");
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
        // The last renewal is the new channel's.
        eventually_async("the last renewal to move", PAGE, || async {
            let now = c
                .find(Locator::Css(renewed))
                .await
                .ok()?
                .attr("title")
                .await
                .ok()??;
            (now != made).then_some(())
        })
        .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrying_sink_shows_its_next_retry_and_its_failures() {
    let rx = Receiver::start().await;
    // Retry-After sets the least wait: the retry is 20 to 30 minutes away.
    rx.otherwise(Answer::status(503, "down for maintenance").with_header("retry-after", "1200"));
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_head()
        + &format!(
            "sinks:\n  hook:\n    type: webhook\n    url: {}\n    delivery: {{ max_attempts: 5, initial_backoff: 30m, max_backoff: 30m }}\nroutes:\n  - name: to-hook\n    to: [hook]\n",
            rx.url("/hook")
        );
    let g = Gateway::start(dir.path(), &with_token(yaml));
    let r = directory_request(&reqwest::Client::new(), &g, "chan-1", 3)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    Browser::run("a_retrying_sink_shows_its_next_retry", |c| async move {
        log_in(&c, g.admin, ADMIN_TOKEN).await;
        wait_text(&c, "#sinks tr[data-sink=hook] [data-col=pending]", "1").await;
        let next = wait_text(
            &c,
            "#sinks tr[data-sink=hook] [data-col=next-retry]",
            "in 0h ",
        )
        .await;
        let minutes: u32 = next
            .trim_start_matches("in 0h ")
            .split('m')
            .next()
            .and_then(|m| m.trim().parse().ok())
            .unwrap_or(0);
        assert!((19..=30).contains(&minutes), "{next}");
        wait_text(
            &c,
            "#sinks tr[data-sink=hook] [data-col=chart]",
            "0 delivered, 1 failed in the last hour",
        )
        .await;
        assert_eq!(
            c.find_all(Locator::Css(
                "#sinks tr[data-sink=hook] svg.chart rect.failed"
            ))
            .await
            .unwrap()
            .len(),
            1
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_page_masks_secrets_and_shows_a_refused_reload_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = with_token(
        config_head()
            + "sinks:\n  audit: { type: file, path: audit.jsonl }\n  chat:\n    type: webhook\n    url: https://hooks.example.edu/services/T0/B0/s3cr3t-hook-path\nroutes:\n  - name: everything\n    to: [audit, chat]\n",
    );
    let g = Gateway::start(dir.path(), &yaml);
    Browser::run("config_page", |c| async move {
        log_in(&c, g.admin, ADMIN_TOKEN).await;
        c.goto(&format!("http://{}/console#config", g.admin))
            .await
            .unwrap();
        let text = wait_text(&c, "#config-text", "hooks.example.edu").await;
        assert!(text.contains("https://hooks.example.edu/***"), "{text}");
        assert!(!text.contains("s3cr3t-hook-path"), "{text}");
        assert!(!text.contains(ADMIN_TOKEN), "the admin token is masked too");
        let page = c.source().await.unwrap();
        assert!(!page.contains("s3cr3t-hook-path") && !page.contains(ADMIN_TOKEN));
        wait_text(&c, "#config-reload", "No reload since the gateway started.").await;

        // A broken edit: a route to a sink that does not exist.
        let file = g.dir.join("routes.yaml");
        let broken = std::fs::read_to_string(&file)
            .unwrap()
            .replace("to: [audit, chat]", "to: [audit, nowhere]");
        std::fs::write(&file, broken).unwrap();
        let r = reqwest::Client::new()
            .post(format!("http://{}/-/reload", g.admin))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert!(!r.status().is_success(), "the reload is refused");

        c.goto(&format!("http://{}/console#overview", g.admin))
            .await
            .unwrap();
        c.goto(&format!("http://{}/console#config", g.admin))
            .await
            .unwrap();
        let reload = wait_text(&c, "#config-reload", "Last reload refused").await;
        assert!(reload.contains("the running config stays"), "{reload}");
        let error = wait_text(&c, "#config-reload li", "nowhere").await;
        // `…/routes.yaml:LINE:COLUMN: …`
        let at = error.split("routes.yaml:").nth(1).unwrap_or_default();
        let mut parts = at.splitn(3, ':');
        let (line, column) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        assert!(
            line.parse::<u32>().is_ok() && column.parse::<u32>().is_ok(),
            "line:column in {error}"
        );
        // The page shows the file as it is now, still masked.
        let text = wait_text(&c, "#config-text", "nowhere").await;
        assert!(!text.contains("s3cr3t-hook-path"), "{text}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_dead_letters_after_a_confirmation() {
    let (_rx, _dir, g) = failing_hook().await;
    let client = reqwest::Client::new();
    for n in [1, 2] {
        let r = directory_request(&client, &g, "chan-1", n)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    let g = &g;
    Browser::run("purge_dead_letters", |c| async move {
        log_in(&c, g.admin, ADMIN_TOKEN).await;
        wait_text(&c, "#sinks tr[data-sink=hook] [data-col=dead]", "2").await;
        c.goto(&format!("http://{}/console#dlq", g.admin))
            .await
            .unwrap();
        wait_text(&c, "#dlq-table tbody tr:nth-child(2)", "hook").await;

        // Cancelled: nothing happens.
        click(&c, "#dlq-purge").await;
        wait_text(
            &c,
            "#dlq-confirm",
            "Purge the 2 dead letter(s) shown? They cannot be replayed afterwards.",
        )
        .await;
        click(&c, "#dlq-confirm-no").await;
        eventually_async("the confirmation to close", PAGE, || async {
            let shown = c
                .find(Locator::Css("#dlq-confirm"))
                .await
                .ok()?
                .is_displayed()
                .await
                .ok()?;
            (!shown).then_some(())
        })
        .await;
        wait_text(&c, "#dlq-table tbody tr:nth-child(2)", "hook").await;
        assert!(!g.log().contains("action=\"purge\""), "nothing purged yet");

        // Confirmed: both go.
        click(&c, "#dlq-purge").await;
        wait_text(&c, "#dlq-confirm", "Purge the 2 dead letter(s)").await;
        click(&c, "#dlq-confirm-yes").await;
        wait_text(&c, "#dlq-result", "Purged 2 dead letters.").await;
        wait_text(&c, "#dlq-empty", "No dead letters.").await;
        c.goto(&format!("http://{}/console#overview", g.admin))
            .await
            .unwrap();
        wait_text(&c, "#queue", "0 dead letter(s)").await;
    })
    .await;
    assert!(g.log().contains("action=\"purge\""), "audited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_fits_a_phone_screen() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::start(
        dir.path(),
        &with_token(
            config_head()
                + "sinks:\n  audit: { type: file, path: audit.jsonl }\nroutes:\n  - name: everything\n    to: [audit]\n",
        ),
    );
    send_hostile_event(&g, 1).await;
    Browser::run("every_page_fits_a_phone_screen", |c| async move {
        c.set_window_size(390, 844).await.unwrap();
        log_in(&c, g.admin, ADMIN_TOKEN).await;
        wait_text(&c, "#sinks tr[data-sink=audit] [data-col=delivered]", "1").await;
        let pages = [
            ("overview", "#sinks"),
            ("dlq", "#dlq-empty"),
            ("google", "#google-empty"),
            ("try", "#try-form"),
            ("config", "#config-text"),
            ("live", "#live-form"),
        ];
        for (page, main) in pages {
            // Through the navigation, as a thumb would.
            click(&c, &format!("nav a[data-page={page}]")).await;
            eventually_async(&format!("page {page} to show"), PAGE, || async {
                c.find(Locator::Css(main)).await.ok()?.is_displayed().await.ok()?.then_some(())
            })
            .await;
            let link = c.find(Locator::Css(&format!("nav a[data-page={page}]"))).await.unwrap();
            assert_eq!(link.attr("aria-current").await.unwrap().as_deref(), Some("page"));
            let (scroll, inner) = eventually_async("the layout to settle", PAGE, || async {
                let v = c
                    .execute(
                        "return [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]",
                        vec![],
                    )
                    .await
                    .ok()?;
                let n = |i: usize| v.get(i).and_then(|x| x.as_u64());
                Some((n(0)?.max(n(1)?), n(2)?))
            })
            .await;
            assert!(inner <= 400, "a phone-wide window: {inner}");
            assert!(scroll <= inner, "page {page}: the body is {scroll}px wide in a {inner}px window");
            // Every navigation link is on screen.
            for (other, _) in pages {
                let rect = c
                    .execute(
                        &format!("const r = document.querySelector('nav a[data-page={other}]').getBoundingClientRect(); return [r.left, r.right];"),
                        vec![],
                    )
                    .await
                    .unwrap();
                let right = rect.get(1).and_then(|x| x.as_f64()).unwrap_or(f64::MAX);
                let left = rect.get(0).and_then(|x| x.as_f64()).unwrap_or(-1.0);
                assert!(left >= 0.0 && right <= inner as f64, "link {other} off screen on {page}: {rect:?}");
            }
        }
        // The main table of the overview is there and readable (its own scroll box, not the page's).
        click(&c, "nav a[data-page=overview]").await;
        wait_text(&c, "#sinks tr[data-sink=audit]", "audit").await;
    })
    .await;
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
