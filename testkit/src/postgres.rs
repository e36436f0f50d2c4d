//! A real PostgreSQL server for tests: Debian's `postgres`, started in a temporary directory on
//! a free 127.0.0.1 port, one per test run, with a fresh database per test.
//!
//! `scripts/test.sh` starts one server for the whole run (`herald-test-postgres start DIR`)
//! and exports its address as `HERALD_TEST_POSTGRES`; [`Postgres::shared`] uses that server
//! when the variable is set and otherwise starts one of its own for this test process (so
//! `cargo test` alone works too, at the price of an `initdb` per process).
//!
//! PostgreSQL refuses to run as root: as root the server runs as the `postgres` user (Debian's
//! package creates it), its data directory owned by that user. Authentication is `trust` on
//! loopback only; the server listens on nothing else.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The variable that names the run's shared server (`host:port`).
pub const SHARED: &str = "HERALD_TEST_POSTGRES";

/// The role the tests connect as (a superuser of the test server only).
pub const USER: &str = "herald";

/// A running PostgreSQL server. Dropping a server this value started stops it and removes its
/// directory; a shared server (from [`SHARED`]) is left to whoever started it.
#[derive(Debug)]
pub struct Postgres {
    pub host: String,
    pub port: u16,
    owned: Option<PathBuf>,
}

