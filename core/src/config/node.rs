//! A YAML document as a tree of nodes that remember where they stood in the file.
//!
//! serde stops at the first error of a document. To report *every* config mistake with its
//! line and column, the file is parsed once (by serde-saphyr) into this tree, and each part
//! (a sink, a source, a route) is then deserialized from its own node: a mistake in one part
//! does not hide the mistakes in the others, and every serde error is pinned to the node it
//! came from.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

/// A 1-based line and column in the config file (0:0 when unknown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Loc {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One node of the YAML tree, with its location.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub loc: Loc,
    pub kind: NodeKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys keep their own location (an unknown key is reported where the key is).
    Map(Vec<(Key, Node)>),
}

/// A mapping key, always held as text.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub loc: Loc,
}

impl Node {
    pub fn new(loc: Loc, kind: NodeKind) -> Self {
        Node { loc, kind }
    }

    /// The entry `key` of a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    /// The key and value `key` of a mapping node.
    pub fn get_entry(&self, key: &str) -> Option<(&Key, &Node)> {
        self.entries()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(k, v)| (k, v))
    }

    pub fn entries(&self) -> Option<&[(Key, Node)]> {
        match &self.kind {
            NodeKind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The text of a scalar (numbers and booleans as YAML wrote them), `None` for null,
    /// sequences and mappings.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.kind {
            NodeKind::Bool(b) => Some(b.to_string()),
            NodeKind::Int(i) => Some(i.to_string()),
            NodeKind::Float(f) => Some(f.to_string()),
            NodeKind::Str(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// A copy of this mapping without the entry `key` (used to drop `type:` before a typed
    /// sink or source config is deserialized with `deny_unknown_fields`).
    pub fn without(&self, key: &str) -> Node {
        match &self.kind {
            NodeKind::Map(entries) => Node::new(
                self.loc,
                NodeKind::Map(
                    entries
                        .iter()
                        .filter(|(k, _)| k.name != key)
                        .cloned()
                        .collect(),
                ),
            ),
            _ => self.clone(),
        }
    }

    /// The value without its locations, as text: two nodes with equal fingerprints hold the
    /// same config, wherever they stand in their files.
    pub fn fingerprint(&self) -> String {
        let mut out = String::new();
        self.write_fingerprint(&mut out);
        out
    }

    fn write_fingerprint(&self, out: &mut String) {
        use std::fmt::Write;
        match &self.kind {
            NodeKind::Null => out.push('~'),
            NodeKind::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            NodeKind::Int(i) => {
                let _ = write!(out, "{i}");
            }
            NodeKind::Float(f) => {
                let _ = write!(out, "{f:?}");
            }
            NodeKind::Str(s) => {
                let _ = write!(out, "{s:?}");
            }
            NodeKind::Seq(items) => {
                out.push('[');
                for item in items {
                    item.write_fingerprint(out);
                    out.push(',');
                }
                out.push(']');
            }
            NodeKind::Map(entries) => {
                out.push('{');
                for (k, v) in entries {
                    let _ = write!(out, "{:?}:", k.name);
                    v.write_fingerprint(out);
                    out.push(',');
                }
                out.push('}');
            }
        }
    }

    /// What kind of YAML value this is, for messages ("expected a mapping, found a string").
    pub fn describe(&self) -> &'static str {
        match self.kind {
            NodeKind::Null => "nothing (null)",
            NodeKind::Bool(_) => "a boolean",
            NodeKind::Int(_) => "an integer",
            NodeKind::Float(_) => "a number",
            NodeKind::Str(_) => "a string",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// Deserializes a typed value from this node; the error carries the location of the
    /// innermost node that was wrong.
    pub fn deserialize<T: de::DeserializeOwned>(&self) -> Result<T, DeError> {
        T::deserialize(self).map_err(|e| e.at(self.loc))
    }
}

// ---------------------------------------------------------------------------------------
// Building the tree with serde-saphyr.

fn loc_of<T>(s: &Spanned<T>) -> Loc {
    Loc {
        line: s.referenced.line() as u32,
        col: s.referenced.column() as u32,
    }
}

/// The node kind alone; `Spanned<KindOnly>` adds the location.
struct KindOnly(NodeKind);

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<KindOnly>::deserialize(d)?;
        let loc = loc_of(&spanned);
        Ok(Node::new(loc, spanned.value.0))
    }
}

impl<'de> Deserialize<'de> for KindOnly {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KindVisitor).map(KindOnly)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = NodeKind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<NodeKind, E> {
        Ok(NodeKind::Null)
    }
    fn visit_none<E>(self) -> Result<NodeKind, E> {
        Ok(NodeKind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NodeKind, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E>(self, v: bool) -> Result<NodeKind, E> {
        Ok(NodeKind::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<NodeKind, E> {
        Ok(NodeKind::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<NodeKind, E> {
        Ok(i64::try_from(v).map_or(NodeKind::Float(v as f64), NodeKind::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<NodeKind, E> {
        Ok(NodeKind::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<NodeKind, E> {
        Ok(NodeKind::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<NodeKind, E> {
        Ok(NodeKind::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeKind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(NodeKind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeKind, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let loc = loc_of(&key);
            let value = map.next_value::<Node>()?;
            entries.push((
                Key {
                    name: key.value.0,
                    loc,
                },
                value,
            ));
        }
        Ok(NodeKind::Map(entries))
    }
}

/// A mapping key of any scalar type, as text.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(KindVisitor)? {
            NodeKind::Str(s) => Ok(KeyText(s)),
            NodeKind::Int(i) => Ok(KeyText(i.to_string())),
            NodeKind::Float(f) => Ok(KeyText(f.to_string())),
            NodeKind::Bool(b) => Ok(KeyText(b.to_string())),
            NodeKind::Null => Ok(KeyText("null".into())),
            _ => Err(de::Error::custom("a mapping key must be a scalar")),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Deserializing typed config from the tree.

/// An error from deserializing a node, pinned to a location when one is known.
#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    pub message: String,
    pub loc: Option<Loc>,
}

impl DeError {
    /// Pins the error to `loc` unless a more precise location is already known.
    pub fn at(mut self, loc: Loc) -> Self {
        self.loc.get_or_insert(loc);
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            loc: None,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::custom(unknown_key_message(field, expected))
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::custom(format!("missing required field `{field}`"))
    }
}

/// "unknown key `tpoic`; did you mean `topic`?" or the list of expected keys.
pub fn unknown_key_message(field: &str, expected: &[&str]) -> String {
    match did_you_mean(field, expected.iter().copied()) {
        Some(best) => format!("unknown key `{field}`; did you mean `{best}`?"),
        None if expected.is_empty() => format!("unknown key `{field}`; no keys are expected here"),
        None => format!(
            "unknown key `{field}`; expected one of {}",
            expected
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The closest candidate to `word`, if any is close enough to be a likely typo: at most one
/// edit away (a swapped pair of letters counts as one), or a third of the word for long words.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::osa_distance(word, c), c))
        .filter(|(distance, c)| {
            *distance > 0 && (*distance <= 1 || distance * 3 <= word.len().max(c.len()))
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

impl<'de> Deserializer<'de> for &'de Node {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.kind {
            NodeKind::Null => visitor.visit_unit(),
            NodeKind::Bool(b) => visitor.visit_bool(*b),
            NodeKind::Int(i) => visitor.visit_i64(*i),
            NodeKind::Float(f) => visitor.visit_f64(*f),
            NodeKind::Str(s) => visitor.visit_str(s),
            NodeKind::Seq(items) => visitor.visit_seq(SeqNodes { iter: items.iter() }),
            NodeKind::Map(entries) => visitor.visit_map(MapNodes {
                iter: entries.iter(),
                value: None,
            }),
        };
        result.map_err(|e| e.at(self.loc))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.kind {
            NodeKind::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    /// Scalars are accepted where text is expected: `course_id: 123` is the string "123".
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.kind {
            NodeKind::Str(s) => visitor.visit_str(s),
            NodeKind::Bool(_) | NodeKind::Int(_) | NodeKind::Float(_) => {
                let text = self.scalar_text().unwrap_or_default();
                visitor.visit_string(text)
            }
            _ => self.deserialize_any(visitor),
        }
        .map_err(|e| e.at(self.loc))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.kind {
            NodeKind::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            NodeKind::Map(entries) if entries.len() == 1 => visitor.visit_enum(EnumNode {
                key: &entries[0].0,
                value: &entries[0].1,
            }),
            _ => Err(de::Error::custom(format!(
                "expected a name or a one-key mapping, found {}",
                self.describe()
            ))),
        }
        .map_err(|e| e.at(self.loc))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

struct SeqNodes<'a> {
    iter: std::slice::Iter<'a, Node>,
}

impl<'de> SeqAccess<'de> for SeqNodes<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.iter.next() {
            Some(node) => seed.deserialize(node).map(Some).map_err(|e| e.at(node.loc)),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct MapNodes<'a> {
    iter: std::slice::Iter<'a, (Key, Node)>,
    value: Option<&'a Node>,
}

impl<'de> MapAccess<'de> for MapNodes<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.iter.next() {
            Some((key, value)) => {
                self.value = Some(value);
                let de: de::value::StrDeserializer<'_, DeError> =
                    key.name.as_str().into_deserializer();
                seed.deserialize(de).map(Some).map_err(|e| e.at(key.loc))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let node = self
            .value
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("value requested before its key"))?;
        seed.deserialize(node).map_err(|e| e.at(node.loc))
    }
}

struct EnumNode<'a> {
    key: &'a Key,
    value: &'a Node,
}

impl<'de> de::EnumAccess<'de> for EnumNode<'de> {
    type Error = DeError;
    type Variant = &'de Node;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, &'de Node), DeError> {
        let de: de::value::StrDeserializer<'_, DeError> =
            self.key.name.as_str().into_deserializer();
        let variant = seed.deserialize(de).map_err(|e| e.at(self.key.loc))?;
        Ok((variant, self.value))
    }
}

impl<'de> de::VariantAccess<'de> for &'de Node {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.kind {
            NodeKind::Null => Ok(()),
            _ => Err(de::Error::custom("this variant takes no value")),
        }
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Node {
        serde_saphyr::from_str::<Node>(yaml).expect("valid yaml")
    }

    #[test]
    fn nodes_remember_line_and_column() {
        let node = parse("a: 1\nb:\n  c: [x, y]\n");
        let b = node.get("b").unwrap();
        let (key, c) = b.get_entry("c").unwrap();
        assert_eq!(key.loc, Loc { line: 3, col: 3 });
        assert_eq!(c.loc.line, 3);
        match &c.kind {
            NodeKind::Seq(items) => assert_eq!(items[1].loc, Loc { line: 3, col: 10 }),
            other => panic!("expected a list, got {other:?}"),
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        topic: String,
        count: Option<u32>,
    }

    #[test]
    fn unknown_key_is_located_at_the_key_with_a_suggestion() {
        let node = parse("topic: t\ntpoic: x\n");
        let err = node.deserialize::<Sample>().unwrap_err();
        assert_eq!(err.loc, Some(Loc { line: 2, col: 1 }));
        assert_eq!(err.message, "unknown key `tpoic`; did you mean `topic`?");
    }

    #[test]
    fn wrong_type_is_located_at_the_value() {
        let node = parse("topic: t\ncount: many\n");
        let err = node.deserialize::<Sample>().unwrap_err();
        assert_eq!(err.loc, Some(Loc { line: 2, col: 8 }));
        assert!(err.message.contains("expected u32"), "{}", err.message);
    }

    #[test]
    fn missing_field_is_located_at_the_mapping() {
        let node = parse("x:\n  count: 3\n");
        let err = node.get("x").unwrap().deserialize::<Sample>().unwrap_err();
        assert_eq!(err.loc, Some(Loc { line: 2, col: 3 }));
        assert_eq!(err.message, "missing required field `topic`");
    }

    #[test]
    fn fingerprints_ignore_layout_but_not_values() {
        let a = parse("x: { url: \"http://a\", n: 1 }\n");
        let b = parse("x:\n  url: http://a\n  n: 1\n");
        let c = parse("x: { url: \"http://b\", n: 1 }\n");
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn numbers_are_accepted_as_text() {
        let node = parse("topic: 123\n");
        assert_eq!(node.deserialize::<Sample>().unwrap().topic, "123");
    }
}
