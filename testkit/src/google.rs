//! A local stand-in for the Google endpoints the lifecycle calls, on 127.0.0.1, faithful to
//! the documented request and response bodies:
//!
//! * `POST /token` — the OAuth2 JWT-bearer grant; the assertion is verified with the service
//!   account's public key and its claims (`scope`, `sub`) kept for the test to check;
//! * `POST /v1/registrations`, `DELETE /v1/registrations/{id}` — Classroom; a registration
//!   lives 7 days (`expiryTime`);
//! * `POST /admin/directory/v1/users/watch?event=E&domain=D|customer=C` — opens a channel
//!   (`kind`, `id`, `resourceId`, `resourceUri`, `token`, `expiration` in ms as a string)
//!   and, as Google does, POSTs its `sync` message to the address right away (or holds it
//!   until the test releases it);
//! * `POST /admin/directory_v1/channels/stop` — `{id, resourceId}`; 404 for an unknown one;
//! * `GET /v1/courses/{id}` (`courses.get`), `GET /v1/courses/{courseId}/students/{userId}`
//!   (`courses.students.get`), `GET /v1/courses/{courseId}/teachers/{userId}`
//!   (`courses.teachers.get`) — Classroom's `Course`, `Student` and `Teacher` resources as
//!   in Google's reference, for what the test added ([`FakeGoogle::add_course`],
//!   [`FakeGoogle::add_person`]); `GET /v1/courses/{courseId}/courseWork/{id}`
//!   (`courses.courseWork.get`), `GET /admin/directory/v1/users/{userKey}` (`users.get`,
//!   Google's `User` resource, [`FakeGoogle::add_user`]) and
//!   `GET /v1/courses/{courseId}/courseWork/{courseWorkId}/studentSubmissions/{id}`
//!   (`courses.courseWork.studentSubmissions.get`), Google's `CourseWork` and
//!   `StudentSubmission` ([`FakeGoogle::add_course_work`], [`FakeGoogle::add_submission`]);
//!   404 (`NOT_FOUND`) for the rest.
//!
//! Every call is recorded with method, path, query, body and bearer token. Failures can be
//! scripted per endpoint. Expiries follow the clock the test gives, so a test that moves
//! tokio's clock moves Google's too. [`FakeGoogle::notify`] sends a user change on every open
//! channel of a watch, as Google does while two channels overlap.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

/// The access token the fake grants; API calls must carry it.
pub const ACCESS_TOKEN: &str = "ya29.fake-google-access-token";

pub type Now = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// One API call as the fake saw it (token grants are in [`FakeGoogle::grants`]).
#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: Value,
    pub bearer: Option<String>,
    /// On the test's clock.
    pub at: DateTime<Utc>,
}

/// A channel the fake opened.
#[derive(Clone, Debug)]
pub struct FakeChannel {
    pub id: String,
    pub resource_id: String,
    pub token: String,
    pub address: String,
    pub resource_uri: String,
    pub expiration: DateTime<Utc>,
    pub stopped: bool,
    next_number: u64,
}

/// A registration the fake holds.
#[derive(Clone, Debug)]
pub struct FakeRegistration {
    pub id: String,
    pub feed: Value,
    pub topic: String,
    pub expiry: DateTime<Utc>,
    pub deleted: bool,
}

struct Inner {
    now: Now,
    public_key: Vec<u8>,
    token_url: String,
    calls: Vec<Call>,
    grants: Vec<Value>,
    bad_grants: Vec<String>,
    registrations: Vec<FakeRegistration>,
    channels: Vec<FakeChannel>,
    /// Endpoint (`create`, `delete`, `watch`, `stop`) → scripted failures, in order.
    failures: HashMap<&'static str, VecDeque<(u16, Value)>>,
    /// Endpoint → failure answered once the script is used up.
    failing: HashMap<&'static str, (u16, Value)>,
    hold_syncs: bool,
    held: Vec<String>,
    /// Channel id → the status its `sync` got.
    syncs: Vec<(String, u16)>,
    counter: u64,
    /// Course id → its `Course` resource.
    courses: HashMap<String, Value>,
    /// (`students`|`teachers`, course id, user id) → its `Student`/`Teacher` resource.
    people: HashMap<(String, String, String), Value>,
    /// (course id, coursework id) → its `CourseWork` resource.
    course_work: HashMap<(String, String), Value>,
    /// (course id, coursework id, submission id) → its `StudentSubmission` resource.
    submissions: HashMap<(String, String, String), Value>,
    /// Directory user id → its `User` resource.
    users: HashMap<String, Value>,
}

