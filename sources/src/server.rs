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
use std::sync::Arc;
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
use hyper_util::rt::{TokioIo, TokioTimer};
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

/// The service of every connection.
#[derive(Clone)]
struct Service(Arc<Routes>);

impl hyper::service::Service<hyper::Request<Incoming>> for Service {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        match self.0.endpoints.get(request.uri().path()) {
            Some(mounted) => {
                let mounted = Arc::clone(mounted);
                Box::pin(async move { Ok(mounted.answer(request.map(Body::new)).await) })
            }
            None => Box::pin(self.0.app.call(request)),
        }
    }
}

/// A source's handler, with its request timeout and its counter of answers.
struct Mounted {
    handler: Handler,
    answered: telemetry::Answered,
    timeout: Duration,
}

impl Mounted {
    /// The handler's answer to a POST (405 to any other method, 408 past the timeout),
    /// counted per status, and the one log line of a problem.
    async fn answer(&self, request: Request) -> Response {
        let response = if request.method() != Method::POST {
            let mut response = method_not_allowed(request.uri(), "POST").into_response();
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            response
        } else {
            match tokio::time::timeout(self.timeout, (self.handler)(request)).await {
                Ok(response) => response,
                Err(_) => Problem::timeout(self.timeout).into_response(),
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
            let service = Service(Arc::clone(&self.routes));
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(self.request_timeout);
            let tls = self.tls.clone();
            let handshake_timeout = self.request_timeout;
            tokio::spawn(async move {
                let served = match tls {
                    None => {
                        let conn = http.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(conn).await
                    }
                    Some(acceptor) => {
                        let stream =
                            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                                .await
                            {
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
                        watcher.watch(conn).await
                    }
                };
                if let Err(e) = served {
                    tracing::debug!(%peer, "connection ended: {e}");
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
