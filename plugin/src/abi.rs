//! The C ABI between the Herald host and a sink plugin. Only `#[repr(C)]` types, integers,
//! pointers and JSON bytes cross it, never Rust types: the host and the plugin may be built by
//! different compilers, with different versions of every crate. This module does no I/O.
//!
//! # Handshake
//!
//! A plugin library exports one symbol, [`ENTRY_SYMBOL`] (`herald_sink_plugin`), an
//! `extern "C" fn() -> *const SinkVTable`. The host calls it once, reads **only the first
//! field**, [`SinkVTable::abi_version`], and refuses the library unless it equals the host's
//! [`ABI_VERSION`]. Every future version keeps a `u32` version first, so the check is safe
//! whatever the rest of the table looks like. Only then does the host read the other fields.
//!
//! # Ownership at the boundary
//!
//! | bytes | allocated by | valid | freed by |
//! |---|---|---|---|
//! | `config` of `validate`/`create`, `event` and `delivery` of `deliver` | host | during the call only: the plugin copies what it keeps | host |
//! | the error [`Buffer`] filled by `validate`/`create` | plugin | until the host calls `free_buffer` on it | plugin, through `free_buffer`, called by the host once it has copied it |
//! | the [`Outcome`] and its `message`, given to the callback | plugin | during the callback only: the host copies the message | plugin, after the callback returns |
//! | the instance made by `create` | plugin | until `destroy` | plugin, in `destroy` (called once, by the host, when no call on it is running) |
//! | the `ctx` given to `deliver` | host | until the callback for that delivery has returned | host (the plugin never frees it) |
//! | the vtable and its `name`/`version` strings | plugin (static data) | while the library is loaded | nobody: the host never unloads a plugin library |
//!
//! # Threads
//!
//! Every function may be called from any host thread, concurrently, on one instance. `deliver`
//! must not block: it hands the work to the plugin's own threads (or runtime) and returns. The
//! plugin then calls the callback **at most once** per `deliver`, from any thread, possibly
//! before `deliver` returns. A delivery whose callback never comes is timed out by the host and
//! retried; a callback arriving after that is ignored. No function may unwind across the
//! boundary: the plugin catches every panic (the SDK's `export_sink!` does).

use std::ffi::c_void;

/// The version of this ABI. The host refuses a library that reports another one.
pub const ABI_VERSION: u32 = 1;

/// The one symbol a plugin library exports (NUL-terminated for `dlsym`). Its name carries no
/// version, so the host can read the version of a library built for another one and say so.
pub const ENTRY_SYMBOL: &[u8] = b"herald_sink_plugin\0";

/// The type of [`ENTRY_SYMBOL`]: returns the library's vtable, static data that lives as long
/// as the library.
pub type EntryFn = unsafe extern "C" fn() -> *const SinkVTable;

/// Status returned by `validate` and `create`.
pub const STATUS_OK: i32 = 0;
/// The call failed; the error buffer holds a UTF-8 message for the operator.
pub const STATUS_ERROR: i32 = 1;

/// [`Outcome::status`]: the destination has the delivery.
pub const OUTCOME_DELIVERED: u32 = 0;
/// [`Outcome::status`]: failed; trying again may help (timeouts, 5xx, 429, connection errors).
pub const OUTCOME_RETRYABLE: u32 = 1;
/// [`Outcome::status`]: failed; it would fail the same way again (bad request, 4xx).
pub const OUTCOME_PERMANENT: u32 = 2;

/// [`Outcome::retry_after_ms`] when the destination asked for no particular delay.
pub const NO_RETRY_AFTER: u64 = u64::MAX;

/// Bytes allocated by the plugin and handed to the host, which copies them and gives them
/// back with `free_buffer`. `cap` is whatever the plugin needs to free them (the SDK stores a
/// `Vec`'s capacity); the host only reads `ptr[..len]`.
#[repr(C)]
#[derive(Debug)]
pub struct Buffer {
    pub ptr: *mut u8,
    pub len: usize,
    pub cap: usize,
}

impl Buffer {
    /// No bytes: what the host puts in an error slot before a call, and what `free_buffer`
    /// must accept and ignore.
    pub const EMPTY: Buffer = Buffer {
        ptr: std::ptr::null_mut(),
        len: 0,
        cap: 0,
    };
}

/// UTF-8 text in the library's static data (not NUL-terminated).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StaticStr {
    pub ptr: *const u8,
    pub len: usize,
}

impl StaticStr {
    pub const fn new(text: &'static str) -> StaticStr {
        StaticStr {
            ptr: text.as_ptr(),
            len: text.len(),
        }
    }
}

/// How a delivery ended, given to the callback. Borrowed: valid during the callback only.
#[repr(C)]
#[derive(Debug)]
pub struct Outcome {
    /// [`OUTCOME_DELIVERED`], [`OUTCOME_RETRYABLE`] or [`OUTCOME_PERMANENT`]; the host treats
    /// any other value as retryable.
    pub status: u32,
    /// The destination's own retry delay (HTTP `Retry-After`) in milliseconds, or
    /// [`NO_RETRY_AFTER`].
    pub retry_after_ms: u64,
    /// UTF-8 error message (`len` 0 when delivered).
    pub message: *const u8,
    pub message_len: usize,
}

/// Called by the plugin when a delivery ends: `ctx` and `delivery_id` as given to `deliver`.
pub type DoneCallback =
    unsafe extern "C" fn(ctx: *mut c_void, delivery_id: u64, outcome: *const Outcome);

/// The table a plugin library exports. `abi_version` must stay the first field.
#[repr(C)]
pub struct SinkVTable {
    /// [`ABI_VERSION`] of the SDK the plugin was built with; read before anything else.
    pub abi_version: u32,
    /// The plugin's name and version, for `herald check` and logs.
    pub name: StaticStr,
    pub version: StaticStr,
    /// Checks a config (JSON bytes) without side effects. On failure, returns
    /// [`STATUS_ERROR`] and fills `*err` with the message.
    pub validate:
        unsafe extern "C" fn(config: *const u8, config_len: usize, err: *mut Buffer) -> i32,
    /// Makes an instance from a config (JSON bytes): on success writes it to `*out` and
    /// returns [`STATUS_OK`]; on failure fills `*err` and returns [`STATUS_ERROR`].
    pub create: unsafe extern "C" fn(
        config: *const u8,
        config_len: usize,
        out: *mut *mut c_void,
        err: *mut Buffer,
    ) -> i32,
    /// Starts one delivery and returns at once. `event` is the CloudEvents JSON of the event;
    /// `delivery` a JSON object `{"route", "sink", "templates": {name: rendered text}}`. The
    /// plugin calls `callback(ctx, delivery_id, &outcome)` at most once when it ends.
    pub deliver: unsafe extern "C" fn(
        instance: *mut c_void,
        event: *const u8,
        event_len: usize,
        delivery: *const u8,
        delivery_len: usize,
        delivery_id: u64,
        callback: DoneCallback,
        ctx: *mut c_void,
    ),
    /// Ends an instance. Deliveries it started may still be running: the plugin keeps what
    /// they need alive until they have called back.
    pub destroy: unsafe extern "C" fn(instance: *mut c_void),
    /// Frees a buffer this plugin allocated (an error of `validate` or `create`).
    pub free_buffer: unsafe extern "C" fn(buffer: Buffer),
}

// SAFETY: a vtable is immutable static data: function pointers and pointers to static
// strings, all valid for as long as the library is loaded, readable from any thread.
unsafe impl Sync for SinkVTable {}
// SAFETY: as above; nothing in it is tied to the thread that made it.
unsafe impl Send for SinkVTable {}
