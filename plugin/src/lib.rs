//! herald-plugin: write a Herald sink as a shared library, without forking Herald.
//!
//! * [`abi`] — the C ABI: the `#[repr(C)]` vtable one symbol returns, its version handshake
//!   and who frees which buffer. JSON bytes cross it, never Rust types (docs/architecture.md §8).
//! * [`SinkPlugin`], [`Delivery`], [`DeliverError`] — the safe trait a plugin implements.
//! * [`export_sink!`] — writes the `extern "C"` entry point and shims for a [`SinkPlugin`].
//!
//! # Writing a plugin
//!
//! A plugin is a `cdylib` crate:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! herald-plugin = { path = "../herald/plugin" }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! It implements [`SinkPlugin`] and exports it:
//!
//! ```no_run
//! use std::io::Write;
//! use std::sync::Mutex;
//!
//! use herald_plugin::{DeliverError, Delivery, SinkPlugin, export_sink};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! pub struct Config {
//!     path: std::path::PathBuf,
//! }
//!
//! pub struct LineSink {
//!     file: Mutex<std::fs::File>,
//! }
//!
//! impl SinkPlugin for LineSink {
//!     type Config = Config;
//!     const NAME: &'static str = "line-sink";
//!
//!     fn validate(config: &Config) -> Result<(), String> {
//!         let absolute = config.path.is_absolute();
//!         absolute.then_some(()).ok_or_else(|| "`path` must be absolute".into())
//!     }
//!
//!     fn create(config: Config) -> Result<Self, String> {
//!         let file = std::fs::File::options().create(true).append(true).open(&config.path);
//!         let file = file.map_err(|e| format!("cannot open {}: {e}", config.path.display()))?;
//!         Ok(LineSink { file: Mutex::new(file) })
//!     }
//!
//!     fn deliver(&self, delivery: &Delivery) -> Result<(), DeliverError> {
//!         let line = delivery.template("line").or(delivery.attribute("type")).unwrap_or("");
//!         let mut file = self.file.lock().map_err(|_| DeliverError::retryable("poisoned"))?;
//!         writeln!(file, "{line}").map_err(|e| DeliverError::retryable(e.to_string()))
//!     }
//! }
//!
//! export_sink!(LineSink);
//! ```
//!
//! and is named in routes.yaml (`library` is relative to the config file's directory):
//!
//! ```yaml
//! sinks:
//!   lines: { type: plugin, library: ./plugins/libline_sink.so,
//!            config: { path: /var/log/herald-lines.txt },
//!            templates: { line: "{{ type }} {{ subject }}" } }
//! ```
//!
//! # What the SDK does for you
//!
//! * `herald check` (and every start) loads the library, checks [`abi::ABI_VERSION`], parses
//!   `config:` into [`SinkPlugin::Config`] and calls [`SinkPlugin::validate`]: a bad config is
//!   reported with its place in routes.yaml before the gateway starts.
//! * [`SinkPlugin::deliver`] runs on [`SinkPlugin::THREADS`] threads the SDK starts for each
//!   instance, so it may block (a blocking HTTP client is fine). A plugin that wants async
//!   starts its own runtime in [`SinkPlugin::create`]: tokio's runtime of the gateway does not
//!   cross the library boundary.
//! * Every call is wrapped in `catch_unwind`: a panic in `deliver` fails that delivery as
//!   retryable with the panic's message (retried, then dead-lettered); it never takes the
//!   gateway down.
//! * The gateway times a delivery out after the sink's `delivery.timeout` and tries again;
//!   the late answer is ignored. Retries, backoff, rate limits and dead letters are the
//!   gateway's: a plugin only says whether a failure is retryable ([`DeliverError`]).
//! * The gateway never unloads a plugin library while it runs: threads the plugin started may
//!   outlive its instances. To load a new build of a library, restart the gateway.
//!
//! The rendered templates are the sink's `templates:` mapping in routes.yaml (MiniJinja, the
//! event as context), given to `deliver` by name in [`Delivery::templates`].

pub mod abi;
#[doc(hidden)]
pub mod export;
mod sdk;
#[cfg(test)]
mod tests;

pub use abi::ABI_VERSION;
pub use sdk::{DeliverError, Delivery, SinkPlugin};
