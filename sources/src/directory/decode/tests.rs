use proptest::prelude::*;

use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    header_map(&pairs).unwrap()
}

fn add_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        (CHANNEL_ID, "directoryApiId"),
        (CHANNEL_TOKEN, "398348u3tu83ut8uu38"),
        (CHANNEL_EXPIRATION, "Tue, 29 Oct 2030 20:32:02 GMT"),
        (RESOURCE_ID, "ret08u3rv24htgh289g"),
        (
            RESOURCE_URI,
            "https://admin.googleapis.com/admin/directory/v1/users?domain=mydomain.com&event=add",
        ),
        (RESOURCE_STATE, "add"),
        (MESSAGE_NUMBER, "10"),
    ]
}

fn received() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn without(name: &str) -> HeaderMap {
    let pairs: Vec<_> = add_headers()
        .into_iter()
        .filter(|(k, _)| *k != name)
        .collect();
    headers(&pairs)
}

fn with(name: &str, value: &str) -> HeaderMap {
    let mut map = without(name);
    map.insert(
        HeaderName::from_bytes(name.as_bytes()).unwrap(),
        HeaderValue::from_str(value).unwrap(),
    );
    map
}

fn error(headers: &HeaderMap, body: &[u8]) -> String {
    decode("directory", headers, body, received())
        .unwrap_err()
        .reason
}

#[test]
fn a_user_add_becomes_the_event() {
    let body =
        br#"{"kind": "admin#directory#user", "id": "1112", "primaryEmail": "a@mydomain.com"}"#;
    let message = decode("directory", &headers(&add_headers()), body, received()).unwrap();
    assert!(!message.sync);
    assert_eq!(message.channel_id, "directoryApiId");
    let event = message.event;
    assert_eq!(event.id, "directoryApiId/10");
    assert_eq!(event.source, "directory");
    assert_eq!(event.ty, "directory.users.add");
    assert_eq!(event.subject.as_deref(), Some("users/1112"));
    assert_eq!(event.time, received());
    assert_eq!(event.data["primaryEmail"], "a@mydomain.com");
    let meta: Vec<(&str, &str)> = event
        .meta
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_str()))
        .collect();
    assert_eq!(
        meta,
        [
            ("channelExpiration", "2030-10-29T20:32:02Z"),
            ("channelId", "directoryApiId"),
            ("domain", "mydomain.com"),
            ("event", "add"),
            ("messageNumber", "10"),
            ("resourceId", "ret08u3rv24htgh289g"),
            ("resourceState", "add"),
            (
                "resourceUri",
                "https://admin.googleapis.com/admin/directory/v1/users?domain=mydomain.com&event=add"
            ),
        ]
    );
    assert!(!event.to_json().contains("398348u3tu83ut8uu38"));
}

