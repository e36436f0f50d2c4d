//! `data`: the notification's JSON, kept as the text it arrived in when the source has it.
//!
//! Herald never changes `data` (docs/architecture.md §3): a Directory notification's body is
//! written to the journal and to every sink as it came, and parsed into a [`Value`] only the
//! first time something reads a field of it (a route matching `data.…`, a template,
//! enrichment, `forget`). An event routed on its type and written to a file is then never
//! turned into a tree: parsing the body into one, writing it out again and freeing it were
//! about a tenth of the gateway's CPU per event (README, "Benchmark").
//!
//! Read it as a [`Value`] (`event.data.get("id")`, `&*event.data`); build it from a `Value`
//! (`json!({…}).into()`) or from text ([`Data::from_json`]). Every serializer sees the tree;
//! only [`Event::write_json`](super::Event::write_json) writes the kept text verbatim.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

#[derive(Clone, Default)]
pub struct Data {
    /// The JSON text as received, checked and on one line; `None` for data built as a tree.
    text: Option<Text>,
    /// The tree: given at construction, or parsed from `text` on first read.
    tree: OnceLock<Value>,
}

impl Data {
    /// Data kept as the JSON text `text`, less the whitespace between its tokens (Google's
    /// bodies are pretty-printed; an event is one line of a JSON Lines file). Fails, with
    /// serde_json's message, if it is not JSON or nests deeper than a [`Value`] may (128
    /// levels), so that reading it later cannot fail.
    pub fn from_json(text: String) -> Result<Data, serde_json::Error> {
        Data::from_json_members(text, []).map(|(data, [])| data)
    }

    /// [`Data::from_json`], reading in its one pass over the text the values of the
    /// top-level members `names` when the JSON is an object (the last of each, as a
    /// [`Value`] keeps): a source reads a notification's `id` this way without parsing the
    /// rest into a tree.
    pub fn from_json_members<const N: usize>(
        text: String,
        names: [&str; N],
    ) -> Result<(Data, [Option<Value>; N]), serde_json::Error> {
        let mut read = serde_json::Deserializer::from_str(&text);
        let members = Members { names: &names }.deserialize(&mut read)?;
        read.end()?;
        let data = Data {
            text: Some(Text::Own(compact(text).into_boxed_str())),
            tree: OnceLock::new(),
        };
        Ok((data, members))
    }

    /// The JSON text as received (on one line), when it was kept.
    pub fn text(&self) -> Option<&str> {
        self.text.as_ref().map(Text::as_str)
    }

    /// The tree, parsed if it was not yet.
    pub fn into_value(self) -> Value {
        let Data { text, tree } = self;
        tree.into_inner()
            .unwrap_or_else(|| parse(text.as_ref().map(Text::as_str)))
    }

    /// Keeps the text as the part of `json` that starts at byte `at`, when it is there,
    /// instead of in a buffer of its own: the journal shares an event's `data` with the
    /// event's JSON, which holds it verbatim, so that the event carries one allocation fewer
    /// to the thread that frees it (README, "The eighth pass"). Nothing changes otherwise.
    pub(crate) fn share(&mut self, json: &Arc<str>, at: usize) {
        if let Some(Text::Own(text)) = &self.text
            && json.get(at..at.saturating_add(text.len())) == Some(&**text)
            && let (Ok(start), Ok(end)) = (u32::try_from(at), u32::try_from(at + text.len()))
        {
            self.text = Some(Text::In(Arc::clone(json), start, end));
        }
    }

    /// Whether the text is kept as part of another string ([`Data::share`]).
    #[cfg(test)]
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self.text, Some(Text::In(..)))
    }
}

/// Where [`Data`] keeps its text: a buffer of its own, or the bytes `start..end` of a
/// shared string.
#[derive(Clone)]
enum Text {
    Own(Box<str>),
    In(Arc<str>, u32, u32),
}

impl Text {
    fn as_str(&self) -> &str {
        match self {
            Text::Own(text) => text,
            // `share` keeps a range only after reading the text at it.
            Text::In(json, start, end) => {
                json.get(*start as usize..*end as usize).unwrap_or_default()
            }
        }
    }
}

/// JSON `text` without the whitespace outside its strings: the same JSON on one line
/// (inside a string a line break is always escaped). Only ASCII whitespace is removed, so
/// what is left is UTF-8. `text` itself when there is none.
fn compact(text: String) -> String {
    let bytes = text.as_bytes();
    // No whitespace byte at all (JSON sent compact): nothing to remove, found without the
    // per-byte string state below, sixteen bytes at a time.
    let whitespace = |b: u8| (b == b' ') | (b == b'\n') | (b == b'\r') | (b == b'\t');
    let mut chunks = bytes.chunks_exact(16);
    if !chunks.any(|chunk| chunk.iter().fold(false, |any, &b| any | whitespace(b)))
        && !chunks.remainder().iter().any(|&b| whitespace(b))
    {
        return text;
    }
    let mut in_string = false;
    let mut escaped = false;
    // Whether `b`, read in the state before it, is whitespace between tokens; moves the state.
    let mut between_tokens = |b: u8| {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            false
        } else {
            in_string = b == b'"';
            matches!(b, b' ' | b'\n' | b'\r' | b'\t')
        }
    };
    let Some(first) = bytes.iter().position(|&b| between_tokens(b)) else {
        return text;
    };
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..first]);
    out.extend(bytes[first + 1..].iter().filter(|&&b| !between_tokens(b)));
    String::from_utf8(out).unwrap_or(text)
}

