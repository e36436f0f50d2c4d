//! The Google lifecycle against a local fake of Google's token endpoint, Classroom
//! registrations and Directory channels (herald-testkit), with the real journal and the
//! real HTTP server receiving the channels' notifications. Days pass in milliseconds: the
//! lifecycle follows tokio's clock (`Clock::tokio`), and the tests move it with
//! `tokio::time::pause()` + `advance()`, then let things run on the real clock again.

use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use herald_core::Event;
use herald_core::ingest::{Committed, Ingest, IngestError, RejectedInput};
use herald_core::journal::Journal;
use herald_sources::ServerHandle;
use herald_sources::google::{self, Clock, Links, Status};
use herald_testkit::google::{ACCESS_TOKEN, FakeGoogle};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::common::*;
use herald_testkit::wait::{eventually_async, until};

const WAIT: Duration = Duration::from_secs(20);
const SUBJECT: &str = "admin@district.example.edu";
const ACCOUNT: &str = "herald@district-edu.iam.gserviceaccount.com";

/// The real journal, remembering which events it took as new.
struct Counting {
    journal: Arc<Journal>,
    events: Mutex<Vec<Event>>,
}

#[async_trait]
impl Ingest for Counting {
    async fn commit(&self, event: Event) -> Result<Committed, IngestError> {
        let committed = self.journal.commit(event.clone()).await?;
        if committed == Committed::New {
            self.events.lock().unwrap().push(event);
        }
        Ok(committed)
    }
    async fn reject(&self, input: RejectedInput) -> Result<(), IngestError> {
        self.journal.reject(input).await
    }
    fn ready(&self) -> Result<(), String> {
        self.journal.ready()
    }
}

/// A gateway's sources and lifecycle on one journal directory.
struct Run {
    journal: Arc<Journal>,
    ingest: Arc<Counting>,
    server: ServerHandle,
    lifecycle: Option<google::Lifecycle>,
    stop: CancellationToken,
}

impl Run {
    async fn start(dir: &Path, yaml: &str, clock: Clock) -> Run {
        let config = parse_config(yaml, dir);
        let routes = Arc::new(ArcSwap::from_pointee(config.routes.clone()));
        let journal = Arc::new(Journal::open(&config.queue, routes, &[]).unwrap());
        let ingest = Arc::new(Counting {
            journal: journal.clone(),
            events: Mutex::new(Vec::new()),
        });
        let stop = CancellationToken::new();
        let links = Links::default();
        let server = herald_sources::serve_linked(
            &config,
            ingest.clone(),
            Some(metrics_render()),
            links.clone(),
            stop.clone(),
        )
        .await
        .unwrap();
        let store: Arc<dyn google::StateStore> = journal.clone();
        let lifecycle = google::start(
            &config,
            store,
            journal.health().clone(),
            links,
            clock,
            None,
            stop.clone(),
        )
        .await
        .unwrap();
        Run {
            journal,
            ingest,
            server,
            lifecycle,
            stop,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.local_addr)
    }

    fn events(&self) -> usize {
        self.ingest.events.lock().unwrap().len()
    }

    async fn status(&self) -> Vec<Status> {
        let lifecycle = self.lifecycle.as_ref().expect("the lifecycle runs");
        lifecycle.control.status().await.unwrap()
    }

    /// Returns once the lifecycle loop has done a whole pass of its work after this call
    /// began: the loop answers commands between passes, so the second of two status calls
    /// is answered only after a pass that started after the first was answered. What the
    /// loop would do on its own by now (a call, a recorded failure) has then been done.
    async fn settled(&self) {
        self.status().await;
        self.status().await;
    }

    async fn row(&self, name: &str) -> Status {
        let rows = self.status().await;
        rows.into_iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no status row {name}"))
    }

    async fn stop(self) {
        self.stop.cancel();
        self.server.stopped().await;
        if let Some(lifecycle) = self.lifecycle {
            lifecycle.task.await.unwrap();
        }
        self.journal.close().await;
    }
}

