//! The Slack sink against a loopback receiver that answers like Slack: `ok`, 429 with
//! `Retry-After`, `invalid_payload`, `channel_not_found`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::testing::{
    Answer, Pipeline, Receiver, build, deliver, deliver_in_turn, load, user_event,
};

fn sink_yaml(rx: &Receiver, extra: &str) -> String {
    format!(
        "  chat:\n    type: slack\n    webhook_url: \"{}\"\n    text: \"{{{{ data.primaryEmail }}}}: {{{{ meta.resourceState }}}}\"\n{extra}",
        rx.url("/services/T000/B000/XXXX")
    )
}

/// The gaps between consecutive requests.
fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test]
async fn a_message_arrives_with_the_rendered_fields() {
    let rx = Receiver::start().await;
    let yaml = sink_yaml(
        &rx,
        "    channel: \"#it-{{ meta.resourceState }}\"\n    username: Herald\n    icon_emoji: \":school:\"\n    blocks: '[{\"type\": \"section\", \"text\": {\"type\": \"mrkdwn\", \"text\": \"*{{ data.primaryEmail }}*\"}}]'\n",
    );
    let config = load(&format!("sinks:\n{yaml}")).unwrap();
    let sink = build(&config, "chat");
    deliver(&config, sink.as_ref(), "chat", &user_event(7))
        .await
        .unwrap();
    let got = rx.wait_for(1).await;
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].uri.path(), "/services/T000/B000/XXXX");
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    assert_eq!(
        got[0].json(),
        json!({
            "text": "user7@example.edu: add",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*user7@example.edu*"}}],
            "channel": "#it-add",
            "username": "Herald",
            "icon_emoji": ":school:",
        })
    );
}

#[tokio::test]
async fn the_default_rate_is_one_message_a_second_after_a_small_burst() {
    let rx = Receiver::start().await;
    // No packing, so every event is its own message and the pace shows.
    let pipeline = Pipeline::start(&sink_yaml(&rx, "    max_pack: 1\n"));
    pipeline.commit((0..6).map(user_event)).await;
    let got = rx.wait_for(6).await;
    pipeline.settled(Duration::from_secs(10)).await;
    let times: Vec<Instant> = got.iter().map(|r| r.at).collect();
    let gaps = gaps(&times);
    // The burst of 3 goes at once; then one a second.
    assert!(
        gaps[..2].iter().all(|g| *g < Duration::from_millis(500)),
        "{gaps:?}"
    );
    assert!(
        gaps[2..].iter().all(|g| *g >= Duration::from_millis(900)),
        "{gaps:?}"
    );
    assert_eq!(rx.received().len(), 6, "no message was sent twice");
    pipeline.stop().await;
}

/// On a shared queue a paced Slack sink is delivered by one gateway at a time
/// (docs/architecture.md §10.2, "Paced sinks"). Deliveries still waiting behind the pace
/// when this gateway's turn ends are not posted: they fail as retryable, for the gateway
/// that has the turn now.
#[tokio::test]
async fn deliveries_waiting_when_the_turn_ends_are_not_sent() {
    let rx = Receiver::start().await;
    let config = load(&format!(
        "sinks:\n{}",
        sink_yaml(&rx, "    rate_limit: 1/s\n    burst: 1\n    max_pack: 1\n")
    ))
    .unwrap();
    let sink = build(&config, "chat");
    let turn = herald_core::sink::Turn::ended();
    turn.run_until(Instant::now() + Duration::from_millis(500));
    let sends = (0..3).map(|n| {
        let (config, sink, turn) = (&config, sink.as_ref(), &turn);
        async move { deliver_in_turn(config, sink, "chat", &user_event(n), turn).await }
    });
    let results = futures_util::future::join_all(sends).await;
    // The first goes at once; the next would go a second later, after the turn.
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for failed in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(failed.is_retryable(), "{failed:?}");
        assert!(failed.message().contains("turn"), "{failed:?}");
    }
    assert_eq!(rx.received().len(), 1, "nothing posted after the turn");
}

