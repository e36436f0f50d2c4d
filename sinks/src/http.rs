//! What the HTTP sinks (webhook, Slack, plugins' hosts) share: one client per sink, the
//! classification of answers into delivered / retryable / permanent (docs/architecture.md §7), the
//! `Retry-After` header, and masking URLs that carry secrets.

use std::time::Duration;

use herald_core::SinkError;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// A client for one sink: rustls, no redirects (a webhook that moved should be fixed in the
/// config, not followed silently), connection pooling.
pub fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Turns an HTTP answer into the delivery's result. `body` is a short excerpt of the answer
/// for the error message.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> Result<(), SinkError> {
    if status.is_success() {
        return Ok(());
    }
    let excerpt: String = body.chars().take(200).collect();
    let message = if excerpt.trim().is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {}", excerpt.trim())
    };
    if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        Err(SinkError::Retryable {
            message,
            retry_after: retry_after(headers),
        })
    } else {
        Err(SinkError::permanent(message))
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = date.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// A failed request: connection problems and timeouts are retryable; a request that could
/// not even be built is permanent. The URL is never in the message (it may hold a secret).
pub fn send_error(e: reqwest::Error) -> SinkError {
    let e = e.without_url();
    if e.is_builder() {
        SinkError::permanent(format!("cannot build the request: {e}"))
    } else if e.is_timeout() {
        SinkError::retryable(format!("timed out: {e}"))
    } else {
        SinkError::retryable(format!("request failed: {}", error_chain(&e)))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `https://hooks.slack.com/***`: enough to recognise the destination, nothing secret.
pub fn mask_url(url: &reqwest::Url) -> String {
    format!("{}://{}/***", url.scheme(), url.host_str().unwrap_or("?"))
}

/// Reads the answer's body, at most 4 KiB of it.
pub async fn body_excerpt(response: reqwest::Response) -> String {
    let bytes = response.bytes().await.unwrap_or_default();
    String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn answers_are_classified() {
        let h = HeaderMap::new();
        assert!(classify(StatusCode::OK, &h, "").is_ok());
        assert!(classify(StatusCode::NO_CONTENT, &h, "").is_ok());
        for retry in [408, 429, 500, 502, 503, 504] {
            let e = classify(StatusCode::from_u16(retry).unwrap(), &h, "busy").unwrap_err();
            assert!(e.is_retryable(), "{retry}");
        }
        for permanent in [400, 401, 403, 404, 410, 422, 301] {
            let e = classify(StatusCode::from_u16(permanent).unwrap(), &h, "no").unwrap_err();
            assert!(!e.is_retryable(), "{permanent}");
        }
        assert_eq!(
            classify(StatusCode::BAD_REQUEST, &h, "invalid_payload\n")
                .unwrap_err()
                .message(),
            "HTTP 400 Bad Request: invalid_payload"
        );
    }

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        h.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn urls_are_masked() {
        let url =
            reqwest::Url::parse("https://hooks.slack.com/services/T000/B000/XXXX?token=s").unwrap();
        assert_eq!(mask_url(&url), "https://hooks.slack.com/***");
    }
}
