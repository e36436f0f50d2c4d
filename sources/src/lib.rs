//! herald-sources: the notification sources and the HTTP server they are mounted on.

use herald_core::config::Registry;

/// Registers every source type this crate provides.
pub fn register(_registry: &mut Registry) {}
