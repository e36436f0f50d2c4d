//! The HTTP server every HTTP source is mounted on, and the start of the pull loops.
//!
//! One listener (`server.listen`, port 0 allowed), plain HTTP/1.1 or HTTPS with rustls
//! (`server.tls`; the Directory API only calls HTTPS endpoints). Each source answers POSTs at
//! its `path`; the server itself answers `GET /healthz` (the process is alive), `GET /readyz`
//! (the journal takes events) and `GET /metrics` (Prometheus text, rendered by the binary's
//! recorder). Every source request is bounded by `server.request_timeout` (408) and its body
//! by `server.body_limit` (413), counted per source and status, and a problem is logged once
//! with the source's name.
//!
//! Stopping: when the `shutdown` future given to [`serve`] resolves, the listener closes,
//! requests in flight finish (up to `server.shutdown_timeout`), idle connections close, and
//! the pull loops stop after storing the batch they hold; [`ServerHandle::stopped`] returns
//! once all of that is done.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use herald_core::Config;
use herald_core::config::ServerConfig;
use herald_core::ingest::Ingest;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::answer::{Logged, Problem};
use crate::classroom_pubsub::oidc::Verifier;
use crate::classroom_pubsub::pull::{Fallbacks, Puller};
use crate::classroom_pubsub::push::{self, PushState};
use crate::classroom_pubsub::{ClassroomSpec, Mode, PushSpec};
use crate::directory::DirectorySpec;
use crate::directory::handler::{self, DirectoryState};
use crate::google::Links;
use crate::intake::Intake;
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
    /// Waits until the server and the pull loops have stopped (after `shutdown` resolved).
    pub async fn stopped(self) {
        if let Err(e) = self.task.await {
            tracing::error!("the HTTP server task failed: {e}");
        }
    }
}

/// Binds `server.listen`, mounts every HTTP source, starts every pull loop, and serves until
/// `shutdown` resolves. `metrics` renders `/metrics` (absent: 404). Fails only on
/// environment problems (the port is taken, a TLS or credentials file cannot be read).
pub async fn serve(
    config: &Config,
    ingest: Arc<dyn Ingest>,
    metrics: Option<RenderMetrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ServerHandle, ServeError> {
    serve_linked(config, ingest, metrics, Links::default(), shutdown).await
}

/// [`serve`], with the Directory handlers tied to the Google lifecycle loop through `links`
/// (the tokens of the channels it opened; the `sync` messages it waits for).
pub async fn serve_linked(
    config: &Config,
    ingest: Arc<dyn Ingest>,
    metrics: Option<RenderMetrics>,
    links: Links,
    shutdown: impl Future<Output = ()> + Send + 'static,
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
    let mut pullers = Vec::new();
    let fallbacks = fallbacks(config);
    for source in &config.sources {
        let name = source.name.as_str();
        let intake = Intake::new(name, Arc::clone(&ingest));
        let any = source.spec.as_any();
        let route = if let Some(spec) = any.downcast_ref::<ClassroomSpec>() {
            match &spec.mode {
                Mode::Push(push) => push_route(name, push, intake, server, &client),
                Mode::Pull(pull) => {
                    let puller = Puller::new(intake, pull, &fallbacks, client.clone())
                        .await
                        .map_err(|reason| ServeError::Source {
                            name: name.to_owned(),
                            reason,
                        })?;
                    pullers.push(puller);
                    continue;
                }
            }
        } else if let Some(spec) = any.downcast_ref::<DirectorySpec>() {
            let state = DirectoryState::new(intake, spec.clone(), server.body_limit, links.clone());
            Router::new()
                .route(&spec.path, post(handler::handle))
                .with_state(Arc::new(state))
        } else {
            tracing::warn!(source = %name, "source type `{}` is not served by herald-sources", source.type_name);
            continue;
        };
        let observe = Observe {
            answered: telemetry::Answered::new(Arc::from(name)),
            timeout: server.request_timeout,
        };
        app = app.merge(route.layer(middleware::from_fn_with_state(observe, observed)));
    }
    let app = app
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);

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

    let (stop, stopping) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let pull_tasks: Vec<JoinHandle<()>> = pullers
        .into_iter()
        .map(|puller| tokio::spawn(puller.run(stopping.clone())))
        .collect();
    let connections = Connections {
        app,
        tls,
        request_timeout: server.request_timeout,
        shutdown_timeout: server.shutdown_timeout,
    };
    let task = tokio::spawn(async move {
        connections.accept(listener, stopping).await;
        for task in pull_tasks {
            let _ = task.await;
        }
    });
    Ok(ServerHandle { local_addr, task })
}

fn push_route(
    name: &str,
    spec: &PushSpec,
    intake: Intake,
    server: &ServerConfig,
    client: &reqwest::Client,
) -> Router {
    if spec.auth.is_none() {
        tracing::warn!(source = %name, path = %spec.path,
            "classroom_pubsub source has no `auth`: anyone who can reach {} can post notifications; \
             set `auth: {{audience, service_account}}` and enable authentication on the push subscription",
            spec.path);
    }
    let state = PushState {
        intake,
        verifier: spec
            .auth
            .clone()
            .map(|auth| Verifier::new(auth, client.clone())),
        body_limit: server.body_limit,
    };
    Router::new()
        .route(&spec.path, post(push::handle))
        .with_state(Arc::new(state))
}

fn fallbacks(config: &Config) -> Fallbacks {
    let base = config.file.parent().unwrap_or(Path::new(""));
    Fallbacks {
        google_credentials: config
            .google
            .as_ref()
            .and_then(|g| g.credentials.as_ref())
            .map(|p| base.join(p)),
        emulator_host: std::env::var("PUBSUB_EMULATOR_HOST").ok(),
        application_credentials: std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS")
            .filter(|p| !p.is_empty())
            .map(Into::into),
    }
}

/// Per source: the request timeout, the request counter, and the one log line of a problem.
#[derive(Clone)]
struct Observe {
    answered: telemetry::Answered,
    timeout: Duration,
}

async fn observed(State(observe): State<Observe>, request: Request, next: Next) -> Response {
    let response = match tokio::time::timeout(observe.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::timeout(observe.timeout).into_response(),
    };
    observe.answered.record(response.status().as_u16());
    if let Some(Logged(problem)) = response.extensions().get::<Logged>() {
        tracing::warn!(
            source = %observe.answered.source(),
            status = problem.status.as_u16(),
            error = problem.error,
            "{}",
            problem.reason
        );
    }
    response
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

async fn method_not_allowed(uri: Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
        format!("{} answers POST only", uri.path()),
    )
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
    app: Router,
    tls: Option<TlsAcceptor>,
    request_timeout: Duration,
    shutdown_timeout: Duration,
}

impl Connections {
    /// Accepts until `stopping` turns true, then lets the open connections finish.
    async fn accept(self, listener: TcpListener, mut stopping: watch::Receiver<bool>) {
        let graceful = GracefulShutdown::new();
        loop {
            let accepted = tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => break,
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
            let service = TowerToHyperService::new(self.app.clone());
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