/// What `from_json` checked parses; `Null` for data that has neither text nor tree
/// (`Data::default()`).
fn parse(text: Option<&str>) -> Value {
    text.and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null)
}

impl Deref for Data {
    type Target = Value;

    fn deref(&self) -> &Value {
        self.tree
            .get_or_init(|| parse(self.text.as_ref().map(Text::as_str)))
    }
}

impl From<Value> for Data {
    fn from(value: Value) -> Data {
        Data {
            text: None,
            tree: OnceLock::from(value),
        }
    }
}

impl PartialEq for Data {
    fn eq(&self, other: &Data) -> bool {
        **self == **other
    }
}

impl PartialEq<Value> for Data {
    fn eq(&self, other: &Value) -> bool {
        **self == *other
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Data, D::Error> {
        Value::deserialize(deserializer).map(Data::from)
    }
}

/// The values of the top-level members `names` of a JSON object (none for other JSON), the
/// rest read through as [`Shape`] reads it: what [`Data::from_json_members`] checks and reads
/// in one pass.
struct Members<'n, const N: usize> {
    names: &'n [&'n str; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for Members<'_, N> {
    type Value = [Option<Value>; N];

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for Members<'_, N> {
    type Value = [Option<Value>; N];

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(std::array::from_fn(|_| None))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(std::array::from_fn(|_| None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(std::array::from_fn(|_| None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(std::array::from_fn(|_| None))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(std::array::from_fn(|_| None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(std::array::from_fn(|_| None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Shape.visit_seq(seq)?;
        Ok(std::array::from_fn(|_| None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut values = std::array::from_fn(|_| None);
        while let Some(member) = map.next_key_seed(Name { names: self.names })? {
            match member {
                Some(i) => values[i] = Some(map.next_value::<Value>()?),
                None => {
                    map.next_value::<Shape>()?;
                }
            }
        }
        Ok(values)
    }
}

/// A member's name as its place in `names`, without keeping the name.
struct Name<'n, const N: usize> {
    names: &'n [&'n str; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for Name<'_, N> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<const N: usize> Visitor<'_> for Name<'_, N> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Option<usize>, E> {
        Ok(self.names.iter().position(|n| *n == name))
    }
}

/// Any JSON value, read through and not kept. Unlike [`IgnoredAny`] it goes through
/// `deserialize_any`, where serde_json counts the nesting as it does for a [`Value`].
struct Shape;

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Shape, D::Error> {
        deserializer.deserialize_any(Shape)
    }
}

impl<'de> Visitor<'de> for Shape {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Shape, E> {
        Ok(Shape)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        while seq.next_element::<Shape>()?.is_some() {}
        Ok(Shape)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        while map.next_entry::<IgnoredAny, Shape>()?.is_some() {}
        Ok(Shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Compact JSON is kept as the very string it came in; whitespace is removed between
    /// tokens only, never inside a string, wherever it falls among the sixteen-byte chunks.
    #[test]
    fn compact_text_is_kept_as_it_came() {
        let text = r#"{"kind":"admin#directory#user","id":"1","primaryEmail":"a@example.edu"}"#;
        let owned = text.to_owned();
        let at = owned.as_ptr();
        let kept = compact(owned);
        assert_eq!((kept.as_str(), kept.as_ptr()), (text, at));
        for pad in 0..20 {
            let key = "k".repeat(pad);
            let spaced = format!("{{\"{key}\": \"a b\",\n\t\"n\": [1, 2]}}");
            assert_eq!(compact(spaced), format!(r#"{{"{key}":"a b","n":[1,2]}}"#));
            let inside = format!(r#"{{"{key}":"a b"}}"#);
            assert_eq!(compact(inside.clone()), inside);
        }
    }

    #[test]
    fn text_is_read_as_the_tree_it_parses_to() {
        let text = "{\n  \"id\": \"1\",\r\n\t\"name\": {\"fullName\": \"Ada \\\"A\\\" \\\\ Lovelace\"},\n  \"n\": [1, 2.5e0, null] }\n";
        let data = Data::from_json(text.to_owned()).unwrap();
        assert_eq!(
            data.text(),
            Some(r#"{"id":"1","name":{"fullName":"Ada \"A\" \\ Lovelace"},"n":[1,2.5e0,null]}"#),
            "kept as it came, on one line"
        );
        assert_eq!(data["name"]["fullName"], "Ada \"A\" \\ Lovelace");
        assert_eq!(
            data,
            Data::from(serde_json::from_str::<Value>(text).unwrap())
        );
        assert_eq!(
            data.clone().into_value(),
            serde_json::from_str::<Value>(text).unwrap()
        );
    }

    #[test]
    fn what_is_not_json_is_refused_with_serde_jsons_message() {
        for bad in [r#"{"id":"#, r#"{"a":1} x"#, "", "{'a':1}"] {
            assert!(Data::from_json(bad.to_owned()).is_err(), "{bad:?}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let e = Data::from_json(deep.clone()).unwrap_err();
        assert!(e.to_string().contains("recursion limit"), "{e}");
        assert!(
            serde_json::from_str::<Value>(&deep).is_err(),
            "a Value refuses it alike"
        );
        let fine = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(Data::from_json(fine).is_ok());
    }

    #[test]
    fn serializers_see_the_tree_and_only_write_json_the_text() {
        let data = Data::from_json(r#"{"b": 1, "a": "\u00e9 2"}"#.to_owned()).unwrap();
        assert_eq!(
            serde_json::to_string(&data).unwrap(),
            r#"{"b":1,"a":"é 2"}"#
        );
        assert_eq!(data.text(), Some(r#"{"b":1,"a":"\u00e9 2"}"#));
        assert_eq!(
            serde_json::to_value(&data).unwrap(),
            json!({"b": 1, "a": "é 2"})
        );
        let tree = Data::from(json!({"b": 1}));
        assert_eq!(tree.text(), None);
        assert_eq!(*Data::default(), Value::Null);
    }

    #[test]
    fn members_are_read_from_the_top_level_object_in_the_same_pass() {
        let text = r#"{"id": 1, "user": {"id": "inner", "etag": "x"}, "id": "last", "n": [1]}"#;
        let (data, [id, etag, missing]) =
            Data::from_json_members(text.to_owned(), ["id", "etag", "missing"]).unwrap();
        assert_eq!(id, Some(json!("last")), "the last, as a Value keeps");
        assert_eq!(etag, None, "only top-level members");
        assert_eq!(missing, None);
        assert_eq!(data, serde_json::from_str::<Value>(text).unwrap());

        let (_, [id]) = Data::from_json_members(r#"[{"id": 1}]"#.to_owned(), ["id"]).unwrap();
        assert_eq!(id, None, "not an object");

        // The nesting limit holds for the members read and for those read through.
        for deep in [
            format!(r#"{{"id": {}{}}}"#, "[".repeat(200), "]".repeat(200)),
            format!(r#"{{"x": {}{}}}"#, "[".repeat(200), "]".repeat(200)),
        ] {
            let e = Data::from_json_members(deep, ["id"]).unwrap_err();
            assert!(e.to_string().contains("recursion limit"), "{e}");
        }
        let e = Data::from_json_members(r#"{"id": 1} x"#.to_owned(), ["id"]).unwrap_err();
        assert!(e.to_string().contains("trailing characters"), "{e}");
    }

    /// Any JSON value: strings with quotes, backslashes, line breaks and spaces.
    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let text = "[ a\"\\\\\n\t\r{}\\[\\]:,é]{0,8}";
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            text.prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::vec((text, inner), 0..6)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Pretty-printed or not, the text kept is one line and the same JSON.
        #[test]
        fn compacted_text_is_the_same_json_on_one_line(value in json_value()) {
            for text in [serde_json::to_string_pretty(&value).unwrap(), serde_json::to_string(&value).unwrap()] {
                let data = Data::from_json(text).unwrap();
                let kept = data.text().unwrap();
                proptest::prop_assert!(!kept.contains('\n') && !kept.contains('\r'), "{kept}");
                proptest::prop_assert_eq!(kept, serde_json::to_string(&value).unwrap());
                proptest::prop_assert_eq!(&*data, &value);
            }
        }
    }

    #[test]
    fn data_shares_its_text_only_where_the_string_holds_it() {
        let text = r#"{"id":"1","name":"\u00e9"}"#;
        let json: Arc<str> = Arc::from(format!(r#"{{"data":{text},"x":1}}"#).as_str());
        let mut data = Data::from_json(text.to_owned()).unwrap();
        let mut elsewhere = data.clone();
        data.share(&json, 8);
        assert!(data.is_shared());
        assert_eq!(data.text(), Some(text));
        assert_eq!(data["name"], "é");
        assert_eq!(data.clone().into_value(), elsewhere.clone().into_value());
        // Not the same text there, or past the end: kept as it was.
        elsewhere.share(&json, 9);
        elsewhere.share(&json, json.len());
        assert!(!elsewhere.is_shared());
        assert_eq!(elsewhere.text(), Some(text));
        let mut tree = Data::from(serde_json::json!({"a": 1}));
        tree.share(&json, 8);
        assert!(!tree.is_shared());
    }
}
