use chrono::Utc;
use proptest::prelude::*;
use serde_json::json;

use super::*;

fn event(ty: &str, source: &str, email: &str) -> Event {
    Event::new(
        "1",
        source,
        ty,
        Utc::now(),
        json!({ "primaryEmail": email, "n": 1 }),
    )
}

fn eq(path: FieldPath, value: &str) -> Condition {
    Condition::Field(path, Op::Eq(Some(value.to_owned())))
}

fn route(name: &str, condition: Condition, sinks: &[&str], continue_matching: bool) -> Route {
    Route {
        name: name.to_owned(),
        condition,
        sinks: sinks.iter().map(|s| s.to_string()).collect(),
        continue_matching,
    }
}

fn names(routes: &[&Route]) -> Vec<String> {
    routes.iter().map(|r| r.name.clone()).collect()
}

#[test]
fn first_match_wins() {
    let table = RouteTable::new(
        vec![
            route("a", eq(FieldPath::Type, "t1"), &["x"], false),
            route("b", Condition::always(), &["y"], false),
        ],
        vec![],
    );
    let targets = table.targets(&event("t1", "s", "e"));
    assert_eq!(
        targets,
        vec![Target {
            route: "a",
            sink: "x"
        }]
    );
    let targets = table.targets(&event("t2", "s", "e"));
    assert_eq!(
        targets,
        vec![Target {
            route: "b",
            sink: "y"
        }]
    );
}

#[test]
fn continue_goes_on_to_later_routes() {
    let table = RouteTable::new(
        vec![
            route("a", eq(FieldPath::Type, "t1"), &["x", "y"], true),
            route("b", eq(FieldPath::Source, "s"), &["z"], false),
            route("c", Condition::always(), &["w"], false),
        ],
        vec![],
    );
    let targets = table.targets(&event("t1", "s", "e"));
    assert_eq!(
        targets,
        vec![
            Target {
                route: "a",
                sink: "x"
            },
            Target {
                route: "a",
                sink: "y"
            },
            Target {
                route: "b",
                sink: "z"
            },
        ]
    );
}

#[test]
fn unmatched_drops_or_goes_to_its_sinks() {
    let routes = vec![route("a", eq(FieldPath::Type, "t1"), &["x"], false)];
    let drop = RouteTable::new(routes.clone(), vec![]);
    assert!(drop.targets(&event("t2", "s", "e")).is_empty());
    let keep = RouteTable::new(routes, vec!["audit".into()]);
    assert_eq!(
        keep.targets(&event("t2", "s", "e")),
        vec![Target {
            route: UNMATCHED,
            sink: "audit"
        }]
    );
}

#[test]
fn index_keeps_file_order_across_buckets() {
    // The catch-all comes first in the file, so it must win even though the typed route is
    // filed in another bucket.
    let table = RouteTable::new(
        vec![
            route("catch-all", Condition::always(), &["x"], false),
            route("typed", eq(FieldPath::Type, "t1"), &["y"], false),
        ],
        vec![],
    );
    assert_eq!(
        names(&table.matching_routes(&event("t1", "s", "e"))),
        ["catch-all"]
    );
}

#[test]
fn ten_thousand_routes_only_try_their_bucket() {
    let routes: Vec<Route> = (0..10_000)
        .map(|i| {
            route(
                &format!("r{i}"),
                eq(FieldPath::Type, &format!("type.{i}")),
                &["x"],
                false,
            )
        })
        .collect();
    let table = RouteTable::new(routes, vec![]);
    assert_eq!(table.always.len(), 0);
    assert_eq!(table.by_type.len(), 10_000);
    assert_eq!(
        names(&table.matching_routes(&event("type.9876", "s", "e"))),
        ["r9876"]
    );
}

// ----- property tests ------------------------------------------------------------------

const TYPES: &[&str] = &["t1", "t2", "t3"];
const SOURCES: &[&str] = &["classroom", "directory"];
const EMAILS: &[&str] = &["a@example.edu", "b@other.org", ""];

fn arb_event() -> impl Strategy<Value = Event> {
    (0..TYPES.len(), 0..SOURCES.len(), 0..EMAILS.len())
        .prop_map(|(t, s, e)| event(TYPES[t], SOURCES[s], EMAILS[e]))
}

fn arb_value() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "t1",
        "t2",
        "t3",
        "classroom",
        "directory",
        "a@example.edu",
        "1",
        "x",
    ])
    .prop_map(str::to_owned)
}

