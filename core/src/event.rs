//! The common event every source produces and every route and sink sees (docs/architecture.md §3).
//!
//! It is a CloudEvents 1.0 event in the JSON format (`specversion`, `id`, `source`, `type`,
//! `subject`, `time`, `datacontenttype`, `data`) plus `meta`: the transport metadata of the
//! notification (Pub/Sub attributes, `X-Goog-*` headers). `meta` is written as one JSON object
//! member rather than as flat CloudEvents extension attributes, because extension names must be
//! lower-case alphanumerics and Google's names (`registrationId`, `channelExpiration`) would not
//! read back unchanged. `enriched` is the same kind of top-level member: what enrichment
//! looked up (docs/architecture.md §11), beside `data`, which stays what Google sent.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod data;

pub use data::Data;
/// `source`, `type` and `meta`'s values: inline up to 23 bytes, shared by reference count
/// when longer, so that a source's name and a type cost no allocation, and the values a
/// channel sends with every message (its id, resource URI and expiration) are one
/// allocation for all its events rather than one per event (docs/architecture.md §3).
pub use smol_str::SmolStr;

/// The CloudEvents version Herald writes.
pub const SPEC_VERSION: &str = "1.0";
/// The content type of `data`: always JSON for Google's notifications.
pub const DATA_CONTENT_TYPE: &str = "application/json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Borrowed when it is the usual value (no allocation per event), like `meta`'s keys.
    #[serde(default = "spec_version")]
    pub specversion: Cow<'static, str>,
    pub id: String,
    /// The source's name and the type: inline when short, as they usually are (no
    /// allocation per event).
    pub source: SmolStr,
    #[serde(rename = "type")]
    pub ty: SmolStr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(with = "rfc3339")]
    pub time: DateTime<Utc>,
    #[serde(default = "data_content_type")]
    pub datacontenttype: Cow<'static, str>,
    /// As the source received it; see [`Data`].
    #[serde(default)]
    pub data: Data,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<Cow<'static, str>, SmolStr>,
    /// What enrichment looked up (`course`, `person`), each an object with the `id` it
    /// stands for and the configured fields (docs/architecture.md §11); empty otherwise.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub enriched: BTreeMap<String, Value>,
}

fn spec_version() -> Cow<'static, str> {
    Cow::Borrowed(SPEC_VERSION)
}

fn data_content_type() -> Cow<'static, str> {
    Cow::Borrowed(DATA_CONTENT_TYPE)
}

impl Event {
    /// A new event with the fixed CloudEvents attributes filled in.
    pub fn new(
        id: impl Into<String>,
        source: impl Into<SmolStr>,
        ty: impl Into<SmolStr>,
        time: DateTime<Utc>,
        data: impl Into<Data>,
    ) -> Self {
        Event {
            specversion: spec_version(),
            id: id.into(),
            source: source.into(),
            ty: ty.into(),
            subject: None,
            time,
            datacontenttype: data_content_type(),
            data: data.into(),
            meta: BTreeMap::new(),
            enriched: BTreeMap::new(),
        }
    }

    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// `time` as written in the JSON form (RFC 3339, UTC, with the precision it came with).
    pub fn time_text(&self) -> String {
        rfc3339::format(&self.time)
    }

    /// The event in the CloudEvents JSON format.
    pub fn to_json(&self) -> String {
        let mut json = String::new();
        // Serializing a JSON tree and strings cannot fail.
        let _ = self.write_json(&mut json);
        json
    }

    /// Writes the event in the CloudEvents JSON format, `data` as the text it came in when
    /// that was kept (the same JSON as `serde_json::to_writer(out, event)`, whose `data` is
    /// the parsed tree, without parsing it). This is how the journal stores an event.
    pub fn write_json(&self, out: &mut String) -> serde_json::Result<()> {
        self.write_json_data_at(out).map(|_| ())
    }

