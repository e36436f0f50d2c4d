//! `engine: postgres` through the binary, against the testkit's real PostgreSQL
//! (docs/architecture.md §10): `herald check` masks the password, `herald migrate [--status]`
//! prepares the schema, `herald run` and `herald dlq` name an unreachable database without
//! the password, and gateways on one database share the queue (tests/cluster.rs).

mod common;

use std::path::Path;

use common::*;
use herald_testkit::postgres::Postgres;

const SECRET: &str = "pw-4f9c-never-shown";

/// A config whose queue is `url`, with the password from `PGPASSWORD`.
fn config(dir: &Path, url: &str) -> String {
    let path = dir.join("routes.yaml");
    std::fs::write(
        &path,
        format!(
            "server:\n  listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\nqueue:\n  engine: postgres\n  url: '{url}'\n  password: ${{PGPASSWORD}}\n  pool: 4\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn herald_with_password(args: &[&str]) -> std::process::Output {
    herald()
        .args(args)
        .env("PGPASSWORD", SECRET)
        .env_remove("HERALD_CONFIG")
        .output()
        .expect("herald runs")
}

fn assert_no_secret(out: &std::process::Output) {
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!all.contains(SECRET), "the password was shown:\n{all}");
}

#[test]
fn check_prints_the_queue_with_the_password_masked() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        "postgres://herald:in-url-secret@127.0.0.1:5999/herald",
    );
    let out = herald_with_password(&["check", "-c", &path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_no_secret(&out);
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("in-url-secret"), "{stdout}");
    assert!(
        stdout.contains(
            "  queue (postgres): postgres://herald@127.0.0.1:5999/herald, sslmode disable (default), password ***, pool 4, lease 30s"
        ),
        "{stdout}"
    );

    // A local key under postgres is a mistake at its line:column.
    std::fs::write(
        &path,
        "queue:\n  engine: postgres\n  url: postgres://herald@127.0.0.1/herald\n  path: ./data\n",
    )
    .unwrap();
    let out = herald_with_password(&["check", "-c", &path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!(
            "{path}:4:3: `queue`: `path` applies only to `engine: local`; this queue's engine is `postgres`"
        )),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn migrate_applies_the_schema_once_and_status_says_where_it_stands() {
    let pg = Postgres::shared();
    let url = pg.database("cli_migrate");
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), &url);

    let out = herald_with_password(&["migrate", "--status", "-c", &path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("schema version 0 (this binary's latest: 1)"),
        "{stdout}"
    );
    assert!(stdout.contains("pending: 0001_initial"), "{stdout}");

    let out = herald_with_password(&["migrate", "-c", &path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("applied 0001_initial; schema version 1"),
        "{}",
        text(&out.stdout)
    );
    assert_no_secret(&out);

    let out = herald_with_password(&["migrate", "-c", &path]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("schema up to date at version 1"));
    let out = herald_with_password(&["migrate", "--status", "-c", &path]);
    assert!(text(&out.stdout).contains("schema version 1 (this binary's latest: 1)\nup to date"));

    // A database migrated by a newer binary: this one refuses, and says why.
    let db = url.rsplit('/').next().unwrap();
    pg.psql(
        db,
        "INSERT INTO schema_version (version, name) VALUES (99, 'newer')",
    );
    for args in [vec!["migrate"], vec!["migrate", "--status"]] {
        let mut args = args;
        args.extend(["-c", &path]);
        let out = herald_with_password(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr)
                .contains("the database's schema is version 99, newer than this binary's 1"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn run_and_dlq_name_an_unreachable_database_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "postgres://herald@127.0.0.1:5999/herald");
    let out = herald_with_password(&["run", "-c", &path]);
    assert_eq!(out.status.code(), Some(1));
    assert_no_secret(&out);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot connect to PostgreSQL at herald@127.0.0.1:5999/herald"),
        "{stderr}"
    );
    let out = herald_with_password(&["dlq", "list", "-c", &path]);
    assert_eq!(out.status.code(), Some(1));
    assert_no_secret(&out);
    assert!(
        text(&out.stderr).contains("unavailable"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn migrate_names_an_unreachable_database_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1.
    let path = config(dir.path(), "postgres://herald@127.0.0.1:1/herald");
    let out = herald_with_password(&["migrate", "-c", &path]);
    assert_eq!(out.status.code(), Some(1));
    assert_no_secret(&out);
    assert!(
        text(&out.stderr)
            .contains("queue: cannot connect to PostgreSQL at herald@127.0.0.1:1/herald"),
        "{}",
        text(&out.stderr)
    );
}

/// Enrichment commits events unrouted, which the postgres engine holds like the local one
/// (queue-postgres/tests/queue.rs): `check` accepts a source with `enrich:` under postgres.
#[test]
fn enrichment_on_the_postgres_engine_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "postgres://herald@127.0.0.1:5999/herald");
    let mut yaml = std::fs::read_to_string(&path).unwrap();
    yaml.push_str(
        "sources:\n  classroom:\n    type: classroom_pubsub\n    path: /push/classroom\n    enrich: true\n",
    );
    std::fs::write(&path, yaml).unwrap();
    let out = herald_with_password(&["check", "-c", &path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(": OK — 1 source"), "{stdout}");
    assert!(stdout.contains("queue (postgres)"), "{stdout}");
    assert_no_secret(&out);
}
