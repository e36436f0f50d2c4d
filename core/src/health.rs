//! Readiness conditions raised by parts of the gateway other than the journal: a Kafka topic
//! that does not exist, a Google subscription about to expire with its renewal failing. Each
//! part sets its own named check; `/readyz` is ready when the journal is and every check is.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

#[derive(Clone, Debug, Default)]
pub struct Health {
    checks: Arc<RwLock<BTreeMap<String, String>>>,
}

impl Health {
    /// Marks `name` as not ready, with the reason `/readyz` shows.
    pub fn fail(&self, name: &str, reason: impl Into<String>) {
        let mut checks = self.checks.write().unwrap_or_else(|p| p.into_inner());
        checks.insert(name.to_owned(), reason.into());
    }

    /// Marks `name` as ready again.
    pub fn pass(&self, name: &str) {
        let mut checks = self.checks.write().unwrap_or_else(|p| p.into_inner());
        checks.remove(name);
    }

    /// `Err` with every failing check's reason, or `Ok`.
    pub fn check(&self) -> Result<(), String> {
        let checks = self.checks.read().unwrap_or_else(|p| p.into_inner());
        if checks.is_empty() {
            return Ok(());
        }
        Err(checks
            .iter()
            .map(|(name, why)| format!("{name}: {why}"))
            .collect::<Vec<_>>()
            .join("; "))
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
}
