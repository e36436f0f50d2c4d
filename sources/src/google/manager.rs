//! The task that keeps every declared registration and channel alive.
//!
//! One loop: do what is due, report (metrics, readiness), sleep until the next thing is due
//! (at most a minute, so a wall-clock jump is noticed), a `sync` arrives, or a command comes
//! from the admin listener. What is due:
//!
//! * a registration or channel that does not exist yet, no longer matches its config, or
//!   has expired: created now;
//! * one past 80% of its life: renewed. A registration is renewed by repeating
//!   `registrations.create`; if Classroom answers with a new id, the old one is deleted. A
//!   channel is renewed by opening a new one (fresh id and token, accepted before the call
//!   since Google sends the `sync` at once); the old one keeps delivering until the new
//!   one's `sync` arrived, or `SYNC_TIMEOUT` passed, and is then stopped (`channels.stop`);
//! * a record whose entry was removed from routes.yaml: deleted or stopped, then forgotten.
//!
//! A failed call is retried with exponential backoff (30 s doubling up to 10 min) and
//! logged with Google's answer and what to do. Every state change is written to the journal
//! before the loop goes on, so a restart continues where it was.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use herald_core::backoff::Backoff;
use herald_core::health::Health;
use herald_core::queue::{Claim, Lead, Queue};
use rand::RngCore;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Links;
use super::api::Api;
use super::clock::{Clock, TICK};
use super::config::{RegistrationSpec, WatchSpec};
use super::control::{Command, Control};
use super::state::{
    self, CHANNEL_PREFIX, ChannelInfo, ChannelRecord, REGISTRATION_PREFIX, RegistrationRecord,
    Retiring, StateStore,
};
use super::status::{Status, renew_at, status_rows};

/// How long an old channel is kept after its replacement was opened, if no `sync` comes.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(120);
/// `/readyz` fails when a subscription is this close to expiry and its renewal is failing.
const UNHEALTHY_BEFORE: TimeDelta = TimeDelta::minutes(10);
/// A failed call is retried after 30 s, doubling up to 10 min.
const RETRY: Backoff = Backoff::new(Duration::from_secs(30), Duration::from_secs(600));

/// The name of the leadership the lifecycle takes on a shared queue (`Queue::try_lead`).
pub const LEADERSHIP: &str = "google";
/// Where a follower records a `sync` that reached it, for the leader (`<prefix><channel id>`).
pub const SYNCED_PREFIX: &str = "google/synced/";

/// On a queue several gateways share, only the gateway that holds the leadership
/// [`LEADERSHIP`] calls Google (docs/architecture.md §10.2).
struct Leadership {
    queue: Arc<dyn Queue>,
    holder: String,
    lease: Duration,
    /// Leading, and no Google call is started after this instant (`lease / 3` before the
    /// lease runs out, so a slow call cannot overlap the next leader's).
    calls_until: Option<tokio::time::Instant>,
    /// The gateway that leads, as last heard; `None` before the first answer or on an error.
    leader: Option<String>,
}

/// Why the last attempt on a subscription failed, and when to try again.
#[derive(Clone, Debug)]
struct Trouble {
    failures: u32,
    error: String,
    retry_at: DateTime<Utc>,
}

pub struct Manager {
    api: Api,
    store: Arc<dyn StateStore>,
    health: Health,
    links: Links,
    clock: Clock,
    registrations: Vec<RegistrationSpec>,
    watches: Vec<WatchSpec>,
    regs: BTreeMap<String, RegistrationRecord>,
    chans: BTreeMap<String, ChannelRecord>,
    trouble: BTreeMap<String, Trouble>,
    /// Health checks set by this manager, so a forgotten name is cleared too.
    checks: HashSet<String>,
    /// `None` when this gateway alone uses its queue (the local engine): it always leads.
    leadership: Option<Leadership>,
}

