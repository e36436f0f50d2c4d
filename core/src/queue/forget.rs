//! `herald forget USER_ID` (docs/architecture.md §10.1 and §11): which stored records name a
//! person. Both engines select with these rules (the postgres engine in SQL that says the
//! same, `queue-postgres/src/admin.rs`), so a person is forgotten alike whatever the engine.
//!
//! * **An event** (stored, or the event of a dead delivery) names the user when a JSON
//!   string anywhere in its `data` or its `enriched` object equals the id exactly: a
//!   Classroom `resourceId.userId`, a submission's `userId`, a Directory body's `id` or
//!   `primaryEmail` (when the id given is that address), `enriched.person.id`,
//!   `enriched.user.id`. Numbers are not compared (Google's ids are strings).
//! * **A rejected input**, which may not be JSON at all, names the user when its body
//!   contains the id anywhere, or one of its metadata values equals it.
//! * **A cache entry** (`enrich/…` state keys) names the user when its key is a person's or a
//!   user's (`enrich/students/<course>/<id>`, `enrich/teachers/<course>/<id>`,
//!   `enrich/user/<id>`) or its value holds a string equal to the id (a submission's
//!   `userId`, a course's `ownerId`): such an entry is looked up again when needed.
//!
//! Records are deleted, never edited: an event that names the user goes with its pending
//! deliveries (counted in [`ForgetReport::deliveries_dropped`]) and its duplicate key.

use serde_json::Value;

use super::RejectedInput;

/// What [`super::QueueAdmin::forget`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ForgetReport {
    /// Enrichment cache entries (`enrich/…` state keys).
    pub cache_entries: u64,
    /// Stored events (delivered, pending or waiting to be routed).
    pub events: u64,
    /// Deliveries of those events that had not been made, dropped with them.
    pub deliveries_dropped: u64,
    /// Dead deliveries.
    pub dead_letters: u64,
    /// Rejected inputs.
    pub rejected: u64,
}

/// The state keys of the enrichment cache start with this (`sources/src/enrich/lookup.rs`).
pub const CACHE_PREFIX: &str = "enrich/";

/// The id `forget` was given, if it can select anything safely: not empty, no control
/// characters (an empty id would be contained in every rejected body).
pub fn check_user_id(user_id: &str) -> Result<(), String> {
    if user_id.trim().is_empty() {
        return Err("the user id is empty".into());
    }
    if user_id.chars().any(char::is_control) {
        return Err("the user id holds control characters".into());
    }
    Ok(())
}

/// Whether a JSON string anywhere in `value` equals `user_id`.
pub fn names_user(value: &Value, user_id: &str) -> bool {
    match value {
        Value::String(s) => s == user_id,
        Value::Array(items) => items.iter().any(|v| names_user(v, user_id)),
        Value::Object(map) => map.values().any(|v| names_user(v, user_id)),
        _ => false,
    }
}

/// Whether an event, as CloudEvents JSON, names the user in `data` or `enriched`. JSON that
/// does not parse names nobody (it is left, and reported by the engine's readers).
pub fn event_json_names_user(json: &[u8], user_id: &str) -> bool {
    let Ok(Value::Object(event)) = serde_json::from_slice::<Value>(json) else {
        return false;
    };
    ["data", "enriched"]
        .iter()
        .any(|member| event.get(*member).is_some_and(|v| names_user(v, user_id)))
}

/// Whether an event names the user in `data` or `enriched`.
pub fn event_names_user(event: &crate::event::Event, user_id: &str) -> bool {
    names_user(&event.data, user_id) || event.enriched.values().any(|v| names_user(v, user_id))
}

/// Whether a rejected input names the user.
pub fn rejected_names_user(input: &RejectedInput, user_id: &str) -> bool {
    input.body.contains(user_id) || input.meta.values().any(|v| v == user_id)
}

/// Whether an enrichment cache entry names the user (see the module docs).
pub fn cache_entry_names_user(key: &str, value: &[u8], user_id: &str) -> bool {
    let Some(rest) = key.strip_prefix(CACHE_PREFIX) else {
        return false;
    };
    let mut parts = rest.split('/');
    let kind = parts.next().unwrap_or_default();
    if matches!(kind, "students" | "teachers" | "user") && parts.next_back() == Some(user_id) {
        return true;
    }
    serde_json::from_slice::<Value>(value).is_ok_and(|v| names_user(&v, user_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_event_names_a_user_in_data_or_enriched_only() {
        let roster = json!({"id": "e1", "source": "s", "subject": "45678",
            "data": {"collection": "courses.students", "resourceId": {"courseId": "1", "userId": "45678"}}});
        assert!(event_json_names_user(
            roster.to_string().as_bytes(),
            "45678"
        ));
        assert!(!event_json_names_user(
            roster.to_string().as_bytes(),
            "4567"
        ));
        let subject_only = json!({"id": "45678", "subject": "45678", "data": {"n": 45678}});
        assert!(!event_json_names_user(
            subject_only.to_string().as_bytes(),
            "45678"
        ));
        let enriched = json!({"data": {}, "enriched": {"user": {"id": "u9", "name": "Jane"}}});
        assert!(event_json_names_user(enriched.to_string().as_bytes(), "u9"));
        assert!(!event_json_names_user(b"{not json", "u9"));
    }

    #[test]
    fn cache_entries_by_key_or_value() {
        assert!(cache_entry_names_user("enrich/user/7", b"{}", "7"));
        assert!(cache_entry_names_user(
            "enrich/students/1/7",
            b"garbage",
            "7"
        ));
        assert!(cache_entry_names_user("enrich/teachers/1/7", b"{}", "7"));
        assert!(!cache_entry_names_user("enrich/course/7", b"{}", "7"));
        assert!(cache_entry_names_user(
            "enrich/course/1",
            br#"{"fields":{"ownerId":"7"}}"#,
            "7"
        ));
        assert!(!cache_entry_names_user("google/x/7", b"{}", "7"));
    }

    #[test]
    fn an_empty_id_selects_nothing() {
        assert!(check_user_id("").is_err());
        assert!(check_user_id(" ").is_err());
        assert!(check_user_id("a\nb").is_err());
        assert!(check_user_id("45678").is_ok());
    }
}
