//! The enrichment task: one per gateway (docs/architecture.md §11). It claims unrouted
//! events under a lease (`Queue::claim_unrouted`), looks up what each points to (each
//! distinct lookup of a batch once, answered by the cache when it can), puts what it found
//! in the event's `enriched` object and routes it with the current route table, exactly
//! once (`Queue::route_later`). While Google fails or throttles, the events it could not
//! enrich stay claimed (the lease renewed) and are tried again after a backoff
//! (core/src/backoff.rs); past the source's `max_wait` an event is routed with what is
//! known and `meta.enrichment: "failed: …"`. A restart loses nothing: the events are
//! unrouted in the queue until routed, and a claim of a dead gateway runs out. The task is
//! woken when unrouted events are committed (`Queue::notify_unrouted`) and otherwise looks
//! every few seconds (`SAFETY_POLL`); at start it claims what was left unrouted at once.
//! On a queue several gateways share, only the gateway leading enrichment claims and calls
//! Google (`lead.rs`), so `rate_limit` holds for the cluster; the others idle.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use arc_swap::ArcSwap;
use herald_core::Event;
use herald_core::backoff::Backoff;
use herald_core::queue::{Claim, Queue, RouteLater, RoutedLater, UnroutedItem, now_millis};
use herald_core::rules::RouteTable;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::config::EnrichSpec;
use super::lead::Leadership;
use super::lookup::{Answer, Failure, Key, LIMITED_WAIT, Lookups, sweep, user_fields};

/// At most this many events are claimed at once.
const BATCH: usize = 64;
/// How often an idle task looks for unrouted events without being woken (the queue wakes
/// it when one is committed, `Queue::notify_unrouted`): a claim of a dead holder runs out
/// without a commit, and an engine may have no wake-up of its own.
const SAFETY_POLL: Duration = Duration::from_secs(5);
/// While Google fails: 500 ms doubling up to 1 min, with full jitter.
const RETRY: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
/// How often the cache is swept at most and at least: a quarter of the longest
/// `cache_ttl`, within these bounds.
const SWEEP_MIN: Duration = Duration::from_secs(1);
const SWEEP_MAX: Duration = Duration::from_secs(3600);
/// `meta.enrichment` on an event routed without all it should have had.
pub const META: &str = "enrichment";

/// Metric names (counters).
pub const CACHE_HITS: &str = "herald_enrich_cache_hits_total";
pub const CACHE_MISSES: &str = "herald_enrich_cache_misses_total";
pub const CALLS: &str = "herald_enrich_calls_total";
pub const FAILURES: &str = "herald_enrich_failures_total";
pub const ROUTED: &str = "herald_enrich_routed_total";
pub const SWEPT: &str = "herald_enrich_cache_expired_total";
/// Metric (histogram, seconds): how long an event waited between its commit and its
/// routing by enrichment, labelled by `source` and `outcome` (`enriched`, `unknown`: a
/// lookup found nothing, `failed`: routed after `max_wait` without all it should have).
pub const WAIT: &str = "herald_enrich_wait_seconds";
/// The buckets of [`WAIT`] (seconds): from a cached answer (milliseconds) to the default
/// `max_wait` (10 min) and past it.
pub const WAIT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0,
];

pub struct Enricher {
    pub queue: Arc<dyn Queue>,
    pub routes: Arc<ArcSwap<RouteTable>>,
    /// Source name → its `enrich:`.
    pub specs: HashMap<String, EnrichSpec>,
    pub lookups: Lookups,
}

