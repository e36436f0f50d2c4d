use serde::Deserialize;

/// The `config:` mapping of a `teams-sink` plugin sink.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The channel's incoming-webhook URL; it holds a secret, so it is never put in a message.
    pub url: String,
    /// Which card the webhook takes: `adaptive_card` (Workflows webhooks, the default) or
    /// `message_card` (legacy Office 365 connectors).
    #[serde(default)]
    pub format: Format,
    /// How long one post may take, in seconds (1 to 300); the gateway's `delivery.timeout`
    /// should be longer.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    AdaptiveCard,
    MessageCard,
}

fn default_timeout() -> u64 {
    10
}

impl Config {
    /// What serde cannot check. Messages never quote the URL.
    pub fn check(&self) -> Result<(), String> {
        let rest = self
            .url
            .strip_prefix("https://")
            .or_else(|| self.url.strip_prefix("http://"))
            .ok_or("`url` must be an https:// (or http://) URL")?;
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err("`url` has no host".into());
        }
        if !(1..=300).contains(&self.timeout_seconds) {
            return Err(format!(
                "`timeout_seconds` is {}; give 1 to 300",
                self.timeout_seconds
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Result<Config, String> {
        let config: Config = serde_json::from_str(json).map_err(|e| e.to_string())?;
        config.check().map(|_| config)
    }

    #[test]
    fn accepts_a_webhook_url_and_defaults() {
        let c = config(r#"{"url": "https://example.webhook.office.com/webhookb2/x"}"#).unwrap();
        assert_eq!(c.format, Format::AdaptiveCard);
        assert_eq!(c.timeout_seconds, 10);
        let c = config(r#"{"url": "http://127.0.0.1:9/x", "format": "message_card"}"#).unwrap();
        assert_eq!(c.format, Format::MessageCard);
    }

    #[test]
    fn refuses_bad_urls_and_timeouts_without_quoting_the_url() {
        let err = config(r#"{"url": "ftp://secret@host/x"}"#).unwrap_err();
        assert_eq!(err, "`url` must be an https:// (or http://) URL");
        assert_eq!(
            config(r#"{"url": "https:///x"}"#).unwrap_err(),
            "`url` has no host"
        );
        assert_eq!(
            config(r#"{"url": "https://h/x", "timeout_seconds": 0}"#).unwrap_err(),
            "`timeout_seconds` is 0; give 1 to 300"
        );
        assert!(
            config(r#"{"url": "https://h/x", "format": "hero"}"#)
                .unwrap_err()
                .contains("unknown variant `hero`")
        );
        assert!(
            config(r#"{"ur": "https://h/x"}"#)
                .unwrap_err()
                .contains("unknown field `ur`")
        );
    }
}
