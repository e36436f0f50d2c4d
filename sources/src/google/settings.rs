//! The `google:` section of routes.yaml: the credentials and endpoints Herald calls Google
//! with (the lifecycle of registrations and channels, the Pub/Sub pull loop). Owned by this
//! crate and registered with core as a section ([`SECTION`]); core knows nothing of Google.
//!
//! ```yaml
//! google:
//!   credentials: /etc/herald/service-account.json   # or $GOOGLE_APPLICATION_CREDENTIALS
//!   subject: admin@example.edu       # the user Directory calls act as
//!   # token_url, classroom_api, directory_api: Google's by default; tests use local servers
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use herald_core::Config;
use herald_core::config::{ConfigError, SectionInput, SectionType};
use serde::Deserialize;

/// The section's key in routes.yaml.
pub const NAME: &str = "google";

/// `google:`
pub const SECTION: SectionType = SectionType {
    name: NAME,
    validate,
};

/// `google:` — credentials for Google's APIs.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GoogleConfig {
    /// A service-account key file; `$GOOGLE_APPLICATION_CREDENTIALS` when absent. Resolved
    /// against the config file's directory at load.
    #[serde(default)]
    pub credentials: Option<PathBuf>,
    /// The user to act as for Directory calls (domain-wide delegation).
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub token_url: Option<String>,
    #[serde(default)]
    pub classroom_api: Option<String>,
    #[serde(default)]
    pub directory_api: Option<String>,
}

impl GoogleConfig {
    /// The `google:` section of `config`, or the defaults when the file has none.
    pub fn of(config: &Config) -> GoogleConfig {
        config
            .section::<GoogleConfig>(NAME)
            .cloned()
            .unwrap_or_default()
    }
}

fn validate(input: &SectionInput<'_>) -> herald_core::config::registry::SectionResult {
    let node = input.node;
    let mut google: GoogleConfig = node
        .deserialize()
        .map_err(|e| vec![ConfigError::from_de("`google`", e, node.loc)])?;
    let loc = |key: &str| node.get(key).map_or(node.loc, |n| n.loc);
    let mut errors = Vec::new();
    let urls = [
        ("token_url", &google.token_url),
        ("classroom_api", &google.classroom_api),
        ("directory_api", &google.directory_api),
    ];
    for (key, url) in urls {
        let Some(url) = url else { continue };
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            errors.push(ConfigError::new(
                loc(key),
                format!("`google.{key}` must be an http:// or https:// URL, found `{url}`"),
            ));
        }
    }
    if let Some(subject) = &google.subject
        && !subject.contains('@')
    {
        errors.push(ConfigError::new(
            loc("subject"),
            format!("`google.subject` must be a user's e-mail address, found `{subject}`"),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    google.credentials = google.credentials.map(|p| input.base_dir.join(p));
    Ok(Arc::new(google))
}

/// Where credentials come from when a source names none.
#[derive(Clone, Debug, Default)]
pub struct Fallbacks {
    /// `google.credentials`, resolved.
    pub google_credentials: Option<PathBuf>,
    /// `$PUBSUB_EMULATOR_HOST`.
    pub emulator_host: Option<String>,
    /// `$GOOGLE_APPLICATION_CREDENTIALS`.
    pub application_credentials: Option<PathBuf>,
}

impl Fallbacks {
    /// The fallbacks of `config` and the process environment.
    pub fn of(config: &Config) -> Fallbacks {
        Fallbacks {
            google_credentials: GoogleConfig::of(config).credentials,
            emulator_host: std::env::var("PUBSUB_EMULATOR_HOST").ok(),
            application_credentials: application_credentials(),
        }
    }
}

/// `$GOOGLE_APPLICATION_CREDENTIALS`, when set and not empty.
pub fn application_credentials() -> Option<PathBuf> {
    std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS")
        .filter(|p| !p.is_empty())
        .map(Into::into)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use herald_core::config::{Node, SectionInput};

    use super::*;

    fn errors(yaml: &str) -> Vec<String> {
        let node: Node = serde_saphyr::from_str(yaml).expect("test YAML parses");
        validate(&SectionInput {
            name: NAME,
            node: &node,
            base_dir: Path::new("/etc/herald"),
        })
        .unwrap_err()
        .iter()
        .map(|e| format!("{}: {}", e.loc, e.message))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
    }

    #[test]
    fn urls_and_subject_are_checked() {
        assert_eq!(
            errors(
                "credentials: sa.json\nsubject: admin\ntoken_url: localhost:9/token\ndirectory_api: https://admin.example\n"
            ),
            [
                "2:10: `google.subject` must be a user's e-mail address, found `admin`",
                "3:12: `google.token_url` must be an http:// or https:// URL, found `localhost:9/token`",
            ]
        );
        assert_eq!(errors("credentials: sa.json\nkey: x\n").len(), 1);
    }

    #[test]
    fn credentials_are_resolved_against_the_config_directory() {
        let node: Node = serde_saphyr::from_str("credentials: keys/sa.json\n").unwrap();
        let section = validate(&SectionInput {
            name: NAME,
            node: &node,
            base_dir: Path::new("/etc/herald"),
        })
        .unwrap();
        let google = (*section).as_any().downcast_ref::<GoogleConfig>().unwrap();
        assert_eq!(
            google.credentials.as_deref(),
            Some(Path::new("/etc/herald/keys/sa.json"))
        );
    }
}
