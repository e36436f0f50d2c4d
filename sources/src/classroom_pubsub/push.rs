//! The push endpoint: Pub/Sub POSTs each message here. 204 once the event is committed;
//! an undecodable message from an authenticated sender is kept as a rejected input and
//! acknowledged (202), so Pub/Sub does not redeliver it forever (docs/architecture.md §6).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::PushSpec;
use super::decode::decode_push;
use super::oidc::{AuthError, Verifier};
use crate::answer::{Problem, empty_reusing, read_body};
use crate::intake::Intake;
use crate::source::Endpoint;
use crate::telemetry;

/// The push endpoint of one source, mounted at its `path`.
pub fn router(
    name: &str,
    spec: &PushSpec,
    intake: Intake,
    body_limit: u64,
    client: &reqwest::Client,
) -> Endpoint {
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
        body_limit,
    };
    Endpoint::post(&spec.path, Arc::new(state), handle)
}

pub struct PushState {
    pub intake: Intake,
    /// `None`: the source has no `auth` (warned at start).
    pub verifier: Option<Verifier>,
    pub body_limit: u64,
}

pub async fn handle(state: Arc<PushState>, request: axum::extract::Request) -> Response {
    // The request taken apart rather than its headers extracted: axum's `HeaderMap`
    // extractor clones them, which was 5% of the gateway's CPU under load (README,
    // "Benchmark").
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    match answer(&state, &headers, body).await {
        Ok(status) => empty_reusing(status, headers),
        Err(problem) => problem.into_response(),
    }
}

async fn answer(state: &PushState, headers: &HeaderMap, body: Body) -> Result<StatusCode, Problem> {
    let source = &state.intake.source;
    if let Some(verifier) = &state.verifier
        && let Err(e) = verifier.verify(headers.get(header::AUTHORIZATION)).await
    {
        if !matches!(e, AuthError::Unavailable(_)) {
            telemetry::auth_failure(source);
        }
        return Err(e.into());
    }
    let body = read_body(headers, body, state.body_limit).await?;
    let started = Instant::now();
    let decoded = decode_push(source, &body, None);
    state
        .intake
        .metrics
        .decode_seconds
        .record(started.elapsed());
    match decoded {
        Ok(event) => {
            state.intake.commit(event).await?;
            Ok(StatusCode::NO_CONTENT)
        }
        Err(e) => {
            let mut meta = BTreeMap::new();
            if let Some(content_type) = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
            {
                meta.insert("contentType".to_owned(), content_type.to_owned());
            }
            state.intake.reject(&e.reason, meta, &body).await?;
            Err(Problem::rejected(e.reason))
        }
    }
}
