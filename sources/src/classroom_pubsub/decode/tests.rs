use proptest::prelude::*;
use serde_json::json;

use super::*;

fn envelope(notification: &Value) -> Vec<u8> {
    let data = base64::engine::general_purpose::STANDARD.encode(notification.to_string());
    json!({
        "message": {
            "attributes": {"registrationId": "reg-1"},
            "data": data,
            "messageId": "42",
            "publishTime": "2026-11-20T09:15:02.512Z"
        },
        "subscription": "projects/p/subscriptions/s"
    })
    .to_string()
    .into_bytes()
}

fn decoded(notification: Value) -> Event {
    decode_push("classroom", &envelope(&notification), None).unwrap()
}

fn error(body: &[u8]) -> String {
    decode_push("classroom", body, None).unwrap_err().reason
}

#[test]
fn all_four_collections_mirror_the_get_call() {
    let cases = [
        (
            json!({"collection": "courses.students", "eventType": "CREATED",
                   "resourceId": {"courseId": "1", "userId": "2"}}),
            "classroom.courses.students.created",
            "courses/1/students/2",
        ),
        (
            json!({"collection": "courses.teachers", "eventType": "DELETED",
                   "resourceId": {"courseId": "1", "userId": "3"}}),
            "classroom.courses.teachers.deleted",
            "courses/1/teachers/3",
        ),
        (
            json!({"collection": "courses.courseWork", "eventType": "MODIFIED",
                   "resourceId": {"courseId": "1", "id": "4"}}),
            "classroom.courses.courseWork.modified",
            "courses/1/courseWork/4",
        ),
        (
            json!({"collection": "courses.courseWork.studentSubmissions", "eventType": "MODIFIED",
                   "resourceId": {"courseId": "1", "courseWorkId": "4", "id": "5"}}),
            "classroom.courses.courseWork.studentSubmissions.modified",
            "courses/1/courseWork/4/studentSubmissions/5",
        ),
    ];
    for (notification, ty, subject) in cases {
        let event = decoded(notification.clone());
        assert_eq!(event.ty, ty);
        assert_eq!(event.subject.as_deref(), Some(subject));
        assert_eq!(event.data, notification);
    }
}

#[test]
fn a_future_collection_is_kept_generic() {
    let event = decoded(
        json!({"collection": "courses.announcements", "eventType": "CREATED",
                               "resourceId": {"courseId": "1", "id": "9"}}),
    );
    assert_eq!(event.ty, "classroom.courses.announcements.created");
    assert_eq!(event.subject.as_deref(), Some("courses/1/announcements/9"));

    let event = decoded(
        json!({"collection": "userProfiles.guardians", "eventType": "CREATED",
                               "resourceId": {"studentId": "1"}}),
    );
    assert_eq!(event.ty, "classroom.userProfiles.guardians.created");
    assert_eq!(event.subject, None);
}

#[test]
fn meta_holds_attributes_subscription_id_and_time() {
    let event = decoded(
        json!({"collection": "courses.students", "eventType": "CREATED",
                               "resourceId": {"courseId": "1", "userId": "2"}}),
    );
    assert_eq!(event.id, "42");
    assert_eq!(event.source, "classroom");
    assert_eq!(event.time_text(), "2026-11-20T09:15:02.512Z");
    let meta: Vec<(&str, &str)> = event
        .meta
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_str()))
        .collect();
    assert_eq!(
        meta,
        [
            ("messageId", "42"),
            ("publishTime", "2026-11-20T09:15:02.512Z"),
            ("registrationId", "reg-1"),
            ("subscription", "projects/p/subscriptions/s"),
        ]
    );
}

