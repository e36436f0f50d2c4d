//! The deployable package (issue #8): the systemd unit and the Dockerfile pass their linters.
//! (No container engine runs on these machines, so the image itself is not built here.)

mod common;

use std::process::Command;

use common::*;

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(repo().join("deploy/herald.service")).unwrap();
    // systemd-analyze checks that ExecStart's binary exists: point it at the one just built.
    let unit = unit.replace("/usr/local/bin/herald", env!("CARGO_BIN_EXE_herald"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze is installed");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("herald.service:"),
        "warnings about the unit: {stderr}"
    );
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let out = Command::new("hadolint")
        .current_dir(repo())
        .arg("Dockerfile")
        .output()
        .expect("hadolint is installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn the_shipped_config_follows_the_container_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = herald()
        .args(["check", "-c", repo().join("routes.yaml").to_str().unwrap()])
        .env("HERALD_DATA", dir.path())
        .env("HERALD_LISTEN", "0.0.0.0:8080")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "appends JSON records to {}/events.jsonl",
            dir.path().display()
        )),
        "{stdout}"
    );
}
