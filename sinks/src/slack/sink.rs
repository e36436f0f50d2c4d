use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_core::config::{BuildContext, SinkSpec};
use herald_core::sink::Pace;
use herald_core::{Delivery, Sink, SinkError};
use reqwest::StatusCode;
use serde_json::Value;

use super::config::MAX_BLOCKS;
use super::pack::{Failure, Pacer, Packer, Part, Post, Target};
use crate::http;

#[derive(Clone)]
pub(super) struct SlackSpec {
    pub url: reqwest::Url,
    /// Messages per second per webhook URL (`None`: unpaced).
    pub per_second: Option<f64>,
    pub burst: u32,
    pub max_pack: usize,
}

impl std::fmt::Debug for SlackSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackSpec")
            .field("url", &mask(&self.url))
            .field("per_second", &self.per_second)
            .field("burst", &self.burst)
            .field("max_pack", &self.max_pack)
            .finish()
    }
}

/// `https://hooks.slack.com/services/***`: the host and the first path segment, never the
/// tokens after it.
pub(super) fn mask(url: &reqwest::Url) -> String {
    let first = url
        .path_segments()
        .and_then(|mut s| s.next())
        .filter(|s| !s.is_empty());
    match first {
        Some(segment) => format!(
            "{}://{}/{segment}/***",
            url.scheme(),
            url.host_str().unwrap_or("?")
        ),
        None => http::mask_url(url),
    }
}

impl SinkSpec for SlackSpec {
    fn build(&self, _context: &BuildContext) -> Result<Arc<dyn Sink>, String> {
        // The engine bounds each attempt; this is a backstop for one request.
        let client = http::client(Duration::from_secs(60))?;
        let poster = Poster {
            client,
            url: self.url.clone(),
        };
        let pacer = Pacer::for_url(self.url.as_str(), self.per_second, self.burst);
        Ok(Arc::new(SlackSink {
            packer: Packer::new(poster, pacer, self.max_pack),
        }))
    }

    fn pace(&self) -> Option<Pace> {
        self.per_second.map(|per_second| Pace {
            per_second,
            burst: self.burst,
        })
    }

    fn describe(&self) -> String {
        let rate = match self.per_second {
            Some(r) if r >= 1.0 => format!("{r}/s"),
            Some(r) => format!("{}/m", r * 60.0),
            None => "unpaced".into(),
        };
        format!(
            "{} ({rate}, burst {}, up to {} events per message)",
            mask(&self.url),
            self.burst,
            self.max_pack
        )
    }
}

struct SlackSink {
    packer: Packer<Poster>,
}

#[async_trait]
impl Sink for SlackSink {
    async fn deliver(&self, d: Delivery<'_>) -> Result<(), SinkError> {
        let part = part(d.rendered)?;
        self.packer.send(part, d.turn.clone()).await
    }
}

/// This delivery's part of a message, from its rendered templates. Blocks that do not render
/// to a JSON array fail here, permanently, before they can spoil a packed message.
pub(super) fn part(rendered: &herald_core::template::Rendered) -> Result<Part, SinkError> {
    let field = |name: &str| {
        rendered
            .get(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let blocks = match rendered.get("blocks").map(str::trim) {
        None | Some("") => None,
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(blocks)) if blocks.len() <= MAX_BLOCKS => Some(blocks),
            Ok(Value::Array(blocks)) => {
                return Err(SinkError::permanent(format!(
                    "`blocks` rendered {} blocks; Slack takes at most {MAX_BLOCKS}",
                    blocks.len()
                )));
            }
            Ok(_) => {
                return Err(SinkError::permanent(
                    "`blocks` did not render to a JSON array",
                ));
            }
            Err(e) => {
                return Err(SinkError::permanent(format!(
                    "`blocks` did not render to JSON ({e}); quote values or use `| tojson`"
                )));
            }
        },
    };
    Ok(Part {
        target: Target {
            channel: field("channel"),
            username: field("username"),
            icon_emoji: field("icon_emoji"),
        },
        text: rendered.get("text").unwrap_or_default().to_owned(),
        blocks,
    })
}

struct Poster {
    client: reqwest::Client,
    url: reqwest::Url,
}

impl Post for Poster {
    async fn post(&self, message: Value) -> Result<(), Failure> {
        let response = self
            .client
            .post(self.url.clone())
            .json(&message)
            .send()
            .await
            .map_err(|e| Failure {
                error: http::send_error(e),
                content: false,
            })?;
        let status = response.status();
        let headers = response.headers().clone();
        if status.is_success() {
            return Ok(());
        }
        let body = http::body_excerpt(response).await;
        Err(classify(status, &headers, &body))
    }
}

/// Slack's error codes that no retry can fix. The ones about the message's content are marked
/// `true`: a pack refused for one of them is worth sending again part by part.
const PERMANENT: &[(&str, bool)] = &[
    ("invalid_payload", true),
    ("no_text", true),
    ("too_many_attachments", true),
    ("invalid_blocks", true),
    ("user_not_found", false),
    ("channel_not_found", false),
    ("channel_is_archived", false),
    ("action_prohibited", false),
    ("posting_to_general_channel_denied", false),
    ("no_service", false),
    ("no_service_id", false),
    ("no_team", false),
    ("team_disabled", false),
    ("invalid_token", false),
];

/// Slack answers errors with a code as the body (`channel_not_found`); the code decides,
/// the HTTP status only when the code is unknown.
pub(super) fn classify(
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &str,
) -> Failure {
    let code = body.trim();
    if let Some((code, content)) = PERMANENT.iter().find(|(c, _)| *c == code) {
        return Failure {
            error: SinkError::permanent(format!(
                "Slack refused the message: {code} (HTTP {})",
                status.as_u16()
            )),
            content: *content,
        };
    }
    if code == "rollup_error" {
        return Failure {
            error: SinkError::retryable(format!(
                "Slack failed: rollup_error (HTTP {})",
                status.as_u16()
            )),
            content: false,
        };
    }
    let error = match http::classify(status, headers, body) {
        Err(e) => e,
        Ok(()) => SinkError::permanent(format!("HTTP {status}")),
    };
    let content = !error.is_retryable() && status.is_client_error();
    Failure {
        error: match error {
            SinkError::Retryable {
                message,
                retry_after,
            } => SinkError::Retryable {
                message: format!("Slack: {message}"),
                retry_after,
            },
            SinkError::Permanent { message } => SinkError::permanent(format!("Slack: {message}")),
        },
        content,
    }
}
