//! The rule engine: ordered routes, each a condition and the sinks it sends to.
//!
//! Routes are tried in file order; the first that matches wins unless it says
//! `continue: true`. An event no route matched goes to `unmatched` (dropped, or a list of
//! sinks). The result is the list of `(route, sink)` deliveries.
//!
//! Matching does not scan every route (docs/architecture.md §4): at load each route is filed
//! under what its condition requires of one field (an exact value of `eq`/`in`, a `prefix`,
//! a `suffix`, the literal start of a `glob`), on any field; routes that require nothing
//! indexable go to a list that is always tried. An event evaluates only the routes filed
//! under its own values plus that list, in file order, so first match and `continue` are
//! exactly those of the linear walk ([`RouteTable::matching_routes_linear`]).

mod condition;
mod field;
mod index;

pub use condition::{Condition, OPERATORS, Op};
pub use field::{FieldPath, Found};

use crate::event::Event;
use index::RouteIndex;

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
    index: RouteIndex,
    unmatched: Vec<String>,
}

impl RouteTable {
    /// Builds the table; `unmatched` is the sinks for events no route matched (empty: drop).
    pub fn new(routes: Vec<Route>, unmatched: Vec<String>) -> Self {
        let index = RouteIndex::new(routes.iter().map(|route| &route.condition));
        RouteTable {
            routes,
            index,
            unmatched,
        }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn unmatched(&self) -> &[String] {
        &self.unmatched
    }

    /// The routes whose condition holds for `event`, in order, honouring `continue`.
    ///
    /// Only the index's candidates are tried; they come in file order and every route that
    /// could match is among them, so the answer is [`RouteTable::matching_routes_linear`]'s.
    pub fn matching_routes(&self, event: &Event) -> Vec<&Route> {
        first_matches(
            self.index
                .candidates(event)
                .into_iter()
                .filter_map(|index| self.routes.get(index)),
            event,
        )
    }

    /// The `(route, sink)` deliveries for `event`.
    pub fn targets(&self, event: &Event) -> Vec<Target<'_>> {
        self.deliveries(self.matching_routes(event))
    }

    /// The same result as [`RouteTable::matching_routes`], by trying every route in order.
    /// Kept for tests and benchmarks that check the index never changes an answer.
    pub fn matching_routes_linear(&self, event: &Event) -> Vec<&Route> {
        first_matches(self.routes.iter(), event)
    }

    /// The same result as [`RouteTable::targets`], by trying every route in order.
    pub fn targets_linear(&self, event: &Event) -> Vec<Target<'_>> {
        self.deliveries(self.matching_routes_linear(event))
    }

    /// How many routes the index cannot leave out for any event (they require nothing it
    /// can look up: `ne`, `regex`, `not`, catch-alls); the rest are tried only for events
    /// with the values they need.
    pub fn always_tried(&self) -> usize {
        self.index.always_tried()
    }

    fn deliveries<'t>(&'t self, matched: Vec<&'t Route>) -> Vec<Target<'t>> {
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
}

/// The routes of `routes` (in file order) whose condition holds, up to and including the
/// first that matches without `continue`.
fn first_matches<'t>(routes: impl Iterator<Item = &'t Route>, event: &Event) -> Vec<&'t Route> {
    let mut matched = Vec::new();
    for route in routes {
        if route.condition.matches(event) {
            matched.push(route);
            if !route.continue_matching {
                break;
            }
        }
    }
    matched
}

#[cfg(test)]
mod tests;
