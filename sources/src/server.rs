//! The HTTP server every HTTP source is mounted on, and the start of the pull loops.
//!
//! One listener (`server.listen`, port 0 allowed), plain HTTP/1.1 or HTTPS with rustls
//! (`server.tls`; the Directory API only calls HTTPS endpoints). Each source answers POSTs at
//! its `path`; the server itself answers `GET /healthz` (the process is alive), `GET /readyz`
//! (the journal takes events) and `GET /metrics` (Prometheus text, rendered by the binary's
//! recorder). A request's path is looked up among the sources' first; only the rest goes
//! through axum's router (docs/architecture.md §1). Every source request is bounded by
//! `server.request_timeout` (408) and its body by `server.body_limit` (413), counted per
//! source and status, and a problem is logged once with the source's name.
//!
//! Stopping: when the `stop` token given to [`serve`] is cancelled, the listener closes,
//! requests in flight finish (up to `server.shutdown_timeout`), idle connections close, and
//! the pull loops stop after storing the batch they hold; [`ServerHandle::stopped`] returns
//! once all of that is done.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use herald_core::Config;
use herald_core::ingest::Ingest;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::answer::{Logged, Problem};
use crate::google::Links;
use crate::google::settings::Fallbacks;
use crate::intake::Intake;
use crate::source::{BoxFuture, Handler, Receiving, StartContext, source_of};
use crate::telemetry;

/// Renders the metrics registry as Prometheus text (the binary's recorder).
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// Why the server could not start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    // `reason` rather than `source`: the message already says it, so `{:#}` must not
    // repeat it as a cause.
    #[error("cannot listen on {addr} (server.listen): {reason}")]
    Bind {
        addr: SocketAddr,
        reason: std::io::Error,
    },
    #[error("server.tls: {0}")]
    Tls(String),
    #[error("source `{name}`: {reason}")]
    Source { name: String, reason: String },
    #[error("cannot build the HTTP client for OIDC keys and Pub/Sub: {0}")]
    Client(String),
}

/// The running server and pull loops.
pub struct ServerHandle {
    /// The address actually bound (`server.listen` with port 0 gets a free port).
    pub local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ServerHandle {
    /// Waits until the server and the pull loops have stopped (after `stop` was cancelled).
    pub async fn stopped(self) {
        if let Err(e) = self.task.await {
            tracing::error!("the HTTP server task failed: {e}");
        }
    }
}

/// Binds `server.listen`, mounts every HTTP source, starts every pull loop, and serves until
/// `stop` is cancelled. `metrics` renders `/metrics` (absent: 404). Fails only on
/// environment problems (the port is taken, a TLS or credentials file cannot be read).
pub async fn serve(
    config: &Config,
    ingest: Arc<dyn Ingest>,
    metrics: Option<RenderMetrics>,
    stop: CancellationToken,
) -> Result<ServerHandle, ServeError> {
    serve_linked(config, ingest, metrics, Links::default(), stop).await
}

/// [`serve`], with the Directory handlers tied to the Google lifecycle loop through `links`
/// (the tokens of the channels it opened; the `sync` messages it waits for).
pub async fn serve_linked(
    config: &Config,
    ingest: Arc<dyn Ingest>,
    metrics: Option<RenderMetrics>,
    links: Links,
    stop: CancellationToken,
) -> Result<ServerHandle, ServeError> {
    // One rustls provider for the process; an error means one is installed already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = reqwest::Client::builder()
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ServeError::Client(e.to_string()))?;

