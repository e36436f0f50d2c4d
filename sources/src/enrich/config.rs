//! `enrich:` of a source (docs/architecture.md §11): which lookups run, which of their fields
//! are kept, how long an event may wait for Google, how long answers are cached. Pure.
//!
//! ```yaml
//! enrich: true                 # = { course: true, person: [name] } (classroom_pubsub)
//!                              # = { user: [name, orgUnitPath, suspended, isAdmin] } (directory_webhook)
//! enrich:
//!   course: [name, section]    # courses.get; `true` = name, section, room, ownerId
//!   person: [name, email]      # courses.students.get / courses.teachers.get; `true` = [name]
//!   coursework: [title]        # courses.courseWork.get; `true` = title, workType, state, maxPoints
//!   submission: [state, late]  # courses.courseWork.studentSubmissions.get; `true` = state, late, userId
//!   user: [name, email]        # directory_webhook only: users.get; `true` = name, orgUnitPath, suspended, isAdmin
//!   max_wait: 10m              # then routed with what is known, `meta.enrichment` says why
//!   cache_ttl: 400d            # answers (404s included) are reused this long
//!   rate_limit: 10/s           # calls to this source's API (Classroom or Directory), per cluster
//! ```
//!
//! Student data is private by default: only the listed fields are kept, and e-mail
//! addresses only when listed.

use std::time::Duration;

use herald_core::config::node::{Node, NodeKind};
use herald_core::config::units;

use crate::config::Checks;

/// The fields `courses.get` may contribute, as named in `enriched.course`.
pub const COURSE_FIELDS: &[&str] = &[
    "name",
    "section",
    "room",
    "ownerId",
    "descriptionHeading",
    "courseState",
];
/// `course: true`.
pub const COURSE_DEFAULT: &[&str] = &["name", "section", "room", "ownerId"];
/// The fields of a person's profile (`courses.students.get` / `courses.teachers.get`), as
/// named in `enriched.person`: `name` is `profile.name.fullName`, `email`
/// `profile.emailAddress`.
pub const PERSON_FIELDS: &[&str] = &["name", "givenName", "familyName", "email"];
/// `person: true`: names only; e-mail addresses are opt-in.
pub const PERSON_DEFAULT: &[&str] = &["name"];
/// The fields of a `CourseWork` resource (`courses.courseWork.get`), as named in
/// `enriched.courseWork`.
pub const COURSEWORK_FIELDS: &[&str] = &[
    "title",
    "description",
    "workType",
    "state",
    "maxPoints",
    "alternateLink",
    "creatorUserId",
];
/// `coursework: true`.
pub const COURSEWORK_DEFAULT: &[&str] = &["title", "workType", "state", "maxPoints"];
/// The fields of a `StudentSubmission` (`courses.courseWork.studentSubmissions.get`), as
/// named in `enriched.submission`.
pub const SUBMISSION_FIELDS: &[&str] = &[
    "state",
    "late",
    "userId",
    "assignedGrade",
    "draftGrade",
    "alternateLink",
];
/// `submission: true`.
pub const SUBMISSION_DEFAULT: &[&str] = &["state", "late", "userId"];
/// The fields of a Directory `User` resource (`users.get`), as named in `enriched.user`:
/// `name` is `name.fullName`, `email` `primaryEmail`.
pub const USER_FIELDS: &[&str] = &[
    "name",
    "givenName",
    "familyName",
    "orgUnitPath",
    "suspended",
    "isAdmin",
    "email",
];
/// `user: true` (and `enrich: true` on a `directory_webhook` source): e-mail addresses are
/// opt-in.
pub const USER_DEFAULT: &[&str] = &["name", "orgUnitPath", "suspended", "isAdmin"];
/// Calls per second to each API (Classroom, Directory) by default: well under Google's
/// default quotas (Classroom 3,000 and Directory 2,400 queries a minute per project), so a
/// burst of events never makes Google throttle; `rate_limit:` changes it.
pub const DEFAULT_RATE: f64 = 10.0;
/// How long an event waits for Google at most, by default.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(10 * 60);
/// How long an answer is reused, by default: longer than any sensible `queue.retention`,
/// so a removal weeks later still reads as a name.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(400 * 86_400);

