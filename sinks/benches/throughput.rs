//! Sink throughput, each beside a baseline measured in the same run (bench/sinks.sh):
//!
//! * **kafka**: the Kafka sink against a plain rdkafka `FutureProducer` with the same settings
//!   (idempotent, `acks=all`), sending the same records (the event as CloudEvents JSON, keyed
//!   by subject) to the same tansu broker, with as many in flight as the sink's default
//!   `concurrency` (512). Target: the sink at 0.8 of the plain producer or better.
//! * **webhook**: the webhook sink against plain reqwest POSTs of the same body, to the same
//!   loopback receiver, 16 in flight (the default `concurrency`).
//! * **slack**: the Slack sink to the same receiver: unpaced (`rate_limit: none`) with and
//!   without packing, and with its defaults (1 message/s, packs of 20), where the rate is
//!   events per second that the pace allows.
//!
//! Each delivery renders the sink's templates as the engine does; the engine itself (journal,
//! retries) is not in the loop: this measures the sinks. Rounds alternate baseline and sink
//! and the median is reported, because the machine is shared.
//!
//! `cargo bench -p herald-sinks --bench throughput [-- kafka|webhook|slack]`;
//! `HERALD_BENCH_RECORDS` (default 50000) records per Kafka round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use herald_core::config::{self, Config, Registry};
use herald_core::template::Templates;
use herald_core::{Delivery, Event, Sink};
use herald_testkit::Receiver;
use herald_testkit::tansu::Tansu;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

const ROUNDS: usize = 3;

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    runtime.block_on(async {
        if wants("kafka") {
            kafka().await;
        }
        if wants("webhook") {
            webhook().await;
        }
        if wants("slack") {
            slack().await;
        }
    });
}

fn event(n: usize) -> Event {
    let mut e = Event::new(
        format!("bench/{n}"),
        "directory",
        "directory.users.add",
        chrono::Utc::now(),
        serde_json::json!({
            "kind": "admin#directory#user",
            "id": n.to_string(),
            "primaryEmail": format!("student{n}@example.edu"),
        }),
    )
    .with_subject(format!("users/{n}"));
    e.meta.insert("resourceState".into(), "add".into());
    e
}

