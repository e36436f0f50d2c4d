//! The Classroom lookups of enrichment and their durable cache (docs/architecture.md §11).
//!
//! `courses.get` (`GET /v1/courses/{courseId}`), `courses.students.get` and
//! `courses.teachers.get` (`GET /v1/courses/{courseId}/students|teachers/{userId}`),
//! `courses.courseWork.get` (`GET /v1/courses/{courseId}/courseWork/{id}`) and
//! `courses.courseWork.studentSubmissions.get`
//! (`GET /v1/courses/{courseId}/courseWork/{courseWorkId}/studentSubmissions/{id}`), with the
//! `google:` credentials and read-only scopes, through the lifecycle's [`TokenSource`]; the
//! Directory's `users.get` (`GET /admin/directory/v1/users/{userKey}`, scope
//! `admin.directory.user.readonly`, with the `google:` section's `subject`).
//! Answers are cached in the queue's state table (`enrich/…` keys, behind the storage
//! boundary, so both engines keep them) for `cache_ttl`, 404s included. Only the fields some
//! source keeps are stored. Nothing looked up is ever logged.

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use herald_core::queue::{Millis, QueueAdmin, QueueError, now_millis};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::answer::clip;
use crate::google::token::TokenSource;

/// Courses (`courses.get`).
pub const COURSES_SCOPE: &str = "https://www.googleapis.com/auth/classroom.courses.readonly";
/// Rosters (`courses.students.get`, `courses.teachers.get`): profile names.
pub const ROSTERS_SCOPE: &str = "https://www.googleapis.com/auth/classroom.rosters.readonly";
/// E-mail addresses in profiles, asked for only when a source keeps `email`.
pub const EMAILS_SCOPE: &str = "https://www.googleapis.com/auth/classroom.profile.emails";
/// Coursework and submissions (`courses.courseWork.get`,
/// `courses.courseWork.studentSubmissions.get`), read-only.
pub const COURSEWORK_SCOPE: &str =
    "https://www.googleapis.com/auth/classroom.coursework.students.readonly";
/// Directory users (`users.get`), read-only.
pub const USERS_SCOPE: &str = "https://www.googleapis.com/auth/admin.directory.user.readonly";
/// The prefix of cached answers in the state table.
pub const CACHE_PREFIX: &str = "enrich/";
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// What a lookup is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Course {
        course: String,
    },
    /// `role` is `students` or `teachers`, as in the collection's name.
    Person {
        role: &'static str,
        course: String,
        user: String,
    },
    /// `courses.courseWork.get`.
    CourseWork {
        course: String,
        id: String,
    },
    /// `courses.courseWork.studentSubmissions.get`.
    Submission {
        course: String,
        work: String,
        id: String,
    },
    /// The Directory's `users.get`, by the user's id.
    User {
        user: String,
    },
}

impl Key {
    /// The state key of its cached answer. Ids are Google's (digits, or an alias for a
    /// course); they name nothing private.
    pub fn cache_key(&self) -> String {
        match self {
            Key::Course { course } => format!("{CACHE_PREFIX}course/{course}"),
            Key::Person { role, course, user } => {
                format!("{CACHE_PREFIX}{role}/{course}/{user}")
            }
            Key::CourseWork { course, id } => format!("{CACHE_PREFIX}courseWork/{course}/{id}"),
            Key::Submission { course, work, id } => {
                format!("{CACHE_PREFIX}submission/{course}/{work}/{id}")
            }
            Key::User { user } => format!("{CACHE_PREFIX}user/{user}"),
        }
    }

    /// The id the lookup is about (the `id` of its `enriched` member).
    pub fn id(&self) -> &str {
        match self {
            Key::Course { course } => course,
            Key::Person { user, .. } | Key::User { user } => user,
            Key::CourseWork { id, .. } | Key::Submission { id, .. } => id,
        }
    }

