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
    assert_eq!(table.always_tried(), 0);
    let e = event("type.9876", "s", "e");
    assert_eq!(table.index.candidates(&e), [9876]);
    assert_eq!(names(&table.matching_routes(&e)), ["r9876"]);
}

fn email_path() -> FieldPath {
    FieldPath::Data(vec!["primaryEmail".into()])
}

fn suffix(path: FieldPath, value: &str) -> Condition {
    Condition::Field(path, Op::Suffix(value.to_owned()))
}

/// The issue's shape: one route per school, all of the same type, and a catch-all.
fn schools(n: usize, per_school: impl Fn(usize) -> Condition) -> RouteTable {
    let mut routes: Vec<Route> = (0..n)
        .map(|i| {
            let school = Condition::All(vec![
                eq(FieldPath::Type, "directory.users.add"),
                per_school(i),
            ]);
            route(&format!("school{i}"), school, &["x"], false)
        })
        .collect();
    routes.push(route("everything", Condition::always(), &["log"], false));
    RouteTable::new(routes, vec![])
}

#[test]
fn a_route_per_school_by_email_suffix_tries_only_that_school() {
    let table = schools(10_000, |i| {
        suffix(email_path(), &format!("@school{i}.example.org"))
    });
    assert_eq!(table.always_tried(), 1, "only the catch-all");
    let e = event(
        "directory.users.add",
        "directory",
        "ada@school9999.example.org",
    );
    // Not filed under the type all 10,000 share, but under each school's own suffix:
    // `@school999.example.org` is not a suffix of `@school9999.example.org`.
    assert_eq!(table.index.candidates(&e), [9999, 10_000]);
    assert_eq!(names(&table.matching_routes(&e)), ["school9999"]);
    let other = event("directory.users.add", "directory", "ada@elsewhere.org");
    assert_eq!(names(&table.matching_routes(&other)), ["everything"]);
    let wrong_type = event(
        "directory.users.delete",
        "directory",
        "ada@school17.example.org",
    );
    assert_eq!(table.index.candidates(&wrong_type), [17, 10_000]);
    assert_eq!(names(&table.matching_routes(&wrong_type)), ["everything"]);
}

#[test]
fn a_route_per_school_by_meta_domain_tries_only_that_school() {
    let table = schools(10_000, |i| {
        eq(
            FieldPath::Meta("domain".into()),
            &format!("school{i}.example.org"),
        )
    });
    let mut e = event("directory.users.add", "directory", "ada@x");
    e.meta
        .insert("domain".into(), "school4321.example.org".into());
    assert_eq!(table.index.candidates(&e), [4321, 10_000]);
    assert_eq!(names(&table.matching_routes(&e)), ["school4321"]);
}

#[test]
fn type_globs_are_looked_up_by_their_literal_start() {
    let glob = |g: &str| {
        Condition::Field(
            FieldPath::Type,
            Op::Glob(globset::Glob::new(g).unwrap().compile_matcher()),
        )
    };
    let table = RouteTable::new(
        vec![
            route("users", glob("directory.users.*"), &["x"], true),
            route("courses", glob("classroom.courses.*"), &["y"], true),
            route("any-add", glob("*.add"), &["z"], true),
        ],
        vec![],
    );
    assert_eq!(
        table.always_tried(),
        1,
        "`*.add` starts with nothing literal"
    );
    let e = event("directory.users.add", "directory", "a@b");
    assert_eq!(table.index.candidates(&e), [0, 2]);
    assert_eq!(names(&table.matching_routes(&e)), ["users", "any-add"]);
}

