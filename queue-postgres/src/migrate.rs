//! The schema, versioned: `migrations/NNNN_name.sql`, embedded in the binary, applied in
//! order, each recorded in `schema_version` (docs/architecture.md §10, "Migrations").
//!
//! Two gateways starting at once must not both apply a migration: [`migrate`] runs in one
//! transaction that first takes a transaction-level advisory lock ([`LOCK`]), so the second
//! waits for the first to commit, then finds the migrations applied and applies nothing. The
//! lock ends with the transaction, also when the connection dies. A database whose version is
//! newer than [`LATEST`] is refused ([`PgError::SchemaTooNew`]): this binary does not know
//! that schema.

use tokio_postgres::Client;

use crate::error::PgError;

/// The migrations, in order: `(version, name, SQL)`.
pub const MIGRATIONS: &[(i32, &str, &str)] =
    &[(1, "initial", include_str!("../migrations/0001_initial.sql"))];

/// The schema version this binary brings.
pub const LATEST: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The advisory lock key taken while migrating ("herald" in ASCII).
pub const LOCK: i64 = 0x6865_7261_6c64;

const CREATE_VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_version (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// Where a database's schema stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The highest version applied; 0 for an empty database.
    pub current: i32,
    /// This binary's [`LATEST`].
    pub latest: i32,
}

impl Status {
    /// Versions this binary would apply.
    pub fn pending(&self) -> impl Iterator<Item = (i32, &'static str)> + '_ {
        MIGRATIONS
            .iter()
            .filter(move |(v, _, _)| *v > self.current)
            .map(|(v, name, _)| (*v, *name))
    }

    /// [`PgError::SchemaTooNew`] when the database is newer than this binary.
    pub fn check(&self) -> Result<(), PgError> {
        if self.current > self.latest {
            return Err(PgError::SchemaTooNew {
                found: self.current,
                latest: self.latest,
            });
        }
        Ok(())
    }
}

/// The database's schema version, without changing anything.
pub async fn status(client: &Client) -> Result<Status, PgError> {
    let context = "reading the schema version";
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| PgError::db(context, &e))?;
    let current = if exists {
        current_version(client, context).await?
    } else {
        0
    };
    Ok(Status {
        current,
        latest: LATEST,
    })
}

async fn current_version(
    client: &impl tokio_postgres::GenericClient,
    context: &str,
) -> Result<i32, PgError> {
    client
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| PgError::db(context, &e))
}

/// Applies the pending migrations under the advisory lock; returns the versions applied (none
/// when the schema was current, e.g. another gateway migrated it first). Refuses a database
/// newer than this binary, changing nothing.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, PgError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| PgError::db("starting the migration", &e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await
        .map_err(|e| PgError::db("taking the migration lock", &e))?;
    tx.batch_execute(CREATE_VERSION_TABLE)
        .await
        .map_err(|e| PgError::db("creating schema_version", &e))?;
    let current = current_version(&tx, "reading the schema version").await?;
    let status = Status {
        current,
        latest: LATEST,
    };
    status.check()?;
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > current) {
        let context = format!("applying migration {version:04}_{name}");
        tx.batch_execute(sql)
            .await
            .map_err(|e| PgError::db(context.as_str(), &e))?;
        tx.execute(
            "INSERT INTO schema_version (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .map_err(|e| PgError::db(context.as_str(), &e))?;
        applied.push(*version);
    }
    tx.commit()
        .await
        .map_err(|e| PgError::db("committing the migration", &e))?;
    if !applied.is_empty() {
        tracing::info!("queue: schema migrated from version {current} to {LATEST}");
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_from_one() {
        for (i, (version, name, sql)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i32 + 1, "{name}");
            assert!(!sql.trim().is_empty(), "{name}");
        }
    }
}
