//! A Directory API push notification (its `X-Goog-*` headers and JSON body) → the [`Event`]
//! of docs/architecture.md §3. Pure: the handler passes the time the request was received.
//!
//! * `id` is `<X-Goog-Channel-ID>/<X-Goog-Message-Number>` (a retry of one message is the
//!   same event to the journal); `type` is `directory.users.<X-Goog-Resource-State>`;
//!   `subject` is `users/<body id>` when the body has an `id`; `data` is the body (JSON
//!   null when empty, as for `sync`);
//! * `meta` holds `channelId`, `resourceId`, `resourceUri`, `resourceState`,
//!   `messageNumber`, `channelExpiration` (RFC 3339) and, from the resource URI's query,
//!   `domain`, `customer` and `event` (the watch's own parameters; other query parameters,
//!   such as `alt`, say nothing about the change and are left out).
//!
//! `X-Goog-Channel-Token` is never read here: the handler compares it and nothing else sees
//! it. Every error names the header or the body field that is wrong.

use std::cell::RefCell;
use std::rc::Rc;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use chrono::{DateTime, Utc};
use herald_core::Event;
use herald_core::event::{Data, SmolStr};
use serde_json::Value;

use crate::DecodeError;
use crate::answer::{clip, kind};

pub const CHANNEL_ID: &str = "X-Goog-Channel-ID";
pub const CHANNEL_TOKEN: &str = "X-Goog-Channel-Token";
pub const CHANNEL_EXPIRATION: &str = "X-Goog-Channel-Expiration";
pub const RESOURCE_ID: &str = "X-Goog-Resource-ID";
pub const RESOURCE_URI: &str = "X-Goog-Resource-URI";
pub const RESOURCE_STATE: &str = "X-Goog-Resource-State";
pub const MESSAGE_NUMBER: &str = "X-Goog-Message-Number";

/// The query parameters of the resource URI copied into `meta`, in order.
const URI_PARAMS: &[&str] = &["customer", "domain", "event"];
/// Longest accepted header value (a resource URI; ids are far shorter).
const MAX_HEADER: usize = 2048;

/// A decoded notification.
#[derive(Clone, Debug, PartialEq)]
pub struct DirectoryMessage {
    pub event: Event,
    /// A `sync` message: the first one of every channel, with an empty body.
    pub sync: bool,
    pub channel_id: SmolStr,
    /// `X-Goog-Channel-Expiration`: channels stop when it passes.
    pub expiration: Option<DateTime<Utc>>,
    /// The body's `etag`, when it is a string: with the user `id`, which version of the
    /// user the change is (read here, so that the handler need not parse `data`).
    pub etag: Option<String>,
}

pub fn decode(
    source: &str,
    headers: &HeaderMap,
    body: &[u8],
    received: DateTime<Utc>,
) -> Result<DirectoryMessage, DecodeError> {
    decode_found(source, &Found::in_map(headers), body, received)
}

