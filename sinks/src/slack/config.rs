use std::sync::Arc;
use std::time::Duration;

use herald_core::config::model::parse_rate;
use herald_core::config::{ConfigError, SinkInput, SinkKeys, SinkType, TemplateField, ValidSink};
use herald_core::sink::DeliveryPolicy;
use serde::Deserialize;

use super::sink::SlackSpec;

/// `type: slack`. The template fields are checked here for their type and then read from the
/// node, where their locations are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct SlackConfig {
    /// The incoming webhook. A secret: never logged, shown as `https://hooks.slack.com/services/***`.
    webhook_url: String,
    /// The message text (Slack mrkdwn); also the notification text when `blocks` are given.
    text: String,
    /// Block Kit blocks: a template rendering a JSON array.
    #[serde(default)]
    blocks: Option<String>,
    /// Honoured only by legacy webhooks (custom integrations); app webhooks post as the app
    /// to the channel chosen when the webhook was created, and ignore these.
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    icon_emoji: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    /// Messages per webhook URL (`1/s`, `30/m`, `none`); Slack allows about one per second.
    #[serde(default)]
    rate_limit: Option<String>,
    /// Messages that may go at once before the rate applies.
    #[serde(default)]
    burst: Option<u32>,
    /// Most events packed into one message when a backlog waits (1: never pack).
    #[serde(default)]
    max_pack: Option<usize>,
}

const DEFAULT_RATE: f64 = 1.0;
const DEFAULT_BURST: u32 = 3;
pub(super) const DEFAULT_MAX_PACK: usize = 20;
/// Slack takes at most 50 blocks per message.
pub(super) const MAX_BLOCKS: usize = 50;
const MAX_PACK_LIMIT: usize = 100;

pub const SLACK: SinkType = SinkType {
    name: "slack",
    template_fields: &["text", "blocks", "username", "icon_emoji", "channel"],
    default_policy,
    validate,
};

/// No engine rate limit (the sink paces itself per webhook URL) and room for a backlog to wait
/// inside the sink to be packed (see the module doc).
fn default_policy() -> DeliveryPolicy {
    DeliveryPolicy {
        concurrency: 64,
        rate_per_second: None,
        burst: 1,
        timeout: Duration::from_secs(60),
        ..DeliveryPolicy::default()
    }
}

fn validate(input: &SinkInput<'_>) -> Result<ValidSink, Vec<ConfigError>> {
    let mut keys = SinkKeys::new(input);
    let config: SlackConfig = keys.typed()?;

    let url = match keys.url("webhook_url", &config.webhook_url, reqwest::Url::parse) {
        Some(url) if url.scheme() == "https" && url.host_str().is_some() => Some(url),
        // Plain HTTP would send the secret URL in clear; only a local receiver may have it.
        Some(url) if url.scheme() == "http" && is_loopback(&url) => Some(url),
        Some(_) => {
            keys.invalid(
                "webhook_url",
                "must be an https:// URL (the incoming webhook Slack gave you)",
            );
            None
        }
        None => None,
    };
    let per_second = match config.rate_limit.as_deref().map(parse_rate) {
        None => Some(DEFAULT_RATE),
        Some(Ok(rate)) => rate,
        Some(Err(message)) => {
            keys.error("rate_limit", format_args!("`rate_limit`: {message}"));
            None
        }
    };
    let burst = keys.at_least("burst", config.burst.unwrap_or(DEFAULT_BURST), 1);
    let max_pack = config.max_pack.unwrap_or(DEFAULT_MAX_PACK);
    if !(1..=MAX_PACK_LIMIT).contains(&max_pack) {
        keys.invalid(
            "max_pack",
            format_args!("must be between 1 (never pack) and {MAX_PACK_LIMIT}"),
        );
    }
    if let Some(blocks) = &config.blocks
        && let Err(message) = check_blocks(blocks)
    {
        keys.error("blocks", format_args!("`blocks`: {message}"));
    }
    keys.finish()?;
    // Not reached without a URL: a URL that is not one is a mistake above.
    let Some(url) = url else {
        return Err(Vec::new());
    };
    let node = input.node;

    let templates = ["text", "blocks", "username", "icon_emoji", "channel"]
        .iter()
        .filter_map(|field| TemplateField::from_node(node, field))
        .collect();
    Ok(ValidSink {
        templates,
        spec: Arc::new(SlackSpec {
            url,
            per_second,
            burst: burst.max(1),
            max_pack,
        }),
    })
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks at load that `blocks` will render to a JSON array: the template with every
/// `{{ … }}` replaced by a number must already be one. Templates with `{% … %}` statements
/// can only be checked when rendered (a delivery that renders invalid JSON fails permanently).
pub(super) fn check_blocks(template: &str) -> Result<(), String> {
    if template.contains("{%") {
        return Ok(());
    }
    let skeleton = replace_expressions(template);
    match serde_json::from_str::<serde_json::Value>(&skeleton) {
        Ok(serde_json::Value::Array(blocks)) if blocks.len() <= MAX_BLOCKS => Ok(()),
        Ok(serde_json::Value::Array(blocks)) => Err(format!(
            "{} blocks; Slack takes at most {MAX_BLOCKS} per message",
            blocks.len()
        )),
        Ok(_) => Err("must be a JSON array of blocks (`[{\"type\": \"section\", …}]`)".into()),
        Err(e) => Err(format!(
            "not JSON ({e}, in the template's line {}); write values as `\"{{{{ x }}}}\"` or `{{{{ x | tojson }}}}`",
            e.line()
        )),
    }
}

/// `{{ expr }}` → `0`, `{# comment #}` → nothing.
fn replace_expressions(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    loop {
        let next = [("{{", "}}", "0"), ("{#", "#}", "")]
            .iter()
            .filter_map(|(open, close, with)| rest.find(open).map(|i| (i, *open, *close, *with)))
            .min_by_key(|(i, ..)| *i);
        let Some((start, open, close, with)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..start]);
        let after = &rest[start + open.len()..];
        match after.find(close) {
            Some(end) => {
                out.push_str(with);
                rest = &after[end + close.len()..];
            }
            // Unclosed: core reports the template syntax error.
            None => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_checked_as_json_when_they_can_be() {
        assert!(check_blocks(r#"[{"type": "section", "text": {"type": "mrkdwn", "text": "{{ data.primaryEmail }}"}}]"#).is_ok());
        assert!(
            check_blocks(r#"[{"type": "context", "elements": {{ data.items | tojson }}}]"#).is_ok()
        );
        assert!(check_blocks(r#"[{% for x in data.xs %}{"type": "divider"}{% endfor %}]"#).is_ok());
        assert!(
            check_blocks(r#"{"type": "divider"}"#)
                .unwrap_err()
                .contains("JSON array")
        );
        let e = check_blocks("[\n  {\"type\": \"section\",}\n]").unwrap_err();
        assert!(e.starts_with("not JSON") && e.contains("line 2"), "{e}");
    }
}
