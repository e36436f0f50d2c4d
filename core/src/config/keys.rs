//! What every sink type's `validate` does with its keys, written once: read the mapping into
//! the sink's typed config, find where a key stands, check a value, and report a mistake as
//! ``sink `<name>`: `<key>` <what is wrong>`` at that key's line:column. Mistakes are
//! collected, so one never hides another; [`SinkKeys::finish`] hands them back.
//!
//! No message here quotes a value: a URL, a password or a token may be one. A sink that
//! quotes a value in its own message (`mode `avro` is not …`) does so only for keys that are
//! never secret.

use std::fmt::Display;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::error::ConfigError;
use super::node::{Loc, Node, NodeKind};
use super::registry::SinkInput;
use super::units;

/// A sink's keys while its `validate` reads them, and the mistakes found so far.
pub struct SinkKeys<'a> {
    name: &'a str,
    node: &'a Node,
    base_dir: &'a Path,
    errors: Vec<ConfigError>,
}

impl<'a> SinkKeys<'a> {
    pub fn new(input: &SinkInput<'a>) -> SinkKeys<'a> {
        SinkKeys {
            name: input.name,
            node: input.node,
            base_dir: input.base_dir,
            errors: Vec::new(),
        }
    }

    /// The sink's name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The sink's mapping (without `type` and `delivery`).
    pub fn node(&self) -> &'a Node {
        self.node
    }

