use std::path::Path;
use std::time::Duration;

use herald_core::config::{Config, QueueEngine, QueueSpec, Registry, parse};

use super::*;

const SECRET: &str = "s3cr3t-Pa55";

fn registry() -> Registry {
    let mut r = Registry::default();
    crate::register(&mut r);
    r
}

fn load(yaml: &str) -> Result<Config, Vec<String>> {
    let env = |name: &str| (name == "PGPASSWORD").then(|| SECRET.to_owned());
    parse(
        yaml,
        Path::new("/etc/herald/routes.yaml"),
        &registry(),
        &env,
    )
    .map_err(|e| e.to_string().lines().map(str::to_owned).collect())
}

fn spec(yaml: &str) -> PgSpec {
    let config = load(yaml).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(config.queue.engine, QueueEngine::Postgres);
    spec_of(&config.queue).cloned().expect("a postgres spec")
}

#[test]
fn a_loopback_host_defaults_to_no_tls_and_any_other_to_verify_full() {
    let local = spec("queue: {engine: postgres, url: 'postgres://herald@127.0.0.1:5433/q'}");
    assert_eq!((local.ssl, local.ssl_defaulted), (SslMode::Disable, true));
    assert_eq!(local.pool, DEFAULT_POOL);
    assert_eq!(local.lease, Duration::from_secs(30));
    let local = spec("queue: {engine: postgres, url: 'postgres://herald@localhost/q'}");
    assert_eq!(local.ssl, SslMode::Disable);

    let remote = spec(
        "queue:\n  engine: postgres\n  url: postgres://herald@db.internal/herald\n  tls: {ca: ca.pem}\n",
    );
    assert_eq!(
        (remote.ssl, remote.ssl_defaulted),
        (SslMode::VerifyFull, true)
    );
    assert_eq!(remote.ca.as_deref(), Some(Path::new("/etc/herald/ca.pem")));

    let errors = load("queue:\n  engine: postgres\n  url: postgres://herald@db.internal/herald\n")
        .expect_err("verify-full needs a CA");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("/etc/herald/routes.yaml:3:8: `queue`: sslmode verify-full (the default for a host that is not loopback) checks the server's certificate: set `tls: { ca: FILE }`"),
        "{errors:?}"
    );
}

#[test]
fn sslmode_takes_libpq_s_four_modes() {
    let url = |mode: &str| {
        format!(
            "queue: {{engine: postgres, url: 'postgres://herald@db/q?sslmode={mode}&connect_timeout=3', tls: {{ca: ca.pem}}}}"
        )
    };
    assert_eq!(spec(&url("verify-ca")).ssl, SslMode::VerifyCa);
    assert_eq!(spec(&url("verify-full")).ssl, SslMode::VerifyFull);
    // libpq: `require` with a CA checks the chain.
    assert_eq!(spec(&url("require")).ssl, SslMode::VerifyCa);
    let s = spec("queue: {engine: postgres, url: 'postgres://herald@db/q?sslmode=require'}");
    assert_eq!((s.ssl, s.ssl_defaulted), (SslMode::Require, false));
    assert_eq!(s.pg.get_connect_timeout(), Some(&Duration::from_secs(10)));
    assert_eq!(
        spec(&url("verify-full")).pg.get_connect_timeout(),
        Some(&Duration::from_secs(3)),
        "the rest of the query goes to the driver"
    );
    let s = spec("queue: {engine: postgres, url: 'postgres://herald@db/q?sslmode=disable'}");
    assert_eq!(s.ssl, SslMode::Disable);

    let errors = load("queue: {engine: postgres, url: 'postgres://herald@db/q?sslmode=prefer'}")
        .expect_err("prefer");
    assert_eq!(
        errors,
        [
            "/etc/herald/routes.yaml:1:32: `queue`: `url`: sslmode must be one of disable, require, verify-ca, verify-full"
        ]
    );
    let errors = load(
        "queue: {engine: postgres, url: 'postgres://herald@db/q?sslmode=disable', tls: {ca: x}}",
    )
    .expect_err("a CA without TLS");
    assert!(
        errors[0].contains("`tls.ca` is set but sslmode is disable"),
        "{errors:?}"
    );
}

