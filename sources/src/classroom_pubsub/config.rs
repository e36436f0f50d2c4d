//! `type: classroom_pubsub` — its routes.yaml keys and their (pure) validation.
//!
//! The source either receives Pub/Sub *push* requests at `path` (the default), or, with
//! `pull:`, pulls from a subscription itself; the two exclude each other.

use std::path::PathBuf;
use std::time::Duration;

use herald_core::config::registry::SourceResult;
use herald_core::config::{ConfigError, SourceInput, units};
use serde::Deserialize;

use crate::config::{Checks, check_path, check_url, parse};
use crate::enrich::config::EnrichSpec;
use crate::google::config::{self as google, RegistrationConfig, RegistrationSpec};
use crate::source::registered;

/// Google's keys for the tokens Pub/Sub push requests carry.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
/// Google's Pub/Sub REST endpoint.
pub const PUBSUB_ENDPOINT: &str = "https://pubsub.googleapis.com";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassroomConfig {
    /// The HTTP path Pub/Sub pushes to (the subscription's push endpoint); default
    /// `/push/<name>`. Not with `pull`.
    #[serde(default)]
    path: Option<String>,
    /// Verify the OIDC token Pub/Sub attaches to each push (the subscription's "enable
    /// authentication"). Without it anyone who can reach `path` can post notifications.
    #[serde(default)]
    auth: Option<AuthConfig>,
    /// Pull from a subscription instead of receiving pushes: for a gateway that Pub/Sub
    /// cannot reach.
    #[serde(default)]
    pull: Option<PullConfig>,
    /// The Pub/Sub topic the `registrations` publish to: `projects/P/topics/T`.
    #[serde(default)]
    topic: Option<String>,
    /// Classroom feeds Herald registers for at start and keeps renewed (a registration
    /// lasts a week); needs `google:` credentials.
    #[serde(default)]
    registrations: Vec<RegistrationConfig>,
    /// Look up what a notification points to (docs/architecture.md §11); read from the
    /// node by `enrich::config::parse`, which reports each mistake at its key.
    #[serde(default)]
    enrich: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthConfig {
    /// The token's `aud`: the subscription's configured audience (by default its push
    /// endpoint URL), compared exactly.
    audience: String,
    /// The token's `email`: the service account the subscription pushes as.
    service_account: String,
    /// Where the signing keys are published; tests serve their own.
    #[serde(default = "default_jwks_url")]
    jwks_url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PullConfig {
    /// `projects/<project>/subscriptions/<subscription>`.
    subscription: String,
    /// The Pub/Sub REST endpoint, e.g. an emulator's `http://127.0.0.1:8085`; default
    /// Google's, or `$PUBSUB_EMULATOR_HOST` when set. Without `credentials` nothing is
    /// sent to authenticate to an endpoint set here (emulators want none).
    #[serde(default)]
    endpoint: Option<String>,
    /// A service-account key file (JSON) to authenticate with; default `google.credentials`,
    /// then `$GOOGLE_APPLICATION_CREDENTIALS`. Relative to the config file's directory.
    #[serde(default)]
    credentials: Option<PathBuf>,
    /// At most this many messages per pull request (1–1000).
    #[serde(default = "default_max_messages")]
    max_messages: u32,
    /// How long a pulled message is held before Pub/Sub may redeliver it (10s–600s); set
    /// with `:modifyAckDeadline` after each pull. Default: the subscription's own deadline.
    #[serde(default, deserialize_with = "units::opt_duration")]
    ack_deadline: Option<Duration>,
}

fn default_jwks_url() -> String {
    GOOGLE_JWKS_URL.to_owned()
}

fn default_max_messages() -> u32 {
    100
}

/// A validated `classroom_pubsub` source: how it receives, and the registrations Herald
/// keeps alive for it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassroomSpec {
    pub mode: Mode,
    pub registrations: Vec<RegistrationSpec>,
    /// `enrich:`; `None` when absent or `false` (nothing changes then).
    pub enrich: Option<EnrichSpec>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    Push(PushSpec),
    Pull(PullSpec),
}

#[derive(Clone, Debug, PartialEq)]
pub struct PushSpec {
    pub path: String,
    pub auth: Option<AuthSpec>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AuthSpec {
    pub audience: String,
    pub service_account: String,
    pub jwks_url: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PullSpec {
    pub subscription: String,
    /// `None`: `$PUBSUB_EMULATOR_HOST` or Google's, decided when the loop starts.
    pub endpoint: Option<String>,
    /// Already resolved against the config file's directory.
    pub credentials: Option<PathBuf>,
    pub max_messages: u32,
    pub ack_deadline: Option<Duration>,
}

impl ClassroomSpec {
    pub fn push(&self) -> Option<&PushSpec> {
        match &self.mode {
            Mode::Push(push) => Some(push),
            Mode::Pull(_) => None,
        }
    }

    pub fn pull(&self) -> Option<&PullSpec> {
        match &self.mode {
            Mode::Pull(pull) => Some(pull),
            Mode::Push(_) => None,
        }
    }
}

impl ClassroomSpec {
    /// One line for `herald check`.
    pub fn describe(&self) -> String {
        let mode = match &self.mode {
            Mode::Push(PushSpec { path, auth: None }) => {
                format!("Pub/Sub push at {path}, unauthenticated")
            }
            Mode::Push(PushSpec {
                path,
                auth: Some(auth),
            }) => format!(
                "Pub/Sub push at {path}, OIDC token of {} for audience {}",
                auth.service_account, auth.audience
            ),
            Mode::Pull(pull) => format!(
                "Pub/Sub pull from {} ({})",
                pull.subscription,
                pull.endpoint
                    .as_deref()
                    .unwrap_or("Google or $PUBSUB_EMULATOR_HOST")
            ),
        };
        let mode = match &self.enrich {
            Some(enrich) => format!("{mode}; {}", enrich.describe()),
            None => mode,
        };
        match self.registrations.len() {
            0 => mode,
            n => format!(
                "{mode}; {n} Classroom registration(s) to {} kept renewed",
                self.registrations[0].topic
            ),
        }
    }
}

pub fn validate(input: &SourceInput<'_>) -> SourceResult {
    registered(validate_spec(input))
}

/// Validates a `classroom_pubsub` source's keys.
pub fn validate_spec(input: &SourceInput<'_>) -> Result<ClassroomSpec, Vec<ConfigError>> {
    let config: ClassroomConfig = parse(input)?;
    let mut checks = Checks::new(input);
    let mode = match config.pull {
        Some(pull) => {
            if config.path.is_some() {
                checks.error(
                    "path",
                    "`path` is for push; a source with `pull:` receives nothing over HTTP",
                );
            }
            if config.auth.is_some() {
                checks.error(
                    "auth",
                    "`auth` checks pushed requests; a source with `pull:` receives none",
                );
            }
            Mode::Pull(pull_spec(pull, input, &mut checks))
        }
        None => {
            let path = config
                .path
                .unwrap_or_else(|| format!("/push/{}", input.name));
            if let Err(message) = check_path(&path) {
                checks.error("path", message);
            }
            let auth = config.auth.map(|auth| auth_spec(auth, &mut checks));
            Mode::Push(PushSpec { path, auth })
        }
    };
    let registrations =
        google::registrations(input.name, config.topic, config.registrations, &mut checks);
    let enrich = crate::enrich::config::parse(
        input.node,
        &mut checks,
        crate::enrich::config::Kind::Classroom,
    );
    let _ = config.enrich;
    checks.finish(ClassroomSpec {
        mode,
        registrations,
        enrich,
    })
}

fn auth_spec(auth: AuthConfig, checks: &mut Checks<'_>) -> AuthSpec {
    if auth.audience.trim().is_empty() {
        checks.error(
            "auth.audience",
            "`auth.audience` is empty; set the audience of the push subscription",
        );
    }
    if !auth.service_account.contains('@') {
        checks.error(
            "auth.service_account",
            format!(
                "`auth.service_account` `{}` is not an e-mail address; set the service account \
                 the subscription pushes as, e.g. push@my-project.iam.gserviceaccount.com",
                auth.service_account
            ),
        );
    }
    if let Err(message) = check_url(&auth.jwks_url) {
        checks.error("auth.jwks_url", format!("`auth.jwks_url`: {message}"));
    }
    AuthSpec {
        audience: auth.audience,
        service_account: auth.service_account,
        jwks_url: auth.jwks_url,
    }
}

fn pull_spec(pull: PullConfig, input: &SourceInput<'_>, checks: &mut Checks<'_>) -> PullSpec {
    if !valid_subscription(&pull.subscription) {
        checks.error(
            "pull.subscription",
            format!(
                "`pull.subscription` `{}` must be written projects/PROJECT/subscriptions/NAME",
                pull.subscription
            ),
        );
    }
    let endpoint = pull.endpoint.map(|e| {
        if let Err(message) = check_url(&e) {
            checks.error("pull.endpoint", format!("`pull.endpoint`: {message}"));
        }
        e.trim_end_matches('/').to_owned()
    });
    if !(1..=1000).contains(&pull.max_messages) {
        checks.error(
            "pull.max_messages",
            format!(
                "`pull.max_messages` must be between 1 and 1000, found {}",
                pull.max_messages
            ),
        );
    }
    if let Some(deadline) = pull.ack_deadline
        && !(Duration::from_secs(10)..=Duration::from_secs(600)).contains(&deadline)
    {
        checks.error(
            "pull.ack_deadline",
            "`pull.ack_deadline` must be between 10s and 600s (Pub/Sub's limits)",
        );
    }
    PullSpec {
        subscription: pull.subscription,
        endpoint,
        credentials: pull.credentials.map(|p| input.base_dir.join(p)),
        max_messages: pull.max_messages,
        ack_deadline: pull.ack_deadline,
    }
}

fn valid_subscription(text: &str) -> bool {
    let parts: Vec<&str> = text.split('/').collect();
    matches!(parts.as_slice(), ["projects", project, "subscriptions", name]
        if !project.is_empty() && !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::validate_yaml;
    use crate::source::Source;

    fn spec(yaml: &str) -> ClassroomSpec {
        validate_yaml(validate_spec, "classroom", yaml).unwrap()
    }

    #[test]
    fn push_by_default_at_push_name() {
        assert_eq!(
            spec("{}"),
            ClassroomSpec {
                mode: Mode::Push(PushSpec {
                    path: "/push/classroom".into(),
                    auth: None
                }),
                registrations: Vec::new(),
                enrich: None,
            }
        );
    }

    #[test]
    fn auth_defaults_to_google_keys() {
        let s = spec(
            "auth: { audience: https://h/push, service_account: p@x.iam.gserviceaccount.com }",
        );
        let auth = s.push().unwrap().auth.clone().unwrap();
        assert_eq!(auth.jwks_url, GOOGLE_JWKS_URL);
        assert_eq!(auth.audience, "https://h/push");
    }

    #[test]
    fn pull_with_defaults() {
        let s = spec("pull: { subscription: projects/p/subscriptions/s, credentials: sa.json }");
        let pull = s.pull().unwrap();
        assert_eq!(pull.max_messages, 100);
        assert_eq!(pull.credentials, Some(PathBuf::from("/etc/herald/sa.json")));
        assert_eq!(s.http_path(), None);
    }

    #[test]
    fn mistakes_name_the_key() {
        let errors = validate_yaml(
            validate_spec,
            "classroom",
            "path: /push/x\nauth: { audience: a, service_account: b@c }\npull: { subscription: topics/t, max_messages: 0, ack_deadline: 1s }",
        )
        .unwrap_err();
        let text: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.loc, e.message))
            .collect();
        let all = text.join("\n");
        assert!(
            all.contains("1:7: source `classroom`: `path` is for push"),
            "{all}"
        );
        assert!(all.contains("`auth` checks pushed requests"), "{all}");
        assert!(
            all.contains("must be written projects/PROJECT/subscriptions/NAME"),
            "{all}"
        );
        assert!(
            all.contains("`pull.max_messages` must be between 1 and 1000"),
            "{all}"
        );
        assert!(
            all.contains("`pull.ack_deadline` must be between 10s and 600s"),
            "{all}"
        );
    }

    #[test]
    fn registrations_with_their_topic() {
        let s = spec(
            "topic: projects/p/topics/t\nregistrations:\n  - { feed: DOMAIN_ROSTER_CHANGES }\n  - { feed: COURSE_WORK_CHANGES, course_id: '123' }",
        );
        let names: Vec<&str> = s.registrations.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "classroom/DOMAIN_ROSTER_CHANGES",
                "classroom/COURSE_WORK_CHANGES/123"
            ]
        );
        assert_eq!(s.registrations[1].topic, "projects/p/topics/t");
        assert_eq!(
            s.registrations[1].feed.to_api(),
            serde_json::json!({"feedType": "COURSE_WORK_CHANGES", "courseWorkChangesInfo": {"courseId": "123"}})
        );
    }

    #[test]
    fn registration_mistakes_name_the_entry() {
        let errors = validate_yaml(
            validate_spec,
            "classroom",
            "registrations:\n  - { feed: COURSE_ROSTER_CHANGES }\n  - { feed: DOMAIN_ROSTER_CHANGES, course_id: '1' }\n  - { feed: ROSTERS }",
        )
        .unwrap_err();
        let all: String = errors
            .iter()
            .map(|e| format!("{}: {}\n", e.loc, e.message))
            .collect();
        assert!(
            all.contains("`registrations` need `topic: projects/PROJECT/topics/NAME`"),
            "{all}"
        );
        assert!(
            all.contains("registrations #1: COURSE_ROSTER_CHANGES needs the `course_id`"),
            "{all}"
        );
        assert!(
            all.contains("registrations #2: DOMAIN_ROSTER_CHANGES covers the whole domain"),
            "{all}"
        );
        assert!(
            all.contains("registrations #3: unknown feed `ROSTERS`"),
            "{all}"
        );
        let errors = validate_yaml(validate_spec, "classroom", "topic: t").unwrap_err();
        assert!(
            errors[0]
                .message
                .contains("add `registrations:` or remove it"),
            "{errors:?}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let errors = validate_yaml(validate_spec, "classroom", "pth: /x").unwrap_err();
        assert!(errors[0].message.contains("unknown"), "{:?}", errors);
    }

    #[test]
    fn bad_auth_values() {
        let errors = validate_yaml(
            validate_spec,
            "classroom",
            "auth: { audience: '', service_account: nobody, jwks_url: 'file:///x' }",
        )
        .unwrap_err();
        let all: String = errors.iter().map(|e| e.message.clone() + "\n").collect();
        assert!(all.contains("`auth.audience` is empty"), "{all}");
        assert!(all.contains("is not an e-mail address"), "{all}");
        assert!(all.contains("http:// or https://"), "{all}");
    }
}
