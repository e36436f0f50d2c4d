//! The Classroom lookups of enrichment and their durable cache (docs/architecture.md §11).
//!
//! `courses.get` (`GET /v1/courses/{courseId}`), `courses.students.get` and
//! `courses.teachers.get` (`GET /v1/courses/{courseId}/students|teachers/{userId}`), with the
//! `google:` credentials and read-only scopes, through the lifecycle's [`TokenSource`].
//! Answers are cached in the queue's state table (`enrich/…` keys, behind the storage
//! boundary, so both engines keep them) for `cache_ttl`, 404s included. Only the fields some
//! source keeps are stored. Nothing looked up is ever logged.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use herald_core::queue::{Millis, QueueAdmin, now_millis};
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
        }
    }

    fn path(&self) -> String {
        match self {
            Key::Course { course } => format!("/v1/courses/{}", escape(course)),
            Key::Person { role, course, user } => {
                format!("/v1/courses/{}/{role}/{}", escape(course), escape(user))
            }
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

/// How the lookups are made and cached.
pub struct Lookups {
    client: reqwest::Client,
    tokens: TokenSource,
    classroom_api: String,
    store: Arc<dyn QueueAdmin>,
    /// The course fields some source keeps.
    course_fields: BTreeSet<String>,
    /// The person fields some source keeps.
    person_fields: BTreeSet<String>,
}

impl Lookups {
    pub fn new(
        client: reqwest::Client,
        tokens: TokenSource,
        classroom_api: String,
        store: Arc<dyn QueueAdmin>,
        course_fields: BTreeSet<String>,
        person_fields: BTreeSet<String>,
    ) -> Lookups {
        Lookups {
            client,
            tokens,
            classroom_api,
            store,
            course_fields,
            person_fields,
        }
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

    /// Asks Google, and caches a found or not-found answer.
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
        let token = self.tokens.token(&self.client).await.map_err(fail)?;
        let url = format!("{}{}", self.classroom_api, key.path());
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
            Key::Course { .. } => course_fields(&body, &self.course_fields),
            Key::Person { .. } => person_fields(&body, &self.person_fields),
        }))
    }
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
    }
}