#[test]
fn an_unindexed_route_keeps_its_place_between_indexed_ones() {
    // `continue` on the first, a regex (always tried) in the middle that stops matching.
    let regex = Condition::Field(email_path(), Op::Regex(regex::Regex::new("^ada@").unwrap()));
    let table = RouteTable::new(
        vec![
            route("first", suffix(email_path(), "@s1.org"), &["a"], true),
            route("regex", regex, &["b"], false),
            route("after", suffix(email_path(), ".org"), &["c"], false),
        ],
        vec!["audit".into()],
    );
    let e = event("t", "s", "ada@s1.org");
    assert_eq!(names(&table.matching_routes(&e)), ["first", "regex"]);
    let e = event("t", "s", "bob@s1.org");
    assert_eq!(names(&table.matching_routes(&e)), ["first", "after"]);
    let e = event("t", "s", "bob@s1.com");
    assert_eq!(table.targets(&e), table.targets_linear(&e));
    assert_eq!(table.targets(&e)[0].route, UNMATCHED);
}

#[test]
fn an_any_is_filed_under_every_branch_and_an_empty_in_never_matches() {
    let any = Condition::Any(vec![
        eq(FieldPath::Meta("domain".into()), "s1.org"),
        suffix(email_path(), "@s2.org"),
    ]);
    let table = RouteTable::new(
        vec![
            route(
                "never",
                Condition::Field(FieldPath::Type, Op::In(vec![])),
                &["n"],
                false,
            ),
            route("either", any, &["x"], false),
        ],
        vec![],
    );
    assert_eq!(table.always_tried(), 0);
    let mut e = event("t", "s", "a@s1.org");
    assert!(table.index.candidates(&e).is_empty());
    e.meta.insert("domain".into(), "s1.org".into());
    assert_eq!(names(&table.matching_routes(&e)), ["either"]);
    let e = event("t", "s", "a@s2.org");
    assert_eq!(names(&table.matching_routes(&e)), ["either"]);
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

// The index's own property tests: events and routes drawn from a small vocabulary of
// schools, so that values, prefixes and suffixes often coincide (and sometimes split a
// multi-byte character), on every kind of field the index looks up.

/// Texts events carry and routes compare with, often overlapping each other.
const TEXTS: &[&str] = &[
    "directory.users.add",
    "directory.users.delete",
    "directory.groups.add",
    "classroom.courses.created",
    "a@s1.org",
    "b@s1.org",
    "a@s11.org",
    "a@s2.org",
    "é@s1.org",
    "s1.org",
    "s2.org",
    "users/1",
    "users/1/x",
    "a/b",
    "€",
    "1",
    "",
];

/// Pieces routes use as values, prefixes and suffixes: whole texts, their starts and ends.
const PIECES: &[&str] = &[
    "directory.users.add",
    "directory.",
    "directory.users.",
    "classroom.",
    ".add",
    "add",
    "a@s1.org",
    "@s1.org",
    "@s11.org",
    "s1.org",
    "1.org",
    ".org",
    "a@",
    "é",
    "é@",
    "\u{82}",
    "€",
    "users/",
    "users/1",
    "1",
    "/x",
    "",
];

const GLOBS: &[&str] = &[
    "directory.users.*",
    "directory.*.add",
    "directory.users.?dd",
    "directory.{users,groups}.add",
    "[cd]*",
    "*.add",
    "*@s1.org",
    "a@s1.*",
    "é@*",
    "users/*",
    "users/**",
    "users/**/x",
    "**/x",
    "a\\@*",
    "s1.org",
    "*",
];

fn arb_text() -> impl Strategy<Value = String> {
    prop::sample::select(TEXTS).prop_map(str::to_owned)
}

fn arb_piece() -> impl Strategy<Value = String> {
    prop::sample::select(PIECES).prop_map(str::to_owned)
}

/// A value of a data field: text, a number, a boolean, null, an array, or nothing.
fn arb_json() -> impl Strategy<Value = Option<serde_json::Value>> {
    prop_oneof![
        4 => arb_text().prop_map(|t| Some(json!(t))),
        1 => Just(Some(json!(1))),
        1 => Just(Some(json!(true))),
        1 => Just(Some(serde_json::Value::Null)),
        1 => prop::collection::vec(arb_text(), 0..3).prop_map(|items| Some(json!(items))),
        1 => Just(None),
    ]
}

fn arb_school_event() -> impl Strategy<Value = Event> {
    (
        arb_text(),
        arb_text(),
        prop::option::of(arb_text()),
        arb_json(),
        prop::option::of(arb_text()),
    )
        .prop_map(|(ty, source, subject, email, domain)| {
            let mut data = serde_json::Map::new();
            if let Some(email) = email {
                data.insert("primaryEmail".into(), email);
            }
            let mut e = Event::new("1", source, ty, Utc::now(), serde_json::Value::Object(data));
            if let Some(subject) = subject {
                e = e.with_subject(subject);
            }
            if let Some(domain) = domain {
                e.meta.insert("domain".into(), domain.into());
            }
            e
        })
}

fn arb_school_path() -> impl Strategy<Value = FieldPath> {
    prop::sample::select(vec![
        FieldPath::Type,
        FieldPath::Source,
        FieldPath::Subject,
        email_path(),
        FieldPath::Data(vec!["missing".into()]),
        FieldPath::Meta("domain".into()),
    ])
}

fn arb_school_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => arb_piece().prop_map(|v| Op::Eq(Some(v))),
        1 => Just(Op::Eq(None)),
        1 => arb_piece().prop_map(|v| Op::Ne(Some(v))),
        2 => prop::collection::vec(arb_piece(), 0..4).prop_map(Op::In),
        1 => prop::collection::vec(arb_piece(), 0..3).prop_map(Op::NotIn),
        2 => prop::sample::select(GLOBS)
            .prop_map(|g| Op::Glob(globset::Glob::new(g).unwrap().compile_matcher())),
        1 => prop::sample::select(vec!["^directory\\.", "s1", "^$"])
            .prop_map(|r| Op::Regex(regex::Regex::new(r).unwrap())),
        3 => arb_piece().prop_map(Op::Prefix),
        3 => arb_piece().prop_map(Op::Suffix),
        1 => arb_piece().prop_map(Op::Contains),
        1 => any::<bool>().prop_map(Op::Exists),
    ]
}