    let server = &config.server;
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz).with_state(Arc::clone(&ingest)));
    if let Some(render) = metrics {
        app = app.route("/metrics", get(move || metrics_text(render)));
    }
    let fallbacks = Fallbacks::of(config);
    let mut endpoints = HashMap::new();
    let mut tasks = Vec::new();
    for source in &config.sources {
        let name = source.name.as_str();
        let Some(spec) = source_of(source.spec.as_ref()) else {
            tracing::warn!(source = %name, "source type `{}` is not served by herald-sources", source.type_name);
            continue;
        };
        let context = StartContext {
            intake: Intake::new(name, Arc::clone(&ingest)).enriching(spec.enrich().is_some()),
            server,
            client: &client,
            links: &links,
            fallbacks: &fallbacks,
            stop: stop.clone(),
        };
        let endpoint = match spec.start(context).await {
            Ok(Receiving::Http(endpoint)) => endpoint,
            Ok(Receiving::Task(task)) => {
                tasks.push(task);
                continue;
            }
            Err(reason) => {
                return Err(ServeError::Source {
                    name: name.to_owned(),
                    reason,
                });
            }
        };
        let mounted = Mounted {
            handler: endpoint.handler,
            answered: telemetry::Answered::new(Arc::from(name)),
            timeout: server.request_timeout,
        };
        // Config validation refuses two sources on one path.
        endpoints.insert(endpoint.path, Arc::new(mounted));
    }
    let routes = Arc::new(Routes {
        endpoints,
        app: TowerToHyperService::new(
            app.fallback(not_found)
                .method_not_allowed_fallback(get_only),
        ),
    });

    let tls = match &server.tls {
        Some(tls) => Some(tls_acceptor(&tls.cert, &tls.key).await?),
        None => None,
    };
    let listener = TcpListener::bind(server.listen)
        .await
        .map_err(|reason| ServeError::Bind {
            addr: server.listen,
            reason,
        })?;
    let local_addr = listener.local_addr().map_err(|reason| ServeError::Bind {
        addr: server.listen,
        reason,
    })?;
    tracing::info!(address = %local_addr, https = tls.is_some(), "listening");

    let tasks: Vec<JoinHandle<()>> = tasks.into_iter().map(tokio::spawn).collect();
    let connections = Connections {
        routes,
        tls,
        request_timeout: server.request_timeout,
        shutdown_timeout: server.shutdown_timeout,
    };
    let task = tokio::spawn(async move {
        connections.accept(listener, stop).await;
        for task in tasks {
            let _ = task.await;
        }
    });
    Ok(ServerHandle { local_addr, task })
}

/// Where a request goes: a source's path to its handler, anything else to axum's router
/// (`/healthz`, `/readyz`, `/metrics`, 404).
struct Routes {
    endpoints: HashMap<String, Arc<Mounted>>,
    app: TowerToHyperService<Router>,
}

/// The service of every connection, with that connection's [`Progress`].
#[derive(Clone)]
struct Service {
    routes: Arc<Routes>,
    progress: Arc<Progress>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Service {
    type Response = Response;
    type Error = Infallible;
    type Future = Answering;

    fn call(&self, request: hyper::Request<Incoming>) -> Answering {
        let number = self.progress.started.fetch_add(1, Ordering::Relaxed) + 1;
        let answer: BoxFuture<'static, Response> =
            match self.routes.endpoints.get(request.uri().path()) {
                Some(mounted) => {
                    let mounted = Arc::clone(mounted);
                    let progress = Arc::clone(&self.progress);
                    Box::pin(async move {
                        mounted
                            .answer(request.map(Body::new), &progress, number)
                            .await
                    })
                }
                None => {
                    let routed = self.routes.app.call(request);
                    Box::pin(async move {
                        match routed.await {
                            Ok(response) => response,
                            Err(never) => match never {},
                        }
                    })
                }
            };
        Answering {
            answer,
            progress: Arc::clone(&self.progress),
        }
    }
}

/// A request's answer, counted in its connection's [`Progress`] once it is ready.
struct Answering {
    answer: BoxFuture<'static, Response>,
    progress: Arc<Progress>,
}

impl Future for Answering {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = ready!(self.answer.as_mut().poll(cx));
        self.progress.answered.fetch_add(1, Ordering::Relaxed);
        Poll::Ready(Ok(response))
    }
}

/// What a connection has done, for its one timer (`Connections::serve`): the requests it
/// started (their heads read) and answered, and the number of the request whose time ran
/// out. One timer per connection, reading these when it fires, replaces the two timers
/// every request used to arm and disarm (hyper's header-read timeout and a timeout around
/// the handler): together about 3.5% of the gateway's CPU under load (README, "The sixth
/// pass").
#[derive(Default)]
struct Progress {
    started: AtomicU64,
    answered: AtomicU64,
    expired: AtomicU64,
}

/// How a connection ended.
enum Served {
    /// The client closed it, or the server shut down.
    Ended(hyper::Result<()>),
    /// No whole request head came within `server.request_timeout`.
    Idle,
}

/// A connection's timer fires [`TICKS`] times per `server.request_timeout`.
const TICKS: u32 = 4;

