//! Sink plugins end to end (issue #6): the example plugins of `examples/`, built as real
//! shared libraries, loaded by a real gateway process.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use herald_testkit::wait::until;
use herald_testkit::{Answer, Receiver};
use serde_json::{Value, json};

/// The directory the herald binary was built in (`target/debug`), where cargo also puts the
/// example plugins. Builds them first (a no-op when they are fresh), so the tests work from a
/// clean clone under `cargo nextest run` as well as after `scripts/test.sh` built them.
fn plugin_dir() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_herald"));
    let out = bin.parent().expect("the binary's directory").to_path_buf();
    let profile = match out.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    };
    let target = out.parent().expect("the target directory");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .current_dir(repo())
        .args(["build", "--quiet", "--profile", &profile, "--target-dir"])
        .arg(target)
        .args([
            "-p",
            "teams-sink",
            "-p",
            "misbehaving-sink",
            "-p",
            "wrong-abi-sink",
        ])
        .output()
        .expect("cargo runs");
    assert!(
        built.status.success(),
        "building the example plugins failed:\n{}",
        text(&built.stderr)
    );
    out
}

/// The path of the built plugin `name` (its crate name with `_`).
fn plugin(name: &str) -> PathBuf {
    let file = format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let path = plugin_dir().join(file);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

fn text_of(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// Runs `herald ARGS`, killing it if it has not exited within `secs` seconds.
fn run_briefly(args: &[&str], secs: u64) -> Output {
    let mut child = herald()
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("herald starts");
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("herald {args:?} did not exit:\n{}", text_of(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

async fn metrics(gateway: &Gateway) -> String {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}/metrics", gateway.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the metric line starting with `prefix` (0 when absent).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn dead_letters(gateway: &Gateway) -> Value {
    serde_json::from_slice(&gateway.cli(&["dlq", "list", "--json"]).stdout).unwrap_or(Value::Null)
}

fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("routes.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// The Teams plugin, loaded from its .so, posts an Adaptive Card built from the sink's
/// templates and the event; a 429 with Retry-After is retried after that delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_teams_plugin_posts_a_card_for_a_routed_event() {
    let teams = plugin("teams_sink");
    let rx = Receiver::start().await;
    rx.script([Answer::status(429, "Too many requests").with_header("Retry-After", "1")]);
    rx.otherwise(Answer::status(200, "1"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::fs::copy(&teams, dir.path().join("plugins/libherald_teams.so")).unwrap();
    let yaml = format!(
        "{}sinks:\n  teams:\n    type: plugin\n    library: ./plugins/libherald_teams.so\n    config: {{ url: \"{}\", timeout_seconds: 5 }}\n    templates:\n      title: \"New user {{{{ data.primaryEmail }}}}\"\n      text: \"{{{{ meta.resourceState }}}} in {{{{ meta.domain }}}}\"\nroutes:\n  - name: new-users\n    match: {{ type: directory.users.add }}\n    to: [teams]\n",
        config_head(),
        rx.url("/webhookb2/channel")
    );
    let gateway = Gateway::start(dir.path(), &yaml);

    let check = gateway.cli(&["check"]);
    assert!(check.status.success(), "{}", text_of(&check));
    assert!(
        text(&check.stdout).contains("sink teams (plugin): plugin `teams-sink` 0.1.0 (ABI 1) from"),
        "{}",
        text_of(&check)
    );

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = directory_request(&client, &gateway, "teams", 42)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());

    let got = rx.wait_for(2).await;
    assert!(
        got[1].at - got[0].at >= Duration::from_secs(1),
        "Retry-After: 1 respected"
    );
    let request = &got[1];
    assert_eq!(request.method, "POST");
    assert_eq!(request.uri.path(), "/webhookb2/channel");
    assert_eq!(request.header("content-type"), Some("application/json"));
    let card = request.json();
    assert_eq!(card, got[0].json(), "the retry sends the same card");
    assert_eq!(card["type"], "message");
    let attachment = &card["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let content = &attachment["content"];
    assert_eq!(content["type"], "AdaptiveCard");
    let body = content["body"].as_array().unwrap();
    assert_eq!(body[0]["text"], "New user user42@example.edu");
    assert_eq!(body[1]["text"], "add in example.edu");
    let facts: Vec<(String, String)> = body[2]["facts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["title"].as_str().unwrap().to_owned(),
                f["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let fact = |name: &str| {
        facts
            .iter()
            .find(|(t, _)| t == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(fact("Type"), Some("directory.users.add"));
    assert_eq!(fact("Subject"), Some("users/42"));
    assert_eq!(fact("Event"), Some("teams/42"));
    assert_eq!(fact("Route"), Some("new-users"));
    assert_eq!(dead_letters(&gateway), json!([]));
    assert_eq!(rx.received().len(), 2, "delivered once it was accepted");
}

/// The plugin's own config validation runs at `herald check`, with the place in routes.yaml.
#[test]
fn herald_check_reports_a_config_the_plugin_refuses() {
    let teams = plugin("teams_sink");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "sinks:\n  teams: {{ type: plugin, library: \"{}\", config: {{ url: \"ftp://secret@host/x\" }} }}\n  other: {{ type: plugin, library: \"{}\", config: {{ url: \"https://h/x\", colour: red }} }}\n",
            teams.display(),
            teams.display()
        ),
    );
    let out = run(&["check", "-c", config.to_str().unwrap()], None);
    let all = text_of(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains(":2:") && all.contains("sink `teams`: plugin `teams-sink` refuses its config: `url` must be an https:// (or http://) URL"),
        "{all}"
    );
    assert!(
        !all.contains("secret@host"),
        "the URL is never quoted: {all}"
    );
    assert!(
        all.contains(
            "sink `other`: plugin `teams-sink` refuses its config: unknown field `colour`"
        ),
        "{all}"
    );
}

/// A plugin that panics in `deliver`: the gateway stays up, the delivery is retried, then
/// dead-lettered with the panic's message, and the other sink on the route keeps delivering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_plugin_fails_its_deliveries_only() {
    let misbehaving = plugin("misbehaving_sink");
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}sinks:\n  boom:\n    type: plugin\n    library: \"{}\"\n    config: {{ panic: true }}\n    delivery: {{ max_attempts: 3, initial_backoff: 10ms, max_backoff: 50ms }}\n  audit: {{ type: file, path: audit.jsonl }}\nroutes:\n  - name: everything\n    to: [boom, audit]\n",
        config_head(),
        misbehaving.display()
    );
    let gateway = Gateway::start(dir.path(), &yaml);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for n in 1..=2 {
        let answer = directory_request(&client, &gateway, "boom", n)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success());
    }

    let mut letters = Value::Null;
    until("two dead letters", Duration::from_secs(20), || {
        letters = dead_letters(&gateway);
        letters.as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    for letter in letters.as_array().unwrap() {
        assert_eq!(letter["sink"], "boom");
        let id = letter["event"]["id"].as_str().unwrap();
        let attempts = letter["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 3, "retried up to max_attempts: {letter}");
        for attempt in attempts {
            assert_eq!(
                attempt["error"].as_str().unwrap(),
                format!("the plugin panicked: misbehaving-sink panics on purpose (event {id})")
            );
        }
    }

    // Still up: the file sink got both, and gets the next one too.
    let answer = directory_request(&client, &gateway, "boom", 3)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    until("three audit records", Duration::from_secs(10), || {
        gateway.file_records("audit.jsonl").len() == 3
    })
    .await;
    let metrics = metrics(&gateway).await;
    assert!(
        metric(&metrics, "herald_delivery_retries_total{sink=\"boom\"}") >= 4.0,
        "{metrics}"
    );
}

/// A delivery whose callback does not come within `delivery.timeout` is retried; the late
/// answer, when it comes, is ignored safely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_does_not_call_back_in_time_is_timed_out_and_retried() {
    let misbehaving = plugin("misbehaving_sink");
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.txt");
    let yaml = format!(
        "{}sinks:\n  slow:\n    type: plugin\n    library: \"{}\"\n    config: {{ late_first: 1, late_ms: 5000, record: \"{}\" }}\n    delivery: {{ timeout: 1s, initial_backoff: 10ms, max_backoff: 50ms }}\nroutes:\n  - name: everything\n    to: [slow]\n",
        config_head(),
        misbehaving.display(),
        record.display()
    );
    let gateway = Gateway::start(dir.path(), &yaml);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let sent = Instant::now();
    directory_request(&client, &gateway, "slow", 1)
        .send()
        .await
        .unwrap();

    let read = || std::fs::read_to_string(&record).unwrap_or_default();
    until("the retry to be delivered", Duration::from_secs(10), || {
        read().contains("on-time slow/1")
    })
    .await;
    assert!(
        sent.elapsed() >= Duration::from_secs(1),
        "the retry came after the timeout"
    );
    assert!(
        !read().contains("late"),
        "the first attempt has not answered yet"
    );
    until("the late answer", Duration::from_secs(10), || {
        read().contains("late slow/1")
    })
    .await;

    // The late callback changed nothing, and the gateway goes on delivering.
    directory_request(&client, &gateway, "slow", 2)
        .send()
        .await
        .unwrap();
    until("the next delivery", Duration::from_secs(10), || {
        read().contains("on-time slow/2")
    })
    .await;
    let metrics = metrics(&gateway).await;
    assert_eq!(
        metric(&metrics, "herald_delivery_retries_total{sink=\"slow\"}"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "herald_deliveries_total{sink=\"slow\",outcome=\"delivered\"}"
        ),
        2.0,
        "{metrics}"
    );
    assert_eq!(dead_letters(&gateway), json!([]));
}

/// The C library this test runs with: a real shared library that is not a plugin.
fn libc() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            Path::new(p)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libc.so") || n.starts_with("libc-"))
        })
        .map(PathBuf::from)
}

/// A library built for another ABI, a library that is not a plugin, and a library that is
/// not there: `herald check` and `herald run` both refuse, say why and name the file, and
/// exit non-zero.
#[test]
fn a_wrong_abi_or_a_missing_library_stops_check_and_run() {
    let wrong = plugin("wrong_abi_sink");
    let dir = tempfile::tempdir().unwrap();
    let head = "server:\n  listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\n";
    let cases = [
        (
            format!(
                "{head}sinks:\n  future: {{ type: plugin, library: \"{}\" }}\n",
                wrong.display()
            ),
            vec![
                format!("plugin library {}", wrong.canonicalize().unwrap().display()),
                "was built for plugin ABI version 999, but this Herald speaks ABI version 1"
                    .to_owned(),
            ],
        ),
        (
            format!("{head}sinks:\n  gone: {{ type: plugin, library: ./plugins/libgone.so }}\n"),
            vec![format!(
                "plugin library {} cannot be found",
                dir.path().join("./plugins/libgone.so").display()
            )],
        ),
    ];
    let not_a_plugin = libc().map(|libc| {
        (
            format!(
                "{head}sinks:\n  libc: {{ type: plugin, library: \"{}\" }}\n",
                libc.display()
            ),
            vec![format!(
                "{} is not a Herald sink plugin: it does not export the symbol `herald_sink_plugin`",
                libc.canonicalize().unwrap().display()
            )],
        )
    });
    for (yaml, expected) in cases.into_iter().chain(not_a_plugin) {
        let config = write_config(dir.path(), &yaml);
        let config = config.to_str().unwrap();
        for command in ["check", "run"] {
            let out = run_briefly(&[command, "-c", config], 30);
            let all = text_of(&out);
            assert!(!out.status.success(), "herald {command} succeeded:\n{all}");
            for e in &expected {
                assert!(all.contains(e), "herald {command}: no `{e}` in:\n{all}");
            }
            assert!(all.contains("routes.yaml:5:"), "with the place: {all}");
        }
    }
}

/// The section `## {title}` of README.md, up to the next `## ` heading.
fn readme_section(title: &str) -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let heading = format!("\n## {title}\n");
    let start = readme
        .find(&heading)
        .unwrap_or_else(|| panic!("README.md has no section `## {title}`"))
        + heading.len();
    let rest = &readme[start..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    rest[..end].to_owned()
}

/// The body of the first fenced code block in `section` that opens with ```` ```lang ````
/// after the text `after`.
fn fenced_block(section: &str, after: &str, lang: &str) -> String {
    let from = section
        .find(after)
        .unwrap_or_else(|| panic!("the README section has no `{after}`"));
    let fence = format!("```{lang}\n");
    let open = section[from..]
        .find(&fence)
        .unwrap_or_else(|| panic!("no ```{lang} block after `{after}` in the README section"))
        + from
        + fence.len();
    let close = section[open..]
        .find("```")
        .unwrap_or_else(|| panic!("the ```{lang} block after `{after}` is not closed"))
        + open;
    section[open..close].to_owned()
}

/// The minimal plugin of README.md's "Writing a sink plugin", taken from the README as it
/// stands (its `Cargo.toml`, `src/lib.rs` and routes.yaml blocks), is built as a crate of its
/// own against this repo's `plugin/`, loaded by a real gateway from `./plugins/` relative to
/// the config, and appends the rendered `line` template for a Directory notification; `herald
/// check` passes the plugin's own refusal of a relative `path` on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_line_sink_plugin_builds_and_delivers_as_documented() {
    let section = readme_section("Writing a sink plugin");
    let manifest = fenced_block(&section, "`Cargo.toml` (below", "toml");
    let lib_rs = fenced_block(&section, "`src/lib.rs`", "rust");
    let routes = fenced_block(&section, "export_sink!(LineSink);", "yaml");

    // The crate, outside the Herald workspace, depending on this repo's plugin/.
    let krate = tempfile::tempdir().unwrap();
    let readme_dependency = "herald-plugin = { path = \"../herald/plugin\" }";
    assert!(
        manifest.contains(readme_dependency),
        "the README's Cargo.toml has no `{readme_dependency}`:\n{manifest}"
    );
    let plugin_crate = repo().join("plugin");
    let manifest = manifest.replace(
        readme_dependency,
        &format!(
            "herald-plugin = {{ path = {:?} }}",
            plugin_crate.display().to_string()
        ),
    );
    std::fs::write(
        krate.path().join("Cargo.toml"),
        format!(
            "[package]\nname = \"line-sink\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n{manifest}\n[workspace]\n"
        ),
    )
    .unwrap();
    std::fs::create_dir(krate.path().join("src")).unwrap();
    std::fs::write(krate.path().join("src/lib.rs"), &lib_rs).unwrap();

    // Built in a target directory of its own that later runs reuse.
    let target = repo().join("target/readme-plugin");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = |offline: bool| {
        let mut command = Command::new(&cargo);
        command
            .current_dir(krate.path())
            .args(["build", "--release", "--quiet"])
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET");
        if offline {
            command.arg("--offline");
        }
        command.output().expect("cargo runs")
    };
    let offline = build(true);
    let built = if offline.status.success() {
        offline
    } else {
        let online = build(false);
        assert!(
            online.status.success(),
            "building the README's plugin failed\n--offline:\n{}\nonline:\n{}",
            text(&offline.stderr),
            text(&online.stderr)
        );
        online
    };
    assert!(built.status.success());
    let library = target.join("release").join(format!(
        "{}line_sink{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(library.exists(), "{} was not built", library.display());

    // routes.yaml as the README shows it, with the library copied to where it says and the
    // plugin's `path` in this test's directory.
    let dir = tempfile::tempdir().unwrap();
    let lines = dir.path().join("lines.txt");
    let library_line = "library: ./plugins/libline_sink.so";
    let template_line = "templates: { line: \"{{ type }} {{ data.primaryEmail }}\" }";
    assert!(
        routes.contains(library_line) && routes.contains(template_line),
        "the README's routes.yaml block changed:\n{routes}"
    );
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::fs::copy(&library, dir.path().join("plugins/libline_sink.so")).unwrap();
    let sink: String = routes
        .lines()
        .map(|l| match l.trim_start().strip_prefix("config:") {
            Some(_) => {
                let indent = &l[..l.len() - l.trim_start().len()];
                format!(
                    "{indent}config: {{ path: {:?} }}\n",
                    lines.display().to_string()
                )
            }
            None => format!("{l}\n"),
        })
        .collect();
    let yaml = format!(
        "{}{sink}routes:\n  - name: everything\n    to: [lines]\n",
        config_head()
    );
    let gateway = Gateway::start(dir.path(), &yaml);

    let check = gateway.cli(&["check"]);
    assert!(check.status.success(), "{}", text_of(&check));
    assert!(
        text(&check.stdout).contains("sink lines (plugin): plugin `line-sink` 0.1.0 (ABI 1) from"),
        "{}",
        text_of(&check)
    );

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = directory_request(&client, &gateway, "lines", 7)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    let read = || std::fs::read_to_string(&lines).unwrap_or_default();
    until("the line to be appended", Duration::from_secs(10), || {
        read().contains("directory.users.add user7@example.edu")
    })
    .await;
    assert_eq!(read(), "directory.users.add user7@example.edu\n");
    assert_eq!(dead_letters(&gateway), json!([]));

    // The plugin's `validate`, run by `herald check`: a relative `path` is refused.
    let other = tempfile::tempdir().unwrap();
    let config = write_config(
        other.path(),
        &format!(
            "sinks:\n  lines: {{ type: plugin, library: {:?}, config: {{ path: lines.txt }} }}\n",
            library.display().to_string()
        ),
    );
    let out = run(&["check", "-c", config.to_str().unwrap()], None);
    let all = text_of(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains(
            "sink `lines`: plugin `line-sink` refuses its config: `path` must be absolute"
        ),
        "{all}"
    );
}
