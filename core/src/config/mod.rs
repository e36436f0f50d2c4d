//! routes.yaml: parse → validate (pure, collecting every mistake) → a [`Config`] that the
//! gateway builds its pipeline from without any further config check (DESIGN.md §4).
//!
//! * `node` — the YAML tree with line:column for every key and value;
//! * `env` — `${VAR}` / `${VAR:-default}`;
//! * `model` — the sections core owns (`server`, `queue`, `google`, a sink's `delivery`);
//! * `registry` — sink and source types, registered by the crates implementing them;
//! * `error` — [`ConfigErrors`], each `file:line:column: what was expected`.
//!
//! Relative paths in the file (`queue.path`, a file sink's `path`) are resolved against the
//! directory of the config file, so `herald run -c /etc/herald/routes.yaml` does not depend on
//! the directory it was started from.

pub mod env;
pub mod error;
pub mod model;
pub mod node;
pub mod registry;
pub mod units;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{ConfigError, ConfigErrors, Diagnostics};
pub use model::{DeliveryOverrides, GoogleConfig, QueueConfig, ServerConfig, TlsConfig};
pub use node::{Key, Loc, Node, NodeKind};
pub use registry::{
    BuildContext, Registry, SinkInput, SinkSpec, SinkType, SourceInput, SourceSpec, SourceType,
    TemplateField, ValidSink,
};

use crate::rules::{Condition, Route, RouteTable, UNMATCHED};
use crate::sink::DeliveryPolicy;
use crate::template::{Templates, TemplatesBuilder};
use node::{did_you_mean, unknown_key_message};

const TOP_LEVEL_KEYS: &[&str] = &[
    "server",
    "queue",
    "sources",
    "sinks",
    "google",
    "routes",
    "unmatched",
];
const ROUTE_KEYS: &[&str] = &["name", "match", "to", "continue"];

/// A validated config.
#[derive(Clone, Debug)]
pub struct Config {
    pub file: PathBuf,
    pub server: ServerConfig,
    /// `path` already resolved against the config file's directory.
    pub queue: QueueConfig,
    pub google: Option<GoogleConfig>,
    pub sources: Vec<SourceConfig>,
    pub sinks: Vec<SinkConfig>,
    pub routes: RouteTable,
    pub templates: Templates,
}

#[derive(Clone, Debug)]
pub struct SourceConfig {
    pub name: String,
    pub type_name: &'static str,
    pub spec: Arc<dyn SourceSpec>,
    /// The source's config as written (after `${VAR}`), without locations: equal
    /// fingerprints mean an unchanged source across a reload.
    pub fingerprint: String,
}

#[derive(Clone, Debug)]
pub struct SinkConfig {
    pub name: String,
    pub type_name: &'static str,
    pub policy: DeliveryPolicy,
    pub spec: Arc<dyn SinkSpec>,
    /// The sink's config as written (after `${VAR}`), without locations: a reload keeps a
    /// sink whose fingerprint did not change, with its connections and queue.
    pub fingerprint: String,
}

impl Config {
    pub fn sink(&self, name: &str) -> Option<&SinkConfig> {
        self.sinks.iter().find(|s| s.name == name)
    }

    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }
}

/// Reads and validates the config file at `path`, with variables from the process
/// environment.
pub fn load(path: &Path, registry: &Registry) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::new(
            path,
            vec![ConfigError::new(
                Loc::default(),
                format!("cannot read the config file: {e}"),
            )],
        )
    })?;
    parse(&text, path, registry, &|name| std::env::var(name).ok())
}

