//! Conditions: a route's `match:` compiled once at load into a tree that is cheap to evaluate.
//!
//! ```yaml
//! match:
//!   type: classroom.courses.students.created         # a scalar: equality
//!   data.primaryEmail: { regex: "@example\\.edu$" }   # one operator (several are ANDed)
//!   any: [ { meta.event: add }, { meta.event: delete } ]
//!   not: { subject: { prefix: users/9 } }
//! ```
//!
//! Comparisons are on the text of scalars: the YAML `12345` equals the JSON `"12345"` and the
//! JSON `12345`, because Google sends ids as strings while an operator may write them as numbers.
//! A missing field fails every operator except `ne`, `not_in` and `exists: false`.

use globset::{Glob, GlobMatcher};
use regex::Regex;

use super::field::{FieldPath, Found, json_text};
use crate::config::error::Diagnostics;
use crate::config::node::{Node, NodeKind, did_you_mean};
use crate::event::Event;

/// The operator names, for messages and suggestions.
pub const OPERATORS: &[&str] = &[
    "eq", "ne", "in", "not_in", "glob", "regex", "prefix", "suffix", "contains", "exists",
];

#[derive(Clone, Debug)]
pub enum Condition {
    /// Every condition holds (an empty list always holds).
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Field(FieldPath, Op),
}

#[derive(Clone, Debug)]
pub enum Op {
    /// `None` is YAML null, which equals JSON null.
    Eq(Option<String>),
    Ne(Option<String>),
    In(Vec<String>),
    NotIn(Vec<String>),
    Glob(GlobMatcher),
    Regex(Regex),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Exists(bool),
}

impl Condition {
    pub fn always() -> Condition {
        Condition::All(Vec::new())
    }

    /// Does `event` satisfy this condition?
    pub fn matches(&self, event: &Event) -> bool {
        match self {
            Condition::All(all) => all.iter().all(|c| c.matches(event)),
            Condition::Any(any) => any.iter().any(|c| c.matches(event)),
            Condition::Not(inner) => !inner.matches(event),
            Condition::Field(path, op) => op.holds(path.lookup(event)),
        }
    }

    /// Compiles a `match:` mapping, reporting every mistake in it to `diags`.
    pub fn compile(node: &Node, diags: &mut Diagnostics) -> Condition {
        let Some(entries) = node.entries() else {
            diags.error(
                node.loc,
                format!(
                    "`match` must be a mapping of field: condition, found {}",
                    node.describe()
                ),
            );
            return Condition::always();
        };
        let mut all = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            match key.name.as_str() {
                "any" => match &value.kind {
                    NodeKind::Seq(items) if !items.is_empty() => {
                        all.push(Condition::Any(
                            items
                                .iter()
                                .map(|item| Condition::compile(item, diags))
                                .collect(),
                        ));
                    }
                    _ => diags.error(
                        value.loc,
                        format!(
                            "`any` takes a non-empty list of conditions, found {}",
                            value.describe()
                        ),
                    ),
                },
                "not" => all.push(Condition::Not(Box::new(Condition::compile(value, diags)))),
                name => match FieldPath::parse(name) {
                    Ok(path) => {
                        for op in compile_ops(value, diags) {
                            all.push(Condition::Field(path.clone(), op));
                        }
                    }
                    Err(message) => diags.error(key.loc, message),
                },
            }
        }
        if all.len() == 1 {
            all.pop().unwrap_or_else(Condition::always)
        } else {
            Condition::All(all)
        }
    }

    /// The exact values `path` must take for this condition to hold, when the condition
    /// pins it down (`type: x`, `type: {in: [x, y]}`, possibly inside an `All`). The route
    /// table's index (`rules/index.rs`, docs/architecture.md §4) goes further: prefixes,
    /// suffixes, globs, `any`, on every field.
    pub fn required_values(&self, path: &FieldPath) -> Option<Vec<String>> {
        match self {
            Condition::Field(p, Op::Eq(Some(v))) if p == path => Some(vec![v.clone()]),
            Condition::Field(p, Op::In(values)) if p == path => Some(values.clone()),
            Condition::All(all) => all.iter().find_map(|c| c.required_values(path)),
            _ => None,
        }
    }
}

impl Op {
    fn holds(&self, found: Option<Found<'_>>) -> bool {
        let text = found.as_ref().and_then(Found::text);
        let text = text.as_deref();
        match self {
            Op::Eq(expected) => equals(&found, text, expected.as_deref()),
            Op::Ne(expected) => !equals(&found, text, expected.as_deref()),
            Op::In(values) => text.is_some_and(|t| values.iter().any(|v| v == t)),
            Op::NotIn(values) => !text.is_some_and(|t| values.iter().any(|v| v == t)),
            Op::Glob(glob) => text.is_some_and(|t| glob.is_match(t)),
            Op::Regex(regex) => text.is_some_and(|t| regex.is_match(t)),
            Op::Prefix(p) => text.is_some_and(|t| t.starts_with(p.as_str())),
            Op::Suffix(s) => text.is_some_and(|t| t.ends_with(s.as_str())),
            Op::Contains(needle) => match found.as_ref().and_then(Found::array) {
                Some(items) => items
                    .iter()
                    .any(|item| json_text(item).is_some_and(|t| t == needle.as_str())),
                None => text.is_some_and(|t| t.contains(needle.as_str())),
            },
            Op::Exists(expected) => found.is_some() == *expected,
        }
    }
}

