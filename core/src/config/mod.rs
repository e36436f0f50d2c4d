//! routes.yaml: parse → validate (pure, collecting every mistake) → a [`Config`] that the
//! gateway builds its pipeline from without any further config check (docs/architecture.md §4).
//!
//! * `node` — the YAML tree with line:column for every key and value;
//! * `env` — `${VAR}` / `${VAR:-default}`;
//! * `model` — the sections core owns (`server`, `queue`, a sink's `delivery`);
//! * `registry` — sink, source and section types, registered by the crates implementing
//!   them (`google:` is herald-sources' section);
//! * `error` — [`ConfigErrors`], each `file:line:column: what was expected`;
//! * `keys` — [`SinkKeys`]: a sink type's keys as its validator reads them, every mistake
//!   named after the sink and the key;
//! * `validate` — the validator: top-level sections, registered sections, sources, sinks;
//! * `routes` — the validator's part for `routes:` and `unmatched:`.
//!
//! Relative paths in the file (`queue.path`, a file sink's `path`) are resolved against the
//! directory of the config file, so `herald run -c /etc/herald/routes.yaml` does not depend on
//! the directory it was started from.

pub mod env;
pub mod error;
pub mod keys;
pub mod model;
pub mod node;
pub mod registry;
mod routes;
pub mod units;
mod validate;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{ConfigError, ConfigErrors, Diagnostics};
pub use keys::SinkKeys;
pub use model::{
    AdminToken, DeliveryOverrides, EngineSpec, QueueConfig, QueueEngine, ServerConfig, TlsConfig,
};
pub use node::{Key, Loc, Node, NodeKind};
pub use registry::{
    BuildContext, QueueEngineType, QueueInput, QueueResult, QueueSpec, Registry, Section,
    SectionInput, SectionType, SinkInput, SinkSpec, SinkType, SourceInput, SourceSpec, SourceType,
    TemplateField, ValidSink,
};

use crate::rules::RouteTable;
use crate::sink::DeliveryPolicy;
use crate::template::{Templates, TemplatesBuilder};
use validate::Validator;

/// A validated config.
#[derive(Clone, Debug)]
pub struct Config {
    pub file: PathBuf,
    pub server: ServerConfig,
    /// `path` already resolved against the config file's directory.
    pub queue: QueueConfig,
    /// The registered sections present in the file (`google:`).
    pub sections: Vec<SectionConfig>,
    pub sources: Vec<SourceConfig>,
    pub sinks: Vec<SinkConfig>,
    pub routes: RouteTable,
    pub templates: Templates,
}

#[derive(Clone, Debug)]
pub struct SectionConfig {
    pub name: &'static str,
    pub value: Arc<dyn Section>,
    /// The section as written (after `${VAR}`), without locations.
    pub fingerprint: String,
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

    /// The registered section `name`, if the file has it, as the type its validator made.
    pub fn section<T: 'static>(&self, name: &str) -> Option<&T> {
        self.sections
            .iter()
            .find(|s| s.name == name)
            // `*s.value`, not the `Arc`: the `Arc` is a `Section` too, and would downcast to itself.
            .and_then(|s| (*s.value).as_any().downcast_ref())
    }

    /// The fingerprint of section `name` (empty when absent): a reload compares them.
    pub fn section_fingerprint(&self, name: &str) -> &str {
        self.sections
            .iter()
            .find(|s| s.name == name)
            .map_or("", |s| s.fingerprint.as_str())
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

#[cfg(test)]
mod tests;