/// What a connection's timer saw when it last fired, and for how many firings since.
#[derive(Default)]
struct Stillness {
    seen: (u64, u64),
    unchanged: u32,
}

/// What the timer does about a connection.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// It made progress, or not for long.
    Wait,
    /// The request in flight ran out of time: it is answered 408 (`Mounted::answer`).
    Expire,
    /// Nothing came for a whole timeout, or a head came too slowly: the connection closes.
    Close,
}

impl Stillness {
    /// Called each time the timer fires: a state first seen at one firing and the same at
    /// the next [`TICKS`] has lasted at least a whole timeout (and less than one more tick).
    fn tick(&mut self, progress: &Progress) -> Verdict {
        let now = (
            progress.started.load(Ordering::Relaxed),
            progress.answered.load(Ordering::Relaxed),
        );
        if now != self.seen {
            self.seen = now;
            self.unchanged = 0;
            return Verdict::Wait;
        }
        self.unchanged += 1;
        if self.unchanged < TICKS {
            return Verdict::Wait;
        }
        let (started, answered) = now;
        if started == answered {
            return Verdict::Close;
        }
        if self.unchanged == TICKS {
            progress.expired.store(started, Ordering::Relaxed);
            return Verdict::Expire;
        }
        // A request of the router (`/metrics`, …) is not timed out; it is still in flight.
        Verdict::Wait
    }
}

/// A source's handler, with its request timeout and its counter of answers.
struct Mounted {
    handler: Handler,
    answered: telemetry::Answered,
    timeout: Duration,
}

impl Mounted {
    /// The handler's answer to a POST (405 to any other method, 408 once the connection's
    /// timer says the request `number` ran out of time), counted per status, and the one
    /// log line of a problem.
    async fn answer(&self, request: Request, progress: &Progress, number: u64) -> Response {
        let response = if request.method() != Method::POST {
            let mut response = method_not_allowed(request.uri(), "POST").into_response();
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            response
        } else {
            let handled = (self.handler)(request);
            match (Expiring {
                handled,
                progress,
                number,
            })
            .await
            {
                Some(response) => response,
                None => Problem::timeout(self.timeout).into_response(),
            }
        };
        self.answered.record(response.status().as_u16());
        if let Some(Logged(problem)) = response.extensions().get::<Logged>() {
            tracing::warn!(
                source = %self.answered.source(),
                status = problem.status.as_u16(),
                error = problem.error,
                "{}",
                problem.reason
            );
        }
        response
    }
}

/// A handler's answer, or `None` once its connection's timer expired request `number`
/// (checked at every poll; the timer's task polls the connection right after).
struct Expiring<'a> {
    handled: BoxFuture<'static, Response>,
    progress: &'a Progress,
    number: u64,
}

impl Future for Expiring<'_> {
    type Output = Option<Response>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Response>> {
        if self.progress.expired.load(Ordering::Relaxed) == self.number {
            return Poll::Ready(None);
        }
        self.handled.as_mut().poll(cx).map(Some)
    }
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn readyz(State(ingest): State<Arc<dyn Ingest>>) -> Response {
    match ingest.ready() {
        Ok(()) => axum::Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(reason) => Problem::unavailable(reason).into_response(),
    }
}

async fn metrics_text(render: RenderMetrics) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(),
    )
        .into_response()
}

async fn not_found(uri: Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not found",
        format!("nothing is served at {}", uri.path()),
    )
}

/// 405 for `path`, which answers `method` only.
fn method_not_allowed(uri: &Uri, method: &str) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
        format!("{} answers {method} only", uri.path()),
    )
}

/// The router's 405 (`/healthz`, `/readyz` and `/metrics` are read with GET).
async fn get_only(uri: Uri) -> Problem {
    method_not_allowed(&uri, "GET")
}

