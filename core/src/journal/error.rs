//! What can go wrong with the journal, sorted by what a caller does about it.
//!
//! | kind | what happened | who acts on it, and how |
//! |---|---|---|
//! | [`Full`](JournalError::Full) | the undelivered backlog reached `queue.max_events` or `queue.max_bytes` | sources answer 503 (the senders retry later) and `/readyz` says why; the admin API answers 503 |
//! | [`Closed`](JournalError::Closed) | the writer is gone: the gateway is shutting down | sources and the admin API answer 503; an outcome that was not recorded leaves its delivery pending, to be attempted again after the restart |
//! | [`Locked`](JournalError::Locked) | another process (a running gateway) holds the journal file | `herald dlq` asks that gateway through its admin listener instead; `herald run` refuses to start; the admin API answers 503 |
//! | [`Corrupt`](JournalError::Corrupt) | a record cannot be decoded, the log is damaged in a way a torn write cannot explain (named by file and byte offset), or redb reports that its file is damaged | at start the journal refuses to open; a sink worker skips an event it cannot read and logs it once, and backs off for a minute when the scan itself fails; the admin API answers 500 |
//! | [`Unavailable`](JournalError::Unavailable) | the queue's database cannot be reached (the postgres engine, docs/architecture.md §10.2: PostgreSQL down or restarting) | sources answer 503 and `/readyz` says `queue: …`; a sink worker pauses and tries again after a second; the admin API answers 503 |
//! | [`Io`](JournalError::Io) | reading or writing the file failed (a disk error, a full disk) | sources answer 503; the admin API answers 500; a sink worker tries again after a second |
//!
//! Only the first three say "not now": the same request may succeed later without anyone
//! doing anything ([`JournalError::is_unavailable`]). `Corrupt` and `Io` need an operator.
//!
//! Messages are for operators: they name the journal file, the table, the record (by seq or
//! dead-letter id), the sink, never an event's content or a secret. A record that cannot be
//! decoded is described by where its decoder stopped, not by what it read (see
//! [`json_detail`]).

use std::fmt;

/// Why the journal takes no new events now (see [`JournalError::Full`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `queue.max_events` undelivered events.
    Events { undelivered: u64, max: u64 },
    /// `queue.max_bytes` of undelivered events.
    Bytes { undelivered: u64, max: u64 },
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Events { undelivered, max } => {
                write!(
                    f,
                    "{undelivered} undelivered events (queue.max_events is {max})"
                )
            }
            Limit::Bytes { undelivered, max } => write!(
                f,
                "{undelivered} bytes of undelivered events (queue.max_bytes is {max})"
            ),
        }
    }
}

/// A journal operation that failed, by what the caller should do (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalError {
    /// The backlog limit is reached: take nothing new until the sinks catch up.
    Full(Limit),
    /// The journal's writer is gone (the gateway is shutting down).
    Closed,
    /// Another process (a running gateway) has the journal file at `path` open.
    Locked { path: String },
    /// `what` (e.g. `event 42`, `dead letter 7`, `the journal file`) cannot be read.
    Corrupt { what: String, detail: String },
    /// The queue's database cannot be reached now (the postgres engine: PostgreSQL is down
    /// or restarting, docs/architecture.md §10.2); it may be back by itself.
    Unavailable { detail: String },
    /// Reading or writing the journal failed while doing `context` (may be empty).
    Io { context: String, detail: String },
}

impl JournalError {
    pub fn io(context: impl Into<String>, detail: impl fmt::Display) -> Self {
        JournalError::Io {
            context: context.into(),
            detail: detail.to_string(),
        }
    }

    pub fn corrupt(what: impl Into<String>, detail: impl fmt::Display) -> Self {
        JournalError::Corrupt {
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    /// The journal cannot serve the request now but may a little later, with nobody doing
    /// anything: full, shutting down, or held by another process (HTTP 503). The other kinds
    /// need an operator (HTTP 500).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            JournalError::Full(_)
                | JournalError::Closed
                | JournalError::Locked { .. }
                | JournalError::Unavailable { .. }
        )
    }

    /// Says what was being done, for an I/O error that does not say yet. Takes anything
    /// displayable, e.g. `format_args!(..)`, which allocates only when there is an error.
    pub fn during(self, context: impl fmt::Display) -> Self {
        match self {
            JournalError::Io {
                context: current,
                detail,
            } if current.is_empty() => JournalError::Io {
                context: context.to_string(),
                detail,
            },
            other => other,
        }
    }
}

/// [`JournalError::during`] on a result.
pub(crate) trait During<T> {
    fn during(self, context: impl fmt::Display) -> Result<T, JournalError>;
}

impl<T> During<T> for Result<T, JournalError> {
    fn during(self, context: impl fmt::Display) -> Result<T, JournalError> {
        self.map_err(|e| e.during(context))
    }
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Full(limit) => write!(f, "the journal is full: {limit}"),
            JournalError::Closed => write!(f, "the journal is shut down"),
            JournalError::Locked { path } => write!(
                f,
                "the journal {path} is in use by another process (a running gateway?)"
            ),
            JournalError::Corrupt { what, detail } => {
                write!(f, "the journal is damaged ({what}): {detail}")
            }
            JournalError::Unavailable { detail } => {
                write!(f, "the queue's database is unavailable: {detail}")
            }
            JournalError::Io { context, detail } if context.is_empty() => {
                write!(f, "journal I/O failed: {detail}")
            }
            JournalError::Io { context, detail } => {
                write!(f, "journal I/O failed while {context}: {detail}")
            }
        }
    }
}

impl std::error::Error for JournalError {}