fn load(yaml: &str) -> Config {
    let mut registry = Registry::default();
    herald_sinks::register(&mut registry);
    config::parse(yaml, std::path::Path::new("bench.yaml"), &registry, &|_| {
        None
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Builds sink `name` of `config`, once, as the gateway does.
fn build(config: &Config, name: &str) -> Arc<dyn Sink> {
    config
        .sink(name)
        .expect("the sink")
        .spec
        .build(&Default::default())
        .expect("the sink builds")
}

/// Delivers `events` to `sink` (named `name` in `config`), `in_flight` at a time; returns
/// events/s.
async fn run_sink(
    config: &Config,
    sink: &Arc<dyn Sink>,
    name: &str,
    events: &[Event],
    in_flight: usize,
) -> f64 {
    let templates = &config.templates;
    let start = Instant::now();
    let failures = stream::iter(events)
        .map(|e| {
            let sink = sink.clone();
            async move {
                let rendered = templates
                    .render("bench", name, &Templates::context(e))
                    .expect("the templates render");
                sink.deliver(Delivery {
                    event: e,
                    json: &e.to_json(),
                    route: "bench",
                    sink: name,
                    rendered: &rendered,
                    turn: &herald_core::sink::ALWAYS,
                })
                .await
            }
        })
        .buffer_unordered(in_flight)
        .filter(|r| std::future::ready(r.is_err()))
        .count()
        .await;
    assert_eq!(failures, 0, "every delivery succeeds");
    events.len() as f64 / start.elapsed().as_secs_f64()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

// ---------------------------------------------------------------------------------------
// Kafka

async fn kafka() {
    let records: usize = std::env::var("HERALD_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    // The tests' broker launcher (herald-testkit): tansu in memory on a free port.
    let broker = Tansu::start().await;
    for topic in ["bench-plain", "bench-sink"] {
        broker.create_topic(topic, 1).await;
    }
    let brokers = broker.brokers();
    let config = load(&format!(
        "sinks:\n  bus: {{ type: kafka, brokers: \"{brokers}\", topic: bench-sink, key: \"{{{{ subject }}}}\" }}\n"
    ));
    let in_flight = config.sink("bus").expect("the sink").policy.concurrency;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("client.id", "plain")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "25000")
        .create()
        .expect("a plain producer");

    let bus = build(&config, "bus");
    let warmup: Vec<Event> = (0..100).map(event).collect();
    plain_producer(&producer, &warmup, in_flight).await;
    run_sink(&config, &bus, "bus", &warmup, in_flight).await;

    let events: Vec<Event> = (0..records).map(event).collect();
    let (mut plain, mut sink) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        plain.push(plain_producer(&producer, &events, in_flight).await);
        sink.push(run_sink(&config, &bus, "bus", &events, in_flight).await);
    }
    let (plain, sink) = (median(plain), median(sink));
    println!(
        "kafka    {records} records/round, {in_flight} in flight, tansu on loopback, median of {ROUNDS} rounds\n  \
         plain rdkafka producer  {plain:>9.0} records/s\n  \
         kafka sink              {sink:>9.0} records/s   ratio {:.2} (target ≥ 0.80)",
        sink / plain
    );
}

/// The same records the sink sends (structured mode), straight from rdkafka.
async fn plain_producer(producer: &FutureProducer, events: &[Event], in_flight: usize) -> f64 {
    let start = Instant::now();
    let failures = stream::iter(events)
        .map(|e| async move {
            let payload = e.to_json();
            let key = e.subject.clone().unwrap_or_default();
            let headers = OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some("application/cloudevents+json; charset=UTF-8"),
            });
            let record = FutureRecord::to("bench-plain")
                .payload(&payload)
                .key(&key)
                .headers(headers);
            producer
                .send(record, Timeout::After(Duration::from_secs(5)))
                .await
        })
        .buffer_unordered(in_flight)
        .filter(|r| std::future::ready(r.is_err()))
        .count()
        .await;
    assert_eq!(failures, 0, "every record is acknowledged");
    events.len() as f64 / start.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------------------------------
// HTTP

async fn webhook() {
    let rx = Receiver::start().await;
    let config = load(&format!(
        "sinks:\n  hook: {{ type: webhook, url: \"{}\" }}\n",
        rx.url("/hook")
    ));
    let in_flight = config.sink("hook").expect("the sink").policy.concurrency;
    let client = reqwest::Client::new();
    let url = rx.url("/plain");
    let events: Vec<Event> = (0..5000).map(event).collect();
    let hook = build(&config, "hook");
    let (mut plain, mut sink) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        plain.push(plain_posts(&client, &url, &events, in_flight).await);
        sink.push(run_sink(&config, &hook, "hook", &events, in_flight).await);
    }
    let (plain, sink) = (median(plain), median(sink));
    println!(
        "webhook  {} requests/round, {in_flight} in flight, loopback receiver, median of {ROUNDS} rounds\n  \
         plain reqwest POSTs     {plain:>9.0} requests/s\n  \
         webhook sink            {sink:>9.0} deliveries/s ratio {:.2}",
        events.len(),
        sink / plain
    );
}

async fn plain_posts(
    client: &reqwest::Client,
    url: &str,
    events: &[Event],
    in_flight: usize,
) -> f64 {
    let start = Instant::now();
    let failures = stream::iter(events)
        .map(|e| async move {
            client
                .post(url)
                .header("content-type", "application/cloudevents+json")
                .body(e.to_json())
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
        })
        .buffer_unordered(in_flight)
        .filter(|r| std::future::ready(r.is_err()))
        .count()
        .await;
    assert_eq!(failures, 0);
    events.len() as f64 / start.elapsed().as_secs_f64()
}

async fn slack() {
    let rx = Receiver::start().await;
    let sink = |name: &str, extra: &str| {
        format!(
            "  {name}: {{ type: slack, webhook_url: \"{}\", text: \"{{{{ data.primaryEmail }}}}: {{{{ meta.resourceState }}}}\"{extra} }}\n",
            rx.url(&format!("/services/{name}"))
        )
    };
    let config = load(&format!(
        "sinks:\n{}{}{}",
        sink("unpaced", ", rate_limit: none"),
        sink("single", ", rate_limit: none, max_pack: 1"),
        sink("defaults", ""),
    ));
    let in_flight = config.sink("unpaced").expect("the sink").policy.concurrency;
    let events: Vec<Event> = (0..5000).map(event).collect();
    let messages = |path: &str| {
        rx.received()
            .iter()
            .filter(|r| r.uri.path() == path)
            .count()
    };
    let unpaced = run_sink(
        &config,
        &build(&config, "unpaced"),
        "unpaced",
        &events,
        in_flight,
    )
    .await;
    let unpaced_messages = messages("/services/unpaced");
    let single = run_sink(
        &config,
        &build(&config, "single"),
        "single",
        &events,
        in_flight,
    )
    .await;
    let paced_events = &events[..200];
    let defaults = run_sink(
        &config,
        &build(&config, "defaults"),
        "defaults",
        paced_events,
        in_flight,
    )
    .await;
    let default_messages = messages("/services/defaults");
    println!(
        "slack    loopback receiver, {in_flight} in flight (the default concurrency)\n  \
         unpaced, packs of ≤20   {unpaced:>9.0} events/s   ({} events in {unpaced_messages} messages)\n  \
         unpaced, no packing     {single:>9.0} events/s\n  \
         defaults (1/s, burst 3) {defaults:>9.1} events/s   ({} events in {default_messages} messages)",
        events.len(),
        paced_events.len(),
    );
}
