use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use herald_core::config::{ConfigError, SinkInput, SinkKeys, SinkType, TemplateField, ValidSink};
use herald_core::sink::DeliveryPolicy;
use serde::Deserialize;
use serde_json::Value;

use super::library;
use super::sink::PluginSpec;

/// `type: plugin`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginConfig {
    /// The plugin's shared library (`.so`); relative to the config file's directory.
    library: PathBuf,
    /// The plugin's own settings, handed to it as a JSON object; the plugin checks them.
    #[serde(default)]
    config: Option<Value>,
    /// Templates rendered for each delivery and given to the plugin by name. Read through
    /// `TemplateField::from_map` (which keeps their places); declared so its shape is checked.
    #[serde(default)]
    #[expect(dead_code)]
    templates: BTreeMap<String, String>,
}

pub const PLUGIN: SinkType = SinkType {
    name: "plugin",
    // A plugin's templates are named by its config (`templates.<name>`), so there is no fixed
    // list a route could override.
    template_fields: &[],
    default_policy: DeliveryPolicy::default,
    validate,
};

/// Not pure, by exception (see the module doc): loads the library and asks the plugin to
/// check its config, so `herald check` finds what would stop the gateway.
fn validate(input: &SinkInput<'_>) -> Result<ValidSink, Vec<ConfigError>> {
    let mut keys = SinkKeys::new(input);
    let config: PluginConfig = keys.typed()?;

    if config.library.as_os_str().is_empty() {
        keys.invalid("library", "is empty; give the path of the plugin's .so");
    }
    let plugin_config = match config.config {
        None => Value::Object(Default::default()),
        Some(value @ Value::Object(_)) => value,
        Some(_) => {
            keys.invalid("config", "must be a mapping (the plugin's settings)");
            Value::Null
        }
    };
    keys.finish()?;
    // Each step needs the one before it: the first that fails ends the validation.
    let mut keys = SinkKeys::new(input);
    let path = input.base_dir.join(&config.library);
    let library = library::load(&path).map_err(|e| keys.fail("library", e))?;
    let json = serde_json::to_vec(&plugin_config).map_err(|e| {
        keys.fail(
            "config",
            format_args!("`config` cannot be written as JSON: {e}"),
        )
    })?;
    library.validate(&json).map_err(|message| {
        keys.fail(
            "config",
            format_args!("plugin `{}` refuses its config: {message}", library.name),
        )
    })?;

    Ok(ValidSink {
        templates: TemplateField::from_map(input.node, "templates"),
        spec: Arc::new(PluginSpec {
            library,
            config: json,
        }),
    })
}