    /// The Classroom method, for `meta.enrichment` and logs.
    pub fn method(&self) -> &'static str {
        match self {
            Key::Course { .. } => "courses.get",
            Key::Person {
                role: "teachers", ..
            } => "courses.teachers.get",
            Key::Person { .. } => "courses.students.get",
            Key::CourseWork { .. } => "courses.courseWork.get",
            Key::Submission { .. } => "courses.courseWork.studentSubmissions.get",
            Key::User { .. } => "users.get",
        }
    }

    fn path(&self) -> String {
        match self {
            Key::Course { course } => format!("/v1/courses/{}", escape(course)),
            Key::Person { role, course, user } => {
                format!("/v1/courses/{}/{role}/{}", escape(course), escape(user))
            }
            Key::CourseWork { course, id } => {
                format!("/v1/courses/{}/courseWork/{}", escape(course), escape(id))
            }
            Key::Submission { course, work, id } => format!(
                "/v1/courses/{}/courseWork/{}/studentSubmissions/{}",
                escape(course),
                escape(work),
                escape(id)
            ),
            Key::User { user } => format!("/admin/directory/v1/users/{}", escape(user)),
        }
    }
}

/// A path segment with everything but unreserved characters percent-encoded (ids come
/// from the notification).
fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a lookup found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    /// The fields kept (of those any source keeps).
    Found(Map<String, Value>),
    /// Google answered 404: the resource does not exist (any more).
    NotFound,
}

/// A lookup that did not get an answer: retried with backoff until `max_wait`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong, without anything looked up: Google's status and message.
    pub reason: String,
}

#[derive(Serialize, Deserialize)]
struct Cached {
    at: Millis,
    answer: Answer,
}

/// The fields some source keeps, per lookup: only these are stored in the cache.
#[derive(Clone, Debug, Default)]
pub struct Kept {
    pub course: BTreeSet<String>,
    pub person: BTreeSet<String>,
    pub coursework: BTreeSet<String>,
    pub submission: BTreeSet<String>,
    pub user: BTreeSet<String>,
}

/// The calls per second to each API (`None`: unlimited).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    pub classroom: Option<f64>,
    pub directory: Option<f64>,
}

/// A limiter of `rate` calls per second, with a burst of one second's calls (at least 1).
pub fn limiter(rate: Option<f64>) -> Option<DefaultDirectRateLimiter> {
    let rate = rate.filter(|r| r.is_finite() && *r > 0.0)?;
    let burst = NonZeroU32::new((rate.floor() as u32).max(1))?;
    let period = Duration::try_from_secs_f64(1.0 / rate).ok()?;
    let quota = Quota::with_period(period)?.allow_burst(burst);
    Some(RateLimiter::direct(quota))
}

/// [`limiter`] with its bucket empty: the first call waits one period, and in any window
/// of `t` seconds from its creation at most `rate × t` calls pass. A gateway that starts
/// leading enrichment on a shared queue takes these (docs/architecture.md §11), so the
/// last leader's burst and its own never add up to more than one burst.
pub fn empty_limiter(rate: Option<f64>) -> Option<DefaultDirectRateLimiter> {
    let limiter = limiter(rate)?;
    let burst = NonZeroU32::new((rate?.floor() as u32).max(1))?;
    // The fresh bucket holds exactly `burst` cells: this takes them all.
    let _ = limiter.check_n(burst);
    Some(limiter)
}

/// Metric: seconds the lookups waited on the rate limiters (counter).
pub const LIMITED_WAIT: &str = "herald_enrich_rate_limited_seconds_total";

/// How the lookups are made and cached.
pub struct Lookups {
    client: reqwest::Client,
    tokens: TokenSource,
    classroom_api: String,
    directory_api: String,
    store: Arc<dyn QueueAdmin>,
    kept: Kept,
    rates: Rates,
    classroom_limiter: Option<DefaultDirectRateLimiter>,
    directory_limiter: Option<DefaultDirectRateLimiter>,
}

impl Lookups {
    pub fn new(
        client: reqwest::Client,
        tokens: TokenSource,
        classroom_api: String,
        directory_api: String,
        store: Arc<dyn QueueAdmin>,
        kept: Kept,
        rates: Rates,
    ) -> Lookups {
        Lookups {
            client,
            tokens,
            classroom_api,
            directory_api,
            store,
            kept,
            rates,
            classroom_limiter: limiter(rates.classroom),
            directory_limiter: limiter(rates.directory),
        }
    }