/// Validates config `text` that was read from `file`; `env` looks variables up.
pub fn parse(
    text: &str,
    file: &Path,
    registry: &Registry,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let fail = |errors| ConfigErrors::new(file, errors);
    // Duplicate keys are passed through to the tree and reported with both places, among
    // all the other mistakes, instead of ending the parse.
    let mut options = serde_saphyr::Options::default();
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    let mut root: Node = match serde_saphyr::from_str_with_options(text, options) {
        Ok(node) => node,
        Err(e) => return Err(fail(vec![yaml_error(&e)])),
    };
    let base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut diags = Diagnostics::default();
    env::interpolate(&mut root, env, &mut diags);
    check_duplicate_keys(&root, &mut diags);

    let mut v = Validator {
        registry,
        base_dir: &base_dir,
        diags,
        templates: TemplatesBuilder::default(),
        sink_types: HashMap::new(),
    };
    let config = v.config(&root, file);
    if v.diags.is_empty() {
        Ok(config)
    } else {
        Err(fail(v.diags.into_errors()))
    }
}

fn yaml_error(e: &serde_saphyr::Error) -> ConfigError {
    let loc = e
        .location()
        .map(|l| Loc {
            line: l.line() as u32,
            col: l.column() as u32,
        })
        .unwrap_or_default();
    // The library's message may carry a rendered snippet; the first line says what is wrong.
    let text = e.to_string();
    let first = text
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .trim_start_matches("error: ");
    // Drop the library's own "line L column C: " since every message starts with line:column.
    let message = match first.split_once(": ") {
        Some((place, rest)) if place.starts_with("line ") && place.contains(" column ") => rest,
        _ => first,
    };
    ConfigError::new(loc, format!("invalid YAML: {message}"))
}

/// YAML allows a key twice in one mapping and keeps the last; in a config that is always a
/// mistake (two sinks with one name), so it is reported.
fn check_duplicate_keys(node: &Node, diags: &mut Diagnostics) {
    match &node.kind {
        NodeKind::Map(entries) => {
            for (i, (key, value)) in entries.iter().enumerate() {
                if let Some((first, _)) = entries[..i].iter().find(|(k, _)| k.name == key.name) {
                    diags.error(
                        key.loc,
                        format!("duplicate key `{}` (first at {})", key.name, first.loc),
                    );
                }
                check_duplicate_keys(value, diags);
            }
        }
        NodeKind::Seq(items) => items
            .iter()
            .for_each(|item| check_duplicate_keys(item, diags)),
        _ => {}
    }
}

struct Validator<'a> {
    registry: &'a Registry,
    base_dir: &'a Path,
    diags: Diagnostics,
    templates: TemplatesBuilder,
    /// Sink name → its type, for checking route overrides.
    sink_types: HashMap<String, SinkType>,
}

