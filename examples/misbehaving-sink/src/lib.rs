//! misbehaving-sink: a plugin for Herald's own tests, never for use. With `panic: true` every
//! delivery panics; with `late_first: N, late_ms: M` the first N deliveries answer (success)
//! only after M ms, which is past the gateway's timeout in the tests. `record: FILE` appends
//! `late <event id>` or `on-time <event id>` for each delivery that returned.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use herald_plugin::{DeliverError, Delivery, SinkPlugin, export_sink};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    panic: bool,
    #[serde(default)]
    late_first: u32,
    #[serde(default)]
    late_ms: u64,
    #[serde(default)]
    record: Option<PathBuf>,
}

pub struct Misbehaving {
    config: Config,
    seen: AtomicU32,
}

impl SinkPlugin for Misbehaving {
    type Config = Config;
    const NAME: &'static str = "misbehaving-sink";

    fn create(config: Config) -> Result<Self, String> {
        Ok(Misbehaving {
            config,
            seen: AtomicU32::new(0),
        })
    }

    fn deliver(&self, delivery: &Delivery) -> Result<(), DeliverError> {
        let id = delivery.attribute("id").unwrap_or("?");
        if self.config.panic {
            panic!("misbehaving-sink panics on purpose (event {id})");
        }
        let late = self.seen.fetch_add(1, Ordering::SeqCst) < self.config.late_first;
        if late {
            std::thread::sleep(Duration::from_millis(self.config.late_ms));
        }
        if let Some(path) = &self.config.record {
            let state = if late { "late" } else { "on-time" };
            let mut file = std::fs::File::options()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| DeliverError::retryable(e.to_string()))?;
            writeln!(file, "{state} {id}").map_err(|e| DeliverError::retryable(e.to_string()))?;
        }
        Ok(())
    }
}

export_sink!(Misbehaving);