    /// Starts the limiters again with empty buckets: this gateway just started leading
    /// enrichment on a shared queue, and the last leader may have spent its burst a moment
    /// ago (docs/architecture.md §11).
    pub fn empty_limiters(&mut self) {
        self.classroom_limiter = empty_limiter(self.rates.classroom);
        self.directory_limiter = empty_limiter(self.rates.directory);
    }

    /// The rate limiter of the API `key`'s lookup calls (`None`: unlimited). A lookup not
    /// in the cache waits on it before [`Lookups::fetch`].
    pub fn limiter(&self, key: &Key) -> Option<&DefaultDirectRateLimiter> {
        match key {
            Key::User { .. } => self.directory_limiter.as_ref(),
            _ => self.classroom_limiter.as_ref(),
        }
    }

    /// The store of the cache (the queue's state table).
    pub fn store(&self) -> Arc<dyn QueueAdmin> {
        self.store.clone()
    }

    /// The cached answer for `key` if younger than `ttl`.
    pub async fn cached(&self, key: &Key, ttl: Duration) -> Option<Answer> {
        let bytes = match self.store.get_state(&key.cache_key()).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "enrichment: cannot read the cache; looking up again");
                return None;
            }
        };
        let cached: Cached = serde_json::from_slice(&bytes).ok()?;
        let age = now_millis().saturating_sub(cached.at);
        let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        (age < ttl).then_some(cached.answer)
    }

    /// Asks Google, and caches a found or not-found answer. The caller has waited on
    /// [`Lookups::limiter`].
    pub async fn fetch(&self, key: &Key) -> Result<Answer, Failure> {
        let answer = self.call(key).await?;
        let cached = Cached {
            at: now_millis(),
            answer: answer.clone(),
        };
        if let Ok(bytes) = serde_json::to_vec(&cached)
            && let Err(e) = self.store.put_state(&key.cache_key(), Some(&bytes)).await
        {
            // The answer is still used; the next event looks it up again.
            tracing::warn!(error = %e, "enrichment: cannot write the cache");
        }
        Ok(answer)
    }

    async fn call(&self, key: &Key) -> Result<Answer, Failure> {
        let method = key.method();
        let fail = |reason: String| Failure {
            reason: format!("{method}: {reason}"),
        };
        let api = match key {
            Key::User { .. } => &self.directory_api,
            _ => &self.classroom_api,
        };
        let token = self.tokens.token(&self.client).await.map_err(fail)?;
        let url = format!("{api}{}", key.path());
        let response = self
            .client
            .get(&url)
            .bearer_auth(&token)
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| {
                fail(if e.is_timeout() {
                    "timed out".to_owned()
                } else {
                    format!("the request failed: {}", e.without_url())
                })
            })?;
        let status = response.status();
        if status.as_u16() == 404 {
            return Ok(Answer::NotFound);
        }
        if status.as_u16() == 401 {
            self.tokens.invalidate().await;
        }
        if !status.is_success() {
            // Google's error message names the problem (quota, permission), not the data.
            let text = response.text().await.unwrap_or_default();
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| clip(&text));
            return Err(fail(format!("Google answered {status}: {message}")));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| fail(format!("the answer is not JSON: {}", e.without_url())))?;
        Ok(Answer::Found(match key {
            Key::Course { .. } => course_fields(&body, &self.kept.course),
            Key::Person { .. } => person_fields(&body, &self.kept.person),
            Key::CourseWork { .. } => scalar_fields(&body, &self.kept.coursework),
            Key::Submission { .. } => scalar_fields(&body, &self.kept.submission),
            Key::User { .. } => user_fields(&body, &self.kept.user),
        }))
    }
}