#[test]
fn snake_case_names_are_read() {
    let body = json!({"message": {
        "data": "eyJjb2xsZWN0aW9uIjoiY291cnNlcy5zdHVkZW50cyIsImV2ZW50VHlwZSI6IkNSRUFURUQiLCJyZXNvdXJjZUlkIjp7ImNvdXJzZUlkIjoiMSIsInVzZXJJZCI6IjIifX0",
        "message_id": "7", "publish_time": "2026-01-01T00:00:00Z"}});
    let event = decode_push(
        "c",
        body.to_string().as_bytes(),
        Some("projects/p/subscriptions/pull"),
    )
    .unwrap();
    assert_eq!(event.id, "7");
    assert_eq!(event.time_text(), "2026-01-01T00:00:00Z");
    assert_eq!(event.meta["subscription"], "projects/p/subscriptions/pull");
    assert_eq!(event.subject.as_deref(), Some("courses/1/students/2"));
}

#[test]
fn errors_name_the_field() {
    assert!(error(b"{").starts_with("the body is not JSON"));
    assert!(error(b"[]").contains("found an array"));
    assert!(error(b"{}").contains("`message` is missing"));
    assert!(
        error(br#"{"message": {"publishTime": "2026-01-01T00:00:00Z", "data": "e30="}}"#)
            .contains("`message.messageId` is missing")
    );
    assert!(
        error(br#"{"message": {"messageId": 5}}"#).contains("`message.messageId` must be a string")
    );
    assert!(
        error(br#"{"message": {"messageId": "1", "publishTime": "yesterday", "data": "e30="}}"#)
            .contains("`message.publishTime` is not an RFC 3339 time")
    );
    assert!(error(br#"{"message": {"messageId": "1", "publishTime": "2026-01-01T00:00:00Z", "data": "!!"}}"#)
        .contains("`message.data` is not valid base64"));
    assert!(error(br#"{"message": {"messageId": "1", "publishTime": "2026-01-01T00:00:00Z", "data": "aGVsbG8="}}"#)
        .contains("`message.data` is not JSON"));
    assert!(error(br#"{"message": {"messageId": "1", "publishTime": "2026-01-01T00:00:00Z", "data": "e30="}}"#)
        .contains("`message.data.collection` is missing"));
    assert!(error(br#"{"message": {"messageId": "1", "publishTime": "2026-01-01T00:00:00Z", "data": "e30=", "attributes": {"a": 1}}}"#)
        .contains("`message.attributes.a` must be a string"));
}

#[test]
fn a_known_collection_needs_its_ids() {
    let body = envelope(
        &json!({"collection": "courses.students", "eventType": "CREATED",
                                "resourceId": {"courseId": "1"}}),
    );
    assert_eq!(error(&body), "`message.data.resourceId.userId` is missing");
    let body = envelope(
        &json!({"collection": "courses.courseWork", "eventType": "CREATED",
                                "resourceId": {"courseId": "1", "id": "../x"}}),
    );
    assert!(error(&body).contains("is not a resource id"));
}

#[test]
fn a_bad_collection_name_is_refused() {
    let body = envelope(&json!({"collection": "courses/../students", "eventType": "CREATED"}));
    assert!(error(&body).contains("is not a Classroom collection name"));
    let body = envelope(&json!({"collection": "courses.students", "eventType": "CREATED!"}));
    assert!(error(&body).contains("is not an event type"));
}

proptest! {
    #[test]
    fn any_bytes_decode_or_fail_without_panicking(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_push("classroom", &body, None);
    }

    #[test]
    fn any_data_decodes_or_fails_without_panicking(data in proptest::collection::vec(any::<u8>(), 0..256),
                                                    id in ".{0,20}", time in ".{0,30}") {
        let body = json!({"message": {"data": base64::engine::general_purpose::STANDARD.encode(&data),
                                       "messageId": id, "publishTime": time}});
        let _ = decode_push("classroom", body.to_string().as_bytes(), None);
    }

    #[test]
    fn any_notification_fields_decode_or_fail_without_panicking(
        collection in "[a-zA-Z./]{0,40}", event_type in ".{0,12}",
        ids in proptest::collection::btree_map("[a-zA-Z]{1,12}", ".{0,12}", 0..4),
    ) {
        let notification = json!({"collection": collection, "eventType": event_type, "resourceId": ids});
        if let Ok(event) = decode_push("classroom", &envelope(&notification), None) {
            prop_assert!(event.ty.starts_with("classroom."));
            prop_assert_eq!(event.id, "42");
        }
    }
}
