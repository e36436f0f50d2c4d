//! The sink and source types the gateway knows, registered by the crates that implement them
//! (`herald_sinks::register`, `herald_sources::register`). Core validates the parts of the
//! config it owns (`type`, `delivery`, routes, templates) and hands each sink's and source's
//! own keys to the validator of its type. A queue engine other than the embedded `local`
//! one registers its `queue:` keys and their validator the same way (`herald_queue_postgres::
//! register`), so core knows which keys belong to which engine without depending on a
//! database driver (docs/architecture.md §10).

use std::any::Any;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::error::ConfigError;
use super::node::{Loc, Node};
use crate::health::Checks;
use crate::sink::{DeliveryPolicy, Sink};

/// What a sink type's validator is given.
pub struct SinkInput<'a> {
    pub name: &'a str,
    /// The sink's mapping without `type` and `delivery`.
    pub node: &'a Node,
    /// The directory of the config file; relative paths are resolved against it.
    pub base_dir: &'a Path,
}

/// A template field a validated sink declares, with where its text stands in the file.
#[derive(Clone, Debug)]
pub struct TemplateField {
    /// The field's name (`text`, `subject`), or a name the sink makes up for a map of
    /// templates (`headers.X-Course`).
    pub field: String,
    pub source: String,
    pub loc: Loc,
}

impl TemplateField {
    /// The template written under `field` in `node`, if any.
    pub fn from_node(node: &Node, field: &str) -> Option<TemplateField> {
        let value = node.get(field)?;
        Some(TemplateField {
            field: field.to_owned(),
            source: value.scalar_text()?,
            loc: value.loc,
        })
    }

    /// Every entry of the mapping `key` (e.g. `headers:`) as a template named `key.<entry>`.
    pub fn from_map(node: &Node, key: &str) -> Vec<TemplateField> {
        node.get(key)
            .and_then(Node::entries)
            .unwrap_or_default()
            .iter()
            .filter_map(|(k, v)| {
                Some(TemplateField {
                    field: format!("{key}.{}", k.name),
                    source: v.scalar_text()?,
                    loc: v.loc,
                })
            })
            .collect()
    }
}

/// A sink config that passed validation: everything needed to build the running sink.
pub struct ValidSink {
    pub templates: Vec<TemplateField>,
    pub spec: Arc<dyn SinkSpec>,
}

/// Builds the running sink. Validation already happened, so a failure here is an
/// environment problem (a file that cannot be opened), never a config mistake.
pub trait SinkSpec: Send + Sync + fmt::Debug {
    fn build(&self, context: &BuildContext) -> Result<Arc<dyn Sink>, String>;

    /// One line for `herald check`, with any secret masked.
    fn describe(&self) -> String;

    /// The pace the sink keeps by itself, if any (Slack's per webhook URL); the engine's own
    /// `rate_limit` is in the delivery policy. On a shared queue a paced sink is delivered by
    /// one gateway at a time (docs/architecture.md §10.2, "Paced sinks").
    fn pace(&self) -> Option<crate::sink::Pace> {
        None
    }
}

/// What building a sink may need from the running gateway. The gateway makes one for each
/// sink it starts (`src/sinks.rs`, at start-up and on reload); `BuildContext::default()` is
/// detached from any gateway (tests, tools): its checks are read by nobody and `stop` is
/// never cancelled.
#[derive(Clone, Debug, Default)]
pub struct BuildContext {
    /// The gateway's readiness (`/readyz`), as this sink's own checks (name them
    /// `<type>:<sink>`): they go away when the sink is removed or replaced.
    pub health: Checks,
    /// Cancelled when the sink is removed or replaced and when the gateway stops: background
    /// tasks the sink starts (a periodic check) end with it.
    pub stop: CancellationToken,
}

/// A sink type: its `type:` name, its template fields, defaults and validator.
#[derive(Clone, Copy)]
pub struct SinkType {
    pub name: &'static str,
    /// Every template field this type has; a route may override any of them.
    pub template_fields: &'static [&'static str],
    /// The delivery policy when routes.yaml does not set one.
    pub default_policy: fn() -> DeliveryPolicy,
    /// Pure: no I/O, no network.
    pub validate: fn(&SinkInput<'_>) -> Result<ValidSink, Vec<ConfigError>>,
}

/// What a source type's validator is given.
pub struct SourceInput<'a> {
    pub name: &'a str,
    /// The source's mapping without `type`.
    pub node: &'a Node,
    pub base_dir: &'a Path,
}

