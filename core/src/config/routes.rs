//! The `routes:` and `unmatched:` sections: each route's name, its conditions (compiled
//! once), its targets with their template overrides, and `continue`. Part of the validator of
//! [`super`]; pure like the rest.

use std::collections::HashMap;

use super::error::Diagnostics;
use super::node::{Loc, Node, NodeKind, did_you_mean, unknown_key_message};
use super::validate::{Validator, valid_name};
use crate::rules::{Condition, Route, UNMATCHED};

const ROUTE_KEYS: &[&str] = &["name", "match", "to", "continue"];

impl Validator<'_> {
    pub(super) fn routes(&mut self, node: Option<&Node>) -> Vec<Route> {
        let Some(node) = node else { return Vec::new() };
        let items = match &node.kind {
            NodeKind::Seq(items) => items,
            NodeKind::Null => return Vec::new(),
            _ => {
                self.diags.error(
                    node.loc,
                    format!(
                        "`routes` must be a list of routes, found {}",
                        node.describe()
                    ),
                );
                return Vec::new();
            }
        };
        let mut seen: HashMap<String, Loc> = HashMap::new();
        let mut routes = Vec::new();
        for (index, item) in items.iter().enumerate() {
            if let Some(route) = self.route(index, item, &mut seen) {
                routes.push(route);
            }
        }
        routes
    }

    fn route(
        &mut self,
        index: usize,
        node: &Node,
        seen: &mut HashMap<String, Loc>,
    ) -> Option<Route> {
        let Some(entries) = node.entries() else {
            self.diags.error(
                node.loc,
                format!(
                    "route #{} must be a mapping with `name` and `to`, found {}",
                    index + 1,
                    node.describe()
                ),
            );
            return None;
        };
        for (key, _) in entries {
            if !ROUTE_KEYS.contains(&key.name.as_str()) {
                self.diags
                    .error(key.loc, unknown_key_message(&key.name, ROUTE_KEYS));
            }
        }
        let name = match node.get("name") {
            None => {
                self.diags.error(
                    node.loc,
                    format!("route #{}: missing required field `name`", index + 1),
                );
                format!("#{}", index + 1)
            }
            Some(n) => match n.scalar_text() {
                Some(name) if valid_name(&name) && name != UNMATCHED => {
                    if let Some(first) = seen.insert(name.clone(), n.loc) {
                        self.diags.error(
                            n.loc,
                            format!("duplicate route name `{name}` (first at {first})"),
                        );
                    }
                    name
                }
                Some(name) if name == UNMATCHED => {
                    self.diags.error(n.loc, "route name `unmatched` is reserved for events no route matched; choose another");
                    name
                }
                _ => {
                    self.diags.error(
                        n.loc,
                        "a route name may only use letters, digits, `-` and `_`",
                    );
                    format!("#{}", index + 1)
                }
            },
        };
        let condition = match node.get("match") {
            Some(m) => {
                let mut local = Diagnostics::default();
                let condition = Condition::compile(m, &mut local);
                for e in local.into_errors() {
                    self.diags
                        .error(e.loc, format!("route `{name}`: {}", e.message));
                }
                condition
            }
            None => Condition::always(),
        };
        let continue_matching = match node.get("continue") {
            None => false,
            Some(c) => match c.kind {
                NodeKind::Bool(b) => b,
                _ => {
                    self.diags.error(
                        c.loc,
                        format!(
                            "route `{name}`: `continue` takes true or false, found {}",
                            c.describe()
                        ),
                    );
                    false
                }
            },
        };
        let sinks = match node.get("to") {
            None => {
                self.diags.error(
                    node.loc,
                    format!(
                        "route `{name}`: missing required field `to` (the sinks to deliver to)"
                    ),
                );
                Vec::new()
            }
            Some(to) => self.targets(&name, to),
        };
        Some(Route {
            name,
            condition,
            sinks,
            continue_matching,
        })
    }

    /// `to: [registrar, { sink: it-chat, text: "…" }]`
    fn targets(&mut self, route: &str, to: &Node) -> Vec<String> {
        let items = match &to.kind {
            NodeKind::Seq(items) if !items.is_empty() => items.as_slice(),
            NodeKind::Str(_) => std::slice::from_ref(to),
            _ => {
                self.diags.error(
                    to.loc,
                    format!("route `{route}`: `to` must be a non-empty list of sink names"),
                );
                return Vec::new();
            }
        };
        let mut sinks = Vec::new();
        for item in items {
            let (sink_node, overrides) = match &item.kind {
                NodeKind::Map(entries) => match item.get("sink") {
                    Some(s) => (
                        s,
                        entries
                            .iter()
                            .filter(|(k, _)| k.name != "sink")
                            .collect::<Vec<_>>(),
                    ),
                    None => {
                        self.diags.error(item.loc, format!("route `{route}`: a sink with template overrides is written `{{ sink: NAME, <field>: \"…\" }}`"));
                        continue;
                    }
                },
                _ => (item, Vec::new()),
            };
            let Some(sink) = sink_node.as_str() else {
                self.diags.error(
                    sink_node.loc,
                    format!(
                        "route `{route}`: expected a sink name, found {}",
                        sink_node.describe()
                    ),
                );
                continue;
            };
            let Some(sink_type) = self.sink_types.get(sink).copied() else {
                let hint = did_you_mean(sink, self.sink_types.keys().map(String::as_str))
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_else(|| "; it is not defined under `sinks:`".to_owned());
                self.diags.error(
                    sink_node.loc,
                    format!("route `{route}`: unknown sink `{sink}`{hint}"),
                );
                continue;
            };
            for (key, value) in overrides {
                if !sink_type.template_fields.contains(&key.name.as_str()) {
                    self.diags.error(
                        key.loc,
                        format!("route `{route}`: sink `{sink}` ({}) has no template `{}`; its templates are: {}", sink_type.name, key.name, sink_type.template_fields.join(", ")),
                    );
                    continue;
                }
                let Some(source) = value.scalar_text() else {
                    self.diags.error(
                        value.loc,
                        format!("route `{route}`: template `{}` must be a string", key.name),
                    );
                    continue;
                };
                if let Err(message) = self.templates.add_override(route, sink, &key.name, &source) {
                    self.diags.error(
                        value.loc,
                        format!(
                            "route `{route}`: sink `{sink}`: template `{}`: {message}",
                            key.name
                        ),
                    );
                }
            }
            sinks.push(sink.to_owned());
        }
        sinks
    }

    pub(super) fn unmatched(&mut self, node: Option<&Node>) -> Vec<String> {
        let Some(node) = node else { return Vec::new() };
        match &node.kind {
            NodeKind::Str(s) if s == "drop" => Vec::new(),
            NodeKind::Null => Vec::new(),
            NodeKind::Seq(items) => items
                .iter()
                .filter_map(|item| {
                    let Some(name) = item.as_str() else {
                        self.diags.error(
                            item.loc,
                            "`unmatched`: each entry is a sink name (a string)",
                        );
                        return None;
                    };
                    if self.sink_types.contains_key(name) {
                        Some(name.to_owned())
                    } else {
                        self.diags
                            .error(item.loc, format!("`unmatched`: unknown sink `{name}`"));
                        None
                    }
                })
                .collect(),
            _ => {
                self.diags
                    .error(node.loc, "`unmatched` is `drop` or a list of sink names");
                Vec::new()
            }
        }
    }
}
