//! `plugin`: a sink nobody here wrote, loaded from a shared library built with the
//! `herald-plugin` SDK (docs/architecture.md §8). The boundary is herald-plugin's C ABI: JSON bytes in,
//! an outcome called back from the plugin's own threads.
//!
//! * `library` — loads a library once per process (never unloaded), checks the ABI version
//!   first, and wraps the vtable in safe calls;
//! * `config` — `library`, `config` (handed to the plugin as JSON) and `templates`;
//! * `sink` — the running sink: each delivery becomes a future resolved by the callback.
//!
//! One exception to "validation is pure": validating a plugin sink loads its library and asks
//! the plugin to check its `config`, so `herald check` reports a missing library, a library
//! built for another ABI, or a config the plugin refuses, before the gateway starts. Loading
//! runs the library's initialisers and nothing else; handles are cached for the whole process,
//! so a reload or a second check does not load it again.
//!
//! Timeouts are the delivery engine's (`delivery.timeout`): the future of a delivery whose
//! callback never comes is dropped by the engine, which unregisters it; a callback arriving
//! later finds nothing and is ignored. Pending deliveries are kept in one process-wide
//! registry keyed by a delivery id, so the plugin never holds a pointer into the host.

// The plugin host is one of the two places `unsafe` is allowed in the workspace (the
// other is the SDK, herald-plugin): calls across the C ABI. Each block has a `// SAFETY:`.
#![allow(unsafe_code)]

mod config;
mod library;
mod sink;
#[cfg(test)]
mod tests;

pub use config::PLUGIN;
