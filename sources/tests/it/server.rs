//! The server itself: health, readiness, metrics, 503 when the journal cannot take an
//! event, the request timeout, HTTPS, graceful shutdown, and start-up errors.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::common::*;

const SOURCES: &str = r#"
sources:
  classroom: { type: classroom_pubsub, path: /push/classroom }
  directory:
    type: directory_webhook
    path: /webhook/directory
    channel_tokens: ["398348u3tu83ut8uu38"]
"#;

/// The gateway of these tests with `server.request_timeout: 1s`.
async fn with_one_second_timeout() -> Gateway {
    Gateway::start(&format!(
        "server: {{ listen: 127.0.0.1:0, request_timeout: 1s }}\n{SOURCES}"
    ))
    .await
}

fn roster(id: &str) -> String {
    push_body(&read_json("classroom/roster-student-created.json"), id)
}

#[tokio::test]
async fn health_and_readiness() {
    let gateway = Gateway::start(SOURCES).await;
    let (status, body) = answer(client().get(gateway.url("/healthz")).send().await.unwrap()).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = answer(client().get(gateway.url("/readyz")).send().await.unwrap()).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));

    gateway.ingest.set_full(true);
    let (status, body) = answer(client().get(gateway.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(status, 503);
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("the queue is full"),
        "{body}"
    );
    let (status, _) = answer(client().get(gateway.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(status, 200, "alive even when not ready");

    // The gateway's own paths are read, not posted to; an unknown path is 404.
    let response = client().post(gateway.url("/healthz")).send().await.unwrap();
    assert_eq!(response.headers()["allow"], "GET,HEAD");
    let (status, body) = answer(response).await;
    assert_eq!(status, 405);
    assert_eq!(body["reason"], "/healthz answers GET only");
    let (status, body) = answer(client().post(gateway.url("/nowhere")).send().await.unwrap()).await;
    assert_eq!(status, 404);
    assert_eq!(body["reason"], "nothing is served at /nowhere");
    gateway.stop().await;
}

#[tokio::test]
async fn a_full_journal_answers_503_and_stores_nothing() {
    let gateway = Gateway::start(SOURCES).await;
    gateway.ingest.set_full(true);
    let (status, body) = answer(
        client()
            .post(gateway.url("/push/classroom"))
            .body(roster("1"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], "unavailable");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("the queue is full"),
        "{body}"
    );

    let fixture = HttpFixture::read("directory/user-add.http");
    let (status, _) = answer(
        fixture
            .request(&client(), &gateway.url(""))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503);

    // An undecodable push cannot be kept either: 503, so Pub/Sub retries it.
    let (status, _) = answer(
        client()
            .post(gateway.url("/push/classroom"))
            .body("{")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503);
    assert!(gateway.ingest.events().is_empty());

    // Pub/Sub's retry succeeds once there is room.
    gateway.ingest.set_full(false);
    let response = client()
        .post(gateway.url("/push/classroom"))
        .body(roster("1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(gateway.ingest.events().len(), 1);
    gateway.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_events_rejections_and_decode_time() {
    // A source name of its own, so that the counters are this test's alone.
    let gateway =
        Gateway::start("sources:\n  metered: { type: classroom_pubsub, path: /push/classroom }\n")
            .await;
    let client = client();
    for id in ["1", "2"] {
        client
            .post(gateway.url("/push/classroom"))
            .body(roster(id))
            .send()
            .await
            .unwrap();
    }
    client
        .post(gateway.url("/push/classroom"))
        .body("not json")
        .send()
        .await
        .unwrap();
    let response = client.get(gateway.url("/metrics")).send().await.unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    let value = |series: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(
        value(r#"herald_source_requests_total{source="metered",status="204"}"#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(r#"herald_source_requests_total{source="metered",status="202"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(r#"herald_source_events_total{source="metered"}"#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(r#"herald_source_rejected_total{source="metered"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(r#"herald_source_decode_seconds_count{source="metered"}"#),
        Some(3.0),
        "{text}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_directory_channel_expiration_is_exposed() {
    let gateway = Gateway::start(SOURCES).await;
    let fixture = HttpFixture::read("directory/user-add.http");
    assert_eq!(
        fixture
            .request(&client(), &gateway.url(""))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let text = gateway.metrics().await;
    // Tue, 29 Oct 2030 20:32:02 GMT
    let line = r#"herald_directory_channel_expiration_timestamp_seconds{source="directory",channel="directoryApiId"} 1919536322"#;
    assert!(text.lines().any(|l| l == line), "{text}");
    gateway.stop().await;
}

#[tokio::test]
async fn a_request_slower_than_the_timeout_gets_408_and_stores_nothing() {
    let gateway = with_one_second_timeout().await;
    let body = roster("slow");
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!(
        "POST /push/classroom HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    let (answer, waited) = until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(5),
        "answered after {waited:?}, the timeout is 1 s"
    );
    assert!(answer.contains("server.request_timeout"), "{answer}");
    assert!(gateway.ingest.events().is_empty());
    gateway.stop().await;
}

/// Sends `request` on `stream` and reads the answer (one read: the answers here are small).
/// Panics if none comes within 5 s.
async fn ask(stream: &mut TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

/// Reads what the server sends until it closes the connection; the bytes and how long that
/// took. Panics if it is still open after 10 s.
async fn until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .unwrap();
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_disconnected_after_the_timeout() {
    let gateway = with_one_second_timeout().await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let started = std::time::Instant::now();
    stream
        .write_all(b"POST /push/classroom HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // A header line every 200 ms is progress on the socket, but no whole head ever comes.
    let mut closed = false;
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if stream
            .write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte)).await
        {
            closed = true;
            break;
        }
    }
    let elapsed = started.elapsed();
    assert!(closed, "still open after {elapsed:?}");
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(5),
        "closed after {elapsed:?}, the timeout is 1 s"
    );
    assert!(gateway.ingest.events().is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not() {
    let gateway = with_one_second_timeout().await;
    // One connection, a request every 300 ms for 2.4 s: more than twice the timeout, and
    // every request is answered on it.
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    for _ in 0..8 {
        let answer = ask(&mut stream, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Then nothing: the server closes it once a whole timeout passed with no request.
    let (rest, idle) = until_closed(&mut stream).await;
    assert_eq!(rest, "", "nothing more is sent");
    assert!(
        idle >= Duration::from_millis(700) && idle < Duration::from_secs(5),
        "closed after {idle:?} idle (300 ms of it before), the timeout is 1 s"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight_and_stops_accepting() {
    let gateway = Gateway::start(SOURCES).await;
    let addr = gateway.addr;
    let body = roster("in-flight");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /push/classroom HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..20]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let ingest = gateway.ingest.clone();
    let stopping = tokio::spawn(gateway.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !stopping.is_finished(),
        "the server waits for the request in flight"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no new connections"
    );

    stream.write_all(&body.as_bytes()[20..]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ingest.events().len(), 1);
}

#[tokio::test]
async fn https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert_pem = certified.cert.pem();
    std::fs::write(dir.path().join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(
        dir.path().join("key.pem"),
        certified.signing_key.serialize_pem(),
    )
    .unwrap();
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0, tls: {{ cert: {0}/cert.pem, key: {0}/key.pem }} }}\n{SOURCES}",
        dir.path().display()
    );
    let gateway = Gateway::start_in(&yaml, dir).await;

    let https = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let base = format!("https://127.0.0.1:{}", gateway.addr.port());
    let fixture = HttpFixture::read("directory/user-add.http");
    let response = fixture.request(&https, &base).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(gateway.ingest.events()[0].id, "directoryApiId/10");
    let (status, body) = answer(https.get(format!("{base}/healthz")).send().await.unwrap()).await;
    assert_eq!((status, body["status"].clone()), (200, Value::from("ok")));

    // Plain HTTP on the HTTPS port gets no answer.
    assert!(client().get(gateway.url("/healthz")).send().await.is_err());
    gateway.stop().await;
}

#[tokio::test]
async fn start_up_errors_say_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = std::sync::Arc::new(MemoryIngest::default());
    let start = |yaml: String| {
        let config = parse_config(&yaml, dir.path());
        let ingest = ingest.clone();
        async move {
            herald_sources::serve(&config, ingest, None, CancellationToken::new())
                .await
                .err()
                .map(|e| e.to_string())
        }
    };

    let missing_tls = format!(
        "server: {{ listen: 127.0.0.1:0, tls: {{ cert: {0}/no.pem, key: {0}/no.pem }} }}\n",
        dir.path().display()
    );
    let message = start(missing_tls).await.unwrap();
    assert!(
        message.starts_with("server.tls: cannot read ") && message.contains("no.pem"),
        "{message}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = format!("server: {{ listen: {} }}\n", taken.local_addr().unwrap());
    let message = start(busy).await.unwrap();
    assert!(
        message.starts_with("cannot listen on 127.0.0.1:"),
        "{message}"
    );

    let credentials = format!(
        "server: {{ listen: 127.0.0.1:0 }}\nsources:\n  c: {{ type: classroom_pubsub, pull: {{ subscription: projects/p/subscriptions/s, endpoint: 'http://127.0.0.1:9', credentials: {}/missing.json }} }}\n",
        dir.path().display()
    );
    let message = start(credentials).await.unwrap();
    assert!(
        message.starts_with("source `c`: cannot read the credentials file"),
        "{message}"
    );
}

/// One keep-alive connection carries Directory notifications with different headers, one
/// with its body in chunks, and a Pub/Sub push: each is decoded from its own headers and
/// body alone (an answer's header map is reused to parse the next request into, and a body
/// that came in one piece is kept without a copy).
#[tokio::test]
async fn requests_on_one_connection_are_read_each_from_its_own_headers() {
    let gateway = Gateway::start(SOURCES).await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let goog = |number: u32, extra: &str| {
        format!(
            "X-Goog-Channel-ID: directoryApiId\r\nX-Goog-Channel-Token: 398348u3tu83ut8uu38\r\n\
             X-Goog-Resource-ID: ret08u3rv24htgh289g\r\n\
             X-Goog-Resource-URI: https://admin.googleapis.com/admin/directory/v1/users?domain=mydomain.com&event=add\r\n\
             X-Goog-Resource-State: add\r\nX-Goog-Message-Number: {number}\r\n{extra}"
        )
    };
    let user = |id: &str| format!(r#"{{"kind":"admin#directory#user","id":"{id}"}}"#);
    let first = user("u1");
    let chunked = user("u2");
    let push = roster("on-the-same-connection");
    let requests = [
        format!(
            "POST /webhook/directory HTTP/1.1\r\nHost: x\r\n{}Content-Length: {}\r\n\r\n{first}",
            goog(
                1,
                "X-Goog-Channel-Expiration: Tue, 29 Oct 2030 20:32:02 GMT\r\nX-Extra: 1\r\n"
            ),
            first.len()
        ),
        format!(
            "POST /webhook/directory HTTP/1.1\r\nHost: x\r\n{}Transfer-Encoding: chunked\r\n\r\n\
             {:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
            goog(2, ""),
            10,
            &chunked[..10],
            chunked.len() - 10,
            &chunked[10..]
        ),
        format!(
            "POST /push/classroom HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{push}",
            push.len()
        ),
    ];
    for (request, status) in requests.iter().zip(["200", "200", "204"]) {
        let answer = ask(&mut stream, request).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
        // The answer holds none of the request's headers (the channel token least of all).
        let lower = answer.to_ascii_lowercase();
        assert!(
            !lower.contains("x-goog") && !lower.contains("x-extra") && !lower.contains("host:"),
            "{answer}"
        );
    }
    let events = gateway.ingest.events();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0].id, "directoryApiId/1");
    assert_eq!(events[0].subject.as_deref(), Some("users/u1"));
    assert_eq!(
        events[0].meta.get("channelExpiration").map(|v| v.as_str()),
        Some("2030-10-29T20:32:02Z")
    );
    assert_eq!(events[1].id, "directoryApiId/2");
    assert_eq!(events[1].subject.as_deref(), Some("users/u2"));
    assert_eq!(
        events[1].data,
        serde_json::json!({"kind": "admin#directory#user", "id": "u2"})
    );
    assert_eq!(
        events[1].meta.get("channelExpiration"),
        None,
        "the second request has no expiration: nothing of the first is left"
    );
    assert_eq!(events[2].source, "classroom");
    gateway.stop().await;
}
