//! Field paths (`type`, `data.resourceId.courseId`, `meta.channelId`, `data.emails.0.address`)
//! and looking them up in an event.

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;

use crate::event::Event;

/// The top-level names a path may start with.
pub const ROOTS: &[&str] = &[
    "id", "source", "type", "subject", "time", "data", "meta", "enriched",
];

/// A parsed field path, resolved once at load.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FieldPath {
    Id,
    Source,
    Type,
    Subject,
    Time,
    /// `data` followed by object keys or array indexes (`data.emails.0.address`).
    Data(Vec<String>),
    /// `meta.<name>`: one transport attribute.
    Meta(String),
    /// `enriched.<what>.<path>` (`enriched.course.name`): what enrichment looked up
    /// (docs/architecture.md §11); absent until it did.
    Enriched(Vec<String>),
}

impl FieldPath {
    /// Parses `text`, or says what a path may look like.
    pub fn parse(text: &str) -> Result<FieldPath, String> {
        let (root, rest) = match text.split_once('.') {
            Some((root, rest)) => (root, Some(rest)),
            None => (text, None),
        };
        let simple = |path| match rest {
            None => Ok(path),
            Some(_) => Err(format!("`{root}` has no fields; write just `{root}`")),
        };
        match root {
            "id" => simple(FieldPath::Id),
            "source" => simple(FieldPath::Source),
            "type" => simple(FieldPath::Type),
            "subject" => simple(FieldPath::Subject),
            "time" => simple(FieldPath::Time),
            "data" => {
                let segments: Vec<String> = match rest {
                    None => Vec::new(),
                    Some(rest) => rest.split('.').map(str::to_owned).collect(),
                };
                if segments.iter().any(String::is_empty) {
                    return Err(format!("empty segment in field path `{text}`"));
                }
                Ok(FieldPath::Data(segments))
            }
            "enriched" => {
                let segments: Vec<String> = match rest {
                    Some(rest) => rest.split('.').map(str::to_owned).collect(),
                    None => Vec::new(),
                };
                if segments.is_empty() || segments.iter().any(String::is_empty) {
                    return Err(format!(
                        "`{text}` needs a path: `enriched.<what>.<field>`, e.g. \
                         `enriched.course.name`"
                    ));
                }
                Ok(FieldPath::Enriched(segments))
            }
            "meta" => match rest {
                Some(name) if !name.is_empty() => Ok(FieldPath::Meta(name.to_owned())),
                _ => Err("`meta` needs a name: `meta.<name>`, e.g. `meta.channelId`".to_owned()),
            },
            other => {
                let hint = crate::config::node::did_you_mean(other, ROOTS.iter().copied())
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                Err(format!(
                    "unknown field `{text}`: a path starts with one of id, source, type, \
                     subject, time, data.<path>, meta.<name>, enriched.<path>{hint}"
                ))
            }
        }
    }

    /// The value of this field in `event`, or `None` when it is absent.
    pub fn lookup<'e>(&self, event: &'e Event) -> Option<Found<'e>> {
        match self {
            FieldPath::Id => Some(Found::Text(Cow::Borrowed(&event.id))),
            FieldPath::Source => Some(Found::Text(Cow::Borrowed(&event.source))),
            FieldPath::Type => Some(Found::Text(Cow::Borrowed(&event.ty))),
            FieldPath::Subject => event
                .subject
                .as_deref()
                .map(|s| Found::Text(Cow::Borrowed(s))),
            FieldPath::Time => Some(Found::Text(Cow::Owned(event.time_text()))),
            FieldPath::Meta(name) => event
                .meta
                .get(name.as_str())
                .map(|s| Found::Text(Cow::Borrowed(s))),
            FieldPath::Data(segments) => walk(&event.data, segments).map(Found::Json),
            FieldPath::Enriched(segments) => {
                let (first, rest) = segments.split_first()?;
                walk(event.enriched.get(first)?, rest).map(Found::Json)
            }
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldPath::Id => f.write_str("id"),
            FieldPath::Source => f.write_str("source"),
            FieldPath::Type => f.write_str("type"),
            FieldPath::Subject => f.write_str("subject"),
            FieldPath::Time => f.write_str("time"),
            FieldPath::Data(segments) if segments.is_empty() => f.write_str("data"),
            FieldPath::Data(segments) => write!(f, "data.{}", segments.join(".")),
            FieldPath::Meta(name) => write!(f, "meta.{name}"),
            FieldPath::Enriched(segments) => write!(f, "enriched.{}", segments.join(".")),
        }
    }
}