impl Manager {
    /// Reads the records of an earlier run from `store`. `queue`, when its claims lapse (a
    /// shared engine), decides which gateway leads; without it this one always does.
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        api: Api,
        store: Arc<dyn StateStore>,
        health: Health,
        links: Links,
        clock: Clock,
        registrations: Vec<RegistrationSpec>,
        watches: Vec<WatchSpec>,
        queue: Option<Arc<dyn Queue>>,
    ) -> Result<Manager, String> {
        let regs: Vec<RegistrationRecord> = state::load(&*store, REGISTRATION_PREFIX).await?;
        let chans: Vec<ChannelRecord> = state::load(&*store, CHANNEL_PREFIX).await?;
        let manager = Manager {
            api,
            store,
            health,
            links,
            clock,
            registrations,
            watches,
            regs: regs.into_iter().map(|r| (r.name.clone(), r)).collect(),
            chans: chans.into_iter().map(|c| (c.name.clone(), c)).collect(),
            trouble: BTreeMap::new(),
            checks: HashSet::new(),
            leadership: queue.filter(|q| q.renews_claims()).map(|queue| Leadership {
                holder: queue.holder().to_owned(),
                lease: queue.lease(),
                queue,
                calls_until: None,
                leader: None,
            }),
        };
        manager.publish_tokens();
        Ok(manager)
    }

    /// Runs until `stop` is cancelled; the handle takes commands meanwhile.
    pub fn spawn(self, stop: CancellationToken) -> (Control, tokio::task::JoinHandle<()>) {
        let (commands, receiver) = mpsc::channel(16);
        let task = tokio::spawn(self.run(receiver, stop));
        (Control { commands }, task)
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>, stop: CancellationToken) {
        tracing::info!(
            registrations = self.registrations.len(),
            channels = self.watches.len(),
            "keeping Google registrations and channels alive"
        );
        loop {
            self.lead().await;
            self.take_synced().await;
            if self.leads() {
                self.work().await;
            }
            let now = self.clock.now();
            self.report(now);
            let mut next = self.next_due(now);
            if let Some(l) = &self.leadership {
                next = next.min(now + TimeDelta::from_std(l.lease / 3).unwrap_or_default());
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.clock.sleep_until(next) => {}
                _ = self.links.synced_changed() => {}
                Some(command) = commands.recv() => self.command(command).await,
            }
        }
        if let Some(l) = &self.leadership
            && l.calls_until.is_some()
            && let Err(e) = l.queue.resign(LEADERSHIP, &l.holder).await
        {
            tracing::warn!("could not give up the Google lifecycle's leadership: {e}");
        }
    }

    /// Whether this gateway may call Google now.
    fn leads(&self) -> bool {
        match &self.leadership {
            None => true,
            Some(l) => l
                .calls_until
                .is_some_and(|until| tokio::time::Instant::now() < until),
        }
    }

    /// Claims or renews the leadership (on a shared queue). A gateway that starts leading
    /// reads the records again (the last leader changed them); a follower reads them every
    /// time, so that it accepts the tokens of the channels the leader opens.
    async fn lead(&mut self) {
        let Some(l) = &mut self.leadership else {
            return;
        };
        let asked = tokio::time::Instant::now();
        let answer = l
            .queue
            .try_lead(LEADERSHIP, Claim::new(&l.holder, l.lease))
            .await;
        let was_leading = l.calls_until.is_some();
        let reload = match answer {
            Ok(Lead::Leader { .. }) => {
                l.calls_until = Some(asked + l.lease - l.lease / 3);
                l.leader = Some(l.holder.clone());
                if !was_leading {
                    tracing::info!(holder = %l.holder, "this gateway now leads the Google lifecycle");
                }
                !was_leading
            }
            Ok(Lead::Follower { leader, .. }) => {
                l.calls_until = None;
                if was_leading || l.leader.as_ref() != Some(&leader) {
                    tracing::info!(leader = %leader, "another gateway leads the Google lifecycle");
                }
                l.leader = Some(leader);
                true
            }
            Err(e) => {
                l.calls_until = None;
                l.leader = None;
                tracing::warn!(
                    "cannot claim the Google lifecycle's leadership, not calling Google: {e}"
                );
                false
            }
        };
        if reload && let Err(e) = self.reload().await {
            tracing::warn!("cannot read the Google state: {e}");
            if let Some(l) = &mut self.leadership {
                // A new leader must start from the last leader's records.
                l.calls_until = None;
            }
        }
    }

    /// Reads the records from the store again.
    async fn reload(&mut self) -> Result<(), String> {
        let regs: Vec<RegistrationRecord> = state::load(&*self.store, REGISTRATION_PREFIX).await?;
        let chans: Vec<ChannelRecord> = state::load(&*self.store, CHANNEL_PREFIX).await?;
        self.regs = regs.into_iter().map(|r| (r.name.clone(), r)).collect();
        self.chans = chans.into_iter().map(|c| (c.name.clone(), c)).collect();
        self.publish_tokens();
        Ok(())
    }

    /// The refusal of a command that calls Google on a gateway that does not lead.
    fn not_leading(&self) -> Option<String> {
        if self.leads() {
            return None;
        }
        let leader = self.leadership.as_ref().and_then(|l| l.leader.clone());
        Some(match leader {
            Some(leader) => format!(
                "gateway `{leader}` leads the Google lifecycle, not this one; run the command against it"
            ),
            None => "this gateway does not lead the Google lifecycle now; try again".to_owned(),
        })
    }

    /// The gateway that leads the lifecycle, as last heard (`None` on the local engine).
    pub fn leader(&self) -> Option<String> {
        self.leadership.as_ref().and_then(|l| l.leader.clone())
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Status(reply) => {
                let _ = reply.send(self.status(self.clock.now()));
            }
            Command::Renew(name, reply) => {
                let answer = match self.not_leading() {
                    Some(e) => Err(e),
                    None => self.renew_now(name).await,
                };
                let _ = reply.send(answer);
            }
            Command::Stop(name, reply) => {
                let answer = match self.not_leading() {
                    Some(e) => Err(e),
                    None => self.stop_now(&name).await,
                };
                let _ = reply.send(answer);
            }
        }
    }

    async fn renew_now(&mut self, name: Option<String>) -> Result<Vec<String>, String> {
        let names: Vec<String> = match &name {
            Some(name) => vec![name.clone()],
            None => self
                .registrations
                .iter()
                .map(|r| r.name.clone())
                .chain(self.watches.iter().map(|w| w.name.clone()))
                .collect(),
        };
        for name in &names {
            if let Some(spec) = self.registrations.iter().find(|r| &r.name == name).cloned() {
                self.renew_registration(&spec).await?;
            } else if let Some(spec) = self.watches.iter().find(|w| &w.name == name).cloned() {
                self.open_channel(&spec).await?;
            } else {
                return Err(format!(
                    "no registration or channel `{name}` in routes.yaml; `herald google status` lists them"
                ));
            }
        }
        Ok(names)
    }

    async fn stop_now(&mut self, name: &str) -> Result<String, String> {
        let Some(record) = self.chans.get(name).cloned() else {
            return Err(format!(
                "no open channel `{name}`; `herald google status` lists them"
            ));
        };
        self.stop_record(&record).await?;
        let again = self.watches.iter().any(|w| w.name == name);
        Ok(if again {
            format!(
                "stopped channel {} of `{name}`; it is still in routes.yaml, so a new channel is opened now (remove it from routes.yaml and restart to stop watching)",
                record.current.id
            )
        } else {
            format!("stopped channel {} of `{name}`", record.current.id)
        })
    }

    /// Everything that is due now.
    async fn work(&mut self) {
        let now = self.clock.now();
        // Entries removed from routes.yaml.
        let stale_regs: Vec<RegistrationRecord> = self
            .regs
            .values()
            .filter(|r| !self.registrations.iter().any(|s| s.name == r.name))
            .cloned()
            .collect();
        for record in stale_regs {
            if self.may_try(&record.name, now) {
                self.remove_registration(&record).await;
            }
        }
        let stale_chans: Vec<ChannelRecord> = self
            .chans
            .values()
            .filter(|c| !self.watches.iter().any(|s| s.name == c.name))
            .cloned()
            .collect();
        for record in stale_chans {
            if self.may_try(&record.name, now) {
                // A failure is recorded (and retried) by `stop_record`.
                if self.stop_record(&record).await.is_ok() {
                    tracing::info!(channel = %record.name,
                        "stopped the channel of a watch removed from routes.yaml");
                }
            }
        }
        for spec in self.registrations.clone() {
            let due = match self.regs.get(&spec.name) {
                None => true,
                Some(r) => {
                    r.topic != spec.topic
                        || r.feed != spec.feed
                        || now >= renew_at(r.renewed, r.expiry)
                }
            };
            if due && self.may_try(&spec.name, now) {
                let _ = self.renew_registration(&spec).await;
            }
        }
        for spec in self.watches.clone() {
            if let Some(record) = self.chans.get(&spec.name).cloned()
                && let Some(retiring) = &record.retiring
                && (record.current.synced || now >= retiring.stop_after)
            {
                self.retire(&record, retiring).await;
            }
            let due = match self.chans.get(&spec.name) {
                None => true,
                Some(c) => {
                    c.address != spec.address
                        || c.event != spec.event
                        || c.scope != spec.scope
                        || (c.retiring.is_none()
                            && now >= renew_at(c.current.created, c.current.expiration))
                        || now >= c.current.expiration
                }
            };
            if due && self.may_try(&spec.name, now) {
                let _ = self.open_channel(&spec).await;
            }
        }
    }

    fn may_try(&self, name: &str, now: DateTime<Utc>) -> bool {
        self.leads() && self.trouble.get(name).is_none_or(|t| now >= t.retry_at)
    }

    async fn renew_registration(&mut self, spec: &RegistrationSpec) -> Result<(), String> {
        let now = self.clock.now();
        let created = match self.api.create_registration(spec).await {
            Ok(created) => created,
            Err(e) => return Err(self.failed(&spec.name, e.message)),
        };
        let old = self.regs.get(&spec.name).cloned();
        let record = RegistrationRecord {
            name: spec.name.clone(),
            source: spec.source.clone(),
            feed: spec.feed.clone(),
            topic: spec.topic.clone(),
            registration_id: created.id.clone(),
            expiry: created.expiry,
            renewed: now,
        };
        self.persist(&key(REGISTRATION_PREFIX, &spec.name), Some(&record))
            .await
            .map_err(|e| self.failed(&spec.name, e))?;
        self.regs.insert(spec.name.clone(), record);
        self.succeeded(&spec.name, "renewals");
        tracing::info!(registration = %spec.name, id = %created.id,
            expires = %created.expiry.to_rfc3339(), "Classroom registration created or renewed");
        if let Some(old) = old
            && old.registration_id != created.id
            && let Err(e) = self.api.delete_registration(&old.registration_id).await
            && !e.gone
        {
            // It expires by itself within a week; until then its notifications are
            // duplicates with other message ids.
            tracing::warn!(registration = %spec.name, id = %old.registration_id,
                "could not delete the replaced Classroom registration: {e}");
        }
        Ok(())
    }

    async fn remove_registration(&mut self, record: &RegistrationRecord) {
        match self.api.delete_registration(&record.registration_id).await {
            Ok(()) => {}
            Err(e) if e.gone => {}
            Err(e) => {
                self.failed(&record.name, e.message);
                return;
            }
        }
        if let Err(e) = self
            .persist::<()>(&key(REGISTRATION_PREFIX, &record.name), None)
            .await
        {
            self.failed(&record.name, e);
            return;
        }
        self.regs.remove(&record.name);
        self.forget(&record.name);
        tracing::info!(registration = %record.name, id = %record.registration_id,
            "deleted the Classroom registration removed from routes.yaml");
    }

    /// Opens a new channel for `spec`; the one it replaces (if any) retires.
    async fn open_channel(&mut self, spec: &WatchSpec) -> Result<(), String> {
        let now = self.clock.now();
        // A random (version 4) UUID, the form Google suggests for channel ids.
        let id = uuid::Uuid::new_v4().to_string();
        let token = random_token();
        let old = self.chans.get(&spec.name).cloned();
        // Google sends the new channel's `sync` before `users.watch` answers.
        self.links.add_token(&spec.source, &token);
        let opened = self.api.watch(spec, &id, &token, now).await;
        let channel = match opened {
            Ok(channel) => channel,
            Err(e) => {
                self.links.remove_token(&spec.source, &token);
                return Err(self.failed(&spec.name, e.message));
            }
        };
        let synced =
            self.links.take_synced_id(&channel.id) || self.synced_elsewhere(&channel.id).await;
        let retiring = match old {
            // A channel still retiring is stopped now: only one overlap at a time.
            Some(old) => {
                if let Some(r) = &old.retiring {
                    self.stop_channel(&old.name, &r.channel).await;
                }
                Some(Retiring {
                    channel: old.current,
                    stop_after: now + TimeDelta::from_std(SYNC_TIMEOUT).unwrap_or_default(),
                })
            }
            None => None,
        };
        let record = ChannelRecord {
            name: spec.name.clone(),
            source: spec.source.clone(),
            event: spec.event.clone(),
            scope: spec.scope.clone(),
            address: spec.address.clone(),
            current: ChannelInfo {
                id: channel.id.clone(),
                resource_id: channel.resource_id,
                token,
                expiration: channel.expiration,
                created: now,
                synced,
            },
            retiring,
        };
        self.persist(&key(CHANNEL_PREFIX, &spec.name), Some(&record))
            .await
            .map_err(|e| self.failed(&spec.name, e))?;
        self.chans.insert(spec.name.clone(), record);
        self.publish_tokens();
        self.succeeded(&spec.name, "renewals");
        tracing::info!(channel = %spec.name, id = %channel.id,
            expires = %channel.expiration.to_rfc3339(), "Directory channel opened");
        Ok(())
    }

    /// Stops the retiring channel of `record` once its successor synced (or timed out).
    async fn retire(&mut self, record: &ChannelRecord, retiring: &Retiring) {
        if !self.stop_channel(&record.name, &retiring.channel).await {
            return;
        }
        let mut updated = record.clone();
        updated.retiring = None;
        if let Err(e) = self
            .persist(&key(CHANNEL_PREFIX, &record.name), Some(&updated))
            .await
        {
            self.failed(&record.name, e);
            return;
        }
        tracing::info!(channel = %record.name, old = %retiring.channel.id, new = %record.current.id,
            synced = record.current.synced, "replaced Directory channel stopped");
        self.chans.insert(record.name.clone(), updated);
        self.publish_tokens();
    }

    /// `channels.stop`; true when it is stopped (or was gone already).
    async fn stop_channel(&mut self, name: &str, channel: &ChannelInfo) -> bool {
        match self
            .api
            .stop_channel(&channel.id, &channel.resource_id)
            .await
        {
            Ok(()) => true,
            Err(e) if e.gone => true,
            Err(e) => {
                self.failed(name, e.message);
                false
            }
        }
    }

    /// Stops every channel of `record` and forgets it.
    async fn stop_record(&mut self, record: &ChannelRecord) -> Result<(), String> {
        if let Some(retiring) = &record.retiring
            && !self.stop_channel(&record.name, &retiring.channel).await
        {
            return Err(self.error_of(&record.name));
        }
        if !self.stop_channel(&record.name, &record.current).await {
            return Err(self.error_of(&record.name));
        }
        if let Err(e) = self
            .persist::<()>(&key(CHANNEL_PREFIX, &record.name), None)
            .await
        {
            return Err(self.failed(&record.name, e));
        }
        self.chans.remove(&record.name);
        self.forget(&record.name);
        self.publish_tokens();
        Ok(())
    }

    /// Marks channels whose `sync` arrived.
    async fn take_synced(&mut self) {
        let mut synced = self.links.take_synced();
        if self.leadership.is_some() {
            if !self.leads() {
                // For the leader, which may be another gateway.
                for id in synced {
                    if let Err(e) = self
                        .store
                        .put_state(&key(SYNCED_PREFIX, &id), Some(b""))
                        .await
                    {
                        tracing::warn!(channel = %id, "cannot record a channel's sync for the leader: {e}");
                    }
                }
                return;
            }
            match self.store.list_state(SYNCED_PREFIX).await {
                Ok(listed) => {
                    for (k, _) in listed {
                        if let Some(id) = k.strip_prefix(SYNCED_PREFIX) {
                            synced.insert(id.to_owned());
                        }
                        if let Err(e) = self.store.put_state(&k, None).await {
                            tracing::warn!("cannot delete a recorded sync: {e}");
                        }
                    }
                }
                Err(e) => tracing::warn!("cannot read the syncs other gateways recorded: {e}"),
            }
        }
        if synced.is_empty() {
            return;
        }
        let names: Vec<String> = self
            .chans
            .values()
            .filter(|c| !c.current.synced && synced.contains(&c.current.id))
            .map(|c| c.name.clone())
            .collect();
        for name in names {
            let Some(mut record) = self.chans.get(&name).cloned() else {
                continue;
            };
            record.current.synced = true;
            if self
                .persist(&key(CHANNEL_PREFIX, &name), Some(&record))
                .await
                .is_ok()
            {
                self.chans.insert(name, record);
            }
        }
    }

    /// Whether another gateway recorded the `sync` of channel `id` (on a shared queue).
    async fn synced_elsewhere(&self, id: &str) -> bool {
        if self.leadership.is_none() {
            return false;
        }
        let key = key(SYNCED_PREFIX, id);
        match self.store.get_state(&key).await {
            Ok(Some(_)) => {
                let _ = self.store.put_state(&key, None).await;
                true
            }
            _ => false,
        }
    }

    /// The tokens of every open channel, for the Directory handlers.
    fn publish_tokens(&self) {
        let mut by_source: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for record in self.chans.values() {
            let tokens = by_source.entry(record.source.clone()).or_default();
            tokens.push(record.current.token.clone());
            if let Some(r) = &record.retiring {
                tokens.push(r.channel.token.clone());
            }
        }
        for spec in &self.watches {
            by_source.entry(spec.source.clone()).or_default();
        }
        for (source, tokens) in by_source {
            self.links.set_tokens(&source, tokens);
        }
    }

    fn failed(&mut self, name: &str, error: String) -> String {
        let now = self.clock.now();
        let trouble = self.trouble.entry(name.to_owned()).or_insert(Trouble {
            failures: 0,
            error: String::new(),
            retry_at: now,
        });
        trouble.failures += 1;
        trouble.error = error.clone();
        let backoff = RETRY.ceiling(trouble.failures);
        trouble.retry_at = now + TimeDelta::from_std(backoff).unwrap_or_default();
        metrics::counter!("herald_google_renewal_failures_total", "name" => name.to_owned())
            .increment(1);
        tracing::warn!(subscription = %name, failures = trouble.failures,
            retry_in = ?backoff, "Google call failed: {error}");
        error
    }

    fn error_of(&self, name: &str) -> String {
        self.trouble
            .get(name)
            .map(|t| t.error.clone())
            .unwrap_or_default()
    }

    fn succeeded(&mut self, name: &str, counter: &'static str) {
        self.trouble.remove(name);
        let metric = format!("herald_google_{counter}_total");
        metrics::counter!(metric, "name" => name.to_owned()).increment(1);
    }

    fn forget(&mut self, name: &str) {
        self.trouble.remove(name);
        metrics::gauge!("herald_google_expiry_seconds", "name" => name.to_owned()).set(0.0);
    }

    async fn persist<T: Serialize>(&self, key: &str, record: Option<&T>) -> Result<(), String> {
        let bytes = match record {
            Some(record) => Some(serde_json::to_vec(record).map_err(|e| e.to_string())?),
            None => None,
        };
        self.store
            .put_state(key, bytes.as_deref())
            .await
            .map_err(|e| format!("cannot record the Google state in the journal: {e}"))
    }

    /// When the loop must next act.
    fn next_due(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let mut next = now + TimeDelta::from_std(TICK).unwrap_or_default();
        let mut consider = |name: &str, at: DateTime<Utc>| {
            let at = match self.trouble.get(name) {
                Some(t) => at.max(t.retry_at),
                None => at,
            };
            next = next.min(at);
        };
        for r in self.regs.values() {
            consider(&r.name, renew_at(r.renewed, r.expiry));
        }
        for c in self.chans.values() {
            match &c.retiring {
                Some(r) => consider(&c.name, r.stop_after),
                None => consider(&c.name, renew_at(c.current.created, c.current.expiration)),
            }
        }
        for name in self
            .registrations
            .iter()
            .map(|r| &r.name)
            .chain(self.watches.iter().map(|w| &w.name))
        {
            if !self.regs.contains_key(name) && !self.chans.contains_key(name) {
                consider(name, now);
            }
        }
        next
    }

    /// Metrics and readiness for every subscription.
    fn report(&mut self, now: DateTime<Utc>) {
        let rows = self.status(now);
        for row in &rows {
            if let Some(expires) = row.expires {
                metrics::gauge!("herald_google_expiry_seconds", "name" => row.name.clone())
                    .set((expires - now).num_seconds() as f64);
            }
            let check = format!("google:{}", row.name);
            let reason = match (row.expires, &row.last_error) {
                (Some(expires), error) if expires <= now => Some(format!(
                    "expired at {}{}",
                    expires.to_rfc3339(),
                    error
                        .as_ref()
                        .map(|e| format!("; renewal failing: {e}"))
                        .unwrap_or_default()
                )),
                (Some(expires), Some(error)) if expires - now <= UNHEALTHY_BEFORE => Some(format!(
                    "expires in {} min; renewal failing: {error}",
                    (expires - now).num_minutes()
                )),
                (None, Some(error)) => Some(format!("not created: {error}")),
                _ => None,
            };
            match reason {
                Some(reason) => self.health.fail(&check, reason),
                None => self.health.pass(&check),
            }
        }
        let known: HashSet<String> = rows.iter().map(|r| format!("google:{}", r.name)).collect();
        for check in self.checks.difference(&known) {
            self.health.pass(check);
        }
        self.checks = known;
    }

    fn status(&self, now: DateTime<Utc>) -> Vec<Status> {
        let mut rows = status_rows(
            self.regs.values(),
            self.chans.values(),
            &self.registrations,
            &self.watches,
            now,
        );
        for row in &mut rows {
            if let Some(t) = self.trouble.get(&row.name) {
                row.failures = t.failures;
                row.last_error = Some(t.error.clone());
                if row.health == "ok" {
                    row.health = "renewal failing".into();
                }
            }
        }
        rows
    }
}

fn key(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

/// A channel token: 32 random bytes, hex (Google allows up to 256 characters).
fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    herald_core::encoding::hex(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh() {
        let t = random_token();
        assert_eq!(t.len(), 64);
        assert_ne!(t, random_token());
    }
}
