//! The route index: which routes an event could possibly match, found without trying them all
//! (docs/architecture.md §4, "How matching is indexed").
//!
//! At load every route's condition yields *keys*, facts about one field that the condition
//! cannot hold without: the field's text equals a value (`eq`, `in`, a scalar), starts with a
//! prefix (`prefix`, the literal start of a `glob`) or ends with a suffix (`suffix`). A route is
//! filed under a set of keys at least one of which every event it matches satisfies; a route
//! with no such set (`ne`, `regex`, `not`, a catch-all, an `any` with an unindexable branch)
//! is tried for every event. Matching then looks up the event's own values, and the routes
//! found are tried in file order, fully, exactly as the linear walk would: the index only
//! leaves out routes whose condition cannot hold.

use std::collections::HashMap;

use globset::Glob;

use super::condition::{Condition, Op};
use super::field::FieldPath;
use crate::event::Event;

/// What a field's text must be for a condition to hold.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Need {
    Eq(String),
    Prefix(String),
    Suffix(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    path: FieldPath,
    need: Need,
}

/// The routes that need something of one field.
#[derive(Clone, Debug)]
struct FieldIndex {
    path: FieldPath,
    eq: HashMap<String, Vec<usize>>,
    prefix: Affixes,
    suffix: Affixes,
}

/// Prefixes (or suffixes) and the routes that need each; `lengths` are the distinct byte
/// lengths, ascending, so a lookup tries one slice of the event's text per length.
#[derive(Clone, Debug, Default)]
struct Affixes {
    routes: HashMap<String, Vec<usize>>,
    lengths: Vec<usize>,
}

impl Affixes {
    fn add(&mut self, text: String, route: usize) {
        if let Err(at) = self.lengths.binary_search(&text.len()) {
            self.lengths.insert(at, text.len());
        }
        push_route(self.routes.entry(text).or_default(), route);
    }

    /// The routes filed under every prefix (`head`) or suffix of `text`.
    fn find(&self, text: &str, head: bool, out: &mut Vec<usize>) {
        for &len in &self.lengths {
            if len > text.len() {
                break;
            }
            // A slice that splits a character matches no key (keys are whole strings).
            let part = if head {
                text.get(..len)
            } else {
                text.get(text.len() - len..)
            };
            if let Some(routes) = part.and_then(|part| self.routes.get(part)) {
                out.extend_from_slice(routes);
            }
        }
    }
}

/// Routes are added in file order, so a bucket stays sorted; a route may need the same key
/// twice (`in: [a, a]`).
fn push_route(bucket: &mut Vec<usize>, route: usize) {
    if bucket.last() != Some(&route) {
        bucket.push(route);
    }
}

/// The index of a route table.
#[derive(Clone, Debug, Default)]
pub(super) struct RouteIndex {
    fields: Vec<FieldIndex>,
    /// Routes with no indexable requirement, tried for every event.
    always: Vec<usize>,
}

