//! `herald forget USER_ID` through the binary (docs/architecture.md §11): refused while the
//! gateway holds its journal; on the stopped gateway it removes exactly that user's events
//! (with their undelivered deliveries), says what it cannot reach, and finds nothing the
//! second time.

mod common;

use std::time::Duration;

use common::*;
use herald_testkit::wait::until;

fn config() -> String {
    format!(
        "{}sinks:\n  audit: {{ type: file, path: audit.jsonl }}\n  hook:\n    type: webhook\n    url: http://127.0.0.1:9/gone\n    delivery: {{ initial_backoff: 1h, max_backoff: 1h, max_attempts: 100 }}\nroutes:\n  - name: all\n    to: [audit, hook]\n",
        config_head()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_removes_one_users_events_from_a_stopped_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(dir.path(), &config());
    let client = reqwest::Client::new();
    for number in [1, 2] {
        let sent = directory_request(&client, &gateway, "chan", number)
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 200);
    }
    until(
        "both events in the audit file",
        Duration::from_secs(20),
        || gateway.file_records("audit.jsonl").len() == 2,
    )
    .await;

    let refused = gateway.cli(&["forget", "1"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("held by a running gateway: stop it"),
        "{}",
        text(&refused.stderr)
    );

    assert_eq!(gateway.terminate().code(), Some(0));
    let out = gateway.cli(&["forget", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("forgot user 1:"), "{stdout}");
    assert!(
        stdout.contains("stored events:            1 (1 deliveries dropped undelivered)"),
        "user 1's event and its webhook delivery: {stdout}"
    );
    assert!(stdout.contains("out of Herald's reach"), "{stdout}");
    // Forgetting reaches the journal's files: no byte of the user's event is left in them
    // (the log's segments are rewritten, not appended to).
    for file in files_under(&dir.path().join("herald-data")) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(17).any(|w| w == b"user1@example.edu"),
            "{} still holds user 1's address",
            file.display()
        );
    }
    assert!(
        files_under(&dir.path().join("herald-data"))
            .iter()
            .any(|f| std::fs::read(f)
                .unwrap()
                .windows(17)
                .any(|w| w == b"user2@example.edu")),
        "user 2's event is still stored"
    );

    // Nothing of user 1 is left; user 2's event and its delivery still are.
    let again = text(&gateway.cli(&["forget", "1"]).stdout);
    assert!(
        again.contains("stored events:            0 (0 deliveries dropped undelivered)"),
        "{again}"
    );
    let other = text(&gateway.cli(&["forget", "2"]).stdout);
    assert!(
        other.contains("stored events:            1 (1 deliveries dropped undelivered)"),
        "{other}"
    );
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}
