//! `file` and `stdout`: each delivery as one JSON line (`{"route", "sink", "event"}`), or as
//! the sink's `line` template when it has one. The shipped routes.yaml uses them so the
//! gateway runs with no outside service, and the end-to-end tests count deliveries with them.

mod config;
mod sink;
#[cfg(test)]
mod tests;

pub use config::{FILE, STDOUT};