impl RouteIndex {
    pub(super) fn new<'c>(conditions: impl Iterator<Item = &'c Condition> + Clone) -> Self {
        // How many routes name each key: a route filed under a rare key (a school's domain)
        // rather than a common one (the `type` every school's route shares) is a candidate
        // for few events. Only the choice depends on this, never the answer.
        let mut counts: HashMap<Key, usize> = HashMap::new();
        for condition in conditions.clone() {
            count_keys(condition, &mut counts);
        }
        let cost = |key: &Key| {
            let named = counts.get(key).copied().unwrap_or(1);
            // Equal counts: an exact value before a prefix or suffix, which more values share.
            named * 2 + usize::from(!matches!(key.need, Need::Eq(_)))
        };

        let mut index = RouteIndex::default();
        for (route, condition) in conditions.enumerate() {
            match best_keys(condition, &cost) {
                Some((keys, _)) => {
                    for key in keys {
                        index.file(key, route);
                    }
                }
                None => index.always.push(route),
            }
        }
        index
    }

    fn file(&mut self, key: Key, route: usize) {
        let at = match self.fields.iter().position(|f| f.path == key.path) {
            Some(at) => at,
            None => {
                self.fields.push(FieldIndex {
                    path: key.path,
                    eq: HashMap::new(),
                    prefix: Affixes::default(),
                    suffix: Affixes::default(),
                });
                self.fields.len() - 1
            }
        };
        let field = &mut self.fields[at];
        match key.need {
            Need::Eq(value) => push_route(field.eq.entry(value).or_default(), route),
            Need::Prefix(prefix) => field.prefix.add(prefix, route),
            Need::Suffix(suffix) => field.suffix.add(suffix, route),
        }
    }

    /// The routes `event` could match, ascending (file order), each once. Every route whose
    /// condition holds for `event` is among them.
    pub(super) fn candidates(&self, event: &Event) -> Vec<usize> {
        let mut out = self.always.clone();
        for field in &self.fields {
            let Some(found) = field.path.lookup(event) else {
                continue;
            };
            // The same text the operators compare (`Op::holds`); a field without text (absent,
            // null, an array or object) satisfies no key.
            let Some(text) = found.text() else {
                continue;
            };
            if let Some(routes) = field.eq.get(text.as_ref()) {
                out.extend_from_slice(routes);
            }
            field.prefix.find(&text, true, &mut out);
            field.suffix.find(&text, false, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// How many routes are tried for every event (for tests and diagnostics).
    pub(super) fn always_tried(&self) -> usize {
        self.always.len()
    }
}

/// The keys one leaf requires, any one of which holds whenever the leaf holds; `None` when the
/// leaf cannot be indexed. `Some(vec![])` is a leaf that never holds (`in: []`).
fn leaf_keys(path: &FieldPath, op: &Op) -> Option<Vec<Key>> {
    let key = |need| Key {
        path: path.clone(),
        need,
    };
    match op {
        Op::Eq(Some(value)) => Some(vec![key(Need::Eq(value.clone()))]),
        Op::In(values) => Some(values.iter().map(|v| key(Need::Eq(v.clone()))).collect()),
        // An empty prefix or suffix holds for every text: nothing to look up.
        Op::Prefix(prefix) if !prefix.is_empty() => Some(vec![key(Need::Prefix(prefix.clone()))]),
        Op::Suffix(suffix) if !suffix.is_empty() => Some(vec![key(Need::Suffix(suffix.clone()))]),
        Op::Glob(matcher) => {
            let glob = matcher.glob();
            // Only a glob with the default options (case-sensitive, as `compile_op` builds
            // them) is sure to start with its literal characters.
            if Glob::new(glob.glob()).ok().as_ref() != Some(glob) {
                return None;
            }
            let prefix = glob_literal_prefix(glob.glob());
            (!prefix.is_empty()).then(|| vec![key(Need::Prefix(prefix.to_owned()))])
        }
        _ => None,
    }
}

/// The characters a glob starts with before its first special one: every text the glob
/// matches starts with them.
fn glob_literal_prefix(pattern: &str) -> &str {
    let end = pattern
        .find(['*', '?', '[', ']', '{', '}', ',', '\\'])
        .unwrap_or(pattern.len());
    &pattern[..end]
}

/// The cheapest set of keys `condition` requires (one of them holds whenever the condition
/// does), with its cost; `None` when it requires none that can be looked up.
fn best_keys(condition: &Condition, cost: &impl Fn(&Key) -> usize) -> Option<(Vec<Key>, usize)> {
    match condition {
        Condition::Field(path, op) => {
            let keys = leaf_keys(path, op)?;
            let total = keys.iter().map(cost).sum();
            Some((keys, total))
        }
        // Each part is required, so any one part's keys will do.
        Condition::All(all) => all
            .iter()
            .filter_map(|c| best_keys(c, cost))
            .min_by_key(|(_, total)| *total),
        // One of the branches holds, so the route needs one key of one branch; every branch
        // must have keys. (An empty `any` never holds: no keys, never a candidate.)
        Condition::Any(any) => {
            let mut keys = Vec::new();
            let mut total = 0;
            for branch in any {
                let (more, cost) = best_keys(branch, cost)?;
                keys.extend(more);
                total += cost;
            }
            Some((keys, total))
        }
        Condition::Not(_) => None,
    }
}

fn count_keys(condition: &Condition, counts: &mut HashMap<Key, usize>) {
    match condition {
        Condition::Field(path, op) => {
            for key in leaf_keys(path, op).unwrap_or_default() {
                *counts.entry(key).or_default() += 1;
            }
        }
        Condition::All(parts) | Condition::Any(parts) => {
            for part in parts {
                count_keys(part, counts);
            }
        }
        Condition::Not(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_prefixes_stop_at_the_first_special_character() {
        assert_eq!(glob_literal_prefix("directory.users.*"), "directory.users.");
        assert_eq!(glob_literal_prefix("a?c"), "a");
        assert_eq!(glob_literal_prefix("[ab]x"), "");
        assert_eq!(glob_literal_prefix("x{a,b}"), "x");
        assert_eq!(glob_literal_prefix("a\\*b"), "a");
        assert_eq!(glob_literal_prefix("plain"), "plain");
    }

    #[test]
    fn a_case_insensitive_glob_is_not_indexed() {
        let glob = globset::GlobBuilder::new("Directory.*")
            .case_insensitive(true)
            .build()
            .expect("a valid glob")
            .compile_matcher();
        assert!(leaf_keys(&FieldPath::Type, &Op::Glob(glob)).is_none());
        let plain = Glob::new("Directory.*")
            .expect("a valid glob")
            .compile_matcher();
        assert!(leaf_keys(&FieldPath::Type, &Op::Glob(plain)).is_some());
    }
}