/// A validated source config, as core sees it. The crate that registered the type gets its
/// own interface back with one downcast (`herald_sources::source_of`): core does not depend
/// on the HTTP stack the sources run on.
pub trait SourceSpec: Send + Sync + fmt::Debug + Any {
    /// The HTTP path the source is mounted at, if it receives over HTTP.
    fn http_path(&self) -> Option<&str>;

    /// One line for `herald check`, with any secret masked.
    fn describe(&self) -> String;

    fn as_any(&self) -> &dyn Any;
}

/// What a source type's validator returns.
pub type SourceResult = Result<Arc<dyn SourceSpec>, Vec<ConfigError>>;

/// A source type: its `type:` name and validator.
#[derive(Clone, Copy)]
pub struct SourceType {
    pub name: &'static str,
    /// Pure: no I/O, no network.
    pub validate: fn(&SourceInput<'_>) -> SourceResult,
}

/// What a section type's validator is given.
pub struct SectionInput<'a> {
    /// The section's key at the top of routes.yaml.
    pub name: &'a str,
    pub node: &'a Node,
    pub base_dir: &'a Path,
}

/// A validated top-level section that a crate other than core owns (`google:` belongs to
/// herald-sources). Any `Debug` value that can be shared between threads is one.
pub trait Section: Send + Sync + fmt::Debug + Any {
    fn as_any(&self) -> &dyn Any;
}

impl<T: Send + Sync + fmt::Debug + Any> Section for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// What a section type's validator returns.
pub type SectionResult = Result<Arc<dyn Section>, Vec<ConfigError>>;

/// A top-level section of routes.yaml owned by the crate that registers it.
#[derive(Clone, Copy)]
pub struct SectionType {
    pub name: &'static str,
    /// Pure: no I/O, no network. Not called when the section is absent or empty.
    pub validate: fn(&SectionInput<'_>) -> SectionResult,
}

/// What a queue engine's validator is given.
pub struct QueueInput<'a> {
    /// The `queue:` mapping with only the engine's own keys (those in
    /// [`QueueEngineType::keys`]); core has read and checked the rest.
    pub node: &'a Node,
    /// The directory of the config file; relative paths are resolved against it.
    pub base_dir: &'a Path,
}

/// A validated queue-engine config, as core sees it. The crate that registered the engine
/// gets its own type back with one downcast, as for [`SourceSpec`]: core does not depend on
/// the engine's driver. `Debug` and [`QueueSpec::describe`] must mask every secret.
pub trait QueueSpec: Send + Sync + fmt::Debug + Any {
    /// One line for `herald check`, with any secret masked.
    fn describe(&self) -> String;

    fn as_any(&self) -> &dyn Any;
}

/// What a queue engine's validator returns.
pub type QueueResult = Result<Arc<dyn QueueSpec>, Vec<ConfigError>>;

/// A queue engine other than `local`: its `queue.engine` name, the keys only it takes, and
/// their validator.
#[derive(Clone, Copy)]
pub struct QueueEngineType {
    pub name: &'static str,
    /// The `queue:` keys of this engine alone; each is a config error under another engine.
    pub keys: &'static [&'static str],
    /// Pure: no I/O, no network.
    pub validate: fn(&QueueInput<'_>) -> QueueResult,
}

/// The known sink, source, section and queue-engine types.
#[derive(Clone, Default)]
pub struct Registry {
    sinks: Vec<SinkType>,
    sources: Vec<SourceType>,
    sections: Vec<SectionType>,
    queue_engines: Vec<QueueEngineType>,
}

impl Registry {
    pub fn add_sink(&mut self, sink: SinkType) -> &mut Self {
        self.sinks.push(sink);
        self
    }

    pub fn add_source(&mut self, source: SourceType) -> &mut Self {
        self.sources.push(source);
        self
    }

    pub fn add_section(&mut self, section: SectionType) -> &mut Self {
        self.sections.push(section);
        self
    }

    pub fn add_queue_engine(&mut self, engine: QueueEngineType) -> &mut Self {
        self.queue_engines.push(engine);
        self
    }

    pub fn queue_engines(&self) -> &[QueueEngineType] {
        &self.queue_engines
    }

    pub fn queue_engine(&self, name: &str) -> Option<&QueueEngineType> {
        self.queue_engines.iter().find(|e| e.name == name)
    }

    pub fn sections(&self) -> &[SectionType] {
        &self.sections
    }

    pub fn sink(&self, name: &str) -> Option<&SinkType> {
        self.sinks.iter().find(|s| s.name == name)
    }

    pub fn source(&self, name: &str) -> Option<&SourceType> {
        self.sources.iter().find(|s| s.name == name)
    }

    pub fn sink_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.sinks.iter().map(|s| s.name)
    }

    pub fn source_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.sources.iter().map(|s| s.name)
    }
}