/// The value at `segments` (object keys or array indexes) under `value`.
fn walk<'e>(mut value: &'e Value, segments: &[String]) -> Option<&'e Value> {
    for segment in segments {
        value = match value {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// A value found in an event.
#[derive(Debug)]
pub enum Found<'e> {
    Text(Cow<'e, str>),
    Json(&'e Value),
}

impl Found<'_> {
    /// The text of a scalar: strings as they are, numbers and booleans as JSON writes them.
    /// Arrays, objects and null have no text.
    pub fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            Found::Text(s) => Some(Cow::Borrowed(s.as_ref())),
            Found::Json(value) => json_text(value),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Found::Json(Value::Null))
    }

    /// The elements of an array, for `contains`.
    pub fn array(&self) -> Option<&[Value]> {
        match self {
            Found::Json(Value::Array(items)) => Some(items),
            _ => None,
        }
    }
}

pub(crate) fn json_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;

    fn event() -> Event {
        let mut e = Event::new(
            "1",
            "directory",
            "directory.users.add",
            Utc::now(),
            json!({"primaryEmail": "a@example.edu", "emails": [{"address": "x@y"}],
                   "admin": true, "count": 3, "nothing": null}),
        )
        .with_subject("users/1");
        e.meta.insert("channelId".into(), "chan".into());
        e
    }

    fn text(path: &str, e: &Event) -> Option<String> {
        FieldPath::parse(path)
            .unwrap()
            .lookup(e)
            .and_then(|f| f.text().map(|t| t.into_owned()))
    }

    #[test]
    fn every_path_form_resolves() {
        let e = event();
        assert_eq!(text("id", &e).as_deref(), Some("1"));
        assert_eq!(text("source", &e).as_deref(), Some("directory"));
        assert_eq!(text("type", &e).as_deref(), Some("directory.users.add"));
        assert_eq!(text("subject", &e).as_deref(), Some("users/1"));
        assert_eq!(text("time", &e), Some(e.time_text()));
        assert_eq!(
            text("data.primaryEmail", &e).as_deref(),
            Some("a@example.edu")
        );
        assert_eq!(text("data.emails.0.address", &e).as_deref(), Some("x@y"));
        assert_eq!(text("data.admin", &e).as_deref(), Some("true"));
        assert_eq!(text("data.count", &e).as_deref(), Some("3"));
        assert_eq!(text("meta.channelId", &e).as_deref(), Some("chan"));
    }

    #[test]
    fn absent_paths_are_none() {
        let e = event();
        for path in [
            "data.missing",
            "data.emails.5",
            "data.emails.x",
            "data.admin.deeper",
            "meta.nope",
        ] {
            assert!(
                FieldPath::parse(path).unwrap().lookup(&e).is_none(),
                "{path}"
            );
        }
        let null = FieldPath::parse("data.nothing").unwrap();
        assert!(null.lookup(&e).unwrap().is_null());
    }

    #[test]
    fn bad_paths_say_what_is_allowed() {
        assert!(
            FieldPath::parse("tpye")
                .unwrap_err()
                .contains("did you mean `type`?")
        );
        assert!(
            FieldPath::parse("meta")
                .unwrap_err()
                .contains("meta.<name>")
        );
        assert!(
            FieldPath::parse("type.x")
                .unwrap_err()
                .contains("has no fields")
        );
        assert!(
            FieldPath::parse("data..x")
                .unwrap_err()
                .contains("empty segment")
        );
    }

    #[test]
    fn paths_display_as_written() {
        for path in ["id", "data", "data.a.0.b", "meta.channelId", "time"] {
            assert_eq!(FieldPath::parse(path).unwrap().to_string(), path);
        }
    }
}