fn equals(found: &Option<Found<'_>>, text: Option<&str>, expected: Option<&str>) -> bool {
    match expected {
        None => found.as_ref().is_some_and(Found::is_null),
        Some(expected) => text == Some(expected),
    }
}

/// The operators of one field: a scalar is `eq`; a mapping holds one or more operators.
fn compile_ops(node: &Node, diags: &mut Diagnostics) -> Vec<Op> {
    match &node.kind {
        NodeKind::Null => vec![Op::Eq(None)],
        NodeKind::Seq(_) => {
            diags.error(
                node.loc,
                "a list is not a condition; to match any of several values write `{ in: [a, b] }`",
            );
            Vec::new()
        }
        NodeKind::Map(entries) if entries.is_empty() => {
            diags.error(
                node.loc,
                format!(
                    "empty condition; expected one of the operators {}",
                    OPERATORS.join(", ")
                ),
            );
            Vec::new()
        }
        NodeKind::Map(entries) => entries
            .iter()
            .filter_map(|(key, value)| match compile_op(&key.name, value) {
                Ok(op) => Some(op),
                Err(message) => {
                    let loc = if OPERATORS.contains(&key.name.as_str()) {
                        value.loc
                    } else {
                        key.loc
                    };
                    diags.error(loc, message);
                    None
                }
            })
            .collect(),
        _ => vec![Op::Eq(node.scalar_text())],
    }
}

