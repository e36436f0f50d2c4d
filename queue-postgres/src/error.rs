//! The postgres engine's errors. None carries the password: the driver's messages do not, and
//! ours name the target as `user@host:port/db` ([`crate::PgSpec::target`]).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// `tls.ca` cannot be read or holds no certificate.
    #[error("queue: cannot use tls.ca {}: {detail}", path.display())]
    Ca { path: PathBuf, detail: String },
    /// No connection to the database (refused, TLS, authentication).
    #[error("queue: cannot connect to PostgreSQL at {target}: {detail}")]
    Connect { target: String, detail: String },
    /// A statement failed while doing `context`.
    #[error("queue: {context}: {detail}")]
    Db { context: String, detail: String },
    /// The database's schema is newer than this binary: another gateway was upgraded first.
    #[error(
        "queue: the database's schema is version {found}, newer than this binary's {latest}: \
         run a herald at least as new as the one that migrated it (a binary older than the \
         schema refuses to start)"
    )]
    SchemaTooNew { found: i32, latest: i32 },
}

impl PgError {
    pub(crate) fn db(context: impl Into<String>, e: &tokio_postgres::Error) -> Self {
        PgError::Db {
            context: context.into(),
            detail: detail(e),
        }
    }
}

/// The driver's error with the server's message when there is one (the driver's `Display`
/// says only "db error" for those).
pub(crate) fn detail(e: &tokio_postgres::Error) -> String {
    use std::error::Error as _;
    if let Some(db) = e.as_db_error() {
        return match db.detail() {
            Some(more) => format!("{}: {} ({more})", db.severity(), db.message()),
            None => format!("{}: {}", db.severity(), db.message()),
        };
    }
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