/// Removes the cached answers older than `ttl` at `now`, and any that cannot be read; how
/// many (docs/architecture.md §11: an entry past `cache_ttl` is never used again, so it is
/// not kept either). An answer removed is looked up again when an event needs it.
pub async fn sweep(
    store: &dyn QueueAdmin,
    ttl: Duration,
    now: Millis,
) -> Result<usize, QueueError> {
    let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let mut removed = 0;
    for (key, bytes) in store.list_state(CACHE_PREFIX).await? {
        let stale = match serde_json::from_slice::<Cached>(&bytes) {
            Ok(cached) => now.saturating_sub(cached.at) >= ttl,
            Err(_) => true,
        };
        if stale {
            store.put_state(&key, None).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The kept fields of a `Course` resource.
pub fn course_fields(body: &Value, keep: &BTreeSet<String>) -> Map<String, Value> {
    keep.iter()
        .filter_map(|field| {
            body.get(field)
                .filter(|v| v.is_string())
                .map(|v| (field.clone(), v.clone()))
        })
        .collect()
}

/// The kept fields of a `CourseWork` or `StudentSubmission` resource that are strings,
/// numbers or booleans (`title`, `maxPoints`, `late`); anything else is left out.
pub fn scalar_fields(body: &Value, keep: &BTreeSet<String>) -> Map<String, Value> {
    keep.iter()
        .filter_map(|field| {
            body.get(field)
                .filter(|v| v.is_string() || v.is_number() || v.is_boolean())
                .map(|v| (field.clone(), v.clone()))
        })
        .collect()
}

/// The kept fields of a `Student` or `Teacher` resource's `profile`.
pub fn person_fields(body: &Value, keep: &BTreeSet<String>) -> Map<String, Value> {
    let profile = &body["profile"];
    keep.iter()
        .filter_map(|field| {
            let value = match field.as_str() {
                "name" => &profile["name"]["fullName"],
                "givenName" => &profile["name"]["givenName"],
                "familyName" => &profile["name"]["familyName"],
                "email" => &profile["emailAddress"],
                _ => return None,
            };
            value.as_str().map(|v| (field.clone(), Value::from(v)))
        })
        .collect()
}

/// The kept fields of a Directory `User` resource (`users.get`'s answer, or a notification's
/// body when it carries them): `name` is `name.fullName`, `email` `primaryEmail`; values of
/// another type than documented are left out.
pub fn user_fields(body: &Value, keep: &BTreeSet<String>) -> Map<String, Value> {
    keep.iter()
        .filter_map(|field| {
            let value = match field.as_str() {
                "name" => body["name"]["fullName"].as_str().map(Value::from),
                "givenName" => body["name"]["givenName"].as_str().map(Value::from),
                "familyName" => body["name"]["familyName"].as_str().map(Value::from),
                "email" => body["primaryEmail"].as_str().map(Value::from),
                "orgUnitPath" => body["orgUnitPath"].as_str().map(Value::from),
                "suspended" | "isAdmin" => body[field.as_str()].as_bool().map(Value::from),
                _ => None,
            }?;
            Some((field.clone(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn keep(fields: &[&str]) -> BTreeSet<String> {
        fields.iter().map(|f| (*f).to_owned()).collect()
    }

    #[test]
    fn keeps_only_listed_fields_of_string_type() {
        let course =
            json!({"id": "1", "name": "AP Biology", "section": "Period 3", "ownerId": {"x": 1}});
        let kept = course_fields(&course, &keep(&["name", "ownerId", "room"]));
        assert_eq!(Value::Object(kept), json!({"name": "AP Biology"}));
        let student = json!({"courseId": "1", "userId": "2", "profile": {"id": "2",
            "name": {"givenName": "Jane", "familyName": "Doe", "fullName": "Jane Doe"},
            "emailAddress": "jane@example.edu"}});
        let kept = person_fields(&student, &keep(&["name"]));
        assert_eq!(Value::Object(kept), json!({"name": "Jane Doe"}));
        let kept = person_fields(&json!({"profile": 3}), &keep(&["name", "email"]));
        assert!(
            kept.is_empty(),
            "an odd answer keeps nothing, and fails nothing"
        );
    }

    #[test]
    fn paths_escape_ids() {
        let key = Key::Person {
            role: "students",
            course: "d:alias/x".into(),
            user: "me".into(),
        };
        assert_eq!(key.path(), "/v1/courses/d%3Aalias%2Fx/students/me");
        assert_eq!(key.method(), "courses.students.get");
        assert_eq!(key.cache_key(), "enrich/students/d:alias/x/me");
        let key = Key::Submission {
            course: "1".into(),
            work: "2".into(),
            id: "Cg4I".into(),
        };
        assert_eq!(
            key.path(),
            "/v1/courses/1/courseWork/2/studentSubmissions/Cg4I"
        );
        assert_eq!(key.id(), "Cg4I");
    }

    #[tokio::test]
    async fn the_sweep_removes_answers_past_the_ttl() {
        use arc_swap::ArcSwap;
        use herald_core::config::QueueConfig;
        use herald_core::journal::Journal;
        use herald_core::rules::RouteTable;

        let dir = tempfile::tempdir().unwrap();
        let queue = QueueConfig {
            path: dir.path().to_path_buf(),
            ..QueueConfig::default()
        };
        let routes = Arc::new(ArcSwap::from_pointee(RouteTable::new(vec![], vec![])));
        let journal = Journal::open(&queue, routes, &[]).unwrap();
        let put = |key: &str, at: Millis| {
            let bytes = serde_json::to_vec(&Cached {
                at,
                answer: Answer::NotFound,
            })
            .unwrap();
            (key.to_owned(), bytes)
        };
        for (key, bytes) in [
            put("enrich/course/old", 1_000),
            put("enrich/course/new", 9_000),
        ] {
            journal.put_state(&key, Some(&bytes)).unwrap();
        }
        journal
            .put_state("enrich/course/garbage", Some(b"{"))
            .unwrap();
        journal.put_state("google/other", Some(b"kept")).unwrap();
        let ttl = Duration::from_secs(5);
        assert_eq!(sweep(&journal, ttl, 10_000).await.unwrap(), 2);
        let left: Vec<String> = journal
            .list_state("")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(left, ["enrich/course/new", "google/other"]);
        assert_eq!(sweep(&journal, ttl, 14_000).await.unwrap(), 1);
    }

    #[test]
    fn a_limiter_of_one_a_second_lets_one_call_through_then_waits() {
        let limiter = limiter(Some(1.0)).expect("a limiter");
        assert!(limiter.check().is_ok(), "the burst is one call");
        assert!(limiter.check().is_err(), "the next waits a second");
        let ten = super::limiter(Some(10.0)).expect("a limiter");
        assert_eq!((0..20).filter(|_| ten.check().is_ok()).count(), 10);
        assert!(super::limiter(None).is_none());
        assert!(super::limiter(Some(0.0)).is_none());
        let slow = super::limiter(Some(0.5)).expect("a limiter");
        assert!(slow.check().is_ok() && slow.check().is_err());
    }

    #[test]
    fn an_empty_limiter_lets_no_call_through_at_first() {
        for rate in [0.5, 1.0, 2.0, 10.0] {
            let limiter = empty_limiter(Some(rate)).expect("a limiter");
            assert!(limiter.check().is_err(), "{rate}/s: the burst is spent");
        }
        assert!(empty_limiter(None).is_none());
    }

    #[test]
    fn users_keep_listed_fields() {
        let user = json!({"kind": "admin#directory#user", "id": "1", "primaryEmail": "a@x.edu",
            "name": {"givenName": "Ann", "familyName": "Lee", "fullName": "Ann Lee"},
            "isAdmin": false, "suspended": "no", "orgUnitPath": "/Students"});
        let kept = user_fields(
            &user,
            &keep(&["name", "isAdmin", "suspended", "orgUnitPath"]),
        );
        assert_eq!(
            Value::Object(kept),
            json!({"name": "Ann Lee", "isAdmin": false, "orgUnitPath": "/Students"})
        );
        let key = Key::User { user: "1".into() };
        assert_eq!(key.path(), "/admin/directory/v1/users/1");
        assert_eq!(key.cache_key(), "enrich/user/1");
    }

    #[test]
    fn coursework_keeps_scalars() {
        let work = json!({"title": "Lab 3", "maxPoints": 100, "dueDate": {"year": 2026},
            "late": true, "state": "PUBLISHED"});
        let kept = scalar_fields(&work, &keep(&["title", "maxPoints", "dueDate", "late"]));
        assert_eq!(
            Value::Object(kept),
            json!({"title": "Lab 3", "maxPoints": 100, "late": true})
        );
    }
}
