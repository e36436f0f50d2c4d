//! End-to-end latency at a fixed rate (issue 18's target: p99 < 10 ms at 2,000 events/s to a
//! loopback webhook sink). It runs a receiver on 127.0.0.1 that notes when each event
//! arrives, and an open-loop sender that POSTs Directory notifications at `RATE` a second
//! (each due at its own instant, however the earlier ones fare, so a stall shows as latency
//! rather than as a slower rate), and reports percentiles of (arrival − due time).
//!
//! `e2e-latency RECEIVER_FILE TARGET_FILE RATE SECONDS`: binds the receiver and writes its
//! address to RECEIVER_FILE, waits for TARGET_FILE (`host:port/path` to POST to: a gateway's
//! Directory webhook whose sink posts to the receiver, or the receiver itself for the
//! baseline), sends for SECONDS, waits 2 s for stragglers and prints one `RESULT` line.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// Connections the sender keeps open; a request waits for a free one (and that wait counts).
const CONNECTIONS: usize = 64;

type Arrivals = Arc<Mutex<HashMap<u64, Instant>>>;

/// The message number in a body: `data.id` of a delivered event, or `id` of the notification
/// itself (the baseline posts to the receiver directly).
fn number(body: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = v["data"]["id"].as_str().or_else(|| v["id"].as_str())?;
    id.parse().ok()
}

async fn receive(arrivals: Arrivals, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let arrivals = arrivals.clone();
                async move {
                    let body = req.into_body().collect().await.map(|b| b.to_bytes());
                    let at = Instant::now();
                    if let Some(n) = body.ok().as_deref().and_then(number) {
                        arrivals
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(n)
                            .or_insert(at);
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn request(host: &str, path: &str, n: u64) -> Request<Full<Bytes>> {
    let body = format!(
        r#"{{"kind":"admin#directory#user","id":"{n}","primaryEmail":"user{n}@example.edu"}}"#
    );
    Request::post(path)
        .header("Host", host)
        .header("Content-Type", "application/json; utf-8")
        .header("X-Goog-Channel-ID", "latency-channel")
        .header("X-Goog-Channel-Token", "bench-token")
        .header("X-Goog-Channel-Expiration", "Tue, 29 Oct 2030 20:32:02 GMT")
        .header("X-Goog-Resource-ID", "ret08u3rv24htgh289g")
        .header(
            "X-Goog-Resource-URI",
            "https://admin.googleapis.com/admin/directory/v1/users?domain=example.edu&event=add",
        )
        .header("X-Goog-Resource-State", "add")
        .header("X-Goog-Message-Number", n.to_string())
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [receiver_file, target_file, rate, seconds] = args.as_slice() else {
        return Err("usage: e2e-latency RECEIVER_FILE TARGET_FILE RATE SECONDS".into());
    };
    let rate: f64 = rate.parse()?;
    let seconds: f64 = seconds.parse()?;
    let arrivals: Arrivals = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    std::fs::write(receiver_file, listener.local_addr()?.to_string())?;
    tokio::spawn(receive(arrivals.clone(), listener));

    let target = loop {
        if let Ok(t) = std::fs::read_to_string(target_file)
            && !t.trim().is_empty()
        {
            break t.trim().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (host, path) = match target.split_once('/') {
        Some((host, path)) => (host.to_owned(), format!("/{path}")),
        None => (target.clone(), "/".to_owned()),
    };

    // Open loop: a ticker hands out (number, due) at the rate; connections take them.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        * 1_000_000;
    let mut workers = Vec::new();
    for _ in 0..CONNECTIONS {
        let (rx, host, path, failed) = (rx.clone(), host.clone(), path.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&host).await.ok()?;
            stream.set_nodelay(true).ok()?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .ok()?;
            tokio::spawn(conn);
            loop {
                let next = rx.lock().await.recv().await;
                let Some((n, _)) = next else {
                    return Some(());
                };
                match send.send_request(request(&host, &path, n)).await {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.into_body().collect().await;
                    }
                    _ => {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    let total = (rate * seconds) as u64;
    let mut due = HashMap::with_capacity(total as usize);
    for i in 0..total {
        let at = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
        let n = base + i;
        due.insert(n, at);
        let _ = tx.send((n, at));
    }
    drop(tx);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let arrived = arrivals.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut latencies: Vec<f64> = due
        .iter()
        .filter_map(|(n, at)| Some(arrived.get(n)?.duration_since(*at).as_secs_f64() * 1e3))
        .collect();
    latencies.sort_by(f64::total_cmp);
    println!(
        "RESULT sent={total} received={} failed={} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2}",
        latencies.len(),
        failed.load(std::sync::atomic::Ordering::Relaxed),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
        latencies.last().copied().unwrap_or(f64::NAN),
    );
    Ok(())
}
