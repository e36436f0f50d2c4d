//! `type: directory_webhook` — its routes.yaml keys and their (pure) validation.
//!
//! `channel_tokens` is required unless Herald creates the channels itself (`watch:`): the
//! Directory API sends the token chosen when the channel was created (`users.watch`'s
//! `token`) with every notification, and it is the only thing that tells Google's requests
//! from anyone else's. Setting one costs nothing, so there is no unauthenticated mode.
//! Several tokens may be listed, so channels can be moved to a new token one by one. The
//! channels of `watch:` get a random token each, which the source accepts besides these.

use std::fmt;

use herald_core::config::registry::SourceResult;
use herald_core::config::{ConfigError, SourceInput, units};
use serde::Deserialize;

use crate::config::{Checks, check_path, parse};
use crate::enrich::config::EnrichSpec;
use crate::google::config::{self as google, WatchConfig, WatchSpec};
use crate::source::registered;

/// Google accepts channel tokens of up to 256 characters.
const MAX_TOKEN: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryConfig {
    /// The HTTP path the channels' `address` points at; default `/webhook/<name>`.
    #[serde(default)]
    path: Option<String>,
    /// The tokens the channels were created with; a request must carry one of them in
    /// `X-Goog-Channel-Token`. Required. Secret: never logged or stored.
    #[serde(default)]
    channel_tokens: Option<Vec<String>>,
    /// Only these channel ids are accepted, when set.
    #[serde(default)]
    channel_ids: Option<Vec<String>>,
    /// Route the `sync` message each new channel sends first (as `directory.users.sync`);
    /// by default it is acknowledged and counted only.
    #[serde(default)]
    route_sync: bool,
    /// Channels Herald opens with `users.watch` and keeps renewed; needs `google:`
    /// credentials and `address`.
    #[serde(default)]
    watch: Vec<WatchConfig>,
    /// The public HTTPS URL of this source, given to Google as each channel's address.
    #[serde(default)]
    address: Option<String>,
    /// How long each channel of `watch:` is asked to live (default 6h); renewed before.
    #[serde(default, deserialize_with = "units::opt_duration")]
    ttl: Option<std::time::Duration>,
    /// `enrich:` (docs/architecture.md §11), read from the node by
    /// `enrich::config::parse`, which reports each mistake at its key.
    #[serde(default)]
    enrich: Option<serde::de::IgnoredAny>,
}

/// A validated `directory_webhook` source. Its `Debug` masks the tokens.
#[derive(Clone, PartialEq)]
pub struct DirectorySpec {
    pub path: String,
    pub channel_tokens: Vec<String>,
    pub channel_ids: Option<Vec<String>>,
    pub route_sync: bool,
    pub watches: Vec<WatchSpec>,
    /// `enrich:`; `None` when absent or `false`.
    pub enrich: Option<EnrichSpec>,
}

impl fmt::Debug for DirectorySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectorySpec")
            .field("path", &self.path)
            .field(
                "channel_tokens",
                &format_args!("[{} masked]", self.channel_tokens.len()),
            )
            .field("channel_ids", &self.channel_ids)
            .field("route_sync", &self.route_sync)
            .field("watches", &self.watches)
            .field("enrich", &self.enrich)
            .finish()
    }
}

impl DirectorySpec {
    /// One line for `herald check`, the tokens masked.
    pub fn describe(&self) -> String {
        let tokens = match self.channel_tokens.len() {
            1 => "1 channel token".to_owned(),
            n => format!("{n} channel tokens"),
        };
        let ids = match &self.channel_ids {
            None => "any channel".to_owned(),
            Some(ids) => format!("channels {}", ids.join(", ")),
        };
        let sync = if self.route_sync {
            "sync routed"
        } else {
            "sync not routed"
        };
        let watched = match self.watches.len() {
            0 => String::new(),
            n => format!(", {n} channel(s) kept open by Herald"),
        };
        let enriched = match &self.enrich {
            Some(enrich) => format!("; {}", enrich.describe()),
            None => String::new(),
        };
        format!(
            "Directory webhook at {}, {tokens} (masked), {ids}, {sync}{watched}{enriched}",
            self.path
        )
    }
}

pub fn validate(input: &SourceInput<'_>) -> SourceResult {
    registered(validate_spec(input))
}

