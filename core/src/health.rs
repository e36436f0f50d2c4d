//! Readiness conditions raised by parts of the gateway other than the journal: a Kafka topic
//! that does not exist, a Google subscription about to expire with its renewal failing. Each
//! part sets its own named check; `/readyz` is ready when the journal is and every check is.
//!
//! A part that can go away while the gateway runs (a sink a reload removes or replaces) raises
//! its checks through its own [`Checks`] (from [`Health::owned`]): they are kept apart from
//! those of any other owner, even under the same name (the old and the new sink during a
//! reload), and [`Checks::release`] takes them all away when the part goes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The owner of the checks raised through [`Health`] itself.
const SHARED: u64 = 0;

#[derive(Clone, Debug, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// `(name, owner)` → why it is not ready.
    checks: RwLock<BTreeMap<(String, u64), String>>,
    /// The last owner id handed out by [`Health::owned`].
    owners: AtomicU64,
}

impl Health {
    /// Marks `name` as not ready, with the reason `/readyz` shows.
    pub fn fail(&self, name: &str, reason: impl Into<String>) {
        self.set(name, SHARED, Some(reason.into()));
    }

    /// Marks `name` as ready again.
    pub fn pass(&self, name: &str) {
        self.set(name, SHARED, None);
    }

    /// A new owner's handle on these checks (one per running sink).
    pub fn owned(&self) -> Checks {
        Checks {
            health: self.clone(),
            owner: self.inner.owners.fetch_add(1, Ordering::Relaxed) + 1,
            released: Arc::new(AtomicBool::new(false)),
        }
    }

    /// `Err` with every failing check's reason, or `Ok`.
    pub fn check(&self) -> Result<(), String> {
        let checks = self.inner.checks.read().unwrap_or_else(|p| p.into_inner());
        if checks.is_empty() {
            return Ok(());
        }
        let mut lines: Vec<String> = checks
            .iter()
            .map(|((name, _), why)| format!("{name}: {why}"))
            .collect();
        // Two owners of one name saying the same thing (an old and a new sink) say it once.
        lines.dedup();
        Err(lines.join("; "))
    }

    fn set(&self, name: &str, owner: u64, reason: Option<String>) {
        let mut checks = self.inner.checks.write().unwrap_or_else(|p| p.into_inner());
        let key = (name.to_owned(), owner);
        match reason {
            Some(reason) => checks.insert(key, reason),
            None => checks.remove(&key),
        };
    }
}

/// One owner's readiness checks (a sink's). Clones share the owner; after
/// [`release`](Checks::release) its checks are gone and whatever it still reports is ignored.
#[derive(Clone, Debug)]
pub struct Checks {
    health: Health,
    owner: u64,
    released: Arc<AtomicBool>,
}

impl Default for Checks {
    /// Checks on a [`Health`] of their own, which nobody reads (tests, `herald check`).
    fn default() -> Self {
        Health::default().owned()
    }
}

impl Checks {
    /// Marks `name` as not ready, with the reason `/readyz` shows.
    pub fn fail(&self, name: &str, reason: impl Into<String>) {
        self.report(name, Some(reason.into()));
    }

    /// Marks `name` as ready again.
    pub fn pass(&self, name: &str) {
        self.report(name, None);
    }

    /// Takes away every check this owner raised; later reports are ignored.
    pub fn release(&self) {
        let mut checks = self
            .health
            .inner
            .checks
            .write()
            .unwrap_or_else(|p| p.into_inner());
        self.released.store(true, Ordering::Relaxed);
        checks.retain(|(_, owner), _| *owner != self.owner);
    }

    fn report(&self, name: &str, reason: Option<String>) {
        let mut checks = self
            .health
            .inner
            .checks
            .write()
            .unwrap_or_else(|p| p.into_inner());
        // Read under the lock `release` takes: a report never lands after the release.
        if self.released.load(Ordering::Relaxed) {
            return;
        }
        let key = (name.to_owned(), self.owner);
        match reason {
            Some(reason) => checks.insert(key, reason),
            None => checks.remove(&key),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_until_a_check_fails_and_again_once_it_passes() {
        let h = Health::default();
        assert_eq!(h.check(), Ok(()));
        h.fail("kafka:bus", "topic `edu.events` does not exist");
        h.fail(
            "google:directory",
            "channel expires in 4 minutes; renewal failing",
        );
        assert_eq!(
            h.check(),
            Err("google:directory: channel expires in 4 minutes; renewal failing; kafka:bus: topic `edu.events` does not exist".into())
        );
        h.pass("kafka:bus");
        h.pass("google:directory");
        assert_eq!(h.check(), Ok(()));
    }

    #[test]
    fn an_owners_checks_go_away_with_it_and_leave_the_others() {
        let h = Health::default();
        let (old, new) = (h.owned(), h.owned());
        old.fail("kafka:bus", "topic `a` does not exist on the brokers");
        new.fail("kafka:bus", "topic `b` does not exist on the brokers");
        h.fail("google:directory", "renewal failing");
        // The new sink passing does not hide what the old one still says, nor the reverse.
        new.pass("kafka:bus");
        assert_eq!(
            h.check(),
            Err("google:directory: renewal failing; kafka:bus: topic `a` does not exist on the brokers".into())
        );
        new.fail("kafka:bus", "topic `b` does not exist on the brokers");
        old.clone().release();
        assert_eq!(
            h.check(),
            Err("google:directory: renewal failing; kafka:bus: topic `b` does not exist on the brokers".into())
        );
        // A released owner's late report (a background check finishing) is ignored.
        old.fail("kafka:bus", "topic `a` does not exist on the brokers");
        new.release();
        h.pass("google:directory");
        assert_eq!(h.check(), Ok(()));
    }

    #[test]
    fn the_same_reason_from_two_owners_is_said_once() {
        let h = Health::default();
        let (a, b) = (h.owned(), h.owned());
        a.fail("kafka:bus", "topic `t` does not exist on the brokers");
        b.fail("kafka:bus", "topic `t` does not exist on the brokers");
        assert_eq!(
            h.check(),
            Err("kafka:bus: topic `t` does not exist on the brokers".into())
        );
    }
}
