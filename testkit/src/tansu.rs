//! A real Kafka broker on 127.0.0.1: tansu with in-memory storage (`cargo install tansu
//! --locked --features dynostore`, done by scripts/test.sh), which can be stopped and started
//! again on the same port. tansu keeps nothing across a restart (memory storage) and creates
//! no topic by itself: [`Tansu::create_topic`] does, with tansu's own CLI. Used by the Kafka
//! sink's tests (herald-sinks, which add an rdkafka consumer) and the gateway's end-to-end
//! tests.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::wait::eventually_async;

/// `tansu`: `$HERALD_TEST_TANSU`, else on PATH, else in cargo's bin directory.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HERALD_TEST_TANSU") {
        return path.into();
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tansu"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| {
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .unwrap_or_default();
        cargo_home.join("bin").join("tansu")
    })
}

/// A running tansu broker; killed when dropped.
pub struct Tansu {
    pub port: u16,
    child: Option<Child>,
}

impl Tansu {
    /// Starts a broker on a free loopback port and waits until it listens.
    pub async fn start() -> Tansu {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut broker = Tansu { port, child: None };
        broker.run().await;
        broker
    }

    /// `127.0.0.1:<port>`, as a sink's `brokers:`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn run(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (scripts/test.sh installs it): {e}",
                    binary().display()
                )
            });
        self.child = Some(child);
        let port = self.port;
        eventually_async("tansu to listen", Duration::from_secs(20), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
    }

    /// Kills the broker (as a crash would).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.run().await;
    }

    /// Creates `topic` with tansu's own CLI.
    pub async fn create_topic(&self, topic: &str, partitions: u32) {
        let status = Command::new(binary())
            .args(["topic", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .args(["--partitions", &partitions.to_string(), topic])
            .stdout(Stdio::null())
            .status()
            .await
            .expect("run `tansu topic create`");
        assert!(status.success(), "`tansu topic create {topic}` failed");
    }
}
