//! Migrations against a real PostgreSQL (docs/architecture.md §10, "Migrations").

mod common;

use herald_queue_postgres::{LATEST, PgError, connect, migrate, status};
use herald_testkit::postgres::Postgres;

fn db_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or_default()
}

#[tokio::test]
async fn a_fresh_database_is_migrated_to_the_latest_schema_once() {
    let pg = Postgres::shared();
    let url = pg.database("migrate_fresh");
    let spec = common::spec(&url);
    let mut client = connect(&spec).await.unwrap_or_else(|e| panic!("{e}"));

    let before = status(&client).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((before.current, before.latest), (0, LATEST));
    assert_eq!(before.pending().count(), LATEST as usize);

    let applied = migrate(&mut client).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(applied, (1..=LATEST).collect::<Vec<_>>());
    let after = status(&client).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(after.current, LATEST);
    assert_eq!(after.pending().count(), 0);

    let again = migrate(&mut client).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(again.is_empty(), "nothing left to apply: {again:?}");

    let tables = pg.psql(
        db_name(&url),
        "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'",
    );
    assert_eq!(
        tables,
        "dead_letters,deliveries,events,gateways,leaders,schema_version,state,unrouted"
    );
}

#[tokio::test]
async fn two_gateways_migrating_at_once_apply_each_migration_exactly_once() {
    let pg = Postgres::shared();
    let url = pg.database("migrate_race");
    let spec = common::spec(&url);
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(connect(&spec).await.unwrap_or_else(|e| panic!("{e}")));
    }
    let results = futures_util::future::join_all(clients.iter_mut().map(migrate)).await;
    let mut applied: Vec<i32> = Vec::new();
    for result in results {
        applied.extend(result.unwrap_or_else(|e| panic!("every migrate succeeds: {e}")));
    }
    applied.sort_unstable();
    assert_eq!(
        applied,
        (1..=LATEST).collect::<Vec<_>>(),
        "each version once in all"
    );
    let rows = pg.psql(
        db_name(&url),
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_version",
    );
    let expected: Vec<String> = (1..=LATEST).map(|v| v.to_string()).collect();
    assert_eq!(rows, expected.join(","));
}

#[tokio::test]
async fn a_binary_older_than_the_schema_refuses() {
    let pg = Postgres::shared();
    let url = pg.database("migrate_newer");
    let spec = common::spec(&url);
    let mut client = connect(&spec).await.unwrap_or_else(|e| panic!("{e}"));
    migrate(&mut client).await.unwrap_or_else(|e| panic!("{e}"));
    let newer = LATEST + 1;
    pg.psql(
        db_name(&url),
        &format!("INSERT INTO schema_version (version, name) VALUES ({newer}, 'from the future')"),
    );

    let status = status(&client).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.current, newer);
    assert!(matches!(status.check(), Err(PgError::SchemaTooNew { .. })));
    let err = migrate(&mut client).await.expect_err("refused");
    assert!(
        matches!(err, PgError::SchemaTooNew { found, latest } if found == newer && latest == LATEST),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!(
            "the database's schema is version {newer}, newer than this binary's {LATEST}"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error_that_does_not_show_the_password() {
    let pg = Postgres::shared();
    let url = pg.database("migrate_nohost");
    // Nothing listens on port 1: the error names the target, not the password.
    let spec = common::spec(
        &url.replace(&format!("{}:{}", pg.host, pg.port), "127.0.0.1:1")
            .replace("postgres://herald@", "postgres://herald:hunter2-secret@"),
    );
    let err = connect(&spec).await.expect_err("refused");
    let text = err.to_string();
    assert!(
        text.starts_with("queue: cannot connect to PostgreSQL at herald@127.0.0.1:1/"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!format!("{err:?}").contains("hunter2"));
}
