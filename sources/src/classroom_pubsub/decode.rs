//! A Pub/Sub message carrying a Classroom notification → the [`Event`] of docs/architecture.md §3. Pure:
//! no I/O, no clock, so the running source, `herald test --source` and the fuzz targets
//! decode alike.
//!
//! * `id` is the Pub/Sub `messageId` (so a redelivery is the same event to the journal);
//! * `type` is `classroom.<collection>.<eventType lower-case>`, for any collection, known or
//!   future;
//! * `subject` mirrors the Classroom `get` call of the resource (`courses/1/students/2`); a
//!   future collection gets the same shape from its segments (`courses.announcements` with
//!   `{courseId, id}` → `courses/1/announcements/2`), or no subject when its ids do not fit;
//! * `time` is `publishTime`; `meta` holds every attribute plus `subscription`, `messageId`
//!   and `publishTime`.
//!
//! Pub/Sub writes `messageId`/`publishTime` in camelCase and snake_case, often both; either
//! is read. Every error names the field that is wrong.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::{DateTime, Utc};
use herald_core::Event;
use serde_json::{Map, Value};

use crate::DecodeError;
use crate::answer::{clip, kind};

/// Standard base64, with or without padding (Pub/Sub pads; hand-made requests may not).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The collections Classroom documents, with the `resourceId` key of each path segment.
const KNOWN: &[(&str, &[(&str, &str)])] = &[
    (
        "courses.students",
        &[("courses", "courseId"), ("students", "userId")],
    ),
    (
        "courses.teachers",
        &[("courses", "courseId"), ("teachers", "userId")],
    ),
    (
        "courses.courseWork",
        &[("courses", "courseId"), ("courseWork", "id")],
    ),
    (
        "courses.courseWork.studentSubmissions",
        &[
            ("courses", "courseId"),
            ("courseWork", "courseWorkId"),
            ("studentSubmissions", "id"),
        ],
    ),
];

/// Decodes a push request body: `{"message": {…}, "subscription": "…"}`. `fallback_subscription`
/// fills `meta.subscription` when the body names none.
pub fn decode_push(
    source: &str,
    body: &[u8],
    fallback_subscription: Option<&str>,
) -> Result<Event, DecodeError> {
    let envelope: Value = serde_json::from_slice(body)
        .map_err(|e| DecodeError::new(format!("the body is not JSON: {e}")))?;
    let Value::Object(envelope) = envelope else {
        return Err(DecodeError::new(format!(
            "the body must be a Pub/Sub push envelope (a JSON object), found {}",
            kind(&envelope)
        )));
    };
    let subscription = match envelope.get("subscription") {
        None | Some(Value::Null) => fallback_subscription,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => {
            return Err(DecodeError::new(format!(
                "`subscription` must be a string, found {}",
                kind(other)
            )));
        }
    };
    let message = envelope
        .get("message")
        .ok_or_else(|| DecodeError::new("`message` is missing: this is not a Pub/Sub push"))?;
    decode_message(source, subscription, message)
}

/// Decodes one Pub/Sub message (`{"data", "attributes", "messageId", "publishTime"}`), pushed
/// or pulled.
pub fn decode_message(
    source: &str,
    subscription: Option<&str>,
    message: &Value,
) -> Result<Event, DecodeError> {
    let Value::Object(message) = message else {
        return Err(DecodeError::new(format!(
            "`message` must be an object, found {}",
            kind(message)
        )));
    };
    let id = either(message, "messageId", "message_id")?
        .filter(|id| !id.is_empty())
        .ok_or_else(|| DecodeError::new("`message.messageId` is missing"))?;
    let published = either(message, "publishTime", "publish_time")?
        .ok_or_else(|| DecodeError::new("`message.publishTime` is missing"))?;
    let time = DateTime::parse_from_rfc3339(published)
        .map_err(|e| {
            DecodeError::new(format!(
                "`message.publishTime` is not an RFC 3339 time ({e}): `{}`",
                clip(published)
            ))
        })?
        .with_timezone(&Utc);

    let mut meta = std::collections::BTreeMap::new();
    match message.get("attributes") {
        None | Some(Value::Null) => {}
        Some(Value::Object(attributes)) => {
            for (name, value) in attributes {
                let Value::String(value) = value else {
                    return Err(DecodeError::new(format!(
                        "`message.attributes.{}` must be a string, found {}",
                        clip(name),
                        kind(value)
                    )));
                };
                meta.insert(name.clone().into(), value.into());
            }
        }
        Some(other) => {
            return Err(DecodeError::new(format!(
                "`message.attributes` must be an object, found {}",
                kind(other)
            )));
        }
    }
    if let Some(subscription) = subscription {
        meta.insert("subscription".into(), subscription.into());
    }
    meta.insert("messageId".into(), id.into());
    meta.insert("publishTime".into(), published.into());

    let data = match message.get("data") {
        Some(Value::String(data)) if !data.is_empty() => data,
        None | Some(Value::Null) | Some(Value::String(_)) => {
            return Err(DecodeError::new(
                "`message.data` is missing or empty: a Classroom notification was expected",
            ));
        }
        Some(other) => {
            return Err(DecodeError::new(format!(
                "`message.data` must be a base64 string, found {}",
                kind(other)
            )));
        }
    };
    let bytes = BASE64
        .decode(data.as_bytes())
        .map_err(|e| DecodeError::new(format!("`message.data` is not valid base64: {e}")))?;
    let notification: Value = serde_json::from_slice(&bytes)
        .map_err(|e| DecodeError::new(format!("`message.data` is not JSON: {e}")))?;
    let (ty, subject) = classify(&notification)?;

    let mut event = Event::new(id, source, ty, time, notification);
    event.subject = subject;
    event.meta = meta;
    Ok(event)
}

