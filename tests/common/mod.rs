//! Helpers shared by the end-to-end tests: paths, the herald binary, and the fixtures of
//! `tests/fixtures` turned into events.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    repo().join("tests/fixtures")
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

/// A Classroom notification (the decoded Pub/Sub `data`) as the Event docs/architecture.md §3 describes.
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

/// A Directory webhook request as the Event docs/architecture.md §3 describes (token left out).
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

// ---- a real gateway process ---------------------------------------------------------------

use std::net::SocketAddr;
use std::process::Child;
use std::time::{Duration, Instant};

/// The channel token the test configs accept.
pub const TOKEN: &str = "test-channel-token";

/// A `herald run` process on a config in its own directory, on loopback ports it picked.
pub struct Gateway {
    pub dir: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// A command the gateway is started through (`sh -c '…; exec "$@"' sh`), if any.
    wrapper: Vec<String>,
}

#[derive(serde::Deserialize)]
struct RuntimeInfo {
    pid: u32,
    listen: SocketAddr,
    admin: SocketAddr,
}

impl Gateway {
    /// Writes `yaml` as `dir/routes.yaml` and starts the gateway on it. The config should
    /// listen on `127.0.0.1:0` for both listeners.
    pub fn start(dir: &Path, yaml: &str) -> Gateway {
        Gateway::start_through(dir, yaml, &[])
    }

    /// Like [`Gateway::start`], but through `wrapper`, a command that ends by `exec`ing its
    /// arguments (the gateway's command line), keeping the pid: e.g. a shell that sets a
    /// resource limit first.
    pub fn start_through(dir: &Path, yaml: &str, wrapper: &[&str]) -> Gateway {
        let config = dir.join("routes.yaml");
        std::fs::write(&config, yaml).unwrap();
        let mut g = Gateway {
            dir: dir.to_path_buf(),
            config,
            child: None,
            listen: ([0, 0, 0, 0], 0).into(),
            admin: ([0, 0, 0, 0], 0).into(),
            wrapper: wrapper.iter().map(|s| (*s).to_owned()).collect(),
        };
        g.spawn();
        g
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("gateway.log"))
            .unwrap();
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_herald"));
                c
            }
            None => herald(),
        };
        let child = command
            .args(["run", "-c", self.config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("herald starts");
        let pid = child.id();
        self.child = Some(child);
        let info_path = self.dir.join("herald-data/gateway.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&info_path)
                && let Ok(info) = serde_json::from_str::<RuntimeInfo>(&text)
                && info.pid == pid
            {
                self.listen = info.listen;
                self.admin = info.admin;
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("the gateway exited with {status} at start:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
    }

    /// `kill -9`: no shutdown at all.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().unwrap()
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// Resident memory of the process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Runs `herald ARGS -c <this config>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-c", self.config.to_str().unwrap()]);
        run(&all, None)
    }

    /// The JSON records the file sink wrote to `dir/<name>`, skipping a torn last line.
    pub fn file_records(&self, name: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The ids of the events in the file sink's file `name`, in the order written.
    pub fn file_ids(&self, name: &str) -> Vec<String> {
        self.file_records(name)
            .iter()
            .filter_map(|r| r["event"]["id"].as_str().map(str::to_owned))
            .collect()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A Directory API user notification for channel `channel`, message `number`.
pub fn directory_request(
    client: &reqwest::Client,
    gateway: &Gateway,
    channel: &str,
    number: u64,
) -> reqwest::RequestBuilder {
    directory_request_to(client, gateway.listen, channel, number)
}

/// [`directory_request`] to a listener given by its address (a gateway this test did not
/// start through [`Gateway`], or one of several).
pub fn directory_request_to(
    client: &reqwest::Client,
    listen: SocketAddr,
    channel: &str,
    number: u64,
) -> reqwest::RequestBuilder {
    client
        .post(format!("http://{listen}/webhook/directory"))
        .header("Content-Type", "application/json; utf-8")
        .header("X-Goog-Channel-ID", channel)
        .header("X-Goog-Channel-Token", TOKEN)
        .header("X-Goog-Channel-Expiration", "Tue, 29 Oct 2030 20:32:02 GMT")
        .header("X-Goog-Resource-ID", "ret08u3rv24htgh289g")
        .header("X-Goog-Resource-URI", "https://admin.googleapis.com/admin/directory/v1/users?domain=example.edu&event=add")
        .header("X-Goog-Resource-State", "add")
        .header("X-Goog-Message-Number", number.to_string())
        .body(format!(r#"{{"kind":"admin#directory#user","id":"{number}","primaryEmail":"user{number}@example.edu"}}"#))
}

/// The head of a config with a Directory source on loopback ports picked at start.
pub fn config_head() -> String {
    format!(
        "server:\n  listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\n  shutdown_timeout: 2s\nsources:\n  directory:\n    type: directory_webhook\n    path: /webhook/directory\n    channel_tokens: [\"{TOKEN}\"]\n"
    )
}

// ---- one test body on both queue engines (docs/architecture.md §10.2) ---------------------

/// The queue engine a test runs on (`on_both_engines!`).
#[derive(Clone, Copy, Debug)]
pub enum Engine {
    Local,
    Postgres,
}

impl Engine {
    /// The `queue:` section for this engine with `extra` keys (lines indented by two) added;
    /// on postgres, a fresh database of the shared test server. Call it once per gateway
    /// whose queue must outlive restarts.
    pub fn queue(self, extra: &str) -> String {
        match self {
            Engine::Local if extra.is_empty() => String::new(),
            Engine::Local => format!("queue:\n{extra}"),
            Engine::Postgres => format!(
                "queue:\n  engine: postgres\n  url: '{}'\n  lease: 1s\n{extra}",
                herald_testkit::postgres::Postgres::shared().database(env!("CARGO_CRATE_NAME"))
            ),
        }
    }
}

/// Runs the `async fn(Engine)` `$name` as two tests, `$name::local` and `$name::postgres`
/// (the test file names `Engine` at its root, e.g. by `use common::*`).
#[allow(unused_macros)]
macro_rules! on_both_engines {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                super::$name(super::Engine::Local).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Engine::Postgres).await
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_both_engines;
