//! The rule engine at scale (docs/architecture.md §4, "How matching is indexed"): a route per
//! school plus one catch-all, with 10, 1,000 and 10,000 schools, in the two shapes vendors
//! write, each matched by the index (`RouteTable::targets`) and by trying every route in order
//! (`RouteTable::targets_linear`, what matching did before the index):
//!
//! * `suffix`: `{ type: directory.users.add, data.primaryEmail: { suffix: "@schoolN.example.org" } }`
//! * `domain`: `{ type: directory.users.add, meta.domain: schoolN.example.org }`
//!
//! The event is a user added at the last school, so the linear walk tries every route before
//! it. `build` is the cost of `RouteTable::new` (at load and on every reload).
//!
//! `cargo bench -p herald-core --bench routes [-- FILTER]`

use std::hint::black_box;

use chrono::Utc;
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use herald_core::Event;
use herald_core::rules::{Condition, FieldPath, Op, Route, RouteTable};
use serde_json::json;

const SIZES: [usize; 3] = [10, 1_000, 10_000];

#[derive(Clone, Copy)]
enum Shape {
    Suffix,
    Domain,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Suffix => "suffix",
            Shape::Domain => "domain",
        }
    }

    fn condition(self, school: usize) -> Condition {
        let per_school = match self {
            Shape::Suffix => Condition::Field(
                FieldPath::Data(vec!["primaryEmail".into()]),
                Op::Suffix(format!("@school{school}.example.org")),
            ),
            Shape::Domain => Condition::Field(
                FieldPath::Meta("domain".into()),
                Op::Eq(Some(format!("school{school}.example.org"))),
            ),
        };
        Condition::All(vec![
            Condition::Field(FieldPath::Type, Op::Eq(Some("directory.users.add".into()))),
            per_school,
        ])
    }
}

fn routes(shape: Shape, schools: usize) -> Vec<Route> {
    let mut routes: Vec<Route> = (0..schools)
        .map(|school| Route {
            name: format!("school{school}"),
            condition: shape.condition(school),
            sinks: vec![format!("school{school}-webhook")],
            continue_matching: false,
        })
        .collect();
    routes.push(Route {
        name: "everything".into(),
        condition: Condition::always(),
        sinks: vec!["log".into()],
        continue_matching: false,
    });
    routes
}

fn event(school: usize) -> Event {
    let mut event = Event::new(
        "m-1",
        "directory",
        "directory.users.add",
        Utc::now(),
        json!({ "primaryEmail": format!("ada@school{school}.example.org"), "id": "1112" }),
    );
    event.meta.insert(
        "domain".into(),
        format!("school{school}.example.org").into(),
    );
    event
}

fn matching(c: &mut Criterion) {
    for shape in [Shape::Suffix, Shape::Domain] {
        let mut group = c.benchmark_group(format!("match/{}", shape.name()));
        for schools in SIZES {
            let table = RouteTable::new(routes(shape, schools), vec![]);
            let event = event(schools - 1);
            let expected = format!("school{}", schools - 1);
            assert_eq!(table.targets(&event)[0].route, expected);
            assert_eq!(table.targets(&event), table.targets_linear(&event));
            group.bench_with_input(BenchmarkId::new("indexed", schools), &event, |b, e| {
                b.iter(|| table.targets(black_box(e)))
            });
            group.bench_with_input(BenchmarkId::new("linear", schools), &event, |b, e| {
                b.iter(|| table.targets_linear(black_box(e)))
            });
        }
        group.finish();
    }
}

fn building(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    for shape in [Shape::Suffix, Shape::Domain] {
        let routes = routes(shape, 10_000);
        group.bench_function(BenchmarkId::new(shape.name(), 10_000), |b| {
            b.iter_batched(
                || routes.clone(),
                |routes| RouteTable::new(routes, vec![]),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, matching, building);
criterion_main!(benches);
