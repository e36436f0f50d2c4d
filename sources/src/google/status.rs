//! What `herald google status` shows: one row per registration or channel, whether recorded
//! or only declared, and when each is renewed.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::config::{RegistrationSpec, WatchSpec};
use super::state::{ChannelRecord, RegistrationRecord};

/// A subscription is renewed once this share of its life has passed.
const RENEW_AT: f64 = 0.8;

/// One row of `herald google status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub name: String,
    /// `registration` or `channel`.
    pub kind: String,
    pub source: String,
    /// The registration id, or the channel id.
    pub id: Option<String>,
    pub expires: Option<DateTime<Utc>>,
    pub renews: Option<DateTime<Utc>>,
    /// When it was created or last renewed (a registration's `renewed`; a channel's
    /// `created`, a renewal opening a new channel). `default`: rows from an older gateway's
    /// API lack it.
    #[serde(default)]
    pub renewed: Option<DateTime<Utc>>,
    /// `ok`, `expired`, `renewal failing`, `overlap` (a channel being replaced), `removing`.
    pub health: String,
    pub failures: u32,
    pub last_error: Option<String>,
}

/// The status of every record and every declared entry (for a running gateway, and for
/// `herald google status` on a stopped one, which has no failure counts).
pub fn status_rows<'a>(
    regs: impl Iterator<Item = &'a RegistrationRecord>,
    chans: impl Iterator<Item = &'a ChannelRecord>,
    registrations: &[RegistrationSpec],
    watches: &[WatchSpec],
    now: DateTime<Utc>,
) -> Vec<Status> {
    let mut rows: BTreeMap<String, Status> = BTreeMap::new();
    let health = |expires: DateTime<Utc>, declared: bool| {
        if !declared {
            "removing"
        } else if expires <= now {
            "expired"
        } else {
            "ok"
        }
    };
    for r in regs {
        let declared = registrations.iter().any(|s| s.name == r.name);
        rows.insert(
            r.name.clone(),
            Status {
                name: r.name.clone(),
                kind: "registration".into(),
                source: r.source.clone(),
                id: Some(r.registration_id.clone()),
                expires: Some(r.expiry),
                renews: declared.then(|| renew_at(r.renewed, r.expiry)),
                renewed: Some(r.renewed),
                health: health(r.expiry, declared).into(),
                failures: 0,
                last_error: None,
            },
        );
    }
    for c in chans {
        let declared = watches.iter().any(|s| s.name == c.name);
        let mut health = health(c.current.expiration, declared).to_owned();
        if c.retiring.is_some() && health == "ok" {
            health = "overlap".into();
        }
        rows.insert(
            c.name.clone(),
            Status {
                name: c.name.clone(),
                kind: "channel".into(),
                source: c.source.clone(),
                id: Some(c.current.id.clone()),
                expires: Some(c.current.expiration),
                renews: declared.then(|| renew_at(c.current.created, c.current.expiration)),
                renewed: Some(c.current.created),
                health,
                failures: 0,
                last_error: None,
            },
        );
    }
    let declared = registrations
        .iter()
        .map(|r| (&r.name, &r.source, "registration"))
        .chain(watches.iter().map(|w| (&w.name, &w.source, "channel")));
    for (name, source, kind) in declared {
        rows.entry(name.clone()).or_insert_with(|| Status {
            name: name.clone(),
            kind: kind.into(),
            source: source.clone(),
            id: None,
            expires: None,
            renews: None,
            renewed: None,
            health: "not created yet".into(),
            failures: 0,
            last_error: None,
        });
    }
    rows.into_values().collect()
}

/// 80% into the life from `start` to `end`.
pub(super) fn renew_at(start: DateTime<Utc>, end: DateTime<Utc>) -> DateTime<Utc> {
    let life = (end - start).max(TimeDelta::zero());
    let ms = (life.num_milliseconds() as f64 * RENEW_AT) as i64;
    start + TimeDelta::milliseconds(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_at_four_fifths_of_the_life() {
        let start = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let end = start + TimeDelta::days(7);
        assert_eq!(
            renew_at(start, end),
            start + TimeDelta::hours(134) + TimeDelta::minutes(24)
        );
        assert_eq!(
            renew_at(end, start),
            end,
            "an expiry before the start is due at once"
        );
    }
}