    /// The config file's directory, which relative paths are resolved against.
    pub fn base_dir(&self) -> &'a Path {
        self.base_dir
    }

    /// The whole mapping as the sink's typed config (`#[serde(deny_unknown_fields)]`): a
    /// missing key, an unknown one or a value of the wrong type ends the validation, with
    /// serde's message at the innermost place that was wrong.
    pub fn typed<T: DeserializeOwned>(&self) -> Result<T, Vec<ConfigError>> {
        self.node.deserialize().map_err(|e| {
            vec![ConfigError::from_de(
                &format!("sink `{}`", self.name),
                e,
                self.node.loc,
            )]
        })
    }

    /// Where `key`'s value stands; a dotted path (`create_topic.partitions`) goes into
    /// mappings as far as it can. The sink's own place when the key is absent.
    pub fn loc(&self, key: &str) -> Loc {
        if let Some(value) = self.node.get(key) {
            return value.loc;
        }
        let mut at = self.node;
        for part in key.split('.') {
            match at.get(part) {
                Some(inner) => at = inner,
                None => break,
            }
        }
        at.loc
    }

    /// A mistake about `key`: ``sink `<name>`: `<key>` <problem>`` (`is empty`, `must be at
    /// least 1`).
    pub fn invalid(&mut self, key: &str, problem: impl Display) {
        let loc = self.loc(key);
        self.error_at(loc, format!("`{key}` {problem}"));
    }

    /// A mistake found at `key` whose message says itself what it is about:
    /// ``sink `<name>`: <message>``.
    pub fn error(&mut self, key: &str, message: impl Display) {
        let loc = self.loc(key);
        self.error_at(loc, message);
    }

    /// A mistake at `loc` (an entry of a list or a mapping): ``sink `<name>`: <message>``.
    pub fn error_at(&mut self, loc: Loc, message: impl Display) {
        self.errors.push(ConfigError::new(
            loc,
            format!("sink `{}`: {message}", self.name),
        ));
    }

    /// A mistake that ends the validation (what comes next needs this key right): every
    /// mistake found so far and this one, `?`-ready: `load(p).map_err(|e| keys.fail("library", e))?`.
    pub fn fail(&mut self, key: &str, message: impl Display) -> Vec<ConfigError> {
        self.error(key, message);
        std::mem::take(&mut self.errors)
    }

    /// Whether any mistake was found so far.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// `Ok` when no mistake was found, else every one of them.
    pub fn finish(self) -> Result<(), Vec<ConfigError>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }

    /// `key`'s text, if it is there (a number or a boolean is read as written). Anything but a
    /// scalar is a mistake.
    pub fn string(&mut self, key: &str) -> Option<String> {
        let value = self.node.get(key)?;
        if matches!(value.kind, NodeKind::Null) {
            return None;
        }
        let text = value.scalar_text();
        if text.is_none() {
            self.invalid(key, format_args!("must be text, not {}", value.describe()));
        }
        text
    }

    /// `key`'s text; absent or empty is a mistake, with `hint` saying what to write.
    pub fn required_string(&mut self, key: &str, hint: &str) -> Option<String> {
        if self.node.get(key).is_none() {
            self.invalid(key, format_args!("is required; {hint}"));
            return None;
        }
        let text = self.string(key)?;
        if text.trim().is_empty() {
            self.invalid(key, format_args!("is empty; {hint}"));
            return None;
        }
        Some(text)
    }

    /// `key`'s value as a URL, parsed by `parse` (`reqwest::Url::parse`); the mistake says
    /// why it is not one without quoting it (a URL may hold a secret).
    pub fn url<U, E: Display>(
        &mut self,
        key: &str,
        text: &str,
        parse: impl FnOnce(&str) -> Result<U, E>,
    ) -> Option<U> {
        match parse(text) {
            Ok(url) => Some(url),
            Err(e) => {
                self.invalid(key, format_args!("is not a URL ({e})"));
                None
            }
        }
    }

    /// `key`'s value as a duration (`500ms`, `10s`, `15m`), if it is there.
    pub fn duration(&mut self, key: &str) -> Option<Duration> {
        let text = self.string(key)?;
        match units::parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(key, format_args!("`{key}`: {e}"));
                None
            }
        }
    }

    /// `value` (read from `key`), or a mistake when it is below `min`.
    pub fn at_least<N: PartialOrd + Display + Copy>(&mut self, key: &str, value: N, min: N) -> N {
        if value < min {
            self.invalid(key, format_args!("must be at least {min}"));
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn node(yaml: &str) -> Node {
        serde_saphyr::from_str(yaml).expect("test YAML")
    }

    fn keys<'a>(node: &'a Node) -> SinkKeys<'a> {
        SinkKeys::new(&SinkInput {
            name: "bus",
            node,
            base_dir: Path::new("/etc/herald"),
        })
    }

    fn messages(keys: SinkKeys<'_>) -> Vec<String> {
        keys.finish()
            .unwrap_err()
            .iter()
            .map(|e| format!("{}: {}", e.loc, e.message))
            .collect()
    }

    #[test]
    fn each_mistake_names_the_sink_and_the_key_where_it_stands() {
        let n = node(
            "url: \"https://hooks.example/T0/secret\"\nwindow: soon\nlist: [1]\nmax: 0\nnested: { partitions: 0 }\n",
        );
        let mut k = keys(&n);
        assert_eq!(k.name(), "bus");
        assert_eq!(k.base_dir(), Path::new("/etc/herald"));
        assert_eq!(k.string("missing"), None);
        assert_eq!(k.required_string("gone", "give one"), None);
        assert_eq!(k.string("list"), None);
        assert_eq!(k.duration("window"), None);
        assert_eq!(k.at_least("max", 0, 1), 0);
        k.invalid("nested.partitions", "must be at least 1");
        let parsed: Option<u8> = k.url("url", "https://hooks.example/T0/secret", |_| {
            Err::<u8, _>("invalid port number")
        });
        assert_eq!(parsed, None);
        assert!(k.has_errors());
        let all = messages(k);
        assert_eq!(
            all,
            [
                "1:1: sink `bus`: `gone` is required; give one",
                "3:7: sink `bus`: `list` must be text, not a list",
                "2:9: sink `bus`: `window`: `soon` is not a duration; write e.g. `500ms`, `10s`, `15m`, `24h`, `7d`",
                "4:6: sink `bus`: `max` must be at least 1",
                "5:23: sink `bus`: `nested.partitions` must be at least 1",
                "1:6: sink `bus`: `url` is not a URL (invalid port number)",
            ]
        );
        assert!(all.iter().all(|m| !m.contains("secret")), "{all:?}");
    }

    #[test]
    fn values_are_read_and_no_mistake_is_ok() {
        let n = node("path: out.jsonl\nwindow: 15m\ncount: 3\nempty: \"\"\n");
        let mut k = keys(&n);
        assert_eq!(k.required_string("path", "x").as_deref(), Some("out.jsonl"));
        assert_eq!(k.duration("window"), Some(Duration::from_secs(900)));
        assert_eq!(k.string("count").as_deref(), Some("3"));
        assert_eq!(k.at_least("count", 3, 1), 3);
        assert_eq!(k.loc("absent"), n.loc);
        assert!(k.finish().is_ok());
        let mut k = keys(&n);
        assert_eq!(k.required_string("empty", "give a path"), None);
        assert_eq!(
            messages(k),
            ["4:8: sink `bus`: `empty` is empty; give a path"]
        );
    }

    #[test]
    fn the_typed_config_names_the_sink() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct C {
            path: String,
        }
        let n = node("path: a\nfsink: true\n");
        let e = keys(&n).typed::<C>().unwrap_err();
        assert!(e[0].message.starts_with("sink `bus`: "), "{e:?}");
    }
}