impl Postgres {
    /// The run's shared server, or a new one for this process.
    pub fn shared() -> Postgres {
        match std::env::var(SHARED) {
            Ok(address) if !address.is_empty() => {
                let (host, port) = address
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.to_owned(), p.parse().ok()?)))
                    .unwrap_or_else(|| panic!("{SHARED}={address}: expected host:port"));
                Postgres {
                    host,
                    port,
                    owned: None,
                }
            }
            _ => {
                let (host, port) = PROCESS_SERVER.get_or_init(start_for_this_process).clone();
                Postgres {
                    host,
                    port,
                    owned: None,
                }
            }
        }
    }

    /// Initialises a cluster in `dir` (created) and starts it on a free loopback port.
    pub fn start_in(dir: &Path) -> Result<Postgres, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let data = dir.join("data");
        let as_root = is_root();
        if as_root {
            run(Command::new("chown").arg("postgres:postgres").arg(dir))?;
        }
        run(server_command(as_root, "initdb")
            .args(["--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C"])
            .arg(format!("--username={USER}"))
            .arg("-D")
            .arg(&data))?;
        let port = free_port()?;
        let server = Postgres {
            host: "127.0.0.1".into(),
            port,
            owned: Some(dir.to_owned()),
        };
        server.start()?;
        Ok(server)
    }

    /// The directory of a server this value started; an error for the shared one, which
    /// other tests use.
    fn own_dir(&self) -> Result<&Path, String> {
        self.owned.as_deref().ok_or_else(|| {
            "the shared test server cannot be stopped or started by one test: use \
             Postgres::start_in"
                .to_owned()
        })
    }

    /// Starts a server this value started and [`Postgres::stop`]ped again, on the same port
    /// with the same data; returns when it accepts connections.
    pub fn start(&self) -> Result<(), String> {
        let dir = self.own_dir()?;
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=300 \
             -c shared_buffers=64MB",
            self.port,
            dir.display()
        );
        run(server_command(is_root(), "pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(dir.join("data"))
            .arg("-l")
            .arg(dir.join("server.log"))
            .args(["-o", &options, "start"]))
    }

    /// Stops a server this value started (`pg_ctl stop -m fast`: clients are disconnected,
    /// committed data stays), keeping its directory for [`Postgres::start`].
    pub fn stop(&self) -> Result<(), String> {
        let dir = self.own_dir()?;
        run(server_command(is_root(), "pg_ctl")
            .args(["-w", "-t", "60", "-m", "fast", "-D"])
            .arg(dir.join("data"))
            .arg("stop"))
    }

    /// [`Postgres::stop`] then [`Postgres::start`].
    pub fn restart(&self) -> Result<(), String> {
        self.stop()?;
        self.start()
    }

    /// Stops the server in `dir` (started by [`Postgres::start_in`]) and removes `dir`.
    pub fn stop_in(dir: &Path) -> Result<(), String> {
        let data = dir.join("data");
        // Running (a server [`Postgres::stop`]ped has no pid file).
        if data.join("postmaster.pid").exists() {
            run(server_command(is_root(), "pg_ctl")
                .args(["-w", "-m", "immediate", "-D"])
                .arg(&data)
                .arg("stop"))?;
        }
        std::fs::remove_dir_all(dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))
    }

    /// Creates a database of its own for one test (`prefix` plus a unique suffix) and returns
    /// its connection URL.
    pub fn database(&self, prefix: &str) -> String {
        let name: String = format!("{prefix}_{}", unique())
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let out = self.client("createdb").arg(&name).output();
        let out = out.unwrap_or_else(|e| panic!("cannot run createdb: {e}"));
        assert!(out.status.success(), "createdb {name}: {}", text(&out));
        self.url(&name)
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{USER}@{}:{}/{name}", self.host, self.port)
    }

    /// Runs `sql` in database `name` with psql and returns its unaligned output.
    pub fn psql(&self, name: &str, sql: &str) -> String {
        let out = self
            .client("psql")
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                name,
                "-c",
                sql,
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        assert!(out.status.success(), "psql `{sql}`: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Turns TLS on for a server this value started (not the run's shared one): writes the
    /// PEM certificate chain and key into its directory and reloads it with `ssl = on`.
    /// Clients may then ask for TLS; plain connections still work.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self
            .owned
            .as_ref()
            .ok_or("enable_tls needs a server of its own (Postgres::start_in)")?;
        let cert = dir.join("server.crt");
        let key = dir.join("server.key");
        for (path, text) in [(&cert, cert_pem), (&key, key_pem)] {
            std::fs::write(path, text)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
            if is_root() {
                run(Command::new("chown").arg("postgres:postgres").arg(path))?;
            }
        }
        // One statement per call: ALTER SYSTEM cannot run inside a transaction block.
        for sql in [
            format!("ALTER SYSTEM SET ssl_cert_file = '{}'", cert.display()),
            format!("ALTER SYSTEM SET ssl_key_file = '{}'", key.display()),
            "ALTER SYSTEM SET ssl = on".to_owned(),
            "SELECT pg_reload_conf()".to_owned(),
        ] {
            self.psql("postgres", &sql);
        }
        for _ in 0..100 {
            if self.psql("postgres", "SHOW ssl") == "on" {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err("the server did not turn TLS on; see its server.log".into())
    }

    /// A client program (`psql`, `createdb`) pointed at this server as [`USER`].
    fn client(&self, program: &str) -> Command {
        let mut command = Command::new(binary(program));
        command.args(["-h", &self.host, "-p", &self.port.to_string(), "-U", USER]);
        command
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(dir) = self.owned.take()
            && let Err(e) = Postgres::stop_in(&dir)
        {
            eprintln!("test postgres: {e}");
        }
    }
}

/// This test process's own server, when the run shares none: started once, and stopped by a
/// watchdog shell when the process exits (a static is never dropped, and a server stopped
/// after each test's `shared()` handle would be gone before the test connects).
static PROCESS_SERVER: OnceLock<(String, u16)> = OnceLock::new();

fn start_for_this_process() -> (String, u16) {
    let dir = std::env::temp_dir().join(format!("herald-pg-{}", unique()));
    let mut pg = Postgres::start_in(&dir).unwrap_or_else(|e| panic!("{e}"));
    let Some(dir) = pg.owned.take() else {
        unreachable!("start_in owns its server")
    };
    let runuser = if is_root() {
        "runuser -u postgres -- "
    } else {
        ""
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         {runuser}'{pg_ctl}' -w -m immediate -D '{data}' stop >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        pg_ctl = binary("pg_ctl").display(),
        data = dir.join("data").display(),
        dir = dir.display(),
    );
    let watchdog = Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = watchdog {
        eprintln!(
            "test postgres: no watchdog ({e}); stop {} by hand",
            dir.display()
        );
    }
    (pg.host.clone(), pg.port)
}

/// A server program: run as `postgres` when this process is root (the server refuses root).
fn server_command(as_root: bool, program: &str) -> Command {
    let path = binary(program);
    if as_root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    }
}

/// `program` from PATH, or from Debian's versioned directory when PATH lacks it.
fn binary(program: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file());
    on_path
        .or_else(|| {
            let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(program)))
                .filter(|p| p.is_file())
                .collect();
            versions.sort();
            versions.pop()
        })
        .unwrap_or_else(|| PathBuf::from(program))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn run(command: &mut Command) -> Result<(), String> {
    let out = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed: {}", text(&out)))
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A name no other test of this run uses: process id, time and a counter.
fn unique() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tests' databases are apart: a table made in one is not in the other.
    #[test]
    fn each_test_gets_a_database_of_its_own() {
        let pg = Postgres::shared();
        let a = pg.database("kit_a");
        let b = pg.database("kit_b");
        assert_ne!(a, b);
        let name = |url: &str| url.rsplit('/').next().unwrap().to_owned();
        pg.psql(
            &name(&a),
            "CREATE TABLE marker (n int); INSERT INTO marker VALUES (7)",
        );
        assert_eq!(pg.psql(&name(&a), "SELECT n FROM marker"), "7");
        assert_eq!(
            pg.psql(
                &name(&b),
                "SELECT count(*) FROM pg_tables WHERE tablename = 'marker'"
            ),
            "0"
        );
    }
}
