//! The answers of docs/architecture.md §6: errors as JSON `{"error": "...", "reason": "..."}`, and
//! reading a request body under `server.body_limit`.
//!
//! A handler returns a [`Problem`]; the server's per-source layer logs it once, with the
//! source's name, and counts the request. A reason never holds a token or a secret, and
//! quotes input only [`clip`]ped.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use serde_json::json;

/// How much of an oversized body is still read (and thrown away) before answering 413, and
/// for how long. A client that is still sending when the connection closes may miss the
/// answer (the kernel resets the connection); reading a bounded amount lets it see the 413.
const DRAIN_MAX: u64 = 16 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// An answer that is not a success, or an acknowledgement that kept a rejected input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub status: StatusCode,
    /// A short category: `unauthorized`, `bad request`, `payload too large`, …
    pub error: &'static str,
    /// What was wrong, naming the header or field.
    pub reason: String,
}

/// Put on a response (as an extension) so that the server's layer logs the problem once.
#[derive(Clone, Debug)]
pub struct Logged(pub Problem);

impl Problem {
    pub fn new(status: StatusCode, error: &'static str, reason: impl Into<String>) -> Self {
        Problem {
            status,
            error,
            reason: reason.into(),
        }
    }

    pub fn bad_request(reason: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "bad request", reason)
    }

    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", reason)
    }

    pub fn forbidden(reason: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", reason)
    }

    pub fn unavailable(reason: impl Into<String>) -> Self {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", reason)
    }

    /// An authenticated input that could not be decoded and was kept as a rejected input:
    /// acknowledged (202) so that the sender does not retry it.
    pub fn rejected(reason: impl Into<String>) -> Self {
        Problem::new(StatusCode::ACCEPTED, "undecodable", reason)
    }

    pub fn too_large(limit: u64) -> Self {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload too large",
            format!(
                "the request body is larger than the limit of {limit} bytes (server.body_limit)"
            ),
        )
    }

    pub fn timeout(after: Duration) -> Self {
        Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "request timeout",
            format!(
                "the request took longer than {}s (server.request_timeout); nothing was stored",
                after.as_secs_f64()
            ),
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.error, "reason": self.reason }));
        let mut response = (self.status, body).into_response();
        response.extensions_mut().insert(Logged(self));
        response
    }
}

/// `status` with no body, in the request's header map emptied: hyper keeps a response's
/// header map, emptied, to parse the next request on the connection into. A new map grown
/// for that request's dozen headers was two allocations per request more (README, "The
/// seventh pass").
pub fn empty_reusing(status: StatusCode, mut headers: HeaderMap) -> Response {
    headers.clear();
    let mut response = status.into_response();
    *response.headers_mut() = headers;
    response
}

/// Reads the whole body if it is at most `limit` bytes; a larger one is answered 413. A body
/// that came in one piece (the usual case) is returned as it came, without a copy.
pub async fn read_body(headers: &HeaderMap, mut body: Body, limit: u64) -> Result<Bytes, Problem> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(DRAIN_MAX)) {
        return Err(Problem::too_large(limit));
    }
    let capacity = declared.unwrap_or(0).min(limit) as usize;
    // The first piece, kept as it came until a second one needs them copied together.
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    let mut total: u64 = 0;
    let mut drain_until = None;
    loop {
        let frame = match drain_until {
            None => body.frame().await,
            Some(deadline) => match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => break,
            },
        };
        let Some(frame) = frame else { break };
        let frame = frame
            .map_err(|e| Problem::bad_request(format!("could not read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len() as u64);
        if total > limit {
            if drain_until.is_none() {
                drain_until = Some(tokio::time::Instant::now() + DRAIN_TIME);
                (first, buf) = (None, BytesMut::new());
            }
            if total > limit.saturating_add(DRAIN_MAX) {
                break;
            }
        } else if first.is_none() && buf.is_empty() {
            first = Some(data);
        } else {
            if let Some(first) = first.take() {
                buf.reserve(capacity.max(first.len() + data.len()));
                buf.extend_from_slice(&first);
            }
            buf.extend_from_slice(&data);
        }
    }
    if total > limit {
        return Err(Problem::too_large(limit));
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// What kind of JSON value this is, for messages.
pub fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A value quoted in a message, cut so that a huge input does not make a huge log line.
pub fn clip(text: &str) -> String {
    const MAX: usize = 80;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_a_body_up_to_the_limit() {
        let body = Body::from("0123456789");
        let bytes = read_body(&HeaderMap::new(), body, 10).await.unwrap();
        assert_eq!(&bytes[..], b"0123456789");
    }

    #[tokio::test]
    async fn refuses_a_body_over_the_limit() {
        let err = read_body(&HeaderMap::new(), Body::from("0123456789x"), 10)
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(err.reason.contains("limit of 10 bytes"), "{}", err.reason);
    }

    #[tokio::test]
    async fn refuses_a_declared_length_far_over_the_limit_without_reading() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, "999999999999".parse().unwrap());
        let err = read_body(&headers, Body::empty(), 10).await.unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    /// A body of pieces, each its own frame, as a chunked request's body arrives.
    struct Pieces(std::collections::VecDeque<Bytes>);

    impl hyper::body::Body for Pieces {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
        }
    }

    fn in_pieces(pieces: &[&'static str]) -> Body {
        Body::new(Pieces(pieces.iter().map(|p| Bytes::from(*p)).collect()))
    }

    #[tokio::test]
    async fn a_body_in_several_pieces_is_read_whole_in_order() {
        let body = in_pieces(&["{\"id\":", "", "\"u1\"", "}"]);
        let bytes = read_body(&HeaderMap::new(), body, 100).await.unwrap();
        assert_eq!(&bytes[..], br#"{"id":"u1"}"#);
        // A first piece that is empty, then the rest.
        let bytes = read_body(&HeaderMap::new(), in_pieces(&["", "ab", "c"]), 100)
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"abc");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_in_pieces_is_refused() {
        let body = in_pieces(&["01234", "56789", "x"]);
        let err = read_body(&HeaderMap::new(), body, 10).await.unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn a_body_in_one_piece_is_not_copied() {
        let piece = Bytes::from_static(b"0123456789");
        let body = Body::from(piece.clone());
        let bytes = read_body(&HeaderMap::new(), body, 10).await.unwrap();
        assert_eq!(bytes.as_ptr(), piece.as_ptr());
    }

    #[test]
    fn an_empty_answer_reuses_the_emptied_map_of_the_request() {
        let mut headers = HeaderMap::with_capacity(16);
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        headers.insert("x-goog-channel-token", "secret".parse().unwrap());
        let capacity = headers.capacity();
        let response = empty_reusing(StatusCode::NO_CONTENT, headers);
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert!(response.headers().is_empty(), "{:?}", response.headers());
        assert_eq!(response.headers().capacity(), capacity);
    }

    #[test]
    fn a_problem_answers_json_with_error_and_reason() {
        let response = Problem::forbidden("wrong token").into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response.extensions().get::<Logged>().is_some());
    }
}
