//! What the operator reads in the log: a warning for an unauthenticated source, each problem
//! once with the source's name, and never a token.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use crate::common::*;

/// Every log line of this process.
fn lines() -> &'static Mutex<Vec<String>> {
    static LINES: OnceLock<&'static Mutex<Vec<String>>> = OnceLock::new();
    LINES.get_or_init(|| {
        let lines: &'static Mutex<Vec<String>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Capture(lines))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        lines
    })
}

struct Capture(&'static Mutex<Vec<String>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0
            .lock()
            .unwrap()
            .extend(text.lines().map(str::to_owned));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged(with: &[&str]) -> Vec<String> {
    lines()
        .lock()
        .unwrap()
        .iter()
        .filter(|l| with.iter().all(|w| l.contains(w)))
        .cloned()
        .collect()
}

#[tokio::test]
async fn problems_are_logged_once_with_the_source_and_never_a_token() {
    lines();
    let gateway = Gateway::start(
        r#"
sources:
  open-classroom: { type: classroom_pubsub }
  logged-directory:
    type: directory_webhook
    path: /webhook/directory
    channel_tokens: ["398348u3tu83ut8uu38"]
"#,
    )
    .await;
    assert_eq!(
        logged(&["WARN", "open-classroom", "has no `auth`"]).len(),
        1,
        "{:?}",
        lines().lock().unwrap()
    );

    let wrong = HttpFixture::read("directory/user-add.http")
        .with_header("X-Goog-Channel-Token", Some("guessed-secret-123"));
    assert_eq!(
        wrong
            .request(&client(), &gateway.url(""))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let bad = HttpFixture::read("directory/user-add.http")
        .with_header("X-Goog-Message-Number", Some("ten"));
    assert_eq!(
        bad.request(&client(), &gateway.url(""))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    let good = HttpFixture::read("directory/user-add.http");
    assert_eq!(
        good.request(&client(), &gateway.url(""))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let forbidden = logged(&[
        "logged-directory",
        "403",
        "matches none of `channel_tokens`",
    ]);
    assert_eq!(forbidden.len(), 1, "{forbidden:?}");
    let bad_request = logged(&[
        "logged-directory",
        "400",
        "X-Goog-Message-Number must be a number",
    ]);
    assert_eq!(bad_request.len(), 1, "{bad_request:?}");
    assert!(
        logged(&["guessed-secret-123"]).is_empty(),
        "a token was logged"
    );
    assert!(
        logged(&["398348u3tu83ut8uu38"]).is_empty(),
        "a token was logged"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_channel_expiring_within_an_hour_is_warned_about_once() {
    lines();
    let gateway = Gateway::start(
        r#"
sources:
  expiring-directory:
    type: directory_webhook
    path: /webhook/directory
    channel_tokens: ["398348u3tu83ut8uu38"]
"#,
    )
    .await;
    let soon = (chrono::Utc::now() + chrono::TimeDelta::minutes(30)).to_rfc2822();
    for number in ["10", "11"] {
        let request = HttpFixture::read("directory/user-add.http")
            .with_header("X-Goog-Channel-Expiration", Some(&soon))
            .with_header("X-Goog-Message-Number", Some(number));
        assert_eq!(
            request
                .request(&client(), &gateway.url(""))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let warnings = logged(&[
        "WARN",
        "expiring-directory",
        "directoryApiId",
        "expires within an hour",
    ]);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    // The fixture's own channel expires in 2030: no warning.
    let later = HttpFixture::read("directory/user-add.http")
        .with_header("X-Goog-Channel-ID", Some("lasting"));
    assert_eq!(
        later
            .request(&client(), &gateway.url(""))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(logged(&["lasting", "expires within an hour"]).is_empty());
    gateway.stop().await;
}