#[tokio::test]
async fn a_429_pauses_the_sink_for_its_retry_after() {
    let rx = Receiver::start().await;
    rx.script([Answer::status(429, "rate_limited").with_header("retry-after", "2")]);
    let pipeline = Pipeline::start(&sink_yaml(
        &rx,
        "    delivery: { initial_backoff: 50ms, max_backoff: 100ms }\n",
    ));
    pipeline.commit([user_event(1)]).await;
    let got = rx.wait_for(2).await;
    pipeline.settled(Duration::from_secs(10)).await;
    let waited = got[1].at - got[0].at;
    assert!(
        waited >= Duration::from_millis(1950),
        "retried after {waited:?}, before the 2 s Slack asked for"
    );
    assert_eq!(got[1].json()["text"], "user1@example.edu: add");
    assert!(pipeline.dead_letters().is_empty());
    pipeline.stop().await;
}

#[tokio::test]
async fn slack_errors_dead_letter_with_their_reason() {
    let rx = Receiver::start().await;
    rx.script([
        Answer::status(400, "invalid_payload"),
        Answer::status(404, "channel_not_found"),
    ]);
    let pipeline = Pipeline::start(&sink_yaml(&rx, ""));
    pipeline.commit([user_event(1)]).await;
    rx.wait_for(1).await;
    pipeline.settled(Duration::from_secs(10)).await;
    pipeline.commit([user_event(2)]).await;
    rx.wait_for(2).await;
    pipeline.settled(Duration::from_secs(10)).await;

    let dead = pipeline.dead_letters();
    let reasons: Vec<String> = dead
        .iter()
        .map(|d| serde_json::to_string(&d.kind).unwrap())
        .collect();
    assert_eq!(dead.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].contains("Slack refused the message: invalid_payload (HTTP 400)"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("Slack refused the message: channel_not_found (HTTP 404)"),
        "{reasons:?}"
    );
    assert_eq!(rx.received().len(), 2, "permanent errors are not retried");
    pipeline.stop().await;
}

#[tokio::test]
async fn rollup_errors_and_5xx_are_retried() {
    let rx = Receiver::start().await;
    rx.script([
        Answer::status(500, "rollup_error"),
        Answer::status(503, "down"),
    ]);
    let pipeline = Pipeline::start(&sink_yaml(
        &rx,
        "    delivery: { initial_backoff: 20ms, max_backoff: 50ms }\n",
    ));
    pipeline.commit([user_event(1)]).await;
    let got = rx.wait_for(3).await;
    pipeline.settled(Duration::from_secs(10)).await;
    assert!(pipeline.dead_letters().is_empty());
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].json()["text"], "user1@example.edu: add");
    pipeline.stop().await;
}

#[tokio::test]
async fn a_burst_of_200_is_packed_into_far_fewer_messages_and_none_is_lost() {
    let rx = Receiver::start().await;
    let pipeline = Pipeline::start(&sink_yaml(&rx, "    rate_limit: 2/s\n"));
    let start = Instant::now();
    pipeline.commit((0..200).map(user_event)).await;
    pipeline.settled(Duration::from_secs(60)).await;
    let elapsed = start.elapsed();
    let got = rx.received();

    let mut lines = Vec::new();
    for message in &got {
        let text = message.json()["text"].as_str().unwrap().to_owned();
        let count = text.lines().count();
        assert!(
            count <= 20,
            "at most max_pack (20) events per message, got {count}"
        );
        lines.extend(text.lines().map(str::to_owned));
    }
    let expected: BTreeSet<String> = (0..200)
        .map(|n| format!("user{n}@example.edu: add"))
        .collect();
    assert_eq!(lines.len(), 200, "every event exactly once");
    assert_eq!(lines.into_iter().collect::<BTreeSet<_>>(), expected);
    assert!(
        got.len() <= 20,
        "200 events in {} messages; packing should need about 11",
        got.len()
    );
    // Packing, not a faster pace: 2 messages a second after the burst of 3.
    let times: Vec<Instant> = got.iter().map(|r| r.at).collect();
    for gap in &gaps(&times)[3..] {
        assert!(*gap >= Duration::from_millis(450), "{gap:?}");
    }
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    assert!(pipeline.dead_letters().is_empty());
    pipeline.stop().await;
}

