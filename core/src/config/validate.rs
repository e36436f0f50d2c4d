//! The validator: walks the parsed tree once, collecting every mistake with its location,
//! and builds the [`Config`]. The top-level sections, registered sections, sources and sinks
//! are here; routes are in [`super::routes`].

use std::collections::HashMap;
use std::path::Path;

use super::error::{ConfigError, Diagnostics};
use super::model::{DeliveryOverrides, EngineSpec, QueueConfig, QueueEngine, ServerConfig};
use super::node::{Key, Loc, Node, NodeKind, did_you_mean, unknown_key_message};
use super::registry::{QueueInput, Registry, SectionInput, SinkInput, SinkType, SourceInput};
use super::{Config, SectionConfig, SinkConfig, SourceConfig};
use crate::rules::RouteTable;
use crate::sink::DeliveryPolicy;
use crate::template::TemplatesBuilder;

/// The `queue:` keys of every engine, which core reads.
const COMMON_QUEUE_KEYS: &[&str] = &["engine", "retention", "max_events", "max_bytes"];
/// The `queue:` keys of the `local` engine alone.
const LOCAL_QUEUE_KEYS: &[&str] = &["path"];

/// The top-level keys core owns; registered sections add theirs.
const TOP_LEVEL_KEYS: &[&str] = &["server", "queue", "sources", "sinks", "routes", "unmatched"];

pub(super) struct Validator<'a> {
    pub(super) registry: &'a Registry,
    pub(super) base_dir: &'a Path,
    pub(super) diags: Diagnostics,
    pub(super) templates: TemplatesBuilder,
    /// Sink name → its type, for checking route overrides.
    pub(super) sink_types: HashMap<String, SinkType>,
}

impl Validator<'_> {
    pub(super) fn config(&mut self, root: &Node, file: &Path) -> Config {
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
        let known: Vec<&str> = TOP_LEVEL_KEYS
            .iter()
            .copied()
            .chain(self.registry.sections().iter().map(|s| s.name))
            .collect();
        for (key, _) in root.entries().unwrap_or_default() {
            if !known.contains(&key.name.as_str()) {
                self.diags
                    .error(key.loc, unknown_key_message(&key.name, &known));
            }
        }

        let server = self
            .section::<ServerConfig>(root, "server")
            .unwrap_or_default();
        let mut queue = self.queue(root.get("queue"));
        if queue.path.is_relative() {
            queue.path = self.base_dir.join(&queue.path);
        }
        let sections = self.registered_sections(root);
        let sources = self.sources(root.get("sources"));
        let sinks = self.sinks(root.get("sinks"));
        let routes = self.routes(root.get("routes"));
        let unmatched = self.unmatched(root.get("unmatched"));
        let templates = std::mem::take(&mut self.templates).build();

        Config {
            file: file.to_path_buf(),
            server,
            queue,
            sections,
            sources,
            sinks,
            routes: RouteTable::new(routes, unmatched),
            templates,
        }
    }

    /// `queue:`: core's keys into [`QueueConfig`], the engine's own keys to the engine's
    /// validator. A key of another engine (`path` under `postgres`, `url` under `local`) is a
    /// mistake at its line:column (docs/architecture.md §10).
    fn queue(&mut self, node: Option<&Node>) -> QueueConfig {
        let Some(node) = node.filter(|n| !matches!(n.kind, NodeKind::Null)) else {
            return QueueConfig::default();
        };
        let Some(entries) = node.entries() else {
            self.diags.error(
                node.loc,
                format!("`queue` must be a mapping, found {}", node.describe()),
            );
            return QueueConfig::default();
        };
        let engine = match node
            .get("engine")
            .map(|n| (n, n.deserialize::<QueueEngine>()))
        {
            None => QueueEngine::Local,
            Some((_, Ok(engine))) => engine,
            Some((n, Err(e))) => {
                self.diags.push(ConfigError::from_de("`queue`", e, n.loc));
                return QueueConfig::default();
            }
        };
        let engine_type = match engine {
            QueueEngine::Local => None,
            other => match self.registry.queue_engine(other.name()) {
                Some(t) => Some(*t),
                None => {
                    let loc = node.get("engine").map_or(node.loc, |n| n.loc);
                    self.diags.error(
                        loc,
                        format!(
                            "`queue`: the `{}` engine is not part of this build",
                            other.name()
                        ),
                    );
                    return QueueConfig::default();
                }
            },
        };
        let own_keys: &[&str] = engine_type.map_or(LOCAL_QUEUE_KEYS, |t| t.keys);
        let mut core_entries = Vec::new();
        let mut engine_entries = Vec::new();
        for (key, value) in entries {
            let name = key.name.as_str();
            if COMMON_QUEUE_KEYS.contains(&name) {
                core_entries.push((key.clone(), value.clone()));
            } else if own_keys.contains(&name) {
                match engine_type {
                    None => core_entries.push((key.clone(), value.clone())),
                    Some(_) => engine_entries.push((key.clone(), value.clone())),
                }
            } else if let Some(other) = self.engine_of_queue_key(name) {
                self.diags.error(
                    key.loc,
                    format!(
                        "`queue`: `{name}` applies only to `engine: {other}`; this queue's engine is `{}`",
                        engine.name()
                    ),
                );
            } else {
                let known: Vec<&str> = COMMON_QUEUE_KEYS.iter().chain(own_keys).copied().collect();
                self.diags.error(
                    key.loc,
                    format!("`queue`: {}", unknown_key_message(name, &known)),
                );
            }
        }
        let core_node = Node::new(node.loc, NodeKind::Map(core_entries));
        let mut queue = match core_node.deserialize::<QueueConfig>() {
            Ok(queue) => queue,
            Err(e) => {
                self.diags
                    .push(ConfigError::from_de("`queue`", e, node.loc));
                QueueConfig::default()
            }
        };
        if let Some(engine_type) = engine_type {
            let engine_node = Node::new(node.loc, NodeKind::Map(engine_entries));
            let input = QueueInput {
                node: &engine_node,
                base_dir: self.base_dir,
            };
            match (engine_type.validate)(&input) {
                Ok(spec) => {
                    queue.engine_spec = Some(EngineSpec::new(spec, &engine_node.fingerprint()));
                }
                Err(errors) => self.diags.extend(errors),
            }
        }
        queue
    }

    /// The engine whose key `name` is, when it is one engine's own.
    fn engine_of_queue_key(&self, name: &str) -> Option<&'static str> {
        if LOCAL_QUEUE_KEYS.contains(&name) {
            return Some(QueueEngine::Local.name());
        }
        self.registry
            .queue_engines()
            .iter()
            .find(|t| t.keys.contains(&name))
            .map(|t| t.name)
    }

    /// Every registered section present in the file, validated by the crate that owns it.
    fn registered_sections(&mut self, root: &Node) -> Vec<SectionConfig> {
        let mut sections = Vec::new();
        for section in self.registry.sections() {
            let Some(node) = root.get(section.name) else {
                continue;
            };
            if matches!(node.kind, NodeKind::Null) {
                continue;
            }
            let input = SectionInput {
                name: section.name,
                node,
                base_dir: self.base_dir,
            };
            match (section.validate)(&input) {
                Ok(value) => sections.push(SectionConfig {
                    name: section.name,
                    value,
                    fingerprint: node.fingerprint(),
                }),
                Err(errors) => self.diags.extend(errors),
            }
        }
        sections
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
}

/// A sink, source or route name: letters, digits, `-` and `_`.
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
