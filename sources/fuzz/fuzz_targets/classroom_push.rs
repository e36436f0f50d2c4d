//! Any bytes as a Pub/Sub push body: the Classroom decoder returns an event or an error,
//! never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(event) = herald_sources::classroom_pubsub::decode::decode_push("classroom", body, None) {
        assert!(event.ty.starts_with("classroom."));
        assert!(!event.id.is_empty());
    }
});