/// Where a JSON decoder stopped and why, without the text it read (a record may hold an
/// event's content, which may hold personal data).
pub(crate) fn json_detail(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let why = match e.classify() {
        Category::Io => "cannot be read",
        Category::Syntax => "is not JSON",
        Category::Data => "is JSON of the wrong shape",
        Category::Eof => "ends too early",
    };
    format!(
        "the record {why} (line {}, column {})",
        e.line(),
        e.column()
    )
}

// ---- redb's errors -----------------------------------------------------------------------
//
// The context is left empty: the journal's entry points add what they were doing
// (`During::during`).

impl From<redb::StorageError> for JournalError {
    fn from(e: redb::StorageError) -> Self {
        match e {
            redb::StorageError::Corrupted(detail) => JournalError::Corrupt {
                what: "the journal file".into(),
                detail,
            },
            redb::StorageError::DatabaseClosed => JournalError::Closed,
            redb::StorageError::PreviousIo => JournalError::io(
                "",
                "an earlier write to the journal file failed; restart the gateway to reopen it",
            ),
            other => JournalError::io("", other),
        }
    }
}

impl From<redb::TableError> for JournalError {
    fn from(e: redb::TableError) -> Self {
        match e {
            redb::TableError::Storage(storage) => storage.into(),
            // Every table is created when the journal is opened, with the types this version
            // writes: a missing table or other types mean a damaged (or foreign) file.
            redb::TableError::TableTypeMismatch { ref table, .. }
            | redb::TableError::TableIsMultimap(ref table)
            | redb::TableError::TableIsNotMultimap(ref table)
            | redb::TableError::TableDoesNotExist(ref table) => {
                JournalError::corrupt(format!("table `{table}`"), &e)
            }
            redb::TableError::TypeDefinitionChanged { .. } => {
                JournalError::corrupt("the table definitions", e)
            }
            other => JournalError::io("", other),
        }
    }
}

impl From<redb::TransactionError> for JournalError {
    fn from(e: redb::TransactionError) -> Self {
        match e {
            redb::TransactionError::Storage(storage) => storage.into(),
            other => JournalError::io("", other),
        }
    }
}

impl From<redb::CommitError> for JournalError {
    fn from(e: redb::CommitError) -> Self {
        match e {
            redb::CommitError::Storage(storage) => storage.into(),
            other => JournalError::io("", other),
        }
    }
}

/// Opening the file at `path`; the one place that knows the path, for `Locked`.
pub(super) fn opening(path: &std::path::Path, e: redb::DatabaseError) -> JournalError {
    let shown = path.display();
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => JournalError::Locked {
            path: shown.to_string(),
        },
        redb::DatabaseError::Storage(storage) => {
            JournalError::from(storage).during(format_args!("opening {shown}"))
        }
        redb::DatabaseError::UpgradeRequired(_) => {
            JournalError::corrupt(format!("the journal file {shown}"), e)
        }
        other => JournalError::io(format!("opening {shown}"), other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_say_whether_waiting_helps() {
        let full = JournalError::Full(Limit::Events {
            undelivered: 2,
            max: 2,
        });
        let locked = JournalError::Locked { path: "j".into() };
        for e in [full, JournalError::Closed, locked] {
            assert!(e.is_unavailable(), "{e}");
        }
        for e in [JournalError::corrupt("x", "y"), JournalError::io("x", "y")] {
            assert!(!e.is_unavailable(), "{e}");
        }
    }

    #[test]
    fn messages_name_the_limit_the_record_and_what_was_being_done() {
        let full = JournalError::Full(Limit::Bytes {
            undelivered: 10,
            max: 8,
        });
        assert_eq!(
            full.to_string(),
            "the journal is full: 10 bytes of undelivered events (queue.max_bytes is 8)"
        );
        assert_eq!(
            JournalError::corrupt("dead letter 7", "bad").to_string(),
            "the journal is damaged (dead letter 7): bad"
        );
        let io = JournalError::io("", "disk on fire");
        assert_eq!(io.to_string(), "journal I/O failed: disk on fire");
        let io = io.during(format_args!("reading sink `{}`", "chat"));
        assert_eq!(
            io.to_string(),
            "journal I/O failed while reading sink `chat`: disk on fire"
        );
        assert_eq!(
            io.clone().during("something else"),
            io,
            "the first context stays"
        );
        assert_eq!(
            JournalError::Closed.during("x"),
            JournalError::Closed,
            "only I/O errors take a context"
        );
    }

    #[test]
    fn redb_errors_keep_their_kind() {
        let corrupted = redb::StorageError::Corrupted("bad checksum".into());
        assert!(matches!(
            JournalError::from(corrupted),
            JournalError::Corrupt { what, .. } if what == "the journal file"
        ));
        assert_eq!(
            JournalError::from(redb::StorageError::DatabaseClosed),
            JournalError::Closed
        );
        let io = redb::StorageError::Io(std::io::Error::other("EIO"));
        assert!(matches!(JournalError::from(io), JournalError::Io { .. }));
        let missing = redb::TableError::TableDoesNotExist("events".into());
        assert!(matches!(
            JournalError::from(missing),
            JournalError::Corrupt { what, .. } if what == "table `events`"
        ));
        let locked = opening(
            std::path::Path::new("/q/journal.redb"),
            redb::DatabaseError::DatabaseAlreadyOpen,
        );
        assert_eq!(
            locked,
            JournalError::Locked {
                path: "/q/journal.redb".into()
            }
        );
    }

    #[test]
    fn a_decoding_error_does_not_quote_the_record() {
        let e = serde_json::from_str::<u64>(r#""hunter2""#).unwrap_err();
        let detail = json_detail(&e);
        assert!(!detail.contains("hunter2"), "{detail}");
        assert!(detail.contains("line 1"), "{detail}");
    }
}
