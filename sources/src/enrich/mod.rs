//! Enrichment (docs/architecture.md §11): a source with `enrich:` commits its events
//! unrouted (`Ingest::commit_for_enrichment`, acknowledged once durable, never waiting on
//! Google); one task per gateway (on a shared queue, only the leader's) claims them under
//! a lease, looks up the course and the person, coursework and submission they point to (Classroom `courses.get`,
//! `courses.students.get`, `courses.teachers.get`, `courses.courseWork.get`,
//! `courses.courseWork.studentSubmissions.get`), keeps the configured fields in the event's `enriched` object and
//! routes it exactly once (`Queue::route_later`). Directory events (`directory_webhook`
//! with `enrich:`) get the user (`users.get`) unless their body carries what is kept.
//!
//! * `config` — the `enrich:` key of a source;
//! * `lookup` — the Classroom calls and their durable cache (the queue's state table);
//! * `lead` — on a queue several gateways share, which one calls Google (so that
//!   `rate_limit` holds for the cluster);
//! * `task` — the task that claims, enriches and routes.

pub mod config;
pub mod lead;
pub mod lookup;
pub mod task;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use herald_core::Config;
use herald_core::queue::{Queue, QueueAdmin};
use herald_core::rules::RouteTable;
use tokio_util::sync::CancellationToken;

use crate::google::api::{CLASSROOM_API, DIRECTORY_API};
use crate::google::settings::{self, GoogleConfig};
use crate::google::token::{Grant, TokenSource};
use crate::source::source_of;
use config::EnrichSpec;
use lookup::{
    COURSES_SCOPE, COURSEWORK_SCOPE, EMAILS_SCOPE, Kept, Lookups, ROSTERS_SCOPE, Rates, USERS_SCOPE,
};

/// The `enrich:` of every source that has one, by source name.
pub fn specs(config: &Config) -> HashMap<String, EnrichSpec> {
    config
        .sources
        .iter()
        .filter_map(|s| {
            let spec = source_of(s.spec.as_ref())?.enrich()?;
            Some((s.name.clone(), spec.clone()))
        })
        .collect()
}

/// The scopes the lookups of `specs` need (read-only).
pub fn scopes(specs: &HashMap<String, EnrichSpec>) -> Vec<&'static str> {
    let mut scopes = Vec::new();
    if specs.values().any(|s| !s.course.is_empty()) {
        scopes.push(COURSES_SCOPE);
    }
    if specs.values().any(|s| !s.person.is_empty()) {
        scopes.push(ROSTERS_SCOPE);
    }
    if specs
        .values()
        .any(|s| s.person.iter().any(|f| f == "email"))
    {
        scopes.push(EMAILS_SCOPE);
    }
    if specs
        .values()
        .any(|s| !s.coursework.is_empty() || !s.submission.is_empty())
    {
        scopes.push(COURSEWORK_SCOPE);
    }
    if specs.values().any(|s| !s.user.is_empty()) {
        scopes.push(USERS_SCOPE);
    }
    scopes
}

/// The calls per second to each API: the lowest rate of the sources calling it (a source
/// with `rate_limit: none` leaves the API unlimited only if every other does too).
pub fn rates(specs: &HashMap<String, EnrichSpec>) -> Rates {
    let lowest = |directory: bool| {
        let limits: Vec<Option<f64>> = specs
            .values()
            .filter(|s| s.user.is_empty() != directory)
            .map(|s| s.rate_limit)
            .collect();
        limits.iter().flatten().copied().reduce(f64::min)
    };
    Rates {
        classroom: lowest(false),
        directory: lowest(true),
    }
}

/// Starts the enrichment task when a source has `enrich:`; it ends once `stop` is
/// cancelled. Errors name what to set (credentials).
pub async fn start(
    config: &Config,
    queue: Arc<dyn Queue>,
    routes: Arc<ArcSwap<RouteTable>>,
    stop: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, String> {
    let specs = specs(config);
    if specs.is_empty() {
        return Ok(None);
    }
    let google = GoogleConfig::of(config);
    let credentials: PathBuf = google
        .credentials
        .or_else(settings::application_credentials)
        .ok_or_else(|| {
            "`enrich:` looks names up at Google and needs a service-account key: set \
             `google.credentials` or $GOOGLE_APPLICATION_CREDENTIALS"
                .to_owned()
        })?;
    let grant = Grant {
        scopes: scopes(&specs).join(" "),
        subject: google.subject,
        token_url: google.token_url,
    };
    let tokens = TokenSource::load(&credentials, grant).await?;
    let client = reqwest::Client::builder()
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client for Google's APIs: {e}"))?;
    let classroom_api = google
        .classroom_api
        .unwrap_or_else(|| CLASSROOM_API.to_owned())
        .trim_end_matches('/')
        .to_owned();
    let directory_api = google
        .directory_api
        .unwrap_or_else(|| DIRECTORY_API.to_owned())
        .trim_end_matches('/')
        .to_owned();
    let union = |f: fn(&EnrichSpec) -> &Vec<String>| -> BTreeSet<String> {
        specs.values().flat_map(|s| f(s).clone()).collect()
    };
    let kept = Kept {
        course: union(|s| &s.course),
        person: union(|s| &s.person),
        coursework: union(|s| &s.coursework),
        submission: union(|s| &s.submission),
        user: union(|s| &s.user),
    };
    let store: Arc<dyn QueueAdmin> = queue.clone();
    let lookups = Lookups::new(
        client,
        tokens,
        classroom_api,
        directory_api,
        store,
        kept,
        rates(&specs),
    );
    let enricher = task::Enricher {
        queue,
        routes,
        specs,
        lookups,
    };
    Ok(Some(tokio::spawn(enricher.run(stop))))
}