/// A validated `enrich:`.
#[derive(Clone, Debug, PartialEq)]
pub struct EnrichSpec {
    /// `courses.get` fields kept; empty: no course lookup.
    pub course: Vec<String>,
    /// Profile fields kept; empty: no person lookup.
    pub person: Vec<String>,
    /// `CourseWork` fields kept (coursework and submission events); empty: no lookup.
    pub coursework: Vec<String>,
    /// `StudentSubmission` fields kept (submission events); empty: no lookup.
    pub submission: Vec<String>,
    /// Directory `User` fields kept (`directory_webhook` events); empty: no lookup.
    pub user: Vec<String>,
    pub max_wait: Duration,
    pub cache_ttl: Duration,
    /// Calls per second to the API this source's lookups call (`None`: unlimited); the
    /// burst is the calls of one second (at least 1). Sources sharing an API share its
    /// limiter, at the lowest rate any of them sets. It holds for the cluster: on a shared
    /// queue only the gateway leading enrichment calls (docs/architecture.md §11).
    pub rate_limit: Option<f64>,
}

impl EnrichSpec {
    /// One line for `herald check`.
    pub fn describe(&self) -> String {
        let list = |l: &[String]| {
            if l.is_empty() {
                "off".to_owned()
            } else {
                l.join(", ")
            }
        };
        let rate = match self.rate_limit {
            Some(rate) => format!("{rate}/s"),
            None => "unlimited".to_owned(),
        };
        if !self.user.is_empty() {
            return format!(
                "enriched (user: {}; max_wait {}s; cache_ttl {}s; rate {rate})",
                list(&self.user),
                self.max_wait.as_secs(),
                self.cache_ttl.as_secs()
            );
        }
        format!(
            "enriched (course: {}; person: {}; coursework: {}; submission: {}; max_wait {}s; \
             cache_ttl {}s; rate {rate})",
            list(&self.course),
            list(&self.person),
            list(&self.coursework),
            list(&self.submission),
            self.max_wait.as_secs(),
            self.cache_ttl.as_secs()
        )
    }

    /// Whether any lookup is configured.
    pub fn any(&self) -> bool {
        !self.course.is_empty()
            || !self.person.is_empty()
            || !self.coursework.is_empty()
            || !self.submission.is_empty()
            || !self.user.is_empty()
    }
}

fn owned(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Which API a source's events point into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `classroom_pubsub`: course, person, coursework, submission.
    Classroom,
    /// `directory_webhook`: user.
    Directory,
}

impl Kind {
    fn lookups(self) -> &'static [&'static str] {
        match self {
            Kind::Classroom => &["course", "person", "coursework", "submission"],
            Kind::Directory => &["user"],
        }
    }
}