/// [`decode`], with the headers found already.
pub fn decode_found(
    source: &str,
    headers: &Found<'_>,
    body: &[u8],
    received: DateTime<Utc>,
) -> Result<DirectoryMessage, DecodeError> {
    let channel_id = headers.required(CHANNEL_ID)?;
    let number = headers.required(MESSAGE_NUMBER)?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecodeError::new(format!(
            "header {MESSAGE_NUMBER} must be a number, found `{}`",
            clip(number)
        )));
    }
    let parsed: u64 = number.parse().map_err(|_| {
        DecodeError::new(format!(
            "header {MESSAGE_NUMBER} is too large: `{}`",
            clip(number)
        ))
    })?;
    // The number as written without leading zeros (as Google writes it, so the text is
    // usually kept as it is).
    let number = match number.strip_prefix('0') {
        Some(rest) if !rest.is_empty() => parsed.to_string().into(),
        _ => std::borrow::Cow::Borrowed(number),
    };
    let state = headers.required(RESOURCE_STATE)?;
    if state.is_empty() || !state.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(DecodeError::new(format!(
            "header {RESOURCE_STATE} must be a word such as `add` or `makeAdmin`, found `{}`",
            clip(state)
        )));
    }
    // What a channel sends the same with every message: shared with the events before it
    // rather than copied into each (README, "The eighth pass").
    let resource_id = headers.required(RESOURCE_ID)?;
    let resource_uri = headers.required(RESOURCE_URI)?;
    let (channel_id, ()) = LAST_CHANNEL.with_borrow_mut(|last| memo(last, channel_id, as_is))?;
    let (resource_id, ()) = LAST_RESOURCE.with_borrow_mut(|last| memo(last, resource_id, as_is))?;
    let (resource_uri, uri_params) =
        LAST_URI.with_borrow_mut(|last| memo(last, resource_uri, uri_params))?;
    let expiration = match headers.optional(CHANNEL_EXPIRATION)? {
        None => None,
        Some(text) => Some(
            LAST_EXPIRATION
                .with_borrow_mut(|last| memo(last, text, http_date))?
                .1,
        ),
    };

    let (data, Head { id, etag }) = body_json(body)?;
    let subject = match &id {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if !id.is_empty() && !id.contains('/') => {
            Some(["users/", id].concat())
        }
        Some(Value::String(id)) => {
            return Err(DecodeError::new(format!(
                "body field `id` `{}` is not a user id",
                clip(id)
            )));
        }
        Some(other) => {
            return Err(DecodeError::new(format!(
                "body field `id` must be a string, found {}",
                kind(other)
            )));
        }
    };

    let mut event = Event::new(
        [&channel_id, "/", &number].concat(),
        source,
        {
            let mut ty = smol_str::SmolStrBuilder::new();
            ty.push_str("directory.users.");
            ty.push_str(state);
            ty.finish()
        },
        received,
        data,
    );
    event.subject = subject;
    let expires = expiration.as_ref().map(|(time, _)| *time);
    // Inserted from the last name to the first: each insert then finds its place at the
    // front of the map's one node with a single comparison. Built in ascending order, every
    // insert searched the whole node (3% of the gateway's instructions under load); collected
    // from a sorted `Vec`, the map sorted and deduplicated it again, moving every entry
    // several times (1.4–1.8% of the gateway's CPU time under load).
    let meta = &mut event.meta;
    meta.insert("resourceUri".into(), resource_uri);
    meta.insert("resourceState".into(), state.into());
    meta.insert("resourceId".into(), resource_id);
    meta.insert("messageNumber".into(), number.into());
    for (name, value) in uri_params.iter().rev() {
        meta.insert((*name).into(), value.clone());
    }
    meta.insert("channelId".into(), channel_id.clone());
    if let Some((_, text)) = expiration {
        meta.insert("channelExpiration".into(), text);
    }
    Ok(DirectoryMessage {
        sync: state == "sync",
        channel_id,
        expiration: expires,
        etag: match etag {
            Some(Value::String(etag)) => Some(etag),
            _ => None,
        },
        event,
    })
}

thread_local! {
    // A channel sends the same id, resource id, resource URI and expiration with every
    // message: each thread keeps the last ones it saw, as shared text and parsed, and makes
    // them again only when they change (a burst of messages usually comes from one channel;
    // messages of channels taking turns cost what they did before this was kept).
    static LAST_CHANNEL: RefCell<Option<(SmolStr, ())>> = const { RefCell::new(None) };
    static LAST_RESOURCE: RefCell<Option<(SmolStr, ())>> = const { RefCell::new(None) };
    static LAST_URI: RefCell<Option<(SmolStr, UriParams)>> = const { RefCell::new(None) };
    static LAST_EXPIRATION: RefCell<Option<(SmolStr, Expiration)>> = const { RefCell::new(None) };
}

/// The `URI_PARAMS` query parameters of a resource URI, in the order of their names.
type UriParams = Rc<Vec<(&'static str, SmolStr)>>;
/// An expiration, and as written in `meta`.
type Expiration = (DateTime<Utc>, SmolStr);

/// `text` as shared text and `parse(text)`, or what they were for the same `text` last
/// time. An error is not kept.
fn memo<T: Clone>(
    last: &mut Option<(SmolStr, T)>,
    text: &str,
    parse: fn(&str) -> Result<T, DecodeError>,
) -> Result<(SmolStr, T), DecodeError> {
    if let Some((seen, parsed)) = last
        && seen == text
    {
        return Ok((seen.clone(), parsed.clone()));
    }
    let parsed = parse(text)?;
    let seen = SmolStr::new(text);
    *last = Some((seen.clone(), parsed.clone()));
    Ok((seen, parsed))
}

/// Any text, for [`memo`] to share.
fn as_is(_: &str) -> Result<(), DecodeError> {
    Ok(())
}

fn uri_params(text: &str) -> Result<UriParams, DecodeError> {
    let uri = reqwest::Url::parse(text)
        .map_err(|e| DecodeError::new(format!("header {RESOURCE_URI} is not a URL ({e})")))?;
    let pairs: Vec<_> = uri.query_pairs().collect();
    // By name (`URI_PARAMS` is in order), the last of a repeated one.
    Ok(Rc::new(
        URI_PARAMS
            .iter()
            .filter_map(|name| {
                let (_, value) = pairs.iter().rev().find(|(n, _)| n == name)?;
                Some((*name, SmolStr::new(value)))
            })
            .collect(),
    ))
}

fn http_date(text: &str) -> Result<Expiration, DecodeError> {
    let time = DateTime::parse_from_rfc2822(text)
        .map_err(|_| {
            DecodeError::new(format!(
                "header {CHANNEL_EXPIRATION} is not an HTTP date such as \
                 `Tue, 29 Oct 2030 20:32:02 GMT`: `{}`",
                clip(text)
            ))
        })?
        .with_timezone(&Utc);
    Ok((
        time,
        time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            .into(),
    ))
}

/// The body, kept as the JSON text it came in (docs/architecture.md §3): an object, or
/// null when empty; and its members the decoder reads.
fn body_json(body: &[u8]) -> Result<(Data, Head), DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((Value::Null.into(), Head::default()));
    }
    let not_json =
        |e: &dyn std::fmt::Display| DecodeError::new(format!("the body is not JSON: {e}"));
    let text = String::from_utf8(body.to_vec()).map_err(|e| not_json(&e))?;
    // Checked, and `id` and `etag` read, in one pass that builds nothing else.
    let (data, [id, etag]) =
        Data::from_json_members(text, ["id", "etag"]).map_err(|e| not_json(&e))?;
    let text = data.text().unwrap_or_default();
    if !text.starts_with('{') {
        return Err(DecodeError::new(format!(
            "the body must be a JSON object (a Directory user), found {}",
            kind_of_text(text)
        )));
    }
    Ok((data, Head { id, etag }))
}

