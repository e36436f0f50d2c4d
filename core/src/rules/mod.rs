//! The rule engine: ordered routes, each a condition and the sinks it sends to.
//!
//! Routes are tried in file order; the first that matches wins unless it says
//! `continue: true`. An event no route matched goes to `unmatched` (dropped, or a list of
//! sinks). The result is the list of `(route, sink)` deliveries.
//!
//! Matching does not scan every route: each route is filed at load under the exact `type` it
//! requires (`type: x` or `type: {in: [..]}`), else under the exact `source` it requires, else
//! in a short list of routes that must always be tried. An event only evaluates the routes
//! filed under its own type and source plus that list, merged back into file order.

mod condition;
mod field;

use std::collections::HashMap;

pub use condition::{Condition, OPERATORS, Op};
pub use field::{FieldPath, Found};

use crate::event::Event;

/// The pseudo-route name under which `unmatched:` deliveries are recorded.
pub const UNMATCHED: &str = "unmatched";

/// One route of routes.yaml, compiled.
#[derive(Clone, Debug)]
pub struct Route {
    pub name: String,
    pub condition: Condition,
    /// Sink names, in the order of `to:`.
    pub sinks: Vec<String>,
    pub continue_matching: bool,
}

/// One delivery the rule engine decided on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target<'t> {
    /// The route's name, or [`UNMATCHED`].
    pub route: &'t str,
    pub sink: &'t str,
}

/// All routes, indexed for matching.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    by_type: HashMap<String, Vec<usize>>,
    by_source: HashMap<String, Vec<usize>>,
    always: Vec<usize>,
    unmatched: Vec<String>,
}

impl RouteTable {
    /// Builds the table; `unmatched` is the sinks for events no route matched (empty: drop).
    pub fn new(routes: Vec<Route>, unmatched: Vec<String>) -> Self {
        let mut table = RouteTable {
            unmatched,
            ..RouteTable::default()
        };
        for (index, route) in routes.iter().enumerate() {
            if let Some(types) = route.condition.required_values(&FieldPath::Type) {
                for ty in types {
                    let bucket = table.by_type.entry(ty).or_default();
                    if bucket.last() != Some(&index) {
                        bucket.push(index);
                    }
                }
            } else if let Some(sources) = route.condition.required_values(&FieldPath::Source) {
                for source in sources {
                    let bucket = table.by_source.entry(source).or_default();
                    if bucket.last() != Some(&index) {
                        bucket.push(index);
                    }
                }
            } else {
                table.always.push(index);
            }
        }
        table.routes = routes;
        table
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn unmatched(&self) -> &[String] {
        &self.unmatched
    }

    /// The routes whose condition holds for `event`, in order, honouring `continue`.
    pub fn matching_routes(&self, event: &Event) -> Vec<&Route> {
        let mut candidates: Vec<usize> = Vec::new();
        candidates.extend_from_slice(self.by_type.get(&event.ty).map_or(&[][..], Vec::as_slice));
        candidates.extend_from_slice(
            self.by_source
                .get(&event.source)
                .map_or(&[][..], Vec::as_slice),
        );
        candidates.extend_from_slice(&self.always);
        candidates.sort_unstable();
        candidates.dedup();

        let mut matched = Vec::new();
        for index in candidates {
            let route = &self.routes[index];
            if route.condition.matches(event) {
                matched.push(route);
                if !route.continue_matching {
                    break;
                }
            }
        }
        matched
    }

    /// The `(route, sink)` deliveries for `event`.
    pub fn targets(&self, event: &Event) -> Vec<Target<'_>> {
        let matched = self.matching_routes(event);
        if matched.is_empty() {
            return self
                .unmatched
                .iter()
                .map(|sink| Target {
                    route: UNMATCHED,
                    sink,
                })
                .collect();
        }
        matched
            .into_iter()
            .flat_map(|route| {
                route.sinks.iter().map(|sink| Target {
                    route: &route.name,
                    sink,
                })
            })
            .collect()
    }

    /// The same result as [`RouteTable::matching_routes`], by trying every route in order.
    /// Kept for tests that check the index never changes an answer.
    pub fn matching_routes_linear(&self, event: &Event) -> Vec<&Route> {
        let mut matched = Vec::new();
        for route in &self.routes {
            if route.condition.matches(event) {
                matched.push(route);
                if !route.continue_matching {
                    break;
                }
            }
        }
        matched
    }
}

#[cfg(test)]
mod tests;