/// The lookups an event needs under `spec`, as (`enriched` member, key).
pub fn keys_of(event: &Event, spec: &EnrichSpec) -> Vec<(&'static str, Key)> {
    if !spec.user.is_empty() {
        // A Directory notification's body is a `User` resource (at least `id`).
        return match event.data["id"].as_str() {
            Some(user) if !user.is_empty() => vec![(
                "user",
                Key::User {
                    user: user.to_owned(),
                },
            )],
            _ => Vec::new(),
        };
    }
    let ids = &event.data["resourceId"];
    let Some(course) = ids["courseId"].as_str() else {
        return Vec::new();
    };
    let collection = event.data["collection"].as_str();
    let mut keys = Vec::new();
    if !spec.course.is_empty() {
        keys.push((
            "course",
            Key::Course {
                course: course.to_owned(),
            },
        ));
    }
    let role = match collection {
        Some("courses.students") => Some("students"),
        Some("courses.teachers") => Some("teachers"),
        _ => None,
    };
    if let (Some(role), Some(user), false) = (role, ids["userId"].as_str(), spec.person.is_empty())
    {
        keys.push((
            "person",
            Key::Person {
                role,
                course: course.to_owned(),
                user: user.to_owned(),
            },
        ));
    }
    // The resource id "matches the arguments to the get method": `{courseId, id}` for
    // coursework, `{courseId, courseWorkId, id}` for a submission.
    let (work, submission) = match collection {
        Some("courses.courseWork") => (ids["id"].as_str(), None),
        Some("courses.courseWork.studentSubmissions") => {
            (ids["courseWorkId"].as_str(), ids["id"].as_str())
        }
        _ => (None, None),
    };
    if let (Some(work), false) = (work, spec.coursework.is_empty()) {
        keys.push((
            "courseWork",
            Key::CourseWork {
                course: course.to_owned(),
                id: work.to_owned(),
            },
        ));
    }
    if let (Some(work), Some(id), false) = (work, submission, spec.submission.is_empty()) {
        keys.push((
            "submission",
            Key::Submission {
                course: course.to_owned(),
                work: work.to_owned(),
                id: id.to_owned(),
            },
        ));
    }
    keys
}