#[tokio::test]
async fn a_pack_refused_for_its_content_is_sent_again_one_by_one() {
    let rx = Receiver::start().await;
    rx.script([
        Answer::status(200, "ok"),
        Answer::status(400, "invalid_payload"),
        Answer::status(400, "invalid_payload"),
    ]);
    let config = load(&format!(
        "sinks:\n{}",
        sink_yaml(&rx, "    rate_limit: 5/s\n    burst: 1\n")
    ))
    .unwrap();
    let sink = build(&config, "chat");
    // The first message takes the only token, so the next three wait together.
    deliver(&config, sink.as_ref(), "chat", &user_event(0))
        .await
        .unwrap();
    let events: Vec<_> = (1..=3).map(user_event).collect();
    let results = futures_util::future::join_all(
        events
            .iter()
            .map(|e| deliver(&config, sink.as_ref(), "chat", e)),
    )
    .await;
    let texts: Vec<String> = rx
        .received()
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        texts,
        [
            "user0@example.edu: add",
            "user1@example.edu: add\nuser2@example.edu: add\nuser3@example.edu: add",
            "user1@example.edu: add",
            "user2@example.edu: add",
            "user3@example.edu: add",
        ]
    );
    assert!(!results[0].as_ref().unwrap_err().is_retryable());
    assert_eq!(results[1], Ok(()), "a good neighbour is delivered");
    assert_eq!(results[2], Ok(()));
}

#[tokio::test]
async fn blocks_that_render_to_bad_json_fail_before_sending() {
    let rx = Receiver::start().await;
    let yaml = sink_yaml(
        &rx,
        "    blocks: '[{% for x in [1] %}{\"type\": \"{{ data.primaryEmail }}\"{% endfor %}]'\n",
    );
    let config = load(&format!("sinks:\n{yaml}")).unwrap();
    let sink = build(&config, "chat");
    let err = deliver(&config, sink.as_ref(), "chat", &user_event(1))
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    assert!(err.message().contains("did not render to JSON"), "{err}");
    assert!(rx.received().is_empty());
}

#[tokio::test]
async fn the_webhook_url_is_in_no_error() {
    let config = load(
        "sinks:\n  chat: { type: slack, webhook_url: \"http://127.0.0.1:9/services/T0/B0/S3CRET\", text: hi }\n",
    )
    .unwrap();
    let sink = build(&config, "chat");
    let err = deliver(&config, sink.as_ref(), "chat", &user_event(1))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(!err.message().contains("S3CRET"), "{err}");
    assert!(!format!("{:?}", config.sink("chat").unwrap().spec).contains("S3CRET"));
}

#[test]
fn describe_shows_the_host_and_the_pace_never_the_secret() {
    let config = load(
        "sinks:\n  chat: { type: slack, webhook_url: \"https://hooks.slack.com/services/T0/B0/S3CRET\", text: hi }\n",
    )
    .unwrap();
    assert_eq!(
        config.sink("chat").unwrap().spec.describe(),
        "https://hooks.slack.com/services/*** (1/s, burst 3, up to 20 events per message)"
    );
    let policy = &config.sink("chat").unwrap().policy;
    assert_eq!(policy.rate_per_second, None, "the sink paces itself");
    assert!(
        policy.concurrency >= 20,
        "a backlog can wait inside the sink"
    );
}

#[test]
fn config_mistakes_are_reported_where_they_are() {
    let err = load(concat!(
        "sinks:\n",
        "  a: { type: slack, webhook_url: \"http://hooks.slack.com/services/x\", text: hi }\n",
        "  b: { type: slack, webhook_url: \"https://hooks.slack.com/x\", text: hi, max_pack: 0 }\n",
        "  c: { type: slack, webhook_url: \"https://hooks.slack.com/x\", text: hi, rate_limit: fast }\n",
        "  d: { type: slack, webhook_url: \"https://hooks.slack.com/x\", text: hi, blocks: '[{\"type\": }]' }\n",
        "  e: { type: slack, webhook_url: \"https://hooks.slack.com/x\", txt: hi }\n",
        "  f: { type: slack, webhook_url: \"https://hooks.slack.com/x\", text: \"{{ oops\" }\n",
    ))
    .unwrap_err();
    for expected in [
        "routes.yaml:2:34: sink `a`: `webhook_url` must be an https:// URL",
        "routes.yaml:3:83: sink `b`: `max_pack` must be between 1 (never pack) and 100",
        "routes.yaml:4:85: sink `c`: `rate_limit`: `fast` is not a rate",
        "routes.yaml:5:81: sink `d`: `blocks`: not JSON (expected value at line 1 column 11",
        "routes.yaml:6:63: sink `e`: unknown key `txt`; did you mean `text`?",
        "routes.yaml:7:69: sink `f`: template `text`: syntax error",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}
