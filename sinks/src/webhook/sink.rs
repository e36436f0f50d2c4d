use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use herald_core::config::{BuildContext, SinkSpec};
use herald_core::encoding::hex;
use herald_core::{Delivery, Sink, SinkError};
use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use sha2::Sha256;

use crate::http;

#[derive(Clone)]
pub(super) struct WebhookSpec {
    pub url: reqwest::Url,
    pub method: reqwest::Method,
    /// Header names; their values are the templates `headers.<name>`.
    pub headers: Vec<String>,
    pub templated_body: bool,
    pub content_type: String,
    /// The Standard Webhooks signing key, decoded.
    pub key: Option<Vec<u8>>,
}

impl std::fmt::Debug for WebhookSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSpec")
            .field("url", &http::mask_url(&self.url))
            .field("method", &self.method)
            .finish()
    }
}

impl SinkSpec for WebhookSpec {
    fn build(&self, _context: &BuildContext) -> Result<Arc<dyn Sink>, String> {
        // The engine bounds each attempt with the sink's `delivery.timeout`; this is a backstop.
        let client = http::client(std::time::Duration::from_secs(120))?;
        Ok(Arc::new(WebhookSink {
            spec: self.clone(),
            client,
        }))
    }

    fn describe(&self) -> String {
        let signed = if self.key.is_some() {
            ", signed (Standard Webhooks)"
        } else {
            ""
        };
        format!("{} {}{signed}", self.method, http::mask_url(&self.url))
    }
}

struct WebhookSink {
    spec: WebhookSpec,
    client: reqwest::Client,
}

#[async_trait]
impl Sink for WebhookSink {
    async fn deliver(&self, d: Delivery<'_>) -> Result<(), SinkError> {
        let body = if self.spec.templated_body {
            d.rendered.get("body").unwrap_or_default().to_owned()
        } else {
            d.json.to_owned()
        };
        let mut request = self
            .client
            .request(self.spec.method.clone(), self.spec.url.clone())
            .header(CONTENT_TYPE, &self.spec.content_type);
        for name in &self.spec.headers {
            let value = d
                .rendered
                .get(&format!("headers.{name}"))
                .unwrap_or_default();
            let value = HeaderValue::from_str(value).map_err(|_| {
                SinkError::permanent(format!(
                    "header `{name}` rendered to a value HTTP does not allow"
                ))
            })?;
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| SinkError::permanent(format!("`{name}` is not a header name")))?;
            request = request.header(name, value);
        }
        if let Some(key) = &self.spec.key {
            let id = message_id(&d);
            let timestamp = chrono::Utc::now().timestamp().to_string();
            request = request
                .header("webhook-id", &id)
                .header("webhook-timestamp", &timestamp)
                .header(
                    "webhook-signature",
                    sign(key, &id, &timestamp, body.as_bytes()),
                );
        }
        let response = request.body(body).send().await.map_err(http::send_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        let excerpt = if status.is_success() {
            String::new()
        } else {
            http::body_excerpt(response).await
        };
        http::classify(status, &headers, &excerpt)
    }
}

/// The same id on every attempt of one delivery, so the receiver can drop duplicates.
fn message_id(d: &Delivery<'_>) -> String {
    use sha2::Digest;
    let digest = Sha256::digest(format!(
        "{}\0{}\0{}\0{}",
        d.event.source, d.event.id, d.route, d.sink
    ));
    format!("msg_{}", hex(&digest[..12]))
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` (Standard Webhooks).
pub(super) fn sign(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}
