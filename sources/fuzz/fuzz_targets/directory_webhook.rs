//! Any bytes as a Directory request: `Name: value` header lines, an empty line, then the
//! body. The decoder returns an event or an error, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let split = input
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(input.len());
    let (head, body) = input.split_at(split);
    let body = body.get(2..).unwrap_or_default();
    let headers: Vec<(String, String)> = String::from_utf8_lossy(head)
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let Ok(headers) = herald_sources::directory::decode::header_map(&headers) else {
        return;
    };
    // A fixed time: the decoder is pure, so one input always gives one output.
    let received = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    if let Ok(message) =
        herald_sources::directory::decode::decode("directory", &headers, body, received)
    {
        assert!(message.event.ty.starts_with("directory.users."));
    }
});