fn compile_op(name: &str, value: &Node) -> Result<Op, String> {
    let scalar = || {
        value
            .scalar_text()
            .ok_or_else(|| format!("`{name}` takes a single value, found {}", value.describe()))
    };
    let list = || match &value.kind {
        NodeKind::Seq(items) => items
            .iter()
            .map(|item| {
                item.scalar_text().ok_or_else(|| {
                    format!(
                        "`{name}` takes a list of values; one item is {}",
                        item.describe()
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>(),
        _ => Err(format!(
            "`{name}` takes a list of values (`[a, b]`), found {}",
            value.describe()
        )),
    };
    Ok(match name {
        "eq" => Op::Eq(optional_scalar(name, value)?),
        "ne" => Op::Ne(optional_scalar(name, value)?),
        "in" => Op::In(list()?),
        "not_in" => Op::NotIn(list()?),
        "glob" => {
            let pattern = scalar()?;
            let glob =
                Glob::new(&pattern).map_err(|e| format!("bad glob `{pattern}`: {}", e.kind()))?;
            Op::Glob(glob.compile_matcher())
        }
        "regex" => {
            let pattern = scalar()?;
            let regex = Regex::new(&pattern)
                .map_err(|e| format!("bad regex `{pattern}`: {}", regex_reason(&e)))?;
            Op::Regex(regex)
        }
        "prefix" => Op::Prefix(scalar()?),
        "suffix" => Op::Suffix(scalar()?),
        "contains" => Op::Contains(scalar()?),
        "exists" => match value.kind {
            NodeKind::Bool(b) => Op::Exists(b),
            _ => {
                return Err(format!(
                    "`exists` takes true or false, found {}",
                    value.describe()
                ));
            }
        },
        other => {
            let hint = did_you_mean(other, OPERATORS.iter().copied())
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_else(|| format!("; expected one of {}", OPERATORS.join(", ")));
            return Err(format!("unknown operator `{other}`{hint}"));
        }
    })
}

fn optional_scalar(name: &str, value: &Node) -> Result<Option<String>, String> {
    match value.kind {
        NodeKind::Null => Ok(None),
        NodeKind::Seq(_) | NodeKind::Map(_) => Err(format!(
            "`{name}` takes a single value, found {}",
            value.describe()
        )),
        _ => Ok(value.scalar_text()),
    }
}

/// The last line of the regex crate's multi-line error, which says what is wrong.
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(&text)
        .trim()
        .trim_start_matches("error: ")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;

    fn event() -> Event {
        let mut e = Event::new(
            "m-1",
            "directory",
            "directory.users.makeAdmin",
            Utc::now(),
            json!({"primaryEmail": "ada@example.edu", "id": "1112", "aliases": ["a@x", "b@x"],
                   "suspended": false, "orgUnit": null, "quota": 15}),
        )
        .with_subject("users/1112");
        e.meta.insert("event".into(), "makeAdmin".into());
        e
    }

    fn compile(yaml: &str) -> Result<Condition, Vec<String>> {
        let node: Node = serde_saphyr::from_str(yaml).unwrap();
        let mut diags = Diagnostics::default();
        let cond = Condition::compile(&node, &mut diags);
        if diags.is_empty() {
            Ok(cond)
        } else {
            Err(diags
                .into_errors()
                .into_iter()
                .map(|e| format!("{}: {}", e.loc, e.message))
                .collect())
        }
    }

    fn check(yaml: &str) -> bool {
        compile(yaml).expect("condition compiles").matches(&event())
    }

    #[test]
    fn scalar_is_equality() {
        assert!(check("type: directory.users.makeAdmin"));
        assert!(!check("type: directory.users.add"));
        assert!(check("data.id: 1112"), "a YAML number equals a JSON string");
        assert!(check("data.quota: 15"));
        assert!(check("data.suspended: false"));
        assert!(check("data.orgUnit: ~"), "null equals null");
        assert!(!check("data.missing: ~"), "absent is not null");
    }

    #[test]
    fn eq_and_ne() {
        assert!(check("source: { eq: directory }"));
        assert!(!check("source: { eq: classroom }"));
        assert!(check("source: { ne: classroom }"));
        assert!(!check("source: { ne: directory }"));
        assert!(
            check("data.missing: { ne: x }"),
            "a missing field is not equal to x"
        );
    }

    #[test]
    fn in_and_not_in() {
        assert!(check(
            "type: { in: [directory.users.makeAdmin, directory.users.delete] }"
        ));
        assert!(!check("type: { in: [directory.users.add] }"));
        assert!(check("type: { not_in: [directory.users.add] }"));
        assert!(!check("type: { not_in: [directory.users.makeAdmin] }"));
        assert!(check("data.missing: { not_in: [x] }"));
        assert!(!check("data.missing: { in: [x] }"));
    }

    #[test]
    fn glob_regex_prefix_suffix() {
        assert!(check("type: { glob: 'directory.users.*' }"));
        assert!(!check("type: { glob: 'classroom.*' }"));
        assert!(check("data.primaryEmail: { regex: '@example\\.edu$' }"));
        assert!(!check("data.primaryEmail: { regex: '^bob@' }"));
        assert!(check("subject: { prefix: users/ }"));
        assert!(!check("subject: { prefix: courses/ }"));
        assert!(check("data.primaryEmail: { suffix: .edu }"));
        assert!(!check("data.primaryEmail: { suffix: .com }"));
    }

    #[test]
    fn contains_on_text_and_arrays() {
        assert!(check("data.primaryEmail: { contains: '@example' }"));
        assert!(check("data.aliases: { contains: b@x }"));
        assert!(
            !check("data.aliases: { contains: b@ }"),
            "array elements match whole"
        );
        assert!(!check("data.missing: { contains: x }"));
    }

    #[test]
    fn exists() {
        assert!(check("data.primaryEmail: { exists: true }"));
        assert!(check("data.orgUnit: { exists: true }"), "null is present");
        assert!(check("data.missing: { exists: false }"));
        assert!(!check("meta.nope: { exists: true }"));
        assert!(check("subject: { exists: true }"));
    }

    #[test]
    fn keys_are_anded_and_any_not_combine() {
        assert!(check("type: directory.users.makeAdmin\nsource: directory"));
        assert!(!check("type: directory.users.makeAdmin\nsource: classroom"));
        assert!(check(
            "any: [ {source: classroom}, {meta.event: makeAdmin} ]"
        ));
        assert!(!check("any: [ {source: classroom}, {meta.event: add} ]"));
        assert!(check("not: { source: classroom }"));
        assert!(!check("not: { source: directory }"));
        assert!(
            check("data.primaryEmail: { prefix: ada, suffix: .edu }"),
            "operators in one mapping are ANDed"
        );
        assert!(!check("data.primaryEmail: { prefix: ada, suffix: .com }"));
    }

    #[test]
    fn every_mistake_is_reported_with_its_place() {
        let errors = compile(
            "tpye: x\ndata.a: { regx: y }\ndata.b: { regex: '(' }\ndata.c: [a, b]\nany: x\ndata.d: { glob: '[' }\ndata.e: { exists: maybe }\n",
        )
        .unwrap_err();
        assert_eq!(errors.len(), 7, "{errors:#?}");
        assert!(
            errors[0].starts_with("1:1: unknown field `tpye`"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].starts_with("2:11: unknown operator `regx`; did you mean `regex`?"),
            "{}",
            errors[1]
        );
        assert!(
            errors[2].starts_with("3:18: bad regex `(`"),
            "{}",
            errors[2]
        );
        assert!(
            errors[3].starts_with("4:9: a list is not a condition"),
            "{}",
            errors[3]
        );
        assert!(
            errors[4].starts_with("5:6: `any` takes a non-empty list"),
            "{}",
            errors[4]
        );
        assert!(errors[5].starts_with("6:17: bad glob `[`"), "{}", errors[5]);
        assert!(
            errors[6].starts_with("7:19: `exists` takes true or false"),
            "{}",
            errors[6]
        );
    }

    #[test]
    fn required_values_are_found_for_indexing() {
        let cond = compile("type: { in: [a, b] }\nsource: s").unwrap();
        assert_eq!(
            cond.required_values(&FieldPath::Type),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            cond.required_values(&FieldPath::Source),
            Some(vec!["s".into()])
        );
        let loose = compile("any: [ {type: a}, {type: b} ]").unwrap();
        assert_eq!(loose.required_values(&FieldPath::Type), None);
    }
}