#[test]
fn the_password_key_wins_and_is_never_shown() {
    let s = spec(
        "queue:\n  engine: postgres\n  url: 'postgres://herald:in-the-url@127.0.0.1/q'\n  password: ${PGPASSWORD}\n",
    );
    assert_eq!(s.pg.get_password(), Some(SECRET.as_bytes()));
    let s2 = spec("queue: {engine: postgres, url: 'postgres://herald:in-the-url@127.0.0.1/q'}");
    assert_eq!(s2.pg.get_password(), Some("in-the-url".as_bytes()));

    let described = s.describe();
    assert_eq!(
        described,
        "postgres://herald@127.0.0.1:5432/q, sslmode disable (default), password ***, pool 16, lease 30s"
    );
    let config = load(
        "queue:\n  engine: postgres\n  url: 'postgres://herald:in-the-url@127.0.0.1/q'\n  password: ${PGPASSWORD}\n",
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    for shown in [
        described,
        format!("{s:?}"),
        format!("{:?}", config.queue),
        format!("{config:?}"),
    ] {
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains("in-the-url"), "{shown}");
    }
}

#[test]
fn mistakes_name_the_key_and_never_quote_the_url() {
    let errors = load(&format!(
        "queue:\n  engine: postgres\n  url: 'postgres://herald:{SECRET}@db:notaport/q'\n  pool: 0\n  lease: 10ms\n"
    ))
    .expect_err("mistakes");
    let text = errors.join("\n");
    assert!(!text.contains(SECRET), "{text}");
    assert!(
        text.contains("routes.yaml:3:8: `queue`: `url` is not a PostgreSQL URL"),
        "{text}"
    );
    assert!(
        text.contains("routes.yaml:4:9: `queue`: `pool` must be a number of connections"),
        "{text}"
    );
    assert!(
        text.contains("routes.yaml:5:10: `queue`: `lease` must be at least 1s"),
        "{text}"
    );

    let errors = load("queue: {engine: postgres, url: 'mysql://x@db/q'}").expect_err("scheme");
    assert!(
        errors[0].contains("`url` must be a URL `postgres://USER@HOST:PORT/DATABASE`"),
        "{errors:?}"
    );
    let errors = load("queue: {engine: postgres}").expect_err("no url");
    assert!(
        errors[0].contains("`url` is required with `engine: postgres`"),
        "{errors:?}"
    );
    let errors =
        load("queue: {engine: postgres, url: 'postgres://herald@db/q', tls: {ca: x, cert: y}}")
            .expect_err("tls keys");
    assert!(
        errors.iter().any(|e| e.contains("unknown key `cert`")),
        "{errors:?}"
    );
    let errors = load(
        "queue:\n  engine: postgres\n  url: 'postgres://herald@localhost/q'\n  path: ./data\n",
    )
    .expect_err("a local key");
    assert_eq!(
        errors,
        [
            "/etc/herald/routes.yaml:4:3: `queue`: `path` applies only to `engine: local`; this queue's engine is `postgres`"
        ]
    );
    let errors = load("queue:\n  url: 'postgres://herald@localhost/q'\n").expect_err("under local");
    assert_eq!(
        errors,
        [
            "/etc/herald/routes.yaml:2:3: `queue`: `url` applies only to `engine: postgres`; this queue's engine is `local`"
        ]
    );
}

#[test]
fn pool_and_lease_are_read() {
    let s = spec(
        "queue: {engine: postgres, url: 'postgres://herald@[::1]:6000/q', pool: 4, lease: 2s}",
    );
    assert_eq!((s.pool, s.lease), (4, Duration::from_secs(2)));
    assert_eq!(s.ssl, SslMode::Disable, "::1 is loopback");
    assert_eq!(s.target(), "herald@[::1]:6000/q");
}