/// Reads the source's `enrich` key (absent, `false`: `None`), reporting each mistake at
/// its own key.
pub fn parse(source: &Node, checks: &mut Checks<'_>, kind: Kind) -> Option<EnrichSpec> {
    let node = source.get("enrich")?;
    let mut spec = match kind {
        Kind::Classroom => EnrichSpec {
            course: owned(COURSE_DEFAULT),
            person: owned(PERSON_DEFAULT),
            coursework: Vec::new(),
            submission: Vec::new(),
            user: Vec::new(),
            max_wait: DEFAULT_MAX_WAIT,
            cache_ttl: DEFAULT_CACHE_TTL,
            rate_limit: Some(DEFAULT_RATE),
        },
        Kind::Directory => EnrichSpec {
            course: Vec::new(),
            person: Vec::new(),
            coursework: Vec::new(),
            submission: Vec::new(),
            user: owned(USER_DEFAULT),
            max_wait: DEFAULT_MAX_WAIT,
            cache_ttl: DEFAULT_CACHE_TTL,
            rate_limit: Some(DEFAULT_RATE),
        },
    };
    match &node.kind {
        NodeKind::Bool(false) | NodeKind::Null => return None,
        NodeKind::Bool(true) => return Some(spec),
        NodeKind::Map(entries) => {
            spec.course = Vec::new();
            spec.person = Vec::new();
            spec.user = Vec::new();
            for (key, value) in entries {
                let at = format!("enrich.{}", key.name);
                let lookup = ["course", "person", "coursework", "submission", "user"]
                    .contains(&key.name.as_str());
                if lookup && !kind.lookups().contains(&key.name.as_str()) {
                    let (this, that) = match kind {
                        Kind::Classroom => ("classroom_pubsub", "directory_webhook"),
                        Kind::Directory => ("directory_webhook", "classroom_pubsub"),
                    };
                    checks.error(
                        &at,
                        format!(
                            "`{at}` is for {that} sources; a {this} source looks up {}",
                            kind.lookups().join(", ")
                        ),
                    );
                    continue;
                }
                match key.name.as_str() {
                    "course" => {
                        spec.course = fields(value, COURSE_FIELDS, COURSE_DEFAULT, &at, checks)
                    }
                    "person" => {
                        spec.person = fields(value, PERSON_FIELDS, PERSON_DEFAULT, &at, checks)
                    }
                    "coursework" => {
                        spec.coursework =
                            fields(value, COURSEWORK_FIELDS, COURSEWORK_DEFAULT, &at, checks)
                    }
                    "submission" => {
                        spec.submission =
                            fields(value, SUBMISSION_FIELDS, SUBMISSION_DEFAULT, &at, checks)
                    }
                    "max_wait" | "cache_ttl" => {
                        match value.scalar_text().map(|t| units::parse_duration(&t)) {
                            Some(Ok(d)) if !d.is_zero() => {
                                if key.name == "max_wait" {
                                    spec.max_wait = d;
                                } else {
                                    spec.cache_ttl = d;
                                }
                            }
                            Some(Ok(_)) => checks.error(&at, format!("`{at}` must not be zero")),
                            Some(Err(e)) => checks.error(&at, format!("`{at}`: {e}")),
                            None => checks.error(
                                &at,
                                format!("`{at}` must be a duration, e.g. `10m`, `400d`"),
                            ),
                        }
                    }
                    "user" => spec.user = fields(value, USER_FIELDS, USER_DEFAULT, &at, checks),
                    "rate_limit" => match value
                        .scalar_text()
                        .map(|t| herald_core::config::model::parse_rate(&t))
                    {
                        Some(Ok(rate)) => spec.rate_limit = rate,
                        Some(Err(e)) => checks.error(&at, format!("`{at}`: {e}")),
                        None => checks.error(
                            &at,
                            format!("`{at}` must be a rate, e.g. `10/s`, `300/m` or `none`"),
                        ),
                    },
                    other => {
                        let mut expected = kind.lookups().to_vec();
                        expected.extend(["max_wait", "cache_ttl", "rate_limit"]);
                        checks.error(
                            &at,
                            herald_core::config::node::unknown_key_message(other, &expected),
                        )
                    }
                }
            }
            if !spec.any() && checks_clean(node) {
                let add = match kind {
                    Kind::Classroom => {
                        "`course: true`, `person: true`, `coursework: true` or `submission: true`"
                    }
                    Kind::Directory => "`user: true`",
                };
                checks.error(
                    "enrich",
                    format!("`enrich` names no lookup; add {add}, or remove it"),
                );
            }
        }
        _ => checks.error(
            "enrich",
            format!(
                "`enrich` must be true, false or a mapping ({{ course: true, person: [name] }}), \
                 found {}",
                node.describe()
            ),
        ),
    }
    Some(spec)
}

/// Whether every lookup key of `enrich` is absent or `false` (an empty list or a wrong
/// value was reported at its own key already).
fn checks_clean(node: &Node) -> bool {
    ["course", "person", "coursework", "submission", "user"]
        .iter()
        .all(|k| node.get(k).is_none_or(|n| n.kind == NodeKind::Bool(false)))
}

