//! The console's browser harness (docs/architecture.md §12): Debian's `chromium`, headless,
//! driven through `chromedriver` (started here on a free loopback port) with fantoccini.
//! Used by tests/console_browser.rs and by scripts/screenshots.sh (its ignored `screenshots`
//! test). A failing test leaves a screenshot under `target/tmp/console-screenshots/`.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use herald_testkit::wait::eventually_async;

const MISSING: &str = "the console's browser tests need Debian's `chromium` and `chromium-driver` \
     on PATH: apt-get install -y chromium chromium-driver (scripts/test.sh installs them)";

/// How long a page may take to show what a test waits for.
pub const PAGE: Duration = Duration::from_secs(20);

/// The first of `names` found on PATH.
pub fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A headless Chromium session; dropped, it ends chromedriver.
pub struct Browser {
    pub client: Client,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

/// chromedriver, ended when dropped (also when a test panics before the session exists).
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Browser {
    pub async fn start() -> Browser {
        let chromium =
            on_path(&["chromium", "chromium-browser"]).unwrap_or_else(|| panic!("{MISSING}"));
        let chromedriver = on_path(&["chromedriver"]).unwrap_or_else(|| panic!("{MISSING}"));
        let port = free_port();
        let driver = Driver(
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display())),
        );
        let profile = tempfile::tempdir().expect("a profile directory");
        eventually_async(
            "chromedriver to listen",
            Duration::from_secs(20),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            },
        )
        .await;
        // Chromium as root needs --no-sandbox; nothing reaches outside loopback.
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--window-size=1280,1000".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), "chrome".into());
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({"binary": chromium, "args": args}),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("chromedriver did not start a Chromium session: {e}"));
        Browser {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Runs `body` with a fresh browser; if it panics, saves a screenshot named `name` under
    /// target/tmp/console-screenshots/ first.
    pub async fn run<F, Fut>(name: &str, body: F)
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = ()>,
    {
        let browser = Browser::start().await;
        let client = browser.client.clone();
        let outcome = std::panic::AssertUnwindSafe(body(client.clone()))
            .catch_unwind()
            .await;
        if let Err(panic) = outcome {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{name}.png"));
            match client.screenshot().await {
                Ok(png) if std::fs::write(&file, &png).is_ok() => {
                    eprintln!("screenshot of the failure: {}", file.display())
                }
                _ => eprintln!("no screenshot could be taken"),
            }
            let _ = client.close().await;
            std::panic::resume_unwind(panic);
        }
        let _ = client.close().await;
    }
}

/// The text of the first element `css` selects, once it contains `wanted`.
pub async fn wait_text(c: &Client, css: &str, wanted: &str) -> String {
    eventually_async(&format!("`{css}` to show `{wanted}`"), PAGE, || async {
        let e = c.find(Locator::Css(css)).await.ok()?;
        let text = e.text().await.ok()?;
        text.contains(wanted).then_some(text)
    })
    .await
}

/// Clicks the first element `css` selects, once there is one.
pub async fn click(c: &Client, css: &str) {
    let e = eventually_async(&format!("`{css}` to be there"), PAGE, || async {
        c.find(Locator::Css(css)).await.ok()
    })
    .await;
    e.click()
        .await
        .unwrap_or_else(|err| panic!("cannot click `{css}`: {err}"));
}

/// Types `text` into the element `css` selects.
pub async fn type_into(c: &Client, css: &str, text: &str) {
    let e = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|err| panic!("no `{css}`: {err}"));
    e.clear().await.ok();
    e.send_keys(text)
        .await
        .unwrap_or_else(|err| panic!("cannot type into `{css}`: {err}"));
}

/// Opens the console at `admin` and logs in with `token`; waits for the overview.
pub async fn log_in(c: &Client, admin: std::net::SocketAddr, token: &str) {
    c.goto(&format!("http://{admin}/console"))
        .await
        .expect("the console answers");
    wait_text(c, "h1", "Log in to Herald").await;
    type_into(c, "#token", token).await;
    click(c, "form button[type=submit]").await;
    wait_text(c, "#readiness", "Ready").await;
}
