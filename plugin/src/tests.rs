//! The shims through the vtable, as the host calls them (without loading a library: the
//! macro's entry point is in this test binary).

use std::ffi::c_void;
use std::ptr;
use std::sync::mpsc;
use std::time::Duration;

use serde::Deserialize;

use crate::abi::{
    ABI_VERSION, Buffer, NO_RETRY_AFTER, OUTCOME_DELIVERED, OUTCOME_PERMANENT, OUTCOME_RETRYABLE,
    Outcome, STATUS_ERROR, STATUS_OK, SinkVTable,
};
use crate::{DeliverError, Delivery, SinkPlugin, export_sink};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    greeting: String,
}

struct Echo {
    greeting: String,
}

impl SinkPlugin for Echo {
    type Config = Config;
    const NAME: &'static str = "echo";
    const THREADS: usize = 2;

    fn validate(config: &Config) -> Result<(), String> {
        match config.greeting.is_empty() {
            true => Err("`greeting` is empty".into()),
            false => Ok(()),
        }
    }

    fn create(config: Config) -> Result<Self, String> {
        Ok(Echo {
            greeting: config.greeting,
        })
    }

    fn deliver(&self, delivery: &Delivery) -> Result<(), DeliverError> {
        match delivery.template("do") {
            Some("panic") => panic!("boom in {}", delivery.sink),
            Some("retry") => Err(DeliverError::retry_after(
                format!("{} later", self.greeting),
                Duration::from_secs(7),
            )),
            Some("refuse") => Err(DeliverError::permanent("refused")),
            _ => match delivery.attribute("type") {
                Some("t") if delivery.route == "r" => Ok(()),
                other => Err(DeliverError::permanent(format!("unexpected {other:?}"))),
            },
        }
    }
}

export_sink!(Echo);

fn vtable() -> &'static SinkVTable {
    // SAFETY: the entry point returns a pointer to a static vtable.
    unsafe { &*herald_sink_plugin() }
}

/// Takes the plugin's error buffer as text and frees it, as the host does.
fn take(vt: &SinkVTable, err: Buffer) -> String {
    // SAFETY: the plugin filled `err` with `len` bytes of its own allocation.
    let text = String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(err.ptr, err.len) })
        .into_owned();
    // SAFETY: a buffer this plugin allocated, freed once.
    unsafe { (vt.free_buffer)(err) };
    text
}

fn validate(config: &str) -> Result<(), String> {
    let vt = vtable();
    let mut err = Buffer::EMPTY;
    // SAFETY: the config lives through the call; `err` is writable.
    let status = unsafe { (vt.validate)(config.as_ptr(), config.len(), &mut err) };
    match status {
        STATUS_OK => Ok(()),
        _ => Err(take(vt, err)),
    }
}

#[test]
fn the_vtable_starts_with_the_abi_version_and_names_the_plugin() {
    let vt = vtable();
    assert_eq!(vt.abi_version, ABI_VERSION);
    // SAFETY: static strings of this binary.
    let name = unsafe { std::slice::from_raw_parts(vt.name.ptr, vt.name.len) };
    assert_eq!(name, b"echo");
    // SAFETY: as above.
    let version = unsafe { std::slice::from_raw_parts(vt.version.ptr, vt.version.len) };
    assert_eq!(version, env!("CARGO_PKG_VERSION").as_bytes());
}

#[test]
fn validation_reports_serde_and_plugin_errors_without_json_positions() {
    assert_eq!(validate(r#"{"greeting": "hi"}"#), Ok(()));
    assert_eq!(
        validate(r#"{"greeting": ""}"#),
        Err("`greeting` is empty".into())
    );
    let err = validate(r#"{"greting": "hi"}"#).unwrap_err();
    assert!(err.starts_with("unknown field `greting`"), "{err}");
    assert!(!err.contains("line"), "{err}");
    assert_eq!(validate("{}"), Err("missing field `greeting`".into()));
}

/// The host side of a callback, in miniature: the outcome copied into a channel.
type Sent = (u64, u32, u64, String);

unsafe extern "C" fn on_done(ctx: *mut c_void, id: u64, outcome: *const Outcome) {
    // SAFETY: `ctx` is the sender these tests pass; `outcome` is valid during the callback.
    let (tx, outcome) = unsafe { (&*ctx.cast::<mpsc::Sender<Sent>>(), &*outcome) };
    // SAFETY: the message is `message_len` bytes, valid during the callback.
    let message = unsafe { std::slice::from_raw_parts(outcome.message, outcome.message_len) };
    let message = String::from_utf8_lossy(message).into_owned();
    let _ = tx.send((id, outcome.status, outcome.retry_after_ms, message));
}

#[test]
fn deliveries_run_on_the_plugins_threads_and_call_back_once_each() {
    let vt = vtable();
    let config = br#"{"greeting": "hello"}"#;
    let mut instance: *mut c_void = ptr::null_mut();
    let mut err = Buffer::EMPTY;
    // SAFETY: the config lives through the call; `instance` and `err` are writable.
    let status = unsafe { (vt.create)(config.as_ptr(), config.len(), &mut instance, &mut err) };
    assert_eq!(status, STATUS_OK);

    let (tx, rx) = mpsc::channel::<Sent>();
    let ctx = (&tx as *const mpsc::Sender<Sent>)
        .cast_mut()
        .cast::<c_void>();
    let event = br#"{"id": "e1", "type": "t"}"#;
    let cases = [("", 1), ("retry", 2), ("refuse", 3), ("panic", 4)];
    for (what, id) in cases {
        let delivery = format!(r#"{{"route": "r", "sink": "s", "templates": {{"do": "{what}"}}}}"#);
        // SAFETY: the instance is live; the bytes live through the call; `ctx` (the sender)
        // outlives every callback, which all arrive before this test ends.
        unsafe {
            (vt.deliver)(
                instance,
                event.as_ptr(),
                event.len(),
                delivery.as_ptr(),
                delivery.len(),
                id,
                on_done,
                ctx,
            )
        };
    }
    let mut got: Vec<Sent> = (0..cases.len())
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    got.sort();
    assert_eq!(
        got[0],
        (1, OUTCOME_DELIVERED, NO_RETRY_AFTER, String::new())
    );
    assert_eq!(got[1], (2, OUTCOME_RETRYABLE, 7000, "hello later".into()));
    assert_eq!(
        got[2],
        (3, OUTCOME_PERMANENT, NO_RETRY_AFTER, "refused".into())
    );
    assert_eq!(
        got[3],
        (
            4,
            OUTCOME_RETRYABLE,
            NO_RETRY_AFTER,
            "the plugin panicked: boom in s".into()
        )
    );
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    // SAFETY: made by `create`, destroyed once, no call running.
    unsafe { (vt.destroy)(instance) };
}

#[test]
fn create_refuses_a_bad_config_with_a_message() {
    let vt = vtable();
    let config = br#"{"greeting": 5}"#;
    let mut instance: *mut c_void = ptr::null_mut();
    let mut err = Buffer::EMPTY;
    // SAFETY: as above.
    let status = unsafe { (vt.create)(config.as_ptr(), config.len(), &mut instance, &mut err) };
    assert_eq!(status, STATUS_ERROR);
    assert!(instance.is_null());
    let message = take(vt, err);
    assert!(message.contains("invalid type: integer `5`"), "{message}");
}
