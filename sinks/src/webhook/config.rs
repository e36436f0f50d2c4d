use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use herald_core::config::{ConfigError, SinkInput, SinkKeys, SinkType, TemplateField, ValidSink};
use herald_core::sink::DeliveryPolicy;
use serde::Deserialize;

use super::sink::WebhookSpec;

/// `type: webhook`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookConfig {
    /// Where to send; may carry a secret (it is never logged, only `scheme://host/***`).
    url: String,
    /// POST (default), PUT or PATCH.
    #[serde(default)]
    method: Option<String>,
    /// Extra request headers; each value is a template.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// The request body template; the event as CloudEvents JSON when absent.
    #[serde(default)]
    body: Option<String>,
    /// The body's content type when `body` is a template (default `application/json`).
    #[serde(default)]
    content_type: Option<String>,
    /// A Standard Webhooks secret (`whsec_` + base64): requests are signed with it.
    #[serde(default)]
    secret: Option<String>,
}

pub const WEBHOOK: SinkType = SinkType {
    name: "webhook",
    template_fields: &["body"],
    default_policy: DeliveryPolicy::default,
    validate,
};

fn validate(input: &SinkInput<'_>) -> Result<ValidSink, Vec<ConfigError>> {
    let mut keys = SinkKeys::new(input);
    let config: WebhookConfig = keys.typed()?;

    let url = match keys.url("url", &config.url, reqwest::Url::parse) {
        Some(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
            Some(url)
        }
        Some(_) => {
            keys.invalid("url", "must be an http:// or https:// URL");
            None
        }
        None => None,
    };
    let method = match config
        .method
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("POST") => reqwest::Method::POST,
        Some("PUT") => reqwest::Method::PUT,
        Some("PATCH") => reqwest::Method::PATCH,
        Some(other) => {
            keys.error(
                "method",
                format_args!("method `{other}` is not POST, PUT or PATCH"),
            );
            reqwest::Method::POST
        }
    };
    for header in config.headers.keys() {
        if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
            keys.error(
                "headers",
                format_args!("`{header}` is not a valid header name"),
            );
        }
    }
    let key = match &config.secret {
        None => None,
        Some(secret) => match secret
            .strip_prefix("whsec_")
            .map(|b| base64::engine::general_purpose::STANDARD.decode(b))
        {
            Some(Ok(key)) if !key.is_empty() => Some(key),
            _ => {
                keys.invalid(
                    "secret",
                    "must be `whsec_` followed by base64 (the Standard Webhooks format)",
                );
                None
            }
        },
    };
    keys.finish()?;
    // Not reached without a URL: a URL that is not one is a mistake above.
    let Some(url) = url else {
        return Err(Vec::new());
    };
    let node = input.node;

    let mut templates: Vec<TemplateField> = TemplateField::from_map(node, "headers");
    templates.extend(TemplateField::from_node(node, "body"));
    let content_type = if config.body.is_some() {
        config
            .content_type
            .unwrap_or_else(|| "application/json".into())
    } else {
        "application/cloudevents+json".into()
    };
    let spec = WebhookSpec {
        url,
        method,
        headers: config.headers.into_keys().collect(),
        templated_body: config.body.is_some(),
        content_type,
        key,
    };
    Ok(ValidSink {
        templates,
        spec: Arc::new(spec),
    })
}
