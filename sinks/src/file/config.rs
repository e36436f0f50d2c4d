use std::path::PathBuf;
use std::sync::Arc;

use herald_core::config::{
    ConfigError, SinkInput, SinkKeys, SinkSpec, SinkType, TemplateField, ValidSink,
};
use herald_core::sink::DeliveryPolicy;
use serde::Deserialize;

use super::sink::{FileSpec, Target};

/// `type: file`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// The file to append to; relative to the config file's directory.
    path: PathBuf,
    /// A template for each line instead of the JSON record.
    #[serde(default)]
    line: Option<String>,
    /// fsync after every delivery, so a delivery counts only once it is on disk even if the
    /// machine loses power. Off by default: the OS write survives a gateway crash.
    #[serde(default)]
    fsync: bool,
}

/// `type: stdout`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StdoutConfig {
    #[serde(default)]
    line: Option<String>,
}

const TEMPLATE_FIELDS: &[&str] = &["line"];

pub const FILE: SinkType = SinkType {
    name: "file",
    template_fields: TEMPLATE_FIELDS,
    default_policy: local_policy,
    validate: validate_file,
};

pub const STDOUT: SinkType = SinkType {
    name: "stdout",
    template_fields: TEMPLATE_FIELDS,
    default_policy: local_policy,
    validate: validate_stdout,
};

/// A local file has no rate limit and fails only for local reasons (disk full), which a few
/// quick retries will not fix for long.
fn local_policy() -> DeliveryPolicy {
    DeliveryPolicy {
        concurrency: 1,
        ..DeliveryPolicy::default()
    }
}

fn validate_file(input: &SinkInput<'_>) -> Result<ValidSink, Vec<ConfigError>> {
    let mut keys = SinkKeys::new(input);
    let config: FileConfig = keys.typed()?;
    if config.path.as_os_str().is_empty() {
        keys.invalid("path", "is empty");
    }
    keys.finish()?;
    let path = input.base_dir.join(&config.path);
    Ok(valid(
        input,
        FileSpec {
            target: Target::File {
                path,
                fsync: config.fsync,
            },
            templated: config.line.is_some(),
        },
    ))
}

fn validate_stdout(input: &SinkInput<'_>) -> Result<ValidSink, Vec<ConfigError>> {
    let config: StdoutConfig = SinkKeys::new(input).typed()?;
    Ok(valid(
        input,
        FileSpec {
            target: Target::Stdout,
            templated: config.line.is_some(),
        },
    ))
}

fn valid(input: &SinkInput<'_>, spec: FileSpec) -> ValidSink {
    let spec: Arc<dyn SinkSpec> = Arc::new(spec);
    ValidSink {
        templates: TemplateField::from_node(input.node, "line")
            .into_iter()
            .collect(),
        spec,
    }
}