/// The event with `enriched` filled from `answers` (only `spec`'s fields), and what to say
/// in `meta.enrichment` when something is missing.
pub fn enrich(
    event: &Event,
    spec: &EnrichSpec,
    keys: &[(&'static str, Key)],
    answers: &HashMap<Key, Result<Answer, Failure>>,
) -> Event {
    let mut enriched = event.clone();
    let mut failed = Vec::new();
    let mut unknown = Vec::new();
    for (member, key) in keys {
        let keep = match key {
            Key::Course { .. } => &spec.course,
            Key::Person { .. } => &spec.person,
            Key::CourseWork { .. } => &spec.coursework,
            Key::Submission { .. } => &spec.submission,
            Key::User { .. } => &spec.user,
        };
        let mut object = Map::new();
        object.insert("id".into(), Value::from(key.id()));
        let carried = from_body(event, spec, key).map(|fields| Ok(Answer::Found(fields)));
        match carried.as_ref().or(answers.get(key)) {
            Some(Ok(Answer::Found(fields))) => {
                for field in keep {
                    if let Some(value) = fields.get(field) {
                        object.insert(field.clone(), value.clone());
                    }
                }
            }
            Some(Ok(Answer::NotFound)) => unknown.push(format!("{} not found", key.method())),
            Some(Err(failure)) => failed.push(failure.reason.clone()),
            None => failed.push(format!("{}: not looked up", key.method())),
        }
        enriched
            .enriched
            .insert((*member).to_owned(), Value::Object(object));
    }
    if !failed.is_empty() {
        enriched
            .meta
            .insert(META.into(), format!("failed: {}", failed.join("; ")).into());
    } else if !unknown.is_empty() {
        enriched.meta.insert(
            META.into(),
            format!("unknown: {}", unknown.join("; ")).into(),
        );
    }
    enriched
}

/// What the event's own body already says for `key`, when it carries every field `spec`
/// keeps (a Directory notification that carries the configured fields needs no
/// `users.get`).
pub fn from_body(event: &Event, spec: &EnrichSpec, key: &Key) -> Option<Map<String, Value>> {
    match key {
        Key::User { .. } => {
            let fields = user_fields(&event.data, &spec.user.iter().cloned().collect());
            (fields.len() == spec.user.len()).then_some(fields)
        }
        _ => None,
    }
}

impl Enricher {
    /// Runs until `stop` is cancelled, then gives its claims up.
    pub async fn run(mut self, stop: CancellationToken) {
        tracing::info!(
            sources = self.specs.len(),
            "enriching Classroom and Directory events before routing"
        );
        let holder = self.queue.holder().to_owned();
        let lease = self.queue.lease();
        let mut held: Vec<UnroutedItem> = Vec::new();
        let mut attempt: u32 = 0;
        // The cache is shared by the sources: an entry goes once the longest `cache_ttl` has
        // passed (a shorter one only stops being used, `Lookups::cached`).
        let ttl = self
            .specs
            .values()
            .map(|s| s.cache_ttl)
            .max()
            .unwrap_or(Duration::MAX);
        let every = (ttl / 4).clamp(SWEEP_MIN, SWEEP_MAX);
        let mut next_sweep = tokio::time::Instant::now();
        let woken = self.queue.notify_unrouted();
        // On a shared queue only the leader claims and calls Google (docs/architecture.md
        // §11); locally this gateway is alone and always does.
        let mut leadership = self
            .queue
            .renews_claims()
            .then(|| Leadership::start(self.queue.clone(), stop.child_token()));
        let mut term_led = 0;
        // At start, whatever was left unrouted (a restart) is claimed without waiting.
        loop {
            if stop.is_cancelled() {
                break;
            }
            if let Some(l) = &leadership {
                let term = l.term();
                if !term.leads() {
                    // A follower holds nothing: the leader claims what it gives up at once.
                    self.release(&holder, &mut held).await;
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = changed(&mut leadership) => {}
                    }
                    continue;
                }
                if term.number != term_led {
                    // The last leader may have spent its burst a moment ago.
                    term_led = term.number;
                    self.lookups.empty_limiters();
                }
            }
            if tokio::time::Instant::now() >= next_sweep {
                next_sweep = tokio::time::Instant::now() + every;
                let store = self.lookups.store();
                match sweep(store.as_ref(), ttl, now_millis()).await {
                    Ok(0) => {}
                    Ok(n) => {
                        metrics::counter!(SWEPT).increment(n as u64);
                        tracing::debug!(removed = n, "enrichment: expired cache entries removed");
                    }
                    Err(e) => tracing::warn!(error = %e, "enrichment: cannot sweep the cache"),
                }
            }
            if held.len() < BATCH {
                match self
                    .queue
                    .claim_unrouted(Claim::new(&holder, lease), BATCH - held.len())
                    .await
                {
                    Ok(items) => held.extend(items),
                    Err(e) => {
                        tracing::warn!(error = %e, "enrichment: cannot claim unrouted events")
                    }
                }
            }
            if held.is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = woken.notified() => {}
                    // The postgres engine wakes nobody: the leader looks every `lease / 3`.
                    _ = changed(&mut leadership) => {}
                    _ = tokio::time::sleep(SAFETY_POLL.min(next_sweep.saturating_duration_since(tokio::time::Instant::now()))) => {}
                }
                continue;
            }
            let (left, failing) = self
                .work(&holder, std::mem::take(&mut held), leadership.as_ref())
                .await;
            held = left;
            if !failing {
                attempt = 0;
                continue;
            }
            attempt = attempt.saturating_add(1);
            let mut wait = RETRY.jittered(attempt, &mut rand::rng());
            // Wake up in time for the first event whose `max_wait` runs out.
            let now = now_millis();
            for item in &held {
                if let Some(spec) = self.specs.get(item.event.source.as_str()) {
                    let due = item
                        .committed_at
                        .saturating_add(millis(spec.max_wait))
                        .saturating_sub(now);
                    wait = wait.min(Duration::from_millis(
                        u64::try_from(due.max(0)).unwrap_or(0),
                    ));
                }
            }
            wait = wait.min(lease / 3);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            let seqs: Vec<u64> = held.iter().map(|i| i.seq).collect();
            match self
                .queue
                .renew_unrouted(Claim::new(&holder, lease), &seqs)
                .await
            {
                Ok(lost) => held.retain(|i| !lost.contains(&i.seq)),
                Err(e) => tracing::warn!(error = %e, "enrichment: cannot renew claims"),
            }
        }
        self.release(&holder, &mut held).await;
        if let Some(l) = leadership {
            l.end().await;
        }
        tracing::info!("enrichment stopped");
    }

    /// Gives the claims on `held` up (another holder may take them at once).
    async fn release(&self, holder: &str, held: &mut Vec<UnroutedItem>) {
        let seqs: Vec<u64> = held.drain(..).map(|i| i.seq).collect();
        if !seqs.is_empty()
            && let Err(e) = self.queue.release_unrouted(holder, &seqs).await
        {
            // They return to the others when the lease runs out.
            tracing::warn!(error = %e, "enrichment: cannot give claims up");
        }
    }

    /// Waits for the rate limiter of `key`'s API; `false` when this gateway stopped leading
    /// first (`lead`, on a shared queue), so that no call starts after the lease might have
    /// run out. Renews the claims on `seqs` every `lease / 3` meanwhile (a low rate may
    /// make a batch outlast the lease).
    async fn turn(
        &self,
        key: &Key,
        lead: Option<&Leadership>,
        claims: (&str, &[u64]),
        renewed: &mut Instant,
    ) -> bool {
        let lease = self.queue.lease();
        let limiter = self.lookups.limiter(key);
        let started = Instant::now();
        let ready = async {
            if let Some(limiter) = limiter {
                limiter.until_ready().await;
            }
        };
        tokio::pin!(ready);
        let turn = loop {
            let calls_until = match lead.map(|l| l.term()) {
                None => None,
                Some(term) if term.leads() => term.calls_until,
                Some(_) => break false,
            };
            let renew_at = *renewed + lease / 3;
            let tick = calls_until.map_or(renew_at, |until| until.min(renew_at));
            tokio::select! {
                _ = &mut ready => break lead.is_none_or(|l| l.term().leads()),
                _ = tokio::time::sleep_until(tick) => {}
            }
            if Instant::now() >= renew_at {
                self.renew(claims.0, claims.1).await;
                *renewed = Instant::now();
            }
        };
        let waited = started.elapsed();
        if limiter.is_some() && !waited.is_zero() {
            metrics::counter!(LIMITED_WAIT).increment(waited.as_secs());
        }
        turn
    }

    async fn renew(&self, holder: &str, seqs: &[u64]) {
        let claim = Claim::new(holder, self.queue.lease());
        if let Err(e) = self.queue.renew_unrouted(claim, seqs).await {
            tracing::warn!(error = %e, "enrichment: cannot renew claims");
        }
    }

    /// Enriches and routes what it can of `items`; returns those still waiting for Google,
    /// and whether any lookup failed. Under `lead` (a shared queue) it stops calling Google
    /// once the leadership might have run out and leaves the events it could not complete
    /// unrouted, whatever their age, for the next leader.
    async fn work(
        &self,
        holder: &str,
        items: Vec<UnroutedItem>,
        lead: Option<&Leadership>,
    ) -> (Vec<UnroutedItem>, bool) {
        let seqs: Vec<u64> = items.iter().map(|i| i.seq).collect();
        let mut renewed = Instant::now();
        let mut lost = false;
        // Each distinct lookup of the batch once: 50 events of one course, one `courses.get`.
        let mut needed: BTreeMap<Key, Duration> = BTreeMap::new();
        let mut plans = Vec::with_capacity(items.len());
        for item in &items {
            let spec = self.specs.get(item.event.source.as_str());
            let keys = spec.map(|s| keys_of(&item.event, s)).unwrap_or_default();
            for (_, key) in &keys {
                if spec.is_some_and(|s| from_body(&item.event, s, key).is_some()) {
                    continue;
                }
                let ttl = spec.map_or(Duration::ZERO, |s| s.cache_ttl);
                let entry = needed.entry(key.clone()).or_insert(ttl);
                *entry = (*entry).min(ttl);
            }
            plans.push(keys);
        }
        let mut answers: HashMap<Key, Result<Answer, Failure>> = HashMap::new();
        for (key, ttl) in needed {
            if let Some(answer) = self.lookups.cached(&key, ttl).await {
                metrics::counter!(CACHE_HITS).increment(1);
                answers.insert(key, Ok(answer));
                continue;
            }
            metrics::counter!(CACHE_MISSES).increment(1);
            if !self.turn(&key, lead, (holder, &seqs), &mut renewed).await {
                lost = true;
                break;
            }
            metrics::counter!(CALLS, "method" => key.method()).increment(1);
            let answer = self.lookups.fetch(&key).await;
            if let Err(failure) = &answer {
                metrics::counter!(FAILURES, "method" => key.method()).increment(1);
                tracing::warn!(reason = %failure.reason, "enrichment: a lookup failed; retrying with backoff");
            }
            answers.insert(key, answer);
        }
        let failing = answers.values().any(Result::is_err);
        let now = now_millis();
        let table = self.routes.load();
        let mut waiting = Vec::new();
        for (item, keys) in items.into_iter().zip(plans) {
            let Some(spec) = self.specs.get(item.event.source.as_str()) else {
                // A source no longer enriching (config changed across a restart): route as is.
                self.route(holder, &item, (*item.event).clone(), &table)
                    .await;
                continue;
            };
            let complete = keys.iter().all(|(_, k)| {
                matches!(answers.get(k), Some(Ok(_))) || from_body(&item.event, spec, k).is_some()
            });
            let expired = now.saturating_sub(item.committed_at) >= millis(spec.max_wait);
            if !complete && (!expired || lost) {
                waiting.push(item);
                continue;
            }
            let event = enrich(&item.event, spec, &keys, &answers);
            self.route(holder, &item, event, &table).await;
        }
        (waiting, failing)
    }

    async fn route(&self, holder: &str, item: &UnroutedItem, event: Event, table: &RouteTable) {
        let deliveries = table
            .targets(&event)
            .into_iter()
            .map(|t| (t.route.to_owned(), t.sink.to_owned()))
            .collect();
        let routed = RouteLater {
            event: Some(event),
            deliveries,
        };
        let outcome = match routed.event.as_ref().and_then(|e| e.meta.get(META)) {
            Some(marker) if marker.starts_with("failed") => "failed",
            Some(_) => "unknown",
            None => "enriched",
        };
        match self.queue.route_later(holder, item.seq, routed).await {
            Ok(RoutedLater::Routed { .. }) => {
                metrics::counter!(ROUTED).increment(1);
                let waited = now_millis().saturating_sub(item.committed_at).max(0) as f64;
                metrics::histogram!(WAIT, "source" => item.event.source.to_string(), "outcome" => outcome)
                    .record(waited / 1000.0);
            }
            Ok(RoutedLater::AlreadyRouted) => {}
            Ok(RoutedLater::NotHeld { .. }) => {
                tracing::info!(
                    seq = item.seq,
                    "enrichment: another holder took the event over"
                );
            }
            Err(e) => {
                // Still unrouted: claimed again once the lease runs out.
                tracing::warn!(seq = item.seq, error = %e, "enrichment: cannot route the event");
            }
        }
    }
}

