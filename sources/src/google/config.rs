//! The subscriptions a source asks Herald to keep alive, as routes.yaml declares them:
//! `registrations:` + `topic:` under a `classroom_pubsub` source, `watch:` + `address:` +
//! `ttl:` under a `directory_webhook` source. Validation is pure; the source configs call it.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Checks, check_url};

/// The Directory events a watch channel can be opened for (`users.watch`'s `event`).
pub const DIRECTORY_EVENTS: &[&str] = &["add", "delete", "makeAdmin", "undelete", "update"];
/// The longest a channel may be asked to live; Google may grant less.
const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const MIN_TTL: Duration = Duration::from_secs(5 * 60);
/// `ttl` when none is given: six hours, well inside what Google grants a Directory channel.
pub const DEFAULT_TTL: Duration = Duration::from_secs(6 * 3600);

/// One entry of `registrations:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    /// `DOMAIN_ROSTER_CHANGES`, `COURSE_ROSTER_CHANGES` or `COURSE_WORK_CHANGES`.
    pub feed: String,
    /// The course of a `COURSE_*` feed.
    #[serde(default)]
    pub course_id: Option<String>,
}

/// One entry of `watch:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// The Directory event: add, delete, makeAdmin, undelete or update.
    pub event: String,
    /// Watch the users of this domain …
    #[serde(default)]
    pub domain: Option<String>,
    /// … or of this customer (`my_customer` for the account's own).
    #[serde(default)]
    pub customer: Option<String>,
}

/// A Classroom feed (`Feed` of the Classroom API).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "feedType", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Feed {
    DomainRosterChanges,
    CourseRosterChanges { course_id: String },
    CourseWorkChanges { course_id: String },
}

impl Feed {
    /// The `feed` object of `registrations.create`.
    pub fn to_api(&self) -> serde_json::Value {
        match self {
            Feed::DomainRosterChanges => serde_json::json!({"feedType": "DOMAIN_ROSTER_CHANGES"}),
            Feed::CourseRosterChanges { course_id } => serde_json::json!({
                "feedType": "COURSE_ROSTER_CHANGES",
                "courseRosterChangesInfo": {"courseId": course_id},
            }),
            Feed::CourseWorkChanges { course_id } => serde_json::json!({
                "feedType": "COURSE_WORK_CHANGES",
                "courseWorkChangesInfo": {"courseId": course_id},
            }),
        }
    }

    /// The OAuth scope Classroom wants, besides `classroom.push-notifications`, to register
    /// for this feed.
    pub fn scope(&self) -> &'static str {
        match self {
            Feed::DomainRosterChanges | Feed::CourseRosterChanges { .. } => {
                "https://www.googleapis.com/auth/classroom.rosters.readonly"
            }
            Feed::CourseWorkChanges { .. } => {
                "https://www.googleapis.com/auth/classroom.coursework.students.readonly"
            }
        }
    }
}

impl fmt::Display for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Feed::DomainRosterChanges => write!(f, "DOMAIN_ROSTER_CHANGES"),
            Feed::CourseRosterChanges { course_id } => {
                write!(f, "COURSE_ROSTER_CHANGES/{course_id}")
            }
            Feed::CourseWorkChanges { course_id } => write!(f, "COURSE_WORK_CHANGES/{course_id}"),
        }
    }
}

/// A registration Herald keeps alive. `name` is `<source>/<feed>[/<course>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationSpec {
    pub name: String,
    pub source: String,
    pub feed: Feed,
    /// `projects/P/topics/T`.
    pub topic: String,
}

/// Whose users a channel watches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchScope {
    Domain(String),
    Customer(String),
}

impl WatchScope {
    /// The query parameter of `users.watch`.
    pub fn query(&self) -> (&'static str, &str) {
        match self {
            WatchScope::Domain(d) => ("domain", d),
            WatchScope::Customer(c) => ("customer", c),
        }
    }
}

/// A Directory channel Herald keeps alive. `name` is `<source>/<event>/<domain|customer>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchSpec {
    pub name: String,
    pub source: String,
    pub event: String,
    pub scope: WatchScope,
    /// The public HTTPS URL of the source, where Google sends the notifications.
    pub address: String,
    /// How long each channel is asked to live.
    pub ttl: Duration,
}

