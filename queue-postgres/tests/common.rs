//! Helpers for the postgres engine's tests against the testkit's real PostgreSQL.
#![allow(dead_code)]

use std::path::Path;

use herald_core::config::{Registry, parse};
use herald_queue_postgres::PgSpec;

/// The spec `queue:` `yaml` (a flow mapping's inside) validates to, with the config file in
/// `dir`.
pub fn spec_in(dir: &Path, yaml: &str) -> PgSpec {
    let mut registry = Registry::default();
    herald_queue_postgres::register(&mut registry);
    let text = format!("queue: {{engine: postgres, {yaml}}}");
    let config = parse(&text, &dir.join("routes.yaml"), &registry, &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    herald_queue_postgres::spec_of(&config.queue)
        .cloned()
        .expect("a postgres spec")
}

/// The spec for database `url`.
pub fn spec(url: &str) -> PgSpec {
    spec_in(Path::new("/"), &format!("url: '{url}'"))
}
