//! Enrichment (docs/architecture.md §11): a source with `enrich:` commits its events
//! unrouted; one task per gateway claims them under a lease, looks up the course and the
//! person they point to (Classroom `courses.get`, `courses.students.get`,
//! `courses.teachers.get`), keeps the configured fields in the event's `enriched` object and
//! routes it exactly once (`Queue::route_later`).
//!
//! * `config` — the `enrich:` key of a source.

pub mod config;