/// Moves tokio's clock (and so the lifecycle's and the fake Google's) by `by`.
async fn advance(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

fn hours(h: f64) -> Duration {
    Duration::from_secs_f64(h * 3600.0)
}

/// A free port for the source, so its `address` can be written in the config.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn fake(clock: Clock) -> FakeGoogle {
    FakeGoogle::start(&key_pem("a.pub.pem"), Arc::new(move || clock.now())).await
}

/// The clock, the fake Google following it, and a directory holding the service-account key.
async fn world() -> (Clock, FakeGoogle, tempfile::TempDir) {
    let clock = Clock::tokio();
    let google = fake(clock).await;
    let dir = tempfile::tempdir().unwrap();
    write_key(dir.path());
    (clock, google, dir)
}

fn write_key(dir: &Path) {
    let key = json!({
        "type": "service_account",
        "private_key_id": "kid-1",
        "private_key": String::from_utf8(key_pem("a.pem")).unwrap(),
        "client_email": ACCOUNT,
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    std::fs::write(dir.join("sa.json"), key.to_string()).unwrap();
}

/// A config with a Classroom source (`registrations`) and a Directory source (`watch`).
fn config(google: &FakeGoogle, port: u16, name: &str, registrations: &str, watch: &str) -> String {
    let mut yaml = format!(
        "server: {{ listen: 127.0.0.1:{port} }}\nqueue: {{ path: ./data }}\n{}sources:\n",
        google.google_yaml("sa.json", SUBJECT)
    );
    if !registrations.is_empty() {
        yaml += &format!(
            "  {name}-classroom:\n    type: classroom_pubsub\n    topic: projects/district-edu/topics/classroom\n    registrations: {registrations}\n"
        );
    }
    yaml += &format!(
        "  {name}:\n    type: directory_webhook\n    path: /webhook/directory\n    channel_tokens: [fixed-token]\n"
    );
    if watch != "[]" {
        yaml += &format!(
            "    address: http://127.0.0.1:{port}/webhook/directory\n    ttl: 1h\n    watch: {watch}\n"
        );
    }
    yaml += "routes: []\n";
    yaml
}

/// The `registrations.create` calls so far.
fn creates(google: &FakeGoogle) -> Vec<herald_testkit::google::Call> {
    let mut calls = google.calls("/v1/registrations");
    calls.retain(|c| c.method == "POST");
    calls
}

fn user(id: &str, etag: &str) -> Value {
    json!({"kind": "admin#directory#user", "id": id, "etag": etag, "primaryEmail": format!("{id}@district.example.edu")})
}

#[tokio::test]
async fn registrations_are_created_with_the_right_grant_and_renewed_before_expiry() {
    let (clock, google, dir) = world().await;
    let yaml = config(
        &google,
        free_port(),
        "reg",
        "[{feed: DOMAIN_ROSTER_CHANGES}, {feed: COURSE_WORK_CHANGES, course_id: '123'}]",
        "[]",
    );
    let run = Run::start(dir.path(), &yaml, clock).await;

    until("both registrations created", WAIT, || {
        creates(&google).len() == 2
    })
    .await;
    let calls = creates(&google);
    assert_eq!(calls[0].method, "POST");
    assert_eq!(calls[0].path, "/v1/registrations");
    assert_eq!(calls[0].bearer.as_deref(), Some(ACCESS_TOKEN));
    assert_eq!(
        calls[0].body,
        json!({"feed": {"feedType": "DOMAIN_ROSTER_CHANGES"},
               "cloudPubsubTopic": {"topicName": "projects/district-edu/topics/classroom"}})
    );
    assert_eq!(
        calls[1].body["feed"],
        json!({"feedType": "COURSE_WORK_CHANGES", "courseWorkChangesInfo": {"courseId": "123"}})
    );
    let grant = &google.grants()[0];
    assert_eq!(grant["iss"], ACCOUNT);
    assert_eq!(grant["sub"], SUBJECT);
    let scopes = grant["scope"].as_str().unwrap();
    for scope in [
        "classroom.push-notifications",
        "classroom.rosters.readonly",
        "classroom.coursework.students.readonly",
    ] {
        assert!(scopes.contains(scope), "{scopes} lacks {scope}");
    }
    assert!(google.bad_grants().is_empty(), "{:?}", google.bad_grants());
    let first = run.row("reg-classroom/DOMAIN_ROSTER_CHANGES").await;
    assert_eq!(first.health, "ok");
    assert_eq!(first.id.as_deref(), Some("registration-1"));
    let expiry = first.expires.unwrap();

    // Five days on (before 80% of the week) nothing is renewed …
    advance(hours(5.0 * 24.0)).await;
    run.settled().await;
    assert_eq!(creates(&google).len(), 2);
    // … at 5.7 days both are, well before they expire.
    advance(hours(0.7 * 24.0)).await;
    until("both registrations renewed", WAIT, || {
        creates(&google).len() == 4
    })
    .await;
    for call in &creates(&google)[2..] {
        assert!(
            call.at < expiry - chrono::TimeDelta::days(1),
            "renewed at {}",
            call.at
        );
    }
    let renewed = run.row("reg-classroom/DOMAIN_ROSTER_CHANGES").await;
    assert!(renewed.expires.unwrap() > expiry + chrono::TimeDelta::days(5));
    assert_eq!(renewed.health, "ok");
    // Classroom answered with new ids, so the replaced registrations were deleted.
    until("the replaced registrations deleted", WAIT, || {
        google.registrations().iter().filter(|r| r.deleted).count() == 2
    })
    .await;
    run.stop().await;
}

#[tokio::test]
async fn channels_are_renewed_with_an_overlap_whose_duplicates_are_suppressed() {
    let (clock, google, dir) = world().await;
    let yaml = config(
        &google,
        free_port(),
        "overlap",
        "",
        "[{event: add, domain: district.example.edu}]",
    );
    let run = Run::start(dir.path(), &yaml, clock).await;

    until("the channel's sync answered", WAIT, || {
        google.syncs().iter().any(|(_, status)| *status == 200)
    })
    .await;
    let watch = &google.calls("/users/watch")[0];
    assert_eq!(watch.method, "POST");
    assert_eq!(watch.query, "event=add&domain=district.example.edu");
    assert_eq!(watch.bearer.as_deref(), Some(ACCESS_TOKEN));
    assert_eq!(watch.body["type"], "web_hook");
    assert_eq!(watch.body["address"], run.url("/webhook/directory"));
    assert_eq!(watch.body["params"]["ttl"], "3600");
    let token = watch.body["token"].as_str().unwrap();
    assert!(token.len() >= 32 && token != "fixed-token");
    let directory_grant = google
        .grants()
        .into_iter()
        .find(|g| g["scope"] == "https://www.googleapis.com/auth/admin.directory.user.readonly")
        .expect("a Directory token grant");
    assert_eq!(directory_grant["sub"], SUBJECT);
    let old = google.channels()[0].clone();

    assert_eq!(
        google.notify("add", &user("u1", "\"e1\"")).await,
        [(old.id.clone(), 200)]
    );
    assert_eq!(run.events(), 1, "a change on the channel is one event");

    // At 80% of the hour a second channel is opened; its sync is held back, so both stay open.
    google.hold_syncs(true);
    advance(hours(0.82)).await;
    until("a second channel opened", WAIT, || {
        google.channels().len() == 2
    })
    .await;
    let new = google.channels()[1].clone();
    assert_ne!(new.id, old.id);
    assert_ne!(new.token, old.token);
    assert_eq!(
        run.row("overlap/add/district.example.edu").await.health,
        "overlap"
    );

    // During the overlap Google sends each change on both channels: one event.
    let statuses = google.notify("add", &user("u2", "\"e2\"")).await;
    assert_eq!(statuses, [(old.id.clone(), 200), (new.id.clone(), 200)]);
    assert_eq!(
        run.events(),
        2,
        "the copy from the other channel is suppressed"
    );
    assert!(
        google.calls("/channels/stop").is_empty(),
        "the old channel stays until the new one synced"
    );

    // The new channel's sync arrives: the old one is stopped.
    google.release_syncs().await;
    until("the old channel stopped", WAIT, || {
        google.calls("/channels/stop").len() == 1
    })
    .await;
    let stop = &google.calls("/channels/stop")[0];
    assert_eq!(stop.path, "/admin/directory_v1/channels/stop");
    assert_eq!(
        stop.body,
        json!({"id": old.id, "resourceId": old.resource_id})
    );
    assert_eq!(stop.bearer.as_deref(), Some(ACCESS_TOKEN));
    // Its token is no longer accepted; the new channel's is.
    assert_eq!(
        google.send_on(&old, "add", 99, &user("u3", "\"e3\"")).await,
        403
    );
    assert_eq!(
        google.notify("add", &user("u3", "\"e3\"")).await,
        [(new.id.clone(), 200)]
    );
    assert_eq!(run.events(), 3);
    let row = run.row("overlap/add/district.example.edu").await;
    assert_eq!(
        (row.health.as_str(), row.id.as_deref()),
        ("ok", Some(new.id.as_str()))
    );
    run.stop().await;
}

#[tokio::test]
async fn a_failing_renewal_is_retried_and_shows_in_readyz_and_metrics() {
    let (clock, google, dir) = world().await;
    let yaml = config(
        &google,
        free_port(),
        "failing",
        "[{feed: DOMAIN_ROSTER_CHANGES}]",
        "[]",
    );
    let run = Run::start(dir.path(), &yaml, clock).await;
    let name = "failing-classroom/DOMAIN_ROSTER_CHANGES";
    let http = client();
    until("the registration created", WAIT, || {
        creates(&google).len() == 1
    })
    .await;

    google.fail_always("create", 503, "The service is currently unavailable.");
    advance(hours(5.7 * 24.0)).await;
    until("a renewal attempted", WAIT, || creates(&google).len() >= 2).await;
    run.settled().await;
    let row = run.row(name).await;
    assert_eq!(row.health, "renewal failing");
    assert!(
        row.last_error.as_deref().unwrap().contains("503"),
        "{row:?}"
    );
    // A day from expiry a failing renewal is not yet a readiness problem …
    let (status, _) = answer(http.get(run.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let metrics = metrics_render()();
    assert!(
        metrics.contains(&format!(
            "herald_google_renewal_failures_total{{name=\"{name}\"}}"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!("herald_google_expiry_seconds{{name=\"{name}\"}}")));

    // … five minutes from expiry, still failing, it is.
    let attempts = creates(&google).len();
    advance(hours(1.3 * 24.0) - Duration::from_secs(300)).await;
    until("retried again", WAIT, || creates(&google).len() > attempts).await;
    let reason = wait_for_readyz(&http, &run.url("/readyz"), 503)
        .await
        .to_string();
    assert!(
        reason.contains(&format!("google:{name}: expires in")),
        "{reason}"
    );
    assert!(reason.contains("renewal failing"), "{reason}");

    // Google recovers: the next retry renews it and the gateway is ready again.
    google.recover();
    advance(Duration::from_secs(200)).await;
    wait_for_readyz(&http, &run.url("/readyz"), 200).await;
    let row = run.row(name).await;
    assert_eq!((row.health.as_str(), row.failures), ("ok", 0));
    run.stop().await;
}

/// Polls `/readyz` until it answers `status`; its body.
async fn wait_for_readyz(http: &reqwest::Client, url: &str, status: u16) -> Value {
    eventually_async(&format!("/readyz to answer {status}"), WAIT, || async {
        let (got, body) = answer(http.get(url).send().await.unwrap()).await;
        (got == status).then_some(body)
    })
    .await
}

#[tokio::test]
async fn a_restart_reuses_the_recorded_registrations_and_channels() {
    let (clock, google, dir) = world().await;
    let port = free_port();
    let yaml = config(
        &google,
        port,
        "restart",
        "[{feed: DOMAIN_ROSTER_CHANGES}]",
        "[{event: delete, customer: my_customer}]",
    );
    let run = Run::start(dir.path(), &yaml, clock).await;
    until("created", WAIT, || {
        creates(&google).len() == 1 && google.syncs().len() == 1
    })
    .await;
    run.stop().await;

    let run = Run::start(dir.path(), &yaml, clock).await;
    run.settled().await;
    assert_eq!(creates(&google).len(), 1, "no second registration");
    assert_eq!(google.calls("/users/watch").len(), 1, "no second channel");
    let channel = google.channels()[0].clone();
    assert!(channel.resource_uri.contains("customer=my_customer"));
    // The recorded channel's token is accepted again.
    assert_eq!(
        google.notify("delete", &user("u9", "\"e9\"")).await,
        [(channel.id.clone(), 200)]
    );
    assert_eq!(run.events(), 1);
    let row = run.row("restart/delete/my_customer").await;
    assert_eq!(row.id.as_deref(), Some(channel.id.as_str()));
    run.stop().await;
}

#[tokio::test]
async fn entries_removed_from_the_config_are_stopped_and_deleted() {
    let (clock, google, dir) = world().await;
    let port = free_port();
    let yaml = config(
        &google,
        port,
        "removed",
        "[{feed: DOMAIN_ROSTER_CHANGES}]",
        "[{event: add, domain: district.example.edu}]",
    );
    let run = Run::start(dir.path(), &yaml, clock).await;
    until("created", WAIT, || {
        creates(&google).len() == 1 && google.syncs().len() == 1
    })
    .await;
    run.stop().await;

    // Both removed: the Directory source keeps only its fixed token.
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:{port} }}\nqueue: {{ path: ./data }}\n{}sources:\n  removed:\n    type: directory_webhook\n    channel_tokens: [fixed-token]\nroutes: []\n",
        google.google_yaml("sa.json", SUBJECT)
    );
    let run = Run::start(dir.path(), &yaml, clock).await;
    until(
        "the channel stopped and the registration deleted",
        WAIT,
        || {
            google.calls("/channels/stop").len() == 1
                && google.calls("/v1/registrations/").len() == 1
        },
    )
    .await;
    let channel = google.channels()[0].clone();
    assert!(channel.stopped);
    assert_eq!(google.calls("/channels/stop")[0].body["id"], channel.id);
    let delete = &google.calls("/v1/registrations/")[0];
    assert_eq!(
        (delete.method.as_str(), delete.path.as_str()),
        ("DELETE", "/v1/registrations/registration-1")
    );
    run.settled().await;
    assert!(run.status().await.is_empty());
    assert!(run.journal.list_state("google/").unwrap().is_empty());
    run.stop().await;
}

#[tokio::test]
async fn googles_documented_errors_say_what_to_do() {
    let (clock, google, dir) = world().await;
    google.fail(
        "create",
        1,
        403,
        "@MissingGrant The user has not granted the project access.",
    );
    google.fail_always("create", 404, "Requested entity was not found.");
    let yaml = config(
        &google,
        free_port(),
        "errors",
        "[{feed: DOMAIN_ROSTER_CHANGES}]",
        "[]",
    );
    let run = Run::start(dir.path(), &yaml, clock).await;
    let name = "errors-classroom/DOMAIN_ROSTER_CHANGES";
    until("the first attempt", WAIT, || !creates(&google).is_empty()).await;
    run.settled().await;
    let row = run.row(name).await;
    let error = row.last_error.unwrap();
    assert!(error.contains("@MissingGrant"), "{error}");
    assert!(
        error.contains(&format!("{SUBJECT} has not granted this Cloud project")),
        "{error}"
    );
    assert!(error.contains("keep its OAuth grant"), "{error}");
    assert_eq!(row.health, "not created yet");

    advance(Duration::from_secs(31)).await;
    until("the retry", WAIT, || creates(&google).len() == 2).await;
    run.settled().await;
    let error = run.row(name).await.last_error.unwrap();
    assert!(
        error.contains("classroom-notifications@system.gserviceaccount.com"),
        "{error}"
    );
    assert!(error.contains("roles/pubsub.publisher"), "{error}");
    assert!(
        error.contains("projects/district-edu/topics/classroom"),
        "{error}"
    );
    // Never created and failing: not ready.
    let (status, body) = answer(client().get(run.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("not created"), "{body}");
    run.stop().await;
}