    /// [`Event::write_json`], telling where in `out` the kept text of `data` was written
    /// (`None` when `data` has no text), for [`Data::share`].
    pub(crate) fn write_json_data_at(&self, out: &mut String) -> serde_json::Result<Option<usize>> {
        // The fields in the order of `Event`'s, as its derived `Serialize` writes them: kept
        // in step by the test `write_json_is_serdes_json`. Into a `String`, piece by piece,
        // so that nothing has to be checked to be UTF-8 afterwards (1.7% of the gateway's
        // instructions under load when it was written into bytes).
        out.push_str(r#"{"specversion":"#);
        write_str(out, &self.specversion)?;
        out.push_str(r#","id":"#);
        write_str(out, &self.id)?;
        out.push_str(r#","source":"#);
        write_str(out, &self.source)?;
        out.push_str(r#","type":"#);
        write_str(out, &self.ty)?;
        if let Some(subject) = &self.subject {
            out.push_str(r#","subject":"#);
            write_str(out, subject)?;
        }
        out.push_str(r#","time":"#);
        match rfc3339::write(&self.time, &mut [0; 30]) {
            Some(time) => write_str(out, time)?,
            None => write_str(out, &rfc3339::format(&self.time))?,
        }
        out.push_str(r#","datacontenttype":"#);
        write_str(out, &self.datacontenttype)?;
        out.push_str(r#","data":"#);
        let data_at = match self.data.text() {
            Some(text) => {
                let at = out.len();
                out.push_str(text);
                Some(at)
            }
            None => {
                out.push_str(&serde_json::to_string(&self.data)?);
                None
            }
        };
        if !self.meta.is_empty() {
            out.push_str(r#","meta":"#);
            let mut separator = "{";
            for (name, value) in &self.meta {
                out.push_str(separator);
                write_str(out, name)?;
                out.push(':');
                write_str(out, value)?;
                separator = ",";
            }
            out.push('}');
        }
        if !self.enriched.is_empty() {
            out.push_str(r#","enriched":"#);
            out.push_str(&serde_json::to_string(&self.enriched)?);
        }
        out.push('}');
        Ok(data_at)
    }
}

/// `text` as a JSON string, as serde_json writes it: copied at once when nothing in it needs
/// escaping (the usual case: ids, names, times), through serde_json otherwise. Its per-byte
/// escaping loop was 3% of the gateway's instructions under load.
fn write_str(out: &mut String, text: &str) -> serde_json::Result<()> {
    if needs_escape(text.as_bytes()) {
        out.push_str(&serde_json::to_string(text)?);
        return Ok(());
    }
    out.push('"');
    out.push_str(text);
    out.push('"');
    Ok(())
}

/// Whether a JSON string of `bytes` escapes any of them: a quote, a backslash or a control
/// character. Sixteen at a time, without a branch per byte: the bytes left over past the
/// last sixteen are checked as the last sixteen (overlapping), a string shorter than sixteen
/// padded to sixteen (a byte-by-byte tail was most of the cost for names and short values).
fn needs_escape(bytes: &[u8]) -> bool {
    let escaped = |b: u8| (b < 0x20) | (b == b'"') | (b == b'\\');
    let any = |chunk: &[u8; 16]| chunk.iter().fold(false, |any, &b| any | escaped(b));
    let (chunks, rest) = bytes.as_chunks::<16>();
    if chunks.iter().any(any) {
        return true;
    }
    if rest.is_empty() {
        return false;
    }
    match bytes.last_chunk::<16>() {
        Some(last) => any(last),
        None => {
            let mut padded = [b'a'; 16];
            padded[..rest.len()].copy_from_slice(rest);
            any(&padded)
        }
    }
}

impl Event {
    /// An event from its CloudEvents JSON, as [`Event::write_json`] writes it: the same
    /// event as `serde_json::from_str` gives, with `data` kept as its text rather than
    /// parsed into a tree (how the journal reads its events back).
    pub fn from_json(json: &str) -> serde_json::Result<Event> {
        let read: JsonIn<'_> = serde_json::from_str(json)?;
        let data = match read.data {
            Some(text) => Data::from_json(text.get().to_owned())?,
            None => Data::default(),
        };
        Ok(Event {
            specversion: read.specversion,
            id: read.id,
            source: read.source,
            ty: read.ty,
            subject: read.subject,
            time: read.time,
            datacontenttype: read.datacontenttype,
            data,
            meta: read.meta,
            enriched: read.enriched,
        })
    }
}

/// [`Event`]'s fields as its derived `Deserialize` reads them, with `data` borrowed as
/// text (`None` for null or absent): kept in step by the test `from_json_is_serdes_json`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonIn<'a> {
    #[serde(default = "spec_version")]
    specversion: Cow<'static, str>,
    id: String,
    source: SmolStr,
    #[serde(rename = "type")]
    ty: SmolStr,
    #[serde(default)]
    subject: Option<String>,
    #[serde(with = "rfc3339")]
    time: DateTime<Utc>,
    #[serde(default = "data_content_type")]
    datacontenttype: Cow<'static, str>,
    #[serde(default, borrow)]
    data: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    meta: BTreeMap<Cow<'static, str>, SmolStr>,
    #[serde(default)]
    enriched: BTreeMap<String, Value>,
}

/// RFC 3339 timestamps in UTC with `Z`, keeping the fraction of a second only when present.
mod rfc3339 {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn format(t: &DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    /// What [`format`] writes, into `buf` rather than a new `String` (every event's JSON
    /// has a `time`); `None` for a year outside 0–9999 or a leap second, which `format`
    /// then writes.
    pub fn write<'b>(t: &DateTime<Utc>, buf: &'b mut [u8; 30]) -> Option<&'b str> {
        use chrono::{Datelike, Timelike};
        let nanos = t.nanosecond();
        let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
        if nanos >= 1_000_000_000 {
            return None;
        }
        let digits = |buf: &mut [u8], mut value: u32| {
            for b in buf.iter_mut().rev() {
                *b = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        digits(&mut buf[0..4], year);
        buf[4] = b'-';
        digits(&mut buf[5..7], t.month());
        buf[7] = b'-';
        digits(&mut buf[8..10], t.day());
        buf[10] = b'T';
        digits(&mut buf[11..13], t.hour());
        buf[13] = b':';
        digits(&mut buf[14..16], t.minute());
        buf[16] = b':';
        digits(&mut buf[17..19], t.second());
        // As `SecondsFormat::AutoSi`: none, milli-, micro- or nanoseconds, whichever is exact.
        let (fraction, width) = match nanos {
            0 => (0, 0),
            n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
            n if n % 1_000 == 0 => (n / 1_000, 6),
            n => (n, 9),
        };
        let mut end = 19;
        if width > 0 {
            buf[19] = b'.';
            digits(&mut buf[20..20 + width], fraction);
            end = 20 + width;
        }
        buf[end] = b'Z';
        std::str::from_utf8(&buf[..=end]).ok()
    }

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        match write(t, &mut [0; 30]) {
            Some(text) => s.serialize_str(text),
            None => s.serialize_str(&format(t)),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| serde::de::Error::custom(format!("`time` is not RFC 3339 ({e}): {text}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roster_event() -> Event {
        let time = DateTime::parse_from_rfc3339("2026-11-20T09:15:02.512Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut event = Event::new(
            "2070443601311540",
            "classroom",
            "classroom.courses.students.created",
            time,
            json!({"collection": "courses.students", "eventType": "CREATED",
                   "resourceId": {"courseId": "12345", "userId": "45678"}}),
        )
        .with_subject("courses/12345/students/45678");
        event
            .meta
            .insert("registrationId".into(), "Cg0I2fQDEgYIABCA6gcaAA".into());
        event
    }

    #[test]
    fn serializes_to_cloudevents_json() {
        let value: Value = serde_json::from_str(&roster_event().to_json()).unwrap();
        assert_eq!(value["specversion"], "1.0");
        assert_eq!(value["type"], "classroom.courses.students.created");
        assert_eq!(value["time"], "2026-11-20T09:15:02.512Z");
        assert_eq!(value["datacontenttype"], "application/json");
        assert_eq!(value["data"]["resourceId"]["userId"], "45678");
        assert_eq!(value["meta"]["registrationId"], "Cg0I2fQDEgYIABCA6gcaAA");
    }

    #[test]
    fn round_trips_unchanged() {
        let event = roster_event();
        let back: Event = serde_json::from_str(&event.to_json()).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.to_json(), event.to_json());
    }

    #[test]
    fn write_json_is_serdes_json() {
        let mut event = roster_event();
        assert_eq!(event.to_json(), serde_json::to_string(&event).unwrap());
        event.subject = None;
        event.meta.clear();
        event
            .enriched
            .insert("course".into(), json!({"id": "12345", "name": "Biology"}));
        assert_eq!(event.to_json(), serde_json::to_string(&event).unwrap());
        // Written as it came (a tree would write `100.0` and `é`), on one line.
        let text = "{\"collection\": \"courses.students\",\n \"n\": 1e2, \"e\": \"\\u00e9\"}";
        event.data = Data::from_json(text.to_owned()).unwrap();
        assert!(
            event
                .to_json()
                .contains(r#""data":{"collection":"courses.students","n":1e2,"e":"\u00e9"}"#),
            "{}",
            event.to_json()
        );
        let back: Event = serde_json::from_str(&event.to_json()).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.to_json(), serde_json::to_string(&event).unwrap());
    }

    #[test]
    fn a_byte_to_escape_is_found_at_any_length_and_place() {
        for len in 0..50 {
            let plain = "é".repeat(len / 2) + &"x".repeat(len % 2);
            assert!(!needs_escape(plain.as_bytes()), "{plain:?}");
            for at in 0..len {
                for escaped in [b'"', b'\\', b'\n', 0x1f, 0] {
                    let mut bytes = vec![b'x'; len];
                    bytes[at] = escaped;
                    assert!(needs_escape(&bytes), "{escaped} at {at} of {len}");
                }
            }
        }
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        /// Any text in the string fields (quotes, backslashes, control characters, any
        /// Unicode, long or empty) is written as serde_json writes it.
        #[test]
        fn write_json_escapes_as_serde_json(
            id in ".*",
            subject in "(\\PC|[\\x00-\\x1f\"\\\\]){0,40}",
            name in ".{0,20}",
            value in "(\\PC|[\\x00-\\x1f\"\\\\]){0,40}",
        ) {
            let mut event = roster_event();
            event.id = id;
            event.subject = Some(subject);
            event.meta.insert(name.into(), value.into());
            proptest::prop_assert_eq!(event.to_json(), serde_json::to_string(&event).unwrap());
        }

        /// The time written without allocating is chrono's RFC 3339, to the nanosecond.
        #[test]
        fn time_is_written_as_chrono_writes_it(
            secs in -62_135_596_800i64..253_402_300_800,
            nanos in proptest::prop_oneof![
                proptest::prelude::Just(0u32),
                (0u32..1000).prop_map(|ms| ms * 1_000_000),
                (0u32..1_000_000).prop_map(|us| us * 1_000),
                0u32..1_000_000_000,
            ],
        ) {
            let t = DateTime::from_timestamp(secs, nanos).unwrap();
            let mut buf = [0; 30];
            let chrono = rfc3339::format(&t);
            proptest::prop_assert_eq!(rfc3339::write(&t, &mut buf), Some(chrono.as_str()));
        }
    }

    #[test]
    fn times_out_of_the_fast_path_are_written_too() {
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap()
            .and_utc();
        let far = DateTime::from_timestamp(253_402_300_800, 0).unwrap();
        for t in [leap, far] {
            assert_eq!(rfc3339::write(&t, &mut [0; 30]), None);
            let mut event = roster_event();
            event.time = t;
            assert!(
                event
                    .to_json()
                    .contains(&format!("\"time\":\"{}\"", event.time_text()))
            );
        }
    }

    #[test]
    fn from_json_is_serdes_json() {
        let mut event = roster_event();
        event
            .enriched
            .insert("course".into(), json!({"id": "12345", "name": "Biology"}));
        let json = event.to_json();
        let read = Event::from_json(&json).unwrap();
        assert_eq!(read, serde_json::from_str::<Event>(&json).unwrap());
        assert_eq!(read, event);
        assert!(read.data.text().is_some(), "data kept as its text");
        assert_eq!(read.to_json(), json, "written back unchanged");
        // Defaults, a null `data`, and the same refusals as serde's.
        let bare =
            r#"{"id":"1","source":"s","type":"t","time":"2030-10-29T20:32:02Z","data":null}"#;
        assert_eq!(
            Event::from_json(bare).unwrap(),
            serde_json::from_str::<Event>(bare).unwrap()
        );
        for bad in [
            r#"{"id":"1","source":"s","type":"t","time":"yesterday"}"#,
            r#"{"id":"1","source":"s","type":"t","time":"2030-10-29T20:32:02Z","extra":1}"#,
            r#"{"id":"1","source":"s","time":"2030-10-29T20:32:02Z"}"#,
        ] {
            assert_eq!(
                Event::from_json(bad).unwrap_err().to_string(),
                serde_json::from_str::<Event>(bad).unwrap_err().to_string()
            );
        }
    }

    #[test]
    fn whole_seconds_have_no_fraction() {
        let mut event = roster_event();
        event.time = DateTime::parse_from_rfc3339("2030-10-29T20:32:02Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(event.time_text(), "2030-10-29T20:32:02Z");
    }

    #[test]
    fn rejects_a_bad_time_with_a_clear_message() {
        let err = serde_json::from_str::<Event>(
            r#"{"id":"1","source":"s","type":"t","time":"yesterday"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("`time` is not RFC 3339"), "{err}");
    }
}