fn fields(
    node: &Node,
    known: &[&str],
    default: &[&str],
    at: &str,
    checks: &mut Checks<'_>,
) -> Vec<String> {
    match &node.kind {
        NodeKind::Bool(true) => owned(default),
        NodeKind::Bool(false) | NodeKind::Null => Vec::new(),
        NodeKind::Seq(items) => {
            let mut kept = Vec::new();
            for item in items {
                match item.as_str() {
                    Some(name) if known.contains(&name) => {
                        if !kept.iter().any(|k| k == name) {
                            kept.push(name.to_owned());
                        }
                    }
                    _ => {
                        let found = item.scalar_text().unwrap_or_else(|| item.describe().into());
                        let hint =
                            herald_core::config::node::did_you_mean(&found, known.iter().copied())
                                .map(|s| format!("; did you mean `{s}`?"))
                                .unwrap_or_default();
                        checks.error_at(
                            item.loc,
                            format!(
                                "`{at}`: unknown field `{found}`; known: {}{hint}",
                                known.join(", ")
                            ),
                        );
                    }
                }
            }
            kept
        }
        _ => {
            checks.error(
                at,
                format!(
                    "`{at}` must be true, false or a list of fields ({})",
                    known.join(", ")
                ),
            );
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::classroom_pubsub::config::validate_spec;
    use crate::config::tests::validate_yaml;

    use super::*;

    fn enrich(yaml: &str) -> Option<EnrichSpec> {
        validate_yaml(validate_spec, "classroom", yaml)
            .unwrap()
            .enrich
    }

    fn errors(yaml: &str) -> Vec<String> {
        validate_yaml(validate_spec, "classroom", yaml)
            .unwrap_err()
            .iter()
            .map(|e| format!("{}: {}", e.loc, e.message))
            .collect()
    }

    #[test]
    fn off_unless_asked() {
        assert_eq!(enrich("{}"), None);
        assert_eq!(enrich("enrich: false"), None);
    }

    #[test]
    fn true_means_course_and_names() {
        let spec = enrich("enrich: true").unwrap();
        assert_eq!(spec.course, owned(COURSE_DEFAULT));
        assert_eq!(spec.person, ["name"]);
        assert_eq!(spec.max_wait, DEFAULT_MAX_WAIT);
        assert_eq!(spec.cache_ttl, DEFAULT_CACHE_TTL);
    }

    #[test]
    fn detailed() {
        let spec = enrich(
            "enrich:\n  course: [name]\n  person: [name, email]\n  max_wait: 30s\n  cache_ttl: 7d\n",
        )
        .unwrap();
        assert_eq!(spec.course, ["name"]);
        assert_eq!(spec.person, ["name", "email"]);
        assert_eq!(spec.max_wait, Duration::from_secs(30));
        assert_eq!(spec.cache_ttl, Duration::from_secs(7 * 86_400));
        assert_eq!(spec.rate_limit, Some(DEFAULT_RATE));
        assert!(spec.coursework.is_empty() && spec.submission.is_empty());
        let spec = enrich("enrich: { course: true, rate_limit: 30/m }").unwrap();
        assert_eq!(spec.rate_limit, Some(0.5));
        let spec = enrich("enrich: { course: true, rate_limit: none }").unwrap();
        assert_eq!(spec.rate_limit, None);
        let spec = enrich("enrich: { coursework: true, submission: [state] }").unwrap();
        assert_eq!(spec.coursework, owned(COURSEWORK_DEFAULT));
        assert_eq!(spec.submission, ["state"]);
        assert!(spec.course.is_empty() && spec.person.is_empty());
        let spec = enrich("enrich: { person: true }").unwrap();
        assert!(spec.course.is_empty());
        assert_eq!(spec.person, ["name"], "e-mail addresses are opt-in");
    }

    #[test]
    fn mistakes_at_their_line_and_column() {
        let found = errors(
            "enrich:\n  course: [name, titel]\n  person: yes please\n  max_wait: 10\n  curse: true\n",
        );
        let all = found.join("\n");
        assert!(
            all.contains("2:18") && all.contains("unknown field `titel`"),
            "{all}"
        );
        assert!(
            all.contains("3:11") && all.contains("`enrich.person` must be"),
            "{all}"
        );
        assert!(all.contains("4:13") && all.contains("has no unit"), "{all}");
        assert!(all.contains("did you mean `course`?"), "{all}");
        let found = errors("enrich: { user: true }");
        assert!(found[0].contains("is for directory_webhook"), "{found:?}");
        let found = errors("enrich: { rate_limt: 3 }");
        assert!(found[0].contains("unknown"), "{found:?}");
        let found = errors("enrich: { course: true, rate_limit: fast }");
        assert!(found[0].contains("is not a rate"), "{found:?}");
        let found = errors("enrich: 3");
        assert!(
            found[0].contains("must be true, false or a mapping"),
            "{found:?}"
        );
        let found = errors("enrich: { course: false }");
        assert!(found[0].contains("names no lookup"), "{found:?}");
    }

    #[test]
    fn directory_users() {
        use crate::directory::config::validate_spec;
        let spec = |yaml: &str| {
            validate_yaml(validate_spec, "directory", yaml)
                .unwrap()
                .enrich
                .unwrap()
        };
        let s = spec("channel_tokens: [t]\nenrich: true");
        assert_eq!(s.user, owned(USER_DEFAULT));
        assert!(s.course.is_empty() && s.person.is_empty());
        let s = spec("channel_tokens: [t]\nenrich: { user: [name, email], max_wait: 1m }");
        assert_eq!(s.user, ["name", "email"]);
        assert_eq!(s.max_wait, Duration::from_secs(60));
        let found: Vec<String> = validate_yaml(
            validate_spec,
            "directory",
            "channel_tokens: [t]\nenrich: { course: true }",
        )
        .unwrap_err()
        .iter()
        .map(|e| e.message.clone())
        .collect();
        assert!(found[0].contains("is for classroom_pubsub"), "{found:?}");
    }
}
