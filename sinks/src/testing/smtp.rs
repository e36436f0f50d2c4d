//! A real SMTP server on 127.0.0.1 for the email sink's tests: aiosmtpd (Debian's
//! `python3-aiosmtpd`, installed by scripts/test.sh) running `smtp_server.py`, with scripted
//! answers, STARTTLS or implicit TLS, and AUTH. Every message it is sent is reported back with
//! its envelope and its raw text.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const SCRIPT: &str = include_str!("smtp_server.py");

/// The Python that has aiosmtpd: Debian's, not a pyenv `python3` earlier on PATH.
fn python() -> String {
    std::env::var("HERALD_TEST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".to_owned())
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Answers to the first DATA commands, in order (`"451 4.3.0 try later"`); then 250.
    pub script: Vec<String>,
    /// `None`, `Some("starttls")` or `Some("implicit")`, with the certificate and key.
    pub tls: Option<(&'static str, std::path::PathBuf, std::path::PathBuf)>,
    pub require_starttls: bool,
    /// Accept AUTH with these credentials.
    pub login: Option<(String, String)>,
}

/// One DATA command as the server saw it.
#[derive(Clone, Debug, Deserialize)]
pub struct Received {
    /// The answer the server gave (`250 …`, or a scripted refusal).
    pub answer: String,
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// The message as sent (headers and body).
    pub data: String,
    /// Whether the session was encrypted (STARTTLS or implicit TLS).
    pub tls: bool,
    /// The authenticated user, if any.
    pub login: Option<String>,
}

impl Received {
    pub fn accepted(&self) -> bool {
        self.answer.starts_with('2')
    }
    pub fn message(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(self.data.as_bytes())
            .expect("a parsable message")
    }
}

pub struct SmtpServer {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl SmtpServer {
    pub async fn start(options: Options) -> SmtpServer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let script = dir.path().join("smtp_server.py");
        std::fs::write(&script, SCRIPT).expect("write the server script");
        let path = |p: &Path| p.display().to_string();
        let (tls, cert, key) = match &options.tls {
            Some((mode, cert, key)) => (Some(*mode), Some(path(cert)), Some(path(key))),
            None => (None, None, None),
        };
        let config = json!({
            "script": options.script,
            "tls": tls,
            "cert": cert,
            "key": key,
            "require_starttls": options.require_starttls,
            "user": options.login.as_ref().map(|l| &l.0),
            "password": options.login.as_ref().map(|l| &l.1),
        });
        let mut child = Command::new(python())
            .arg(&script)
            .arg(config.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (scripts/test.sh installs python3-aiosmtpd): {e}",
                    python()
                )
            });
        let stdout = child.stdout.take().expect("the server's stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the SMTP server starts within 20 s")
            .expect("the SMTP server's output")
            .expect("the SMTP server printed its port (is python3-aiosmtpd installed?)");
        let port = serde_json::from_str::<serde_json::Value>(&first)
            .ok()
            .and_then(|v| v["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("unexpected first line from the SMTP server: {first}"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Received>(&line) {
                    Ok(r) => sink.lock().unwrap().push(r),
                    Err(e) => panic!("unexpected line from the SMTP server ({e}): {line}"),
                }
            }
        });
        SmtpServer {
            port,
            received,
            _child: child,
            _dir: dir,
        }
    }

    /// Every DATA command so far, refused ones included.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The messages the server accepted.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(Received::accepted)
            .collect()
    }

    /// Waits until `n` messages were accepted (at most 30 s).
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        super::eventually(
            &format!("{n} accepted messages"),
            Duration::from_secs(30),
            || {
                let got = self.accepted();
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }
}