#[test]
fn the_body_is_kept_as_it_came_and_its_id_and_etag_are_read_once() {
    // Pretty-printed, as Google's bodies are; a repeated member counts once, the last, as
    // in a parsed object.
    let body = b"{\n  \"id\": \"1\",\n  \"etag\": \"\\\"e1\\\"\",\n  \"name\": {\"fullName\": \"A \\u00e9\"},\n  \"id\": \"1112\"\n}\n";
    let message = decode("directory", &headers(&add_headers()), body, received()).unwrap();
    assert_eq!(message.event.subject.as_deref(), Some("users/1112"));
    assert_eq!(message.etag.as_deref(), Some("\"e1\""));
    assert_eq!(
        message.event.data.text(),
        Some(r#"{"id":"1","etag":"\"e1\"","name":{"fullName":"A \u00e9"},"id":"1112"}"#),
        "on one line, escapes as sent"
    );
    assert_eq!(message.event.data["name"]["fullName"], "A é");
    assert_eq!(message.event.data["id"], "1112");
    let no_etag = decode(
        "directory",
        &headers(&add_headers()),
        br#"{"id": "1", "etag": 7}"#,
        received(),
    )
    .unwrap();
    assert_eq!(
        no_etag.etag, None,
        "an etag that is not a string is not one"
    );
}

#[test]
fn sync_has_an_empty_body() {
    let message = decode("directory", &with(RESOURCE_STATE, "sync"), b"", received()).unwrap();
    assert!(message.sync);
    assert_eq!(message.event.ty, "directory.users.sync");
    assert_eq!(message.event.data, Value::Null);
    assert_eq!(message.event.subject, None);
    assert_eq!(
        message.expiration.map(|t| t.timestamp()),
        Some(
            DateTime::parse_from_rfc3339("2030-10-29T20:32:02Z")
                .unwrap()
                .timestamp()
        )
    );
}

#[test]
fn customer_comes_from_the_uri() {
    let uri = "https://admin.googleapis.com/admin/directory/v1/users?customer=my_customer&event=delete&alt=json";
    let event = decode("d", &with(RESOURCE_URI, uri), b"{}", received())
        .unwrap()
        .event;
    assert_eq!(event.meta["customer"], "my_customer");
    assert_eq!(event.meta["event"], "delete");
    assert!(!event.meta.contains_key("alt"));
    assert!(!event.meta.contains_key("domain"));
}

#[test]
fn each_message_gets_its_own_uri_and_expiration_when_they_change() {
    // The thread remembers the last URI and expiration parsed; alternating must not mix them.
    let a = "https://admin.googleapis.com/admin/directory/v1/users?domain=a.edu&event=add";
    let b = "https://admin.googleapis.com/admin/directory/v1/users?customer=c1&event=delete";
    for (uri, expiration, domain, event, expires) in [
        (
            a,
            "Tue, 29 Oct 2030 20:32:02 GMT",
            Some("a.edu"),
            "add",
            "2030-10-29T20:32:02Z",
        ),
        (
            a,
            "Tue, 29 Oct 2030 20:32:02 GMT",
            Some("a.edu"),
            "add",
            "2030-10-29T20:32:02Z",
        ),
        (
            b,
            "Wed, 30 Oct 2030 08:00:00 GMT",
            None,
            "delete",
            "2030-10-30T08:00:00Z",
        ),
        (
            a,
            "Wed, 30 Oct 2030 08:00:00 GMT",
            Some("a.edu"),
            "add",
            "2030-10-30T08:00:00Z",
        ),
    ] {
        let mut map = with(RESOURCE_URI, uri);
        map.insert(
            HeaderName::from_bytes(CHANNEL_EXPIRATION.as_bytes()).unwrap(),
            HeaderValue::from_str(expiration).unwrap(),
        );
        let message = decode("d", &map, b"{}", received()).unwrap();
        let meta = &message.event.meta;
        assert_eq!(meta.get("domain").map(|v| v.as_str()), domain, "{uri}");
        assert_eq!(meta["event"], event);
        assert_eq!(meta.contains_key("customer"), domain.is_none());
        assert_eq!(meta["channelExpiration"], expires);
        assert_eq!(
            message.expiration.unwrap().to_rfc3339(),
            DateTime::parse_from_rfc3339(expires).unwrap().to_rfc3339()
        );
    }
    // An error is not remembered as a value: the same bad URI fails again.
    for _ in 0..2 {
        assert!(error(&with(RESOURCE_URI, "not a uri"), b"").contains("is not a URL"));
    }
}

#[test]
fn a_repeated_uri_parameter_counts_once_the_last() {
    let uri = "https://admin.googleapis.com/admin/directory/v1/users?event=add&domain=a.edu\
               &alt=json&domain=b.edu&customer=c1";
    let message = decode("d", &with(RESOURCE_URI, uri), b"{}", received()).unwrap();
    let meta = &message.event.meta;
    assert_eq!(meta["domain"], "b.edu");
    assert_eq!(meta["customer"], "c1");
    assert_eq!(meta["event"], "add");
    assert!(!meta.contains_key("alt"));
    let names: Vec<&str> = meta.keys().map(|k| k.as_ref()).collect();
    assert_eq!(
        names,
        [
            "channelExpiration",
            "channelId",
            "customer",
            "domain",
            "event",
            "messageNumber",
            "resourceId",
            "resourceState",
            "resourceUri"
        ]
    );
}

#[test]
fn channels_taking_turns_each_get_their_own_id_and_resource() {
    // The thread remembers the last channel id and resource id as shared text.
    for (channel, resource) in [("c1", "r1"), ("c1", "r1"), ("c2", "r2"), ("c1", "r2")] {
        let mut map = with(CHANNEL_ID, channel);
        map.insert(
            HeaderName::from_static("x-goog-resource-id"),
            HeaderValue::from_str(resource).unwrap(),
        );
        let message = decode("d", &map, b"{}", received()).unwrap();
        assert_eq!(message.channel_id, channel);
        assert_eq!(message.event.id, format!("{channel}/10"));
        assert_eq!(message.event.meta["channelId"], channel);
        assert_eq!(message.event.meta["resourceId"], resource);
    }
}

#[test]
fn a_channels_messages_share_its_long_values() {
    // Longer than a value kept inline (23 bytes), so each is one allocation for all the
    // events; the expiration as written (20 bytes) and the resource id here are inline.
    let long_channel = "01234567-89ab-cdef-0123-456789abcdef";
    let one = || decode("d", &with(CHANNEL_ID, long_channel), b"{}", received()).unwrap();
    let (first, second) = (one(), one());
    for name in ["channelId", "resourceUri"] {
        let (a, b) = (&first.event.meta[name], &second.event.meta[name]);
        assert!(a.is_heap_allocated(), "{name} is long");
        assert_eq!(a.as_ptr(), b.as_ptr(), "{name} is shared");
    }
    assert_eq!(first.event.meta["channelId"], long_channel);
}

#[test]
fn errors_name_the_header_or_field() {
    for name in [
        CHANNEL_ID,
        MESSAGE_NUMBER,
        RESOURCE_STATE,
        RESOURCE_ID,
        RESOURCE_URI,
    ] {
        assert_eq!(error(&without(name), b""), format!("missing header {name}"));
    }
    assert!(
        error(&with(MESSAGE_NUMBER, "ten"), b"")
            .contains("header X-Goog-Message-Number must be a number, found `ten`")
    );
    assert!(error(&with(MESSAGE_NUMBER, "-1"), b"").contains("must be a number"));
    assert!(error(&with(MESSAGE_NUMBER, "99999999999999999999999"), b"").contains("too large"));
    assert!(
        error(&with(RESOURCE_STATE, "add user"), b"")
            .contains("header X-Goog-Resource-State must be a word")
    );
    assert!(
        error(&with(RESOURCE_URI, "not a uri"), b"")
            .contains("header X-Goog-Resource-URI is not a URL")
    );
    assert!(
        error(&with(CHANNEL_EXPIRATION, "tomorrow"), b"")
            .contains("header X-Goog-Channel-Expiration is not an HTTP date")
    );
    assert!(
        error(&with(CHANNEL_ID, &"x".repeat(3000)), b"")
            .contains("header X-Goog-Channel-ID is too long")
    );
    assert!(error(&headers(&add_headers()), b"{\"id\":").starts_with("the body is not JSON"));
    assert!(error(&headers(&add_headers()), b"[1]").contains("must be a JSON object"));
    assert!(
        error(&headers(&add_headers()), br#"{"id": 5}"#)
            .contains("body field `id` must be a string")
    );
    assert!(error(&headers(&add_headers()), &[0xff, 0xfe]).starts_with("the body is not JSON"));
}

#[test]
fn non_ascii_header_text_is_refused() {
    let mut map = without(CHANNEL_ID);
    map.insert(
        HeaderName::from_static("x-goog-channel-id"),
        HeaderValue::from_bytes(b"caf\xe9").unwrap(),
    );
    assert_eq!(
        error(&map, b""),
        "header X-Goog-Channel-ID is not ASCII text"
    );
}

#[test]
fn leading_zeros_do_not_make_a_new_id() {
    let event = decode("d", &with(MESSAGE_NUMBER, "010"), b"", received())
        .unwrap()
        .event;
    assert_eq!(event.id, "directoryApiId/10");
}

/// Any JSON value: strings with quotes, backslashes, slashes and line breaks.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[ a\"\\\\/\n\té]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            proptest::collection::vec(("[a-z\" ]{1,5}", inner), 0..5)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_body_decodes_or_fails_without_panicking(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode("d", &headers(&add_headers()), &body, received());
    }

    /// Any JSON object, pretty-printed or not: what decodes is stored as the same JSON on
    /// one line, and it decodes unless its `id` is not a user id.
    #[test]
    fn a_body_is_stored_as_the_json_it_is(
        members in proptest::collection::vec(("(id|etag|name|[a-z\\\\\" ]{1,6})", json_value()), 0..6),
        pretty in any::<bool>(),
    ) {
        let object = Value::Object(members.into_iter().collect());
        let body = if pretty {
            serde_json::to_string_pretty(&object).unwrap()
        } else {
            serde_json::to_string(&object).unwrap()
        };
        match decode("d", &headers(&add_headers()), body.as_bytes(), received()) {
            Ok(message) => {
                let json = message.event.to_json();
                prop_assert!(!json.contains('\n'), "{json}");
                let stored: Value = serde_json::from_str(&json).unwrap();
                prop_assert_eq!(&stored["data"], &object);
                prop_assert_eq!(&*message.event.data, &object);
                prop_assert_eq!(message.etag.as_deref(), object.get("etag").and_then(Value::as_str));
            }
            Err(e) => prop_assert!(
                object.get("id").is_some_and(|id| !id.is_null() && !id.as_str().is_some_and(|id| !id.is_empty() && !id.contains('/'))),
                "refused for another reason than its id: {e:?} {body}"
            ),
        }
    }

    #[test]
    fn any_header_values_decode_or_fail_without_panicking(
        id in "[ -~]{0,40}", number in "[ -~]{0,24}", state in "[ -~]{0,16}",
        uri in "[ -~]{0,60}", expiration in "[ -~]{0,40}", body in ".{0,64}",
    ) {
        let map = headers(&[
            (CHANNEL_ID, &id), (MESSAGE_NUMBER, &number), (RESOURCE_STATE, &state),
            (RESOURCE_ID, "r"), (RESOURCE_URI, &uri), (CHANNEL_EXPIRATION, &expiration),
        ]);
        if let Ok(message) = decode("d", &map, body.as_bytes(), received()) {
            prop_assert!(message.event.ty.starts_with("directory.users."));
            prop_assert!(message.event.id.starts_with(id.trim()));
        }
    }
}