/// Reads `server.tls`'s PEM files into a rustls acceptor.
async fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ServeError> {
    let read = |path: &Path| {
        let path = path.to_path_buf();
        async move {
            tokio::fs::read(&path)
                .await
                .map_err(|e| ServeError::Tls(format!("cannot read {}: {e}", path.display())))
        }
    };
    let cert_pem = read(cert).await?;
    let key_pem = read(key).await?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ServeError::Tls(format!(
                "{}: not a PEM certificate chain: {e}",
                cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "{} holds no certificate",
            cert.display()
        )));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| ServeError::Tls(format!("{}: no PEM private key: {e}", key.display())))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            ServeError::Tls(format!(
                "{} and {} do not make a usable certificate and key: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

struct Connections {
    routes: Arc<Routes>,
    tls: Option<TlsAcceptor>,
    request_timeout: Duration,
    shutdown_timeout: Duration,
}

impl Connections {
    /// Serves one connection, with its one timer: it fires [`TICKS`] times per `timeout`
    /// and, from the connection's [`Progress`], answers a request in flight for a whole
    /// timeout 408 and closes a connection that received no whole request head for one
    /// (a client trickling its headers, or an idle keep-alive connection). Either happens
    /// between one timeout and one tick more after the request or the wait began.
    async fn serve(
        conn: impl Future<Output = hyper::Result<()>>,
        progress: &Progress,
        timeout: Duration,
    ) -> Served {
        let tick = (timeout / TICKS).max(Duration::from_millis(1));
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stillness = Stillness::default();
        tokio::pin!(conn);
        loop {
            tokio::select! {
                biased;
                served = &mut conn => return Served::Ended(served),
                _ = timer.tick() => {
                    // After `Expire`, the loop polls the connection again at once, and the
                    // request in flight sees that its time ran out.
                    if stillness.tick(progress) == Verdict::Close {
                        return Served::Idle;
                    }
                }
            }
        }
    }

    /// Accepts until `stop` is cancelled, then lets the open connections finish.
    async fn accept(self, listener: TcpListener, stop: CancellationToken) {
        let graceful = GracefulShutdown::new();
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let watcher = graceful.watcher();
            let progress = Arc::new(Progress::default());
            let service = Service {
                routes: Arc::clone(&self.routes),
                progress: Arc::clone(&progress),
            };
            let http = hyper::server::conn::http1::Builder::new();
            let tls = self.tls.clone();
            let timeout = self.request_timeout;
            tokio::spawn(async move {
                let served = match tls {
                    None => {
                        let conn = http.serve_connection(TokioIo::new(stream), service);
                        Connections::serve(watcher.watch(conn), &progress, timeout).await
                    }
                    Some(acceptor) => {
                        let stream =
                            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                        let conn = http.serve_connection(TokioIo::new(stream), service);
                        Connections::serve(watcher.watch(conn), &progress, timeout).await
                    }
                };
                match served {
                    Served::Ended(Ok(())) => {}
                    Served::Ended(Err(e)) => tracing::debug!(%peer, "connection ended: {e}"),
                    Served::Idle => {
                        tracing::debug!(%peer, "closed: no whole request within the timeout");
                    }
                }
            });
        }
        drop(listener);
        tracing::info!("stopped accepting; finishing the requests in flight");
        if tokio::time::timeout(self.shutdown_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                "requests still in flight after server.shutdown_timeout ({:?}) were abandoned",
                self.shutdown_timeout
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks(stillness: &mut Stillness, progress: &Progress, n: u32) -> Vec<Verdict> {
        (0..n).map(|_| stillness.tick(progress)).collect()
    }

    #[test]
    fn the_timer_acts_after_a_whole_timeout_without_progress() {
        use Verdict::{Close, Expire, Wait};
        let progress = Progress::default();
        let mut stillness = Stillness::default();
        // A new connection with nothing read: closed at the fourth firing, one timeout in.
        assert_eq!(
            ticks(&mut stillness, &progress, 4),
            [Wait, Wait, Wait, Close]
        );

        // A request started between two firings: seen at the next, expired four later
        // (once), then left alone while it is still in flight.
        let mut stillness = Stillness::default();
        progress.started.store(1, Ordering::Relaxed);
        assert_eq!(
            ticks(&mut stillness, &progress, 7),
            [Wait, Wait, Wait, Wait, Expire, Wait, Wait]
        );
        assert_eq!(progress.expired.load(Ordering::Relaxed), 1);

        // Answered: the wait for the next head starts over.
        progress.answered.store(1, Ordering::Relaxed);
        assert_eq!(
            ticks(&mut stillness, &progress, 5),
            [Wait, Wait, Wait, Wait, Close]
        );

        // Requests answered between every two firings keep the connection open.
        let mut stillness = Stillness::default();
        for n in 2..20 {
            progress.started.store(n, Ordering::Relaxed);
            progress.answered.store(n, Ordering::Relaxed);
            assert_eq!(stillness.tick(&progress), Wait);
        }
    }
}