/// Until the leadership's term changes; never without one (the local engine).
async fn changed(leadership: &mut Option<Leadership>) {
    match leadership {
        Some(l) => l.changed().await,
        None => std::future::pending().await,
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;
    use crate::enrich::config::{DEFAULT_CACHE_TTL, DEFAULT_MAX_WAIT};

    fn spec(course: &[&str], person: &[&str]) -> EnrichSpec {
        EnrichSpec {
            course: course.iter().map(|s| (*s).to_owned()).collect(),
            person: person.iter().map(|s| (*s).to_owned()).collect(),
            coursework: vec!["title".to_owned()],
            submission: vec!["state".to_owned()],
            user: Vec::new(),
            max_wait: DEFAULT_MAX_WAIT,
            cache_ttl: DEFAULT_CACHE_TTL,
            rate_limit: None,
        }
    }

    fn roster() -> Event {
        Event::new(
            "1",
            "classroom",
            "classroom.courses.students.created",
            Utc::now(),
            json!({"collection": "courses.students", "eventType": "CREATED",
                   "resourceId": {"courseId": "12345", "userId": "45678"}}),
        )
    }

    #[test]
    fn keeps_configured_fields_and_the_ids() {
        let spec = spec(&["name"], &["name"]);
        let event = roster();
        let keys = keys_of(&event, &spec);
        assert_eq!(keys.len(), 2);
        let mut answers = HashMap::new();
        let found = |v: Value| Ok(Answer::Found(v.as_object().cloned().unwrap()));
        answers.insert(
            keys[0].1.clone(),
            found(json!({"name": "AP Biology", "section": "3"})),
        );
        answers.insert(
            keys[1].1.clone(),
            found(json!({"name": "Jane Doe", "email": "jane@example.edu"})),
        );
        let e = enrich(&event, &spec, &keys, &answers);
        assert_eq!(
            e.enriched["course"],
            json!({"id": "12345", "name": "AP Biology"})
        );
        assert_eq!(
            e.enriched["person"],
            json!({"id": "45678", "name": "Jane Doe"})
        );
        assert_eq!(e.data, event.data, "data stays as Google sent it");
        assert!(!e.meta.contains_key(META));
    }

    #[test]
    fn failures_and_unknowns_are_said() {
        let spec = spec(&["name"], &["name"]);
        let event = roster();
        let keys = keys_of(&event, &spec);
        let mut answers = HashMap::new();
        answers.insert(keys[0].1.clone(), Ok(Answer::NotFound));
        let e = enrich(&event, &spec, &keys, &answers);
        assert_eq!(e.meta[META], "failed: courses.students.get: not looked up");
        answers.insert(
            keys[1].1.clone(),
            Err(Failure {
                reason: "courses.students.get: Google answered 503".into(),
            }),
        );
        let e = enrich(&event, &spec, &keys, &answers);
        assert_eq!(
            e.meta[META],
            "failed: courses.students.get: Google answered 503"
        );
        assert_eq!(e.enriched["person"], json!({"id": "45678"}));
        answers.insert(keys[1].1.clone(), Ok(Answer::NotFound));
        let e = enrich(&event, &spec, &keys, &answers);
        assert_eq!(
            e.meta[META],
            "unknown: courses.get not found; courses.students.get not found"
        );
    }

    #[test]
    fn only_roster_events_look_people_up() {
        let spec = spec(&["name"], &["name"]);
        let mut event = roster();
        let mut data = event.data.clone().into_value();
        data["collection"] = json!("courses.courseWork");
        event.data = data.clone().into();
        assert_eq!(keys_of(&event, &spec).len(), 1, "no `id`: the course only");
        data["resourceId"] = json!({"courseId": "1", "id": "9"});
        event.data = data.clone().into();
        let keys = keys_of(&event, &spec);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].0, "courseWork");
        data["collection"] = json!("courses.courseWork.studentSubmissions");
        data["resourceId"] = json!({"courseId": "1", "courseWorkId": "9", "id": "S"});
        event.data = data.into();
        let keys = keys_of(&event, &spec);
        let members: Vec<&str> = keys.iter().map(|(m, _)| *m).collect();
        assert_eq!(members, ["course", "courseWork", "submission"]);
        event.data = json!({"resourceId": {}}).into();
        assert!(keys_of(&event, &spec).is_empty());
    }
}