fn arb_school_condition() -> impl Strategy<Value = Condition> {
    let leaf = (arb_school_path(), arb_school_op()).prop_map(|(p, o)| Condition::Field(p, o));
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            3 => prop::collection::vec(inner.clone(), 0..4).prop_map(Condition::All),
            2 => prop::collection::vec(inner.clone(), 0..3).prop_map(Condition::Any),
            1 => inner.prop_map(|c| Condition::Not(Box::new(c))),
        ]
    })
}

/// Tables of up to 40 routes, with `continue` flags and the odd catch-all, and a random
/// `unmatched`.
fn arb_school_table() -> impl Strategy<Value = RouteTable> {
    let spec = prop_oneof![
        12 => (arb_school_condition(), any::<bool>()),
        1 => any::<bool>().prop_map(|cont| (Condition::always(), cont)),
    ];
    (
        prop::collection::vec(spec, 0..40),
        prop::collection::vec(Just("audit".to_owned()), 0..2),
    )
        .prop_map(|(specs, unmatched)| {
            let routes = specs
                .into_iter()
                .enumerate()
                .map(|(i, (condition, cont))| route(&format!("r{i}"), condition, &["s", "t"], cont))
                .collect();
            RouteTable::new(routes, unmatched)
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn indexed_targets_are_the_linear_targets_in_order(
        table in arb_school_table(),
        events in prop::collection::vec(arb_school_event(), 1..8),
    ) {
        for e in &events {
            prop_assert_eq!(table.targets(e), table.targets_linear(e), "event {:?}", e);
        }
    }

    #[test]
    fn every_matching_route_is_a_candidate(
        condition in arb_school_condition(),
        events in prop::collection::vec(arb_school_event(), 1..8),
    ) {
        let table = RouteTable::new(vec![route("r", condition.clone(), &["s"], false)], vec![]);
        for e in &events {
            if condition.matches(e) {
                prop_assert_eq!(table.index.candidates(e), [0], "event {:?}", e);
            }
        }
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