fn arb_path() -> impl Strategy<Value = FieldPath> {
    prop::sample::select(vec![
        FieldPath::Type,
        FieldPath::Source,
        FieldPath::Data(vec!["primaryEmail".into()]),
        FieldPath::Data(vec!["n".into()]),
        FieldPath::Data(vec!["missing".into()]),
        FieldPath::Meta("none".into()),
    ])
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        arb_value().prop_map(|v| Op::Eq(Some(v))),
        arb_value().prop_map(|v| Op::Ne(Some(v))),
        prop::collection::vec(arb_value(), 1..3).prop_map(Op::In),
        prop::collection::vec(arb_value(), 1..3).prop_map(Op::NotIn),
        prop::sample::select(vec!["t*", "*.edu", "?2", "*"])
            .prop_map(|g| Op::Glob(globset::Glob::new(g).unwrap().compile_matcher())),
        prop::sample::select(vec!["^t[12]$", "example", "^$"])
            .prop_map(|r| Op::Regex(regex::Regex::new(r).unwrap())),
        arb_value().prop_map(Op::Prefix),
        arb_value().prop_map(Op::Suffix),
        arb_value().prop_map(Op::Contains),
        any::<bool>().prop_map(Op::Exists),
    ]
}

fn arb_condition() -> impl Strategy<Value = Condition> {
    let leaf = (arb_path(), arb_op()).prop_map(|(p, o)| Condition::Field(p, o));
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Condition::All),
            prop::collection::vec(inner.clone(), 1..3).prop_map(Condition::Any),
            inner.prop_map(|c| Condition::Not(Box::new(c))),
        ]
    })
}

fn arb_routes() -> impl Strategy<Value = Vec<Route>> {
    prop::collection::vec((arb_condition(), any::<bool>()), 1..12).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (condition, cont))| route(&format!("r{i}"), condition, &["s"], cont))
            .collect()
    })
}

proptest! {
    #[test]
    fn not_never_matches_what_the_plain_condition_matches(c in arb_condition(), e in arb_event()) {
        let negated = Condition::Not(Box::new(c.clone()));
        prop_assert_ne!(c.matches(&e), negated.matches(&e));
    }

    #[test]
    fn any_and_all_agree_with_their_parts(a in arb_condition(), b in arb_condition(), e in arb_event()) {
        let (ma, mb) = (a.matches(&e), b.matches(&e));
        prop_assert_eq!(Condition::All(vec![a.clone(), b.clone()]).matches(&e), ma && mb);
        prop_assert_eq!(Condition::Any(vec![a, b]).matches(&e), ma || mb);
    }

    #[test]
    fn the_index_never_changes_the_answer(routes in arb_routes(), e in arb_event()) {
        let table = RouteTable::new(routes, vec![]);
        prop_assert_eq!(names(&table.matching_routes(&e)), names(&table.matching_routes_linear(&e)));
    }

    #[test]
    fn a_route_and_its_negation_split_every_event(c in arb_condition(), e in arb_event()) {
        let table = RouteTable::new(
            vec![
                route("plain", c.clone(), &["x"], true),
                route("negated", Condition::Not(Box::new(c)), &["y"], true),
            ],
            vec![],
        );
        let matched = names(&table.matching_routes(&e));
        prop_assert_eq!(matched.len(), 1, "exactly one of the two matches: {:?}", matched);
    }
}

#[test]
fn routes_match_on_enriched_fields() {
    let path = FieldPath::parse("enriched.course.name").unwrap();
    assert_eq!(
        path,
        FieldPath::Enriched(vec!["course".into(), "name".into()])
    );
    assert_eq!(path.to_string(), "enriched.course.name");
    assert!(FieldPath::parse("enriched").is_err());
    let glob = globset::Glob::new("AP *").unwrap().compile_matcher();
    let ap = Condition::Field(path.clone(), Op::Glob(glob));
    let mut e = event("classroom.courses.students.created", "classroom", "x");
    assert!(!ap.matches(&e), "not enriched: the field is missing");
    e.enriched
        .insert("course".into(), json!({"id": "1", "name": "AP Biology"}));
    assert!(ap.matches(&e));
    e.enriched
        .insert("course".into(), json!({"id": "1", "name": "Biology"}));
    assert!(!ap.matches(&e));
}