impl Validator<'_> {
    fn config(&mut self, root: &Node, file: &Path) -> Config {
        let empty = Node::new(root.loc, NodeKind::Map(Vec::new()));
        let root = match &root.kind {
            NodeKind::Map(_) => root,
            NodeKind::Null => &empty,
            _ => {
                self.diags.error(
                    root.loc,
                    format!(
                        "the config must be a mapping of sections, found {}",
                        root.describe()
                    ),
                );
                &empty
            }
        };
        for (key, _) in root.entries().unwrap_or_default() {
            if !TOP_LEVEL_KEYS.contains(&key.name.as_str()) {
                self.diags
                    .error(key.loc, unknown_key_message(&key.name, TOP_LEVEL_KEYS));
            }
        }

        let server = self
            .section::<ServerConfig>(root, "server")
            .unwrap_or_default();
        let mut queue = self
            .section::<QueueConfig>(root, "queue")
            .unwrap_or_default();
        if queue.path.is_relative() {
            queue.path = self.base_dir.join(&queue.path);
        }
        let google = self.section::<GoogleConfig>(root, "google");
        if let (Some(google), Some(node)) = (&google, root.get("google")) {
            self.check_google(google, node);
        }
        let sources = self.sources(root.get("sources"));
        let sinks = self.sinks(root.get("sinks"));
        let routes = self.routes(root.get("routes"));
        let unmatched = self.unmatched(root.get("unmatched"));
        let templates = std::mem::take(&mut self.templates).build();

        Config {
            file: file.to_path_buf(),
            server,
            queue,
            google,
            sources,
            sinks,
            routes: RouteTable::new(routes, unmatched),
            templates,
        }
    }

    /// The URLs of `google:` (tests point them at local servers) and the subject.
    fn check_google(&mut self, google: &GoogleConfig, node: &Node) {
        let urls = [
            ("token_url", &google.token_url),
            ("classroom_api", &google.classroom_api),
            ("directory_api", &google.directory_api),
        ];
        for (key, url) in urls {
            let Some(url) = url else { continue };
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                let loc = node.get(key).map(|n| n.loc).unwrap_or(node.loc);
                self.diags.push(ConfigError::new(
                    loc,
                    format!("`google.{key}` must be an http:// or https:// URL, found `{url}`"),
                ));
            }
        }
        if let Some(subject) = &google.subject
            && !subject.contains('@')
        {
            let loc = node.get("subject").map(|n| n.loc).unwrap_or(node.loc);
            self.diags.push(ConfigError::new(
                loc,
                format!("`google.subject` must be a user's e-mail address, found `{subject}`"),
            ));
        }
    }

    /// Deserializes an optional top-level section.
    fn section<T: serde::de::DeserializeOwned>(&mut self, root: &Node, name: &str) -> Option<T> {
        let node = root.get(name)?;
        if matches!(node.kind, NodeKind::Null) {
            return None;
        }
        match node.deserialize::<T>() {
            Ok(value) => Some(value),
            Err(e) => {
                self.diags
                    .push(ConfigError::from_de(&format!("`{name}`"), e, node.loc));
                None
            }
        }
    }

    /// The entries of `sources:` or `sinks:`, each checked to be a mapping with a `type`.
    fn typed_entries<'n>(
        &mut self,
        section: &str,
        node: Option<&'n Node>,
    ) -> Vec<(&'n Key, &'n Node, String)> {
        let Some(node) = node else { return Vec::new() };
        let entries = match &node.kind {
            NodeKind::Map(entries) => entries,
            NodeKind::Null => return Vec::new(),
            _ => {
                self.diags.error(
                    node.loc,
                    format!(
                        "`{section}` must be a mapping of name: {{ type: … }}, found {}",
                        node.describe()
                    ),
                );
                return Vec::new();
            }
        };
        let what = section.trim_end_matches('s');
        let mut out = Vec::new();
        for (key, value) in entries {
            if !valid_name(&key.name) {
                self.diags.error(
                    key.loc,
                    format!(
                        "{what} name `{}` may only use letters, digits, `-` and `_`",
                        key.name
                    ),
                );
            }
            if value.entries().is_none() {
                self.diags.error(
                    value.loc,
                    format!(
                        "{what} `{}` must be a mapping with a `type`, found {}",
                        key.name,
                        value.describe()
                    ),
                );
                continue;
            }
            match value.get("type") {
                Some(t) => match t.as_str() {
                    Some(type_name) => out.push((key, value, type_name.to_owned())),
                    None => self.diags.error(
                        t.loc,
                        format!(
                            "{what} `{}`: `type` must be a name, found {}",
                            key.name,
                            t.describe()
                        ),
                    ),
                },
                None => self.diags.error(
                    value.loc,
                    format!("{what} `{}`: missing required field `type`", key.name),
                ),
            }
        }
        out
    }

    fn unknown_type(
        &mut self,
        what: &str,
        name: &str,
        type_node: Option<&Node>,
        type_name: &str,
        known: Vec<&'static str>,
    ) {
        let loc = type_node.map_or(Loc::default(), |n| n.loc);
        let hint = match did_you_mean(type_name, known.iter().copied()) {
            Some(best) => format!("did you mean `{best}`?"),
            None if known.is_empty() => "this build has none yet".to_owned(),
            None => format!("known types: {}", known.join(", ")),
        };
        self.diags.error(
            loc,
            format!("{what} `{name}`: unknown {what} type `{type_name}`; {hint}"),
        );
    }

    fn sources(&mut self, node: Option<&Node>) -> Vec<SourceConfig> {
        let mut sources = Vec::new();
        let mut paths: HashMap<String, String> = HashMap::new();
        for (key, value, type_name) in self.typed_entries("sources", node) {
            let Some(source_type) = self.registry.source(&type_name).copied() else {
                let known = self.registry.source_names().collect();
                self.unknown_type("source", &key.name, value.get("type"), &type_name, known);
                continue;
            };
            let own = value.without("type");
            let input = SourceInput {
                name: &key.name,
                node: &own,
                base_dir: self.base_dir,
            };
            match (source_type.validate)(&input) {
                Ok(spec) => {
                    if let Some(path) = spec.http_path()
                        && let Some(other) = paths.insert(path.to_owned(), key.name.clone())
                    {
                        let loc = value.get("path").map_or(value.loc, |p| p.loc);
                        self.diags.error(
                            loc,
                            format!(
                                "source `{}`: path `{path}` is already used by source `{other}`",
                                key.name
                            ),
                        );
                    }
                    sources.push(SourceConfig {
                        name: key.name.clone(),
                        type_name: source_type.name,
                        spec,
                        fingerprint: value.fingerprint(),
                    });
                }
                Err(errors) => self.diags.extend(errors),
            }
        }
        sources
    }

    fn sinks(&mut self, node: Option<&Node>) -> Vec<SinkConfig> {
        let mut sinks = Vec::new();
        for (key, value, type_name) in self.typed_entries("sinks", node) {
            let name = key.name.as_str();
            let Some(sink_type) = self.registry.sink(&type_name).copied() else {
                let known = self.registry.sink_names().collect();
                self.unknown_type("sink", name, value.get("type"), &type_name, known);
                continue;
            };
            self.sink_types.insert(name.to_owned(), sink_type);

            let policy =
                self.delivery_policy(name, value.get("delivery"), (sink_type.default_policy)());
            let own = value.without("type").without("delivery");
            let input = SinkInput {
                name,
                node: &own,
                base_dir: self.base_dir,
            };
            match (sink_type.validate)(&input) {
                Ok(valid) => {
                    for t in &valid.templates {
                        if let Err(message) =
                            self.templates.add_sink_field(name, &t.field, &t.source)
                        {
                            self.diags.error(
                                t.loc,
                                format!("sink `{name}`: template `{}`: {message}", t.field),
                            );
                        }
                    }
                    if let Some(policy) = policy {
                        sinks.push(SinkConfig {
                            name: name.to_owned(),
                            type_name: sink_type.name,
                            policy,
                            spec: valid.spec,
                            fingerprint: value.fingerprint(),
                        });
                    }
                }
                Err(errors) => self.diags.extend(errors),
            }
        }
        sinks
    }

    fn delivery_policy(
        &mut self,
        sink: &str,
        node: Option<&Node>,
        defaults: DeliveryPolicy,
    ) -> Option<DeliveryPolicy> {
        let Some(node) = node else {
            return Some(defaults);
        };
        let overrides = match node.deserialize::<DeliveryOverrides>() {
            Ok(o) => o,
            Err(e) => {
                self.diags.push(ConfigError::from_de(
                    &format!("sink `{sink}`: `delivery`"),
                    e,
                    node.loc,
                ));
                return None;
            }
        };
        match overrides.apply(defaults) {
            Ok(policy) => Some(policy),
            Err(message) => {
                self.diags
                    .error(node.loc, format!("sink `{sink}`: `delivery`: {message}"));
                None
            }
        }
    }

    fn routes(&mut self, node: Option<&Node>) -> Vec<Route> {
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

    fn unmatched(&mut self, node: Option<&Node>) -> Vec<String> {
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

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests;