/// The event `type` and `subject` of a Classroom notification.
pub fn classify(notification: &Value) -> Result<(String, Option<String>), DecodeError> {
    let Value::Object(fields) = notification else {
        return Err(DecodeError::new(format!(
            "`message.data` must be a Classroom notification (a JSON object), found {}",
            kind(notification)
        )));
    };
    let collection = required_text(fields, "collection")?;
    if !valid_collection(collection) {
        return Err(DecodeError::new(format!(
            "`message.data.collection` `{}` is not a Classroom collection name (e.g. courses.students)",
            clip(collection)
        )));
    }
    let event_type = required_text(fields, "eventType")?;
    if !event_type
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(DecodeError::new(format!(
            "`message.data.eventType` `{}` is not an event type (e.g. CREATED)",
            clip(event_type)
        )));
    }
    let ty = format!("classroom.{collection}.{}", event_type.to_ascii_lowercase());

    let resource = match fields.get("resourceId") {
        Some(Value::Object(resource)) => Some(resource),
        None | Some(Value::Null) => None,
        Some(other) => {
            return Err(DecodeError::new(format!(
                "`message.data.resourceId` must be an object, found {}",
                kind(other)
            )));
        }
    };
    let subject = match KNOWN.iter().find(|(name, _)| *name == collection) {
        Some((_, keys)) => {
            let resource = resource.ok_or_else(|| {
                DecodeError::new(format!(
                    "`message.data.resourceId` is missing; `{collection}` notifications name their resource"
                ))
            })?;
            Some(known_subject(resource, keys)?)
        }
        None => resource.and_then(|r| generic_subject(collection, r)),
    };
    Ok((ty, subject))
}

fn known_subject(
    resource: &Map<String, Value>,
    keys: &[(&str, &str)],
) -> Result<String, DecodeError> {
    let mut parts = Vec::with_capacity(keys.len());
    for (segment, key) in keys {
        let id = match resource.get(*key) {
            Some(Value::String(id)) if valid_id(id) => id,
            Some(Value::String(id)) => {
                return Err(DecodeError::new(format!(
                    "`message.data.resourceId.{key}` `{}` is not a resource id",
                    clip(id)
                )));
            }
            Some(other) => {
                return Err(DecodeError::new(format!(
                    "`message.data.resourceId.{key}` must be a string, found {}",
                    kind(other)
                )));
            }
            None => {
                return Err(DecodeError::new(format!(
                    "`message.data.resourceId.{key}` is missing"
                )));
            }
        };
        parts.push(format!("{segment}/{id}"));
    }
    Ok(parts.join("/"))
}

/// `a.bs.cs` with `{aId, bId, id}` → `a/{aId}/bs/{bId}/cs/{id}`: a parent segment's id is
/// its singular plus `Id` (`courses` → `courseId`), the last one's `id` (or `userId`).
fn generic_subject(collection: &str, resource: &Map<String, Value>) -> Option<String> {
    let segments: Vec<&str> = collection.split('.').collect();
    let mut parts = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        let id = if i + 1 == segments.len() {
            text_of(resource, "id").or_else(|| text_of(resource, "userId"))
        } else {
            let singular = segment.strip_suffix('s').unwrap_or(segment);
            text_of(resource, &format!("{singular}Id"))
        }?;
        parts.push(format!("{segment}/{id}"));
    }
    Some(parts.join("/"))
}

fn text_of<'a>(resource: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    resource
        .get(key)
        .and_then(Value::as_str)
        .filter(|id| valid_id(id))
}

/// An id that can stand in a resource path: not empty, no `/`, no control characters.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 256 && !id.chars().any(|c| c == '/' || c.is_control())
}

/// Dot-separated names of letters and digits, each starting with a letter.
fn valid_collection(collection: &str) -> bool {
    collection.len() <= 200
        && collection.split('.').all(|segment| {
            segment
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && segment.chars().all(|c| c.is_ascii_alphanumeric())
        })
}

fn required_text<'a>(fields: &'a Map<String, Value>, key: &str) -> Result<&'a str, DecodeError> {
    match fields.get(key) {
        Some(Value::String(text)) if !text.is_empty() => Ok(text),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(DecodeError::new(format!(
            "`message.data.{key}` is missing: this is not a Classroom notification"
        ))),
        Some(other) => Err(DecodeError::new(format!(
            "`message.data.{key}` must be a string, found {}",
            kind(other)
        ))),
    }
}

/// A string field written `camel` or `snake`; camelCase wins when both are present.
fn either<'a>(
    message: &'a Map<String, Value>,
    camel: &str,
    snake: &str,
) -> Result<Option<&'a str>, DecodeError> {
    for key in [camel, snake] {
        match message.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::String(text)) => return Ok(Some(text)),
            Some(other) => {
                return Err(DecodeError::new(format!(
                    "`message.{key}` must be a string, found {}",
                    kind(other)
                )));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
