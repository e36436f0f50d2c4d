//! Helpers shared by the end-to-end tests: paths, the herald binary, and the fixtures of
//! `../shared/fixtures` turned into events.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    repo().join("../shared/fixtures")
}

pub fn herald() -> Command {
    Command::new(env!("CARGO_BIN_EXE_herald"))
}

/// Runs herald with `args`, feeding `stdin`, and returns its output.
pub fn run(args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = herald()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("HERALD_CONFIG")
        .spawn()
        .expect("herald starts");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("herald exits")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A Classroom notification (the decoded Pub/Sub `data`) as the Event DESIGN.md §3 describes.
pub fn classroom_event(notification: &Value, message_id: &str, publish_time: &str) -> Value {
    let collection = notification["collection"].as_str().unwrap();
    let event_type = notification["eventType"].as_str().unwrap().to_lowercase();
    let r = &notification["resourceId"];
    let subject = match collection {
        "courses.students" => format!(
            "courses/{}/students/{}",
            r["courseId"].as_str().unwrap(),
            r["userId"].as_str().unwrap()
        ),
        "courses.courseWork" => format!(
            "courses/{}/courseWork/{}",
            r["courseId"].as_str().unwrap(),
            r["id"].as_str().unwrap()
        ),
        "courses.courseWork.studentSubmissions" => format!(
            "courses/{}/courseWork/{}/studentSubmissions/{}",
            r["courseId"].as_str().unwrap(),
            r["courseWorkId"].as_str().unwrap(),
            r["id"].as_str().unwrap()
        ),
        other => panic!("no subject rule for {other}"),
    };
    json!({
        "id": message_id,
        "source": "classroom",
        "type": format!("classroom.{collection}.{event_type}"),
        "subject": subject,
        "time": publish_time,
        "data": notification,
        "meta": { "messageId": message_id, "publishTime": publish_time }
    })
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A raw Directory API request from a `.http` fixture: its headers and body.
pub struct HttpRequest {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpRequest {
    pub fn parse(path: &Path) -> HttpRequest {
        let raw = std::fs::read_to_string(path).unwrap().replace("\r\n", "\n");
        let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
        let headers = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        HttpRequest {
            headers,
            body: body.trim().to_owned(),
        }
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("fixture has no {name} header"))
    }
}

/// A Directory webhook request as the Event DESIGN.md §3 describes (token left out).
pub fn directory_event(req: &HttpRequest, received: &str) -> Value {
    let state = req.header("X-Goog-Resource-State");
    let data: Value = if req.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&req.body).unwrap()
    };
    let mut event = json!({
        "id": format!("{}/{}", req.header("X-Goog-Channel-ID"), req.header("X-Goog-Message-Number")),
        "source": "directory",
        "type": format!("directory.users.{state}"),
        "time": received,
        "data": data,
        "meta": {
            "channelId": req.header("X-Goog-Channel-ID"),
            "resourceId": req.header("X-Goog-Resource-ID"),
            "resourceUri": req.header("X-Goog-Resource-URI"),
            "resourceState": state,
            "messageNumber": req.header("X-Goog-Message-Number"),
        }
    });
    if let Some(id) = data.get("id").and_then(Value::as_str) {
        event["subject"] = json!(format!("users/{id}"));
    }
    event
}