/// Checks `registrations:` and `topic:` of the source `source`.
pub fn registrations(
    source: &str,
    topic: Option<String>,
    entries: Vec<RegistrationConfig>,
    checks: &mut Checks<'_>,
) -> Vec<RegistrationSpec> {
    if entries.is_empty() {
        if topic.is_some() {
            checks.error(
                "topic",
                "`topic` is where `registrations` publish; add `registrations:` or remove it",
            );
        }
        return Vec::new();
    }
    let topic = match topic {
        Some(topic) if valid_topic(&topic) => topic,
        Some(topic) => {
            checks.error(
                "topic",
                format!("`topic` `{topic}` must be written projects/PROJECT/topics/NAME"),
            );
            topic
        }
        None => {
            checks.error(
                "registrations",
                "`registrations` need `topic: projects/PROJECT/topics/NAME`, the Pub/Sub topic \
                 Classroom publishes to",
            );
            String::new()
        }
    };
    let mut specs: Vec<RegistrationSpec> = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let at = format!("registrations #{}", i + 1);
        let course = entry.course_id.filter(|c| !c.trim().is_empty());
        let feed = match (entry.feed.as_str(), course) {
            ("DOMAIN_ROSTER_CHANGES", None) => Feed::DomainRosterChanges,
            ("DOMAIN_ROSTER_CHANGES", Some(_)) => {
                checks.error(
                    "registrations",
                    format!(
                        "{at}: DOMAIN_ROSTER_CHANGES covers the whole domain; remove `course_id`"
                    ),
                );
                continue;
            }
            ("COURSE_ROSTER_CHANGES", Some(course_id)) => Feed::CourseRosterChanges { course_id },
            ("COURSE_WORK_CHANGES", Some(course_id)) => Feed::CourseWorkChanges { course_id },
            (feed @ ("COURSE_ROSTER_CHANGES" | "COURSE_WORK_CHANGES"), None) => {
                checks.error(
                    "registrations",
                    format!("{at}: {feed} needs the `course_id` of the course to watch"),
                );
                continue;
            }
            (other, _) => {
                checks.error(
                    "registrations",
                    format!(
                        "{at}: unknown feed `{other}`; expected DOMAIN_ROSTER_CHANGES, \
                         COURSE_ROSTER_CHANGES or COURSE_WORK_CHANGES"
                    ),
                );
                continue;
            }
        };
        let name = format!("{source}/{feed}");
        if specs.iter().any(|s| s.name == name) {
            checks.error("registrations", format!("{at}: `{feed}` is listed twice"));
            continue;
        }
        specs.push(RegistrationSpec {
            name,
            source: source.to_owned(),
            feed,
            topic: topic.clone(),
        });
    }
    specs
}

/// Checks `watch:`, `address:` and `ttl:` of the source `source`.
pub fn watches(
    source: &str,
    address: Option<String>,
    ttl: Option<Duration>,
    entries: Vec<WatchConfig>,
    checks: &mut Checks<'_>,
) -> Vec<WatchSpec> {
    if entries.is_empty() {
        if address.is_some() || ttl.is_some() {
            checks.error(
                if address.is_some() { "address" } else { "ttl" },
                "`address` and `ttl` are for the channels of `watch:`; add `watch:` or remove them",
            );
        }
        return Vec::new();
    }
    let address = match address {
        Some(address) => {
            if let Err(message) = check_address(&address) {
                checks.error("address", message);
            }
            address
        }
        None => {
            checks.error(
                "watch",
                "`watch` needs `address:`, the public HTTPS URL of this source that Google \
                 sends notifications to, e.g. https://herald.example.edu/webhook/directory",
            );
            String::new()
        }
    };
    let ttl = ttl.unwrap_or(DEFAULT_TTL);
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        checks.error("ttl", "`ttl` must be between 5m and 7d");
    }
    let mut specs: Vec<WatchSpec> = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let at = format!("watch #{}", i + 1);
        if !DIRECTORY_EVENTS.contains(&entry.event.as_str()) {
            checks.error(
                "watch",
                format!(
                    "{at}: unknown event `{}`; expected one of {}",
                    entry.event,
                    DIRECTORY_EVENTS.join(", ")
                ),
            );
            continue;
        }
        let scope = match (entry.domain, entry.customer) {
            (Some(domain), None) if !domain.is_empty() => WatchScope::Domain(domain),
            (None, Some(customer)) if !customer.is_empty() => WatchScope::Customer(customer),
            _ => {
                checks.error(
                    "watch",
                    format!("{at}: give exactly one of `domain` (example.edu) or `customer` (my_customer)"),
                );
                continue;
            }
        };
        let name = format!("{source}/{}/{}", entry.event, scope.query().1);
        if specs.iter().any(|s| s.name == name) {
            checks.error("watch", format!("{at}: `{name}` is listed twice"));
            continue;
        }
        specs.push(WatchSpec {
            name,
            source: source.to_owned(),
            event: entry.event,
            scope,
            address: address.clone(),
            ttl,
        });
    }
    specs
}

fn valid_topic(text: &str) -> bool {
    let parts: Vec<&str> = text.split('/').collect();
    matches!(parts.as_slice(), ["projects", project, "topics", name]
        if !project.is_empty() && !name.is_empty())
}

/// Google only calls HTTPS addresses; plain HTTP is allowed to loopback (tests, a local
/// try-out behind a tunnel).
fn check_address(address: &str) -> Result<(), String> {
    check_url(address).map_err(|m| format!("`address`: {m}"))?;
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"];
    if address.starts_with("https://") || loopback.iter().any(|l| address.starts_with(l)) {
        Ok(())
    } else {
        Err(format!(
            "`address` `{address}` must be an https:// URL: the Directory API only calls HTTPS endpoints"
        ))
    }
}