#[derive(Clone)]
pub struct FakeGoogle {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    client: reqwest::Client,
    _server: Arc<tokio::task::JoinHandle<()>>,
}

impl FakeGoogle {
    /// Starts the fake; `public_key` (PEM) checks the service account's assertions.
    pub async fn start(public_key: &[u8], now: Now) -> FakeGoogle {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let inner = Arc::new(Mutex::new(Inner {
            now,
            public_key: public_key.to_vec(),
            token_url: format!("http://{addr}/token"),
            calls: Vec::new(),
            grants: Vec::new(),
            bad_grants: Vec::new(),
            registrations: Vec::new(),
            channels: Vec::new(),
            failures: HashMap::new(),
            failing: HashMap::new(),
            hold_syncs: false,
            held: Vec::new(),
            syncs: Vec::new(),
            counter: 0,
            courses: HashMap::new(),
            people: HashMap::new(),
            course_work: HashMap::new(),
            submissions: HashMap::new(),
            users: HashMap::new(),
        }));
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("HTTP client");
        let state = (inner.clone(), client.clone());
        let app = Router::new().fallback(handle).with_state(state);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGoogle {
            addr,
            inner,
            client,
            _server: Arc::new(server),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The `google:` section that points Herald here.
    pub fn google_yaml(&self, credentials: &str, subject: &str) -> String {
        format!(
            "google: {{ credentials: {credentials}, subject: {subject}, token_url: {}, \
             classroom_api: {}, directory_api: {} }}\n",
            self.token_url(),
            self.url(),
            self.url()
        )
    }

    /// API calls so far whose path contains `part`.
    pub fn calls(&self, part: &str) -> Vec<Call> {
        let inner = self.inner.lock().unwrap();
        inner
            .calls
            .iter()
            .filter(|c| c.path.contains(part))
            .cloned()
            .collect()
    }

    /// The claims of every accepted token grant.
    pub fn grants(&self) -> Vec<Value> {
        self.inner.lock().unwrap().grants.clone()
    }

    pub fn bad_grants(&self) -> Vec<String> {
        self.inner.lock().unwrap().bad_grants.clone()
    }

    pub fn registrations(&self) -> Vec<FakeRegistration> {
        self.inner.lock().unwrap().registrations.clone()
    }

    pub fn channels(&self) -> Vec<FakeChannel> {
        self.inner.lock().unwrap().channels.clone()
    }

    /// `sync` messages sent, with the status each got.
    pub fn syncs(&self) -> Vec<(String, u16)> {
        self.inner.lock().unwrap().syncs.clone()
    }

    /// The next calls of `endpoint` (`create`, `delete`, `watch`, `stop`, `courses.get`,
    /// `courses.students.get`, `courses.teachers.get`) fail with
    /// `status` and Google's error body.
    pub fn fail(&self, endpoint: &'static str, times: usize, status: u16, message: &str) {
        let body = google_error(status, message);
        let mut inner = self.inner.lock().unwrap();
        let queue = inner.failures.entry(endpoint).or_default();
        queue.extend(std::iter::repeat_n((status, body), times));
    }

    /// A course `courses.get` answers, as Google's `Course` resource.
    pub fn add_course(&self, id: &str, name: &str, section: &str) {
        let course = json!({
            "id": id, "name": name, "section": section, "room": "204",
            "ownerId": "107000000000000000001", "courseState": "ACTIVE",
            "creationTime": "2026-08-20T15:00:00.000Z", "enrollmentCode": "abc123",
            "alternateLink": format!("https://classroom.google.com/c/{id}"),
        });
        self.inner
            .lock()
            .unwrap()
            .courses
            .insert(id.to_owned(), course);
    }

    /// A member of a course's roster (`role` `students` or `teachers`), as Google's
    /// `Student`/`Teacher` resource with its `UserProfile`.
    pub fn add_person(
        &self,
        role: &str,
        course: &str,
        user: &str,
        given: &str,
        family: &str,
        email: &str,
    ) {
        let person = json!({
            "courseId": course, "userId": user,
            "profile": {
                "id": user,
                "name": {"givenName": given, "familyName": family, "fullName": format!("{given} {family}")},
                "emailAddress": email,
                "photoUrl": "//lh3.googleusercontent.com/a/default-user",
            },
        });
        self.inner.lock().unwrap().people.insert(
            (role.to_owned(), course.to_owned(), user.to_owned()),
            person,
        );
    }

    /// Coursework `courses.courseWork.get` answers, as Google's `CourseWork` resource.
    pub fn add_course_work(&self, course: &str, id: &str, title: &str) {
        let work = json!({
            "courseId": course, "id": id, "title": title,
            "description": "Read chapter 3 and answer the questions.",
            "materials": [],
            "state": "PUBLISHED",
            "alternateLink": format!("https://classroom.google.com/c/{course}/a/{id}/details"),
            "creationTime": "2026-11-02T15:00:00.000Z", "updateTime": "2026-11-02T15:00:00.000Z",
            "dueDate": {"year": 2026, "month": 11, "day": 30},
            "dueTime": {"hours": 23, "minutes": 59},
            "maxPoints": 100,
            "workType": "ASSIGNMENT",
            "submissionModificationMode": "MODIFIABLE_UNTIL_TURNED_IN",
            "assigneeMode": "ALL_STUDENTS",
            "creatorUserId": "107000000000000000001",
        });
        self.inner
            .lock()
            .unwrap()
            .course_work
            .insert((course.to_owned(), id.to_owned()), work);
    }

    /// A student's submission `courses.courseWork.studentSubmissions.get` answers, as
    /// Google's `StudentSubmission` resource.
    pub fn add_submission(&self, course: &str, work: &str, id: &str, user: &str, state: &str) {
        let submission = json!({
            "courseId": course, "courseWorkId": work, "id": id, "userId": user,
            "creationTime": "2026-11-02T15:00:00.000Z", "updateTime": "2026-11-20T09:14:00.000Z",
            "state": state, "late": false, "draftGrade": 92, "assignedGrade": 92,
            "alternateLink": format!("https://classroom.google.com/c/{course}/a/{work}/submissions/by-status/and-sort-last-name/student/{user}"),
            "courseWorkType": "ASSIGNMENT",
            "assignmentSubmission": {"attachments": []},
        });
        self.inner.lock().unwrap().submissions.insert(
            (course.to_owned(), work.to_owned(), id.to_owned()),
            submission,
        );
    }

    /// A Directory user `users.get` answers (by id or primary e-mail), as Google's `User`
    /// resource (Admin SDK Directory API reference).
    pub fn add_user(&self, id: &str, email: &str, given: &str, family: &str, org_unit: &str) {
        let user = json!({
            "kind": "admin#directory#user",
            "id": id,
            "etag": format!("\"etag-{id}\""),
            "primaryEmail": email,
            "name": {"givenName": given, "familyName": family, "fullName": format!("{given} {family}")},
            "isAdmin": false,
            "isDelegatedAdmin": false,
            "lastLoginTime": "2026-11-19T08:01:12.000Z",
            "creationTime": "2024-08-20T14:00:00.000Z",
            "agreedToTerms": true,
            "suspended": false,
            "archived": false,
            "changePasswordAtNextLogin": false,
            "ipWhitelisted": false,
            "emails": [{"address": email, "primary": true}],
            "customerId": "C03az79cb",
            "orgUnitPath": org_unit,
            "isMailboxSetup": true,
            "isEnrolledIn2Sv": false,
            "isEnforcedIn2Sv": false,
            "includeInGlobalAddressList": true,
        });
        self.inner.lock().unwrap().users.insert(id.to_owned(), user);
    }

    /// Deletes a Directory user: `users.get` answers 404 from now on.
    pub fn delete_user(&self, id: &str) {
        self.inner.lock().unwrap().users.remove(id);
    }

    /// Takes a member off a course's roster: `courses.students.get` / `courses.teachers.get`
    /// answer 404 for them from now on, as Google does after a removal.
    pub fn remove_person(&self, role: &str, course: &str, user: &str) {
        self.inner.lock().unwrap().people.remove(&(
            role.to_owned(),
            course.to_owned(),
            user.to_owned(),
        ));
    }

    /// Every call of `endpoint` fails until [`FakeGoogle::recover`].
    pub fn fail_always(&self, endpoint: &'static str, status: u16, message: &str) {
        let body = google_error(status, message);
        self.inner
            .lock()
            .unwrap()
            .failing
            .insert(endpoint, (status, body));
    }

    pub fn recover(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.failing.clear();
        inner.failures.clear();
    }

    /// Holds the `sync` of channels opened from now on until [`FakeGoogle::release_syncs`].
    pub fn hold_syncs(&self, hold: bool) {
        self.inner.lock().unwrap().hold_syncs = hold;
    }

    pub async fn release_syncs(&self) {
        let held = {
            let mut inner = self.inner.lock().unwrap();
            inner.hold_syncs = false;
            std::mem::take(&mut inner.held)
        };
        for id in held {
            send_sync(&self.inner, &self.client, &id).await;
        }
    }

    /// Sends one notification on `channel` (e.g. with a stopped channel's token).
    pub async fn send_on(
        &self,
        channel: &FakeChannel,
        state: &str,
        number: u64,
        user: &Value,
    ) -> u16 {
        post_notification(&self.client, channel, state, number, Some(user)).await
    }

    /// Sends a user change (`state` e.g. `add`) on every open channel whose resource URI
    /// has `event=<state>`; the statuses, by channel id.
    pub async fn notify(&self, state: &str, user: &Value) -> Vec<(String, u16)> {
        let targets: Vec<(FakeChannel, u64)> = {
            let mut inner = self.inner.lock().unwrap();
            inner
                .channels
                .iter_mut()
                .filter(|c| !c.stopped && c.resource_uri.contains(&format!("event={state}")))
                .map(|c| {
                    c.next_number += 1;
                    (c.clone(), c.next_number)
                })
                .collect()
        };
        let mut statuses = Vec::new();
        for (channel, number) in targets {
            let status = post_notification(&self.client, &channel, state, number, Some(user)).await;
            statuses.push((channel.id.clone(), status));
        }
        statuses
    }
}

fn google_error(status: u16, message: &str) -> Value {
    let name = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        429 => "RESOURCE_EXHAUSTED",
        500 => "INTERNAL",
        _ => "UNAVAILABLE",
    };
    json!({"error": {"code": status, "message": message, "status": name}})
}

type Shared = (Arc<Mutex<Inner>>, reqwest::Client);

async fn handle(
    State((inner, client)): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    if path == "/token" && method == Method::POST {
        return token(&inner, &body);
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let query = uri.query().unwrap_or_default().to_owned();
    let endpoint = match (&method, path.as_str()) {
        (&Method::POST, "/v1/registrations") => "create",
        (&Method::DELETE, p) if p.starts_with("/v1/registrations/") => "delete",
        (&Method::POST, "/admin/directory/v1/users/watch") => "watch",
        (&Method::POST, "/admin/directory_v1/channels/stop") => "stop",
        (&Method::GET, p)
            if p.starts_with("/admin/directory/v1/users/")
                && !p["/admin/directory/v1/users/".len()..].contains('/') =>
        {
            "users.get"
        }
        (&Method::GET, p) if p.starts_with("/v1/courses/") => {
            match p
                .trim_start_matches("/v1/courses/")
                .split('/')
                .collect::<Vec<_>>()
                .as_slice()
            {
                [_] => "courses.get",
                [_, "students", _] => "courses.students.get",
                [_, "teachers", _] => "courses.teachers.get",
                [_, "courseWork", _] => "courses.courseWork.get",
                [_, "courseWork", _, "studentSubmissions", _] => {
                    "courses.courseWork.studentSubmissions.get"
                }
                _ => "unknown",
            }
        }
        _ => "unknown",
    };
    let answer = {
        let mut guard = inner.lock().unwrap();
        let state = &mut *guard;
        let now = (state.now)();
        state.calls.push(Call {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            body: json.clone(),
            bearer: bearer.clone(),
            at: now,
        });
        if bearer.as_deref() != Some(ACCESS_TOKEN) {
            return reply(
                401,
                google_error(401, "Request had invalid authentication credentials."),
            );
        }
        let scripted = state
            .failures
            .get_mut(endpoint)
            .and_then(VecDeque::pop_front)
            .or_else(|| state.failing.get(endpoint).cloned());
        if let Some((status, body)) = scripted {
            return reply(status, body);
        }
        state.counter += 1;
        let n = state.counter;
        match endpoint {
            "create" => {
                let registration = FakeRegistration {
                    id: format!("registration-{n}"),
                    feed: json["feed"].clone(),
                    topic: json["cloudPubsubTopic"]["topicName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    expiry: now + TimeDelta::days(7),
                    deleted: false,
                };
                state.registrations.push(registration.clone());
                Ok(json!({
                    "registrationId": registration.id,
                    "feed": registration.feed,
                    "cloudPubsubTopic": {"topicName": registration.topic},
                    "expiryTime": registration.expiry.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                }))
            }
            "delete" => {
                let id = path.trim_start_matches("/v1/registrations/");
                match state
                    .registrations
                    .iter_mut()
                    .find(|r| r.id == id && !r.deleted)
                {
                    Some(r) => {
                        r.deleted = true;
                        Ok(json!({}))
                    }
                    None => Err((404, google_error(404, "Requested entity was not found."))),
                }
            }
            "watch" => {
                let expiration = json["expiration"]
                    .as_str()
                    .and_then(|s| s.parse::<i64>().ok())
                    .and_then(DateTime::from_timestamp_millis)
                    .unwrap_or(now + TimeDelta::hours(6));
                let channel = FakeChannel {
                    id: json["id"].as_str().unwrap_or_default().to_owned(),
                    resource_id: format!("resource-{n}"),
                    token: json["token"].as_str().unwrap_or_default().to_owned(),
                    address: json["address"].as_str().unwrap_or_default().to_owned(),
                    resource_uri: format!(
                        "https://admin.googleapis.com/admin/directory/v1/users?{query}&alt=json"
                    ),
                    expiration,
                    stopped: false,
                    next_number: 1,
                };
                state.channels.push(channel.clone());
                if state.hold_syncs {
                    state.held.push(channel.id.clone());
                } else {
                    let (inner, client, id) = (inner.clone(), client.clone(), channel.id.clone());
                    // Google sends the sync on its own, possibly before this answer.
                    tokio::spawn(async move { send_sync(&inner, &client, &id).await });
                }
                Ok(json!({
                    "kind": "api#channel",
                    "id": channel.id,
                    "resourceId": channel.resource_id,
                    "resourceUri": channel.resource_uri,
                    "token": channel.token,
                    "expiration": channel.expiration.timestamp_millis().to_string(),
                }))
            }
            "stop" => {
                let (id, resource) = (json["id"].as_str(), json["resourceId"].as_str());
                match state.channels.iter_mut().find(|c| {
                    Some(c.id.as_str()) == id
                        && Some(c.resource_id.as_str()) == resource
                        && !c.stopped
                }) {
                    Some(c) => {
                        c.stopped = true;
                        Ok(Value::Null)
                    }
                    None => Err((404, google_error(404, "Channel not found"))),
                }
            }
            "courses.get" => {
                let id = path.trim_start_matches("/v1/courses/");
                state
                    .courses
                    .get(id)
                    .cloned()
                    .ok_or((404, google_error(404, "Requested entity was not found.")))
            }
            "courses.students.get" | "courses.teachers.get" => {
                let parts: Vec<&str> = path.trim_start_matches("/v1/courses/").split('/').collect();
                let key = (
                    parts[1].to_owned(),
                    parts[0].to_owned(),
                    parts[2].to_owned(),
                );
                state
                    .people
                    .get(&key)
                    .cloned()
                    .ok_or((404, google_error(404, "Requested entity was not found.")))
            }
            "courses.courseWork.get" | "courses.courseWork.studentSubmissions.get" => {
                let parts: Vec<&str> = path.trim_start_matches("/v1/courses/").split('/').collect();
                let found = match parts.as_slice() {
                    [course, _, id] => state
                        .course_work
                        .get(&((*course).to_owned(), (*id).to_owned())),
                    [course, _, work, _, id] => state.submissions.get(&(
                        (*course).to_owned(),
                        (*work).to_owned(),
                        (*id).to_owned(),
                    )),
                    _ => None,
                };
                found
                    .cloned()
                    .ok_or((404, google_error(404, "Requested entity was not found.")))
            }
            "users.get" => {
                let key = path.trim_start_matches("/admin/directory/v1/users/");
                let key = key.replace("%40", "@");
                state
                    .users
                    .values()
                    .find(|u| u["id"] == key.as_str() || u["primaryEmail"] == key.as_str())
                    .cloned()
                    .ok_or((404, google_error(404, "Resource Not Found: userKey")))
            }
            _ => Err((404, google_error(404, "no such method"))),
        }
    };
    match answer {
        Ok(Value::Null) => StatusCode::NO_CONTENT.into_response(),
        Ok(body) => reply(200, body),
        Err((status, body)) => reply(status, body),
    }
}

fn reply(status: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

fn token(inner: &Mutex<Inner>, body: &[u8]) -> Response {
    let mut inner = inner.lock().unwrap();
    let form = String::from_utf8_lossy(body).into_owned();
    let fields: HashMap<&str, &str> = form
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[inner.token_url.clone()]);
    let verdict = DecodingKey::from_rsa_pem(&inner.public_key)
        .map_err(|e| e.to_string())
        .and_then(
            |key| match (fields.get("grant_type"), fields.get("assertion")) {
                (Some(&"urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"), Some(a)) => {
                    jsonwebtoken::decode::<Value>(a, &key, &validation)
                        .map(|t| t.claims)
                        .map_err(|e| e.to_string())
                }
                _ => Err(format!("not a JWT-bearer grant: {form}")),
            },
        );
    match verdict {
        Ok(claims) => {
            inner.grants.push(claims);
            reply(
                200,
                json!({"access_token": ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer"}),
            )
        }
        Err(e) => {
            inner.bad_grants.push(e);
            reply(400, json!({"error": "invalid_grant"}))
        }
    }
}

async fn send_sync(inner: &Mutex<Inner>, client: &reqwest::Client, id: &str) {
    let channel = {
        let inner = inner.lock().unwrap();
        inner.channels.iter().find(|c| c.id == id).cloned()
    };
    let Some(channel) = channel else {
        return;
    };
    let status = post_notification(client, &channel, "sync", 1, None).await;
    inner.lock().unwrap().syncs.push((id.to_owned(), status));
}

/// A Directory push notification as Google sends it.
async fn post_notification(
    client: &reqwest::Client,
    channel: &FakeChannel,
    state: &str,
    number: u64,
    body: Option<&Value>,
) -> u16 {
    let expiration = channel
        .expiration
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let mut request = client
        .post(&channel.address)
        .header("X-Goog-Channel-ID", &channel.id)
        .header("X-Goog-Channel-Token", &channel.token)
        .header("X-Goog-Channel-Expiration", expiration)
        .header("X-Goog-Resource-ID", &channel.resource_id)
        .header("X-Goog-Resource-URI", &channel.resource_uri)
        .header("X-Goog-Resource-State", state)
        .header("X-Goog-Message-Number", number.to_string());
    request = match body {
        Some(body) => request
            .header("Content-Type", "application/json; utf-8")
            .body(body.to_string()),
        None => request.header("Content-Length", "0"),
    };
    match request.send().await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}