#[test]
fn header_map_refuses_bad_names() {
    let err = header_map(&[("bad name".into(), "v".into())]).unwrap_err();
    assert!(err.reason.contains("is not a header name"));
}

/// The headers are found in one pass over the map: a header sent twice is read from its
/// first value (as `HeaderMap::get` reads it), names match in any case, and other headers,
/// `X-Goog-` or not, are passed over.
#[test]
fn headers_found_in_one_pass_read_each_first_value() {
    let mut pairs = vec![
        ("Content-Type", "application/json"),
        ("X-Goog-Something-Else", "ignored"),
        ("x-goog-message-number", "7"),
    ];
    pairs.extend(
        add_headers()
            .into_iter()
            .filter(|(k, _)| *k != MESSAGE_NUMBER),
    );
    pairs.push((MESSAGE_NUMBER, "8"));
    pairs.push((RESOURCE_STATE, "delete"));
    let map = headers(&pairs);
    let found = Found::in_map(&map);
    assert_eq!(found.required(MESSAGE_NUMBER).unwrap(), "7");
    assert_eq!(found.required(RESOURCE_STATE).unwrap(), "add");
    assert_eq!(found.optional("X-Goog-Something-Else").unwrap(), None);
    for name in [
        CHANNEL_ID,
        CHANNEL_TOKEN,
        CHANNEL_EXPIRATION,
        RESOURCE_ID,
        RESOURCE_URI,
        RESOURCE_STATE,
        MESSAGE_NUMBER,
    ] {
        assert_eq!(found.get(name), map.get(name), "{name}");
    }
    let message = decode("d", &map, b"{}", received()).unwrap();
    assert_eq!(message.event.id, "directoryApiId/7");
    assert_eq!(message.event.ty, "directory.users.add");
}
