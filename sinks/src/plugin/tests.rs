//! The host's side without a plugin of ours: load errors, and the callback registry. Real
//! plugins, loaded by a real gateway, are tested in tests/plugins.rs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use herald_core::SinkError;
use herald_core::config::{self, Registry};
use herald_plugin::abi::{NO_RETRY_AFTER, OUTCOME_DELIVERED, OUTCOME_PERMANENT, Outcome};

use super::library::{LoadError, load};
use super::sink::{Pending, on_done};

fn registry() -> Registry {
    let mut r = Registry::default();
    crate::register(&mut r);
    r
}

fn check(yaml: &str, dir: &Path) -> String {
    match config::parse(yaml, &dir.join("routes.yaml"), &registry(), &|_| None) {
        Ok(_) => panic!("the config passed"),
        Err(e) => e.to_string(),
    }
}

/// The C library this test binary is linked with: a real shared library that is no plugin.
fn libc_path() -> Option<PathBuf> {
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

#[test]
fn a_missing_library_is_a_config_error_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let text = check(
        "sinks:\n  teams: { type: plugin, library: ./plugins/libnothing.so }\n",
        dir.path(),
    );
    assert!(
        text.contains("routes.yaml:2:35: sink `teams`: plugin library"),
        "{text}"
    );
    assert!(
        text.contains("plugins/libnothing.so cannot be found"),
        "{text}"
    );
}

#[test]
fn a_library_without_the_entry_symbol_is_refused_by_name() {
    let Some(libc) = libc_path() else {
        eprintln!("no libc in /proc/self/maps; skipped");
        return;
    };
    let err = load(&libc).unwrap_err();
    assert!(matches!(err, LoadError::NoEntry { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(
            "is not a Herald sink plugin: it does not export the symbol `herald_sink_plugin`"
        ),
        "{text}"
    );
}

#[test]
fn plugin_keys_are_checked_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    let text = check(
        "sinks:\n  a: { type: plugin, libary: x.so }\n  b: { type: plugin, library: x.so, config: [1] }\n",
        dir.path(),
    );
    assert!(
        text.contains("sink `a`: unknown key `libary`; did you mean `library`?"),
        "{text}"
    );
    assert!(
        text.contains("routes.yaml:3:45: sink `b`: `config` must be a mapping"),
        "{text}"
    );
}

fn outcome(status: u32, retry_after_ms: u64, message: &str) -> Outcome {
    Outcome {
        status,
        retry_after_ms,
        message: message.as_ptr(),
        message_len: message.len(),
    }
}

#[tokio::test]
async fn a_callback_resolves_its_delivery_once_and_late_ones_are_ignored() {
    let (first, answer) = Pending::register();
    let (second, ignored) = Pending::register();
    let o = outcome(1, 2500, "busy");
    // SAFETY: `o` and its message live through the call.
    unsafe { on_done(std::ptr::null_mut(), first, &o) };
    assert_eq!(
        answer.await.unwrap(),
        Err(SinkError::Retryable {
            message: "busy".into(),
            retry_after: Some(Duration::from_millis(2500))
        })
    );
    // Twice, or an id nobody waits for: nothing happens.
    // SAFETY: as above.
    unsafe { on_done(std::ptr::null_mut(), first, &o) };
    // SAFETY: as above.
    unsafe { on_done(std::ptr::null_mut(), u64::MAX, &o) };
    // SAFETY: a null outcome is allowed and fails the delivery.
    unsafe { on_done(std::ptr::null_mut(), second, std::ptr::null()) };
    assert!(ignored.await.unwrap().unwrap_err().is_retryable());
}

#[tokio::test]
async fn outcomes_map_to_the_engines_errors() {
    let cases = [
        (outcome(OUTCOME_DELIVERED, NO_RETRY_AFTER, ""), Ok(())),
        (
            outcome(OUTCOME_PERMANENT, NO_RETRY_AFTER, "400 bad card"),
            Err(SinkError::permanent("400 bad card")),
        ),
        (
            outcome(77, NO_RETRY_AFTER, ""),
            Err(SinkError::retryable(
                "the plugin reported a failure without a message",
            )),
        ),
    ];
    for (o, expected) in cases {
        let (id, answer) = Pending::register();
        // SAFETY: `o` and its message live through the call.
        unsafe { on_done(std::ptr::null_mut(), id, &o) };
        assert_eq!(answer.await.unwrap(), expected);
    }
    let long = "x".repeat(100_000);
    let (id, answer) = Pending::register();
    // SAFETY: as above.
    unsafe { on_done(std::ptr::null_mut(), id, &outcome(1, NO_RETRY_AFTER, &long)) };
    assert_eq!(answer.await.unwrap().unwrap_err().message().len(), 4096);
}