/// Validates a `directory_webhook` source's keys.
pub fn validate_spec(input: &SourceInput<'_>) -> Result<DirectorySpec, Vec<ConfigError>> {
    let config: DirectoryConfig = parse(input)?;
    let mut checks = Checks::new(input);
    let path = config
        .path
        .unwrap_or_else(|| format!("/webhook/{}", input.name));
    if let Err(message) = check_path(&path) {
        checks.error("path", message);
    }
    let channel_tokens = config.channel_tokens.unwrap_or_default();
    let watches = google::watches(
        input.name,
        config.address,
        config.ttl,
        config.watch,
        &mut checks,
    );
    if channel_tokens.is_empty() && watches.is_empty() {
        checks.error(
            "channel_tokens",
            "`channel_tokens` is required: list the token(s) the channels were created with \
             (`token` of users.watch), e.g. channel_tokens: [\"${DIRECTORY_CHANNEL_TOKEN}\"], \
             or let Herald open the channels with `watch:`",
        );
    }
    for (i, token) in channel_tokens.iter().enumerate() {
        if token.is_empty()
            || token.len() > MAX_TOKEN
            || !token.chars().all(|c| c.is_ascii_graphic())
        {
            checks.error(
                "channel_tokens",
                format!(
                    "`channel_tokens` #{}: a token is 1 to {MAX_TOKEN} visible ASCII characters",
                    i + 1
                ),
            );
        }
    }
    if let Some(ids) = &config.channel_ids
        && (ids.is_empty() || ids.iter().any(String::is_empty))
    {
        checks.error(
            "channel_ids",
            "`channel_ids` lists the accepted channel ids; remove it to accept any channel",
        );
    }
    let enrich = crate::enrich::config::parse(
        input.node,
        &mut checks,
        crate::enrich::config::Kind::Directory,
    );
    let _ = config.enrich;
    checks.finish(DirectorySpec {
        path,
        channel_tokens,
        channel_ids: config.channel_ids,
        route_sync: config.route_sync,
        watches,
        enrich,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::validate_yaml;

    fn spec(yaml: &str) -> DirectorySpec {
        validate_yaml(validate_spec, "directory", yaml).unwrap()
    }

    fn errors(yaml: &str) -> String {
        validate_yaml(validate_spec, "directory", yaml)
            .unwrap_err()
            .iter()
            .map(|e| format!("{}: {}\n", e.loc, e.message))
            .collect()
    }

    #[test]
    fn defaults() {
        let s = spec("channel_tokens: [t1, t2]");
        assert_eq!(s.path, "/webhook/directory");
        assert_eq!(s.channel_tokens, ["t1", "t2"]);
        assert_eq!(s.channel_ids, None);
        assert!(!s.route_sync);
    }

    #[test]
    fn tokens_are_required() {
        assert!(errors("route_sync: true").contains("`channel_tokens` is required"));
        assert!(errors("channel_tokens: []").contains("`channel_tokens` is required"));
        assert!(errors("channel_tokens: ['']").contains("#1: a token is 1 to 256"));
    }

    #[test]
    fn tokens_never_show() {
        let s = spec("channel_tokens: [s3cret-token]\nchannel_ids: [c1]\nroute_sync: true");
        assert!(!format!("{s:?}").contains("s3cret"));
        let described = s.describe();
        assert!(!described.contains("s3cret"), "{described}");
        assert_eq!(
            described,
            "Directory webhook at /webhook/directory, 1 channel token (masked), channels c1, sync routed"
        );
    }

    #[test]
    fn watches_need_no_fixed_token() {
        let s = spec(
            "address: https://h.example.edu/webhook/directory\nttl: 2h\nwatch:\n  - { event: add, domain: example.edu }\n  - { event: delete, customer: my_customer }",
        );
        assert!(s.channel_tokens.is_empty());
        let names: Vec<&str> = s.watches.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            names,
            ["directory/add/example.edu", "directory/delete/my_customer"]
        );
        assert_eq!(s.watches[0].ttl, std::time::Duration::from_secs(7200));
        assert_eq!(
            s.watches[1].address,
            "https://h.example.edu/webhook/directory"
        );
    }

    #[test]
    fn watch_mistakes_name_the_entry() {
        let all = errors(
            "address: http://h.example.edu/x\nttl: 1m\nwatch:\n  - { event: added, domain: e }\n  - { event: add }\n  - { event: add, domain: a, customer: b }",
        );
        assert!(all.contains("must be an https:// URL"), "{all}");
        assert!(all.contains("`ttl` must be between 5m and 7d"), "{all}");
        assert!(all.contains("watch #1: unknown event `added`"), "{all}");
        assert!(
            all.contains("watch #2: give exactly one of `domain`"),
            "{all}"
        );
        assert!(
            all.contains("watch #3: give exactly one of `domain`"),
            "{all}"
        );
        assert!(errors("watch: [{event: add, domain: e}]").contains("`watch` needs `address:`"));
        assert!(errors("channel_tokens: [t]\nttl: 1h").contains("add `watch:` or remove them"));
    }

    #[test]
    fn mistakes_name_the_key() {
        let all = errors("path: nope\nchannel_tokens: [t]\nchannel_ids: []");
        assert!(
            all.contains("1:7: source `directory`: `path` must start with `/`"),
            "{all}"
        );
        assert!(
            all.contains("`channel_ids` lists the accepted channel ids"),
            "{all}"
        );
        assert!(errors("channel_tokens: [t]\nroute_synk: true").contains("unknown"));
    }
}