/// What JSON `text` (checked to be JSON) is, as [`kind`] names it.
fn kind_of_text(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// The `id` and `etag` members of the body's object (the last of each, as a [`Value`]
/// would keep).
#[derive(Default)]
struct Head {
    id: Option<Value>,
    etag: Option<Value>,
}

/// The headers above by their names as stored (lower case), in the order of [`Found`].
static KEYS: [(&str, HeaderName); 7] = [
    (CHANNEL_ID, HeaderName::from_static("x-goog-channel-id")),
    (
        CHANNEL_TOKEN,
        HeaderName::from_static("x-goog-channel-token"),
    ),
    (
        CHANNEL_EXPIRATION,
        HeaderName::from_static("x-goog-channel-expiration"),
    ),
    (RESOURCE_ID, HeaderName::from_static("x-goog-resource-id")),
    (RESOURCE_URI, HeaderName::from_static("x-goog-resource-uri")),
    (
        RESOURCE_STATE,
        HeaderName::from_static("x-goog-resource-state"),
    ),
    (
        MESSAGE_NUMBER,
        HeaderName::from_static("x-goog-message-number"),
    ),
];

/// The values of the seven `X-Goog-*` headers of a request (the first of each, as
/// `HeaderMap::get` gives), found in one pass over its headers. Looked up one by one, each
/// name was hashed and probed for again: 4% of the gateway's instructions under load
/// (README, "The seventh pass").
pub struct Found<'h>([Option<&'h HeaderValue>; 7]);

impl<'h> Found<'h> {
    pub fn in_map(headers: &'h HeaderMap) -> Found<'h> {
        let mut found = [None; 7];
        for (name, value) in headers {
            let name = name.as_str();
            if !name.starts_with("x-goog-") {
                continue;
            }
            if let Some(at) = KEYS.iter().position(|(_, key)| key.as_str() == name)
                && found[at].is_none()
            {
                found[at] = Some(value);
            }
        }
        Found(found)
    }

    /// The value of header `name`, one of the constants above (any other is absent).
    pub fn get(&self, name: &str) -> Option<&'h HeaderValue> {
        let at = KEYS.iter().position(|(known, _)| *known == name)?;
        self.0[at]
    }

    /// The text of header `name`, if present.
    pub fn optional(&self, name: &str) -> Result<Option<&'h str>, DecodeError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        if value.len() > MAX_HEADER {
            return Err(DecodeError::new(format!(
                "header {name} is too long ({} bytes; at most {MAX_HEADER})",
                value.len()
            )));
        }
        let text = value
            .to_str()
            .map_err(|_| DecodeError::new(format!("header {name} is not ASCII text")))?;
        Ok(Some(text.trim()))
    }

    pub fn required(&self, name: &str) -> Result<&'h str, DecodeError> {
        match self.optional(name)? {
            Some(text) if !text.is_empty() => Ok(text),
            _ => Err(DecodeError::new(format!("missing header {name}"))),
        }
    }
}

/// Headers given as text (`herald test --source`: `-H 'X-Goog-…: v'`).
pub fn header_map(pairs: &[(String, String)]) -> Result<HeaderMap, DecodeError> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let header = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| DecodeError::new(format!("`{}` is not a header name", clip(name))))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| DecodeError::new(format!("header {name} is not valid header text")))?;
        map.append(header, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests;
