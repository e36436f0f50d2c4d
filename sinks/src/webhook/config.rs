use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use herald_core::config::{ConfigError, SinkInput, SinkType, TemplateField, ValidSink};
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
    let name = input.name;
    let node = input.node;
    let config: WebhookConfig = node
        .deserialize()
        .map_err(|e| vec![ConfigError::from_de(&format!("sink `{name}`"), e, node.loc)])?;
    let at = |key: &str| node.get(key).map_or(node.loc, |n| n.loc);
    let mut errors = Vec::new();

    let url = match reqwest::Url::parse(&config.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
            Some(url)
        }
        Ok(_) => {
            errors.push(ConfigError::new(
                at("url"),
                format!("sink `{name}`: `url` must be an http:// or https:// URL"),
            ));
            None
        }
        // The parse error never quotes the URL, which may hold a secret.
        Err(e) => {
            errors.push(ConfigError::new(
                at("url"),
                format!("sink `{name}`: `url` is not a URL ({e})"),
            ));
            None
        }
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
            errors.push(ConfigError::new(
                at("method"),
                format!("sink `{name}`: method `{other}` is not POST, PUT or PATCH"),
            ));
            reqwest::Method::POST
        }
    };
    for header in config.headers.keys() {
        if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
            errors.push(ConfigError::new(
                at("headers"),
                format!("sink `{name}`: `{header}` is not a valid header name"),
            ));
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
                errors.push(ConfigError::new(
                    at("secret"),
                    format!("sink `{name}`: `secret` must be `whsec_` followed by base64 (the Standard Webhooks format)"),
                ));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let Some(url) = url else { return Err(errors) };

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
