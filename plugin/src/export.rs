//! The `extern "C"` shims [`export_sink!`](crate::export_sink) puts behind the vtable, and the
//! threads that run a plugin's deliveries. Every shim catches panics: unwinding across
//! `extern "C"` would abort the gateway.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, mpsc};

use serde_json::Value;

use crate::abi::{
    Buffer, DoneCallback, NO_RETRY_AFTER, OUTCOME_DELIVERED, OUTCOME_PERMANENT, OUTCOME_RETRYABLE,
    Outcome, STATUS_ERROR, STATUS_OK, SinkVTable, StaticStr,
};
use crate::sdk::{DeliverError, Delivery, SinkPlugin};

/// The vtable for plugin `P` of crate version `version`, reporting `abi_version` (always
/// [`ABI_VERSION`](crate::abi::ABI_VERSION), except in Herald's own wrong-ABI test plugin).
#[doc(hidden)]
pub const fn vtable<P: SinkPlugin>(abi_version: u32, version: &'static str) -> SinkVTable {
    SinkVTable {
        abi_version,
        name: StaticStr::new(P::NAME),
        version: StaticStr::new(version),
        validate: validate::<P>,
        create: create::<P>,
        deliver,
        destroy,
        free_buffer,
    }
}

/// The instance behind the host's opaque pointer: the queue of the plugin's threads. The
/// threads hold the plugin itself, so deliveries in progress outlive `destroy`.
struct Instance {
    queue: mpsc::Sender<Job>,
}

/// One delivery, copied out of the host's buffers.
struct Job {
    event: Vec<u8>,
    delivery: Vec<u8>,
    id: u64,
    callback: DoneCallback,
    ctx: Ctx,
}

/// The host's callback context.
struct Ctx(*mut c_void);

// SAFETY: the ABI lets the plugin call back with `ctx` from any thread (abi.rs, "Threads");
// the plugin never dereferences it.
unsafe impl Send for Ctx {}

/// The bytes at `ptr[..len]`, or none when `len` is 0 (`ptr` may then be null).
///
/// # Safety
/// Unless `len` is 0, `ptr` must point to `len` readable bytes that stay valid and unchanged
/// for `'a`.
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if len == 0 || ptr.is_null() {
        return &[];
    }
    // SAFETY: non-null and `len` bytes long, as the caller promised.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

/// Hands `message` to the host in `*err`; the host frees it with [`free_buffer`].
///
/// # Safety
/// `err` must be null or point to a writable `Buffer`.
unsafe fn write_error(err: *mut Buffer, message: String) {
    if err.is_null() {
        return;
    }
    let mut bytes = std::mem::ManuallyDrop::new(message.into_bytes());
    let buffer = Buffer {
        ptr: bytes.as_mut_ptr(),
        len: bytes.len(),
        cap: bytes.capacity(),
    };
    // SAFETY: non-null and writable, as the caller promised.
    unsafe { err.write(buffer) };
}

/// The config as `P::Config`, checked by `P::validate`.
fn parse<P: SinkPlugin>(config: &[u8]) -> Result<P::Config, String> {
    let config: P::Config =
        serde_json::from_slice(config).map_err(|e| without_position(e.to_string()))?;
    P::validate(&config)?;
    Ok(config)
}

/// serde_json's message without " at line 1 column 40": the JSON was made by the host, so a
/// place in it means nothing to the operator (the host adds the place in routes.yaml).
fn without_position(message: String) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message,
    }
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// # Safety
/// `config[..config_len]` readable during the call; `err` null or writable (abi.rs).
unsafe extern "C" fn validate<P: SinkPlugin>(
    config: *const u8,
    config_len: usize,
    err: *mut Buffer,
) -> i32 {
    let result = catch_unwind(|| {
        // SAFETY: the host lends `config_len` bytes for the duration of this call.
        let config = unsafe { bytes(config, config_len) };
        parse::<P>(config).map(drop)
    })
    .unwrap_or_else(|panic| Err(format!("the plugin panicked: {}", panic_message(&*panic))));
    match result {
        Ok(()) => STATUS_OK,
        Err(message) => {
            // SAFETY: `err` is null or writable, as the ABI requires of the host.
            unsafe { write_error(err, message) };
            STATUS_ERROR
        }
    }
}

/// # Safety
/// `config[..config_len]` readable during the call; `out` writable; `err` null or writable.
unsafe extern "C" fn create<P: SinkPlugin>(
    config: *const u8,
    config_len: usize,
    out: *mut *mut c_void,
    err: *mut Buffer,
) -> i32 {
    let result = catch_unwind(|| {
        // SAFETY: the host lends `config_len` bytes for the duration of this call.
        let config = unsafe { bytes(config, config_len) };
        let plugin = P::create(parse::<P>(config)?)?;
        start::<P>(plugin)
    })
    .unwrap_or_else(|panic| Err(format!("the plugin panicked: {}", panic_message(&*panic))));
    match result {
        Ok(instance) if !out.is_null() => {
            // SAFETY: `out` is non-null and writable, as the ABI requires of the host.
            unsafe { out.write(Box::into_raw(Box::new(instance)).cast()) };
            STATUS_OK
        }
        Ok(_) => STATUS_ERROR,
        Err(message) => {
            // SAFETY: `err` is null or writable, as the ABI requires of the host.
            unsafe { write_error(err, message) };
            STATUS_ERROR
        }
    }
}

/// Starts `P::THREADS` threads that run deliveries from one queue.
fn start<P: SinkPlugin>(plugin: P) -> Result<Instance, String> {
    let plugin = Arc::new(plugin);
    let (queue, jobs) = mpsc::channel::<Job>();
    let jobs = Arc::new(Mutex::new(jobs));
    for n in 0..P::THREADS.max(1) {
        let (plugin, jobs) = (plugin.clone(), jobs.clone());
        std::thread::Builder::new()
            .name(format!("{}-{n}", P::NAME))
            .spawn(move || {
                loop {
                    // The lock is held only while waiting; the queue closes when the instance
                    // is destroyed, and the thread ends once it is drained.
                    let job = match jobs.lock() {
                        Ok(jobs) => jobs.recv(),
                        Err(poisoned) => poisoned.into_inner().recv(),
                    };
                    match job {
                        Ok(job) => run::<P>(&plugin, job),
                        Err(_) => return,
                    }
                }
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
    }
    Ok(Instance { queue })
}

/// Runs one delivery on a plugin thread and calls the host back, exactly once.
fn run<P: SinkPlugin>(plugin: &P, job: Job) {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut delivery: Delivery = serde_json::from_slice(&job.delivery)
            .map_err(|e| DeliverError::permanent(format!("bad delivery from the host: {e}")))?;
        delivery.event = serde_json::from_slice::<Value>(&job.event)
            .map_err(|e| DeliverError::permanent(format!("bad event from the host: {e}")))?;
        plugin.deliver(&delivery)
    }))
    .unwrap_or_else(|panic| {
        Err(DeliverError::retryable(format!(
            "the plugin panicked: {}",
            panic_message(&*panic)
        )))
    });
    call_back(job.callback, job.ctx, job.id, &result);
}

fn call_back(callback: DoneCallback, ctx: Ctx, id: u64, result: &Result<(), DeliverError>) {
    let (status, retry_after_ms, message) = match result {
        Ok(()) => (OUTCOME_DELIVERED, NO_RETRY_AFTER, ""),
        Err(DeliverError::Retryable {
            message,
            retry_after,
        }) => (
            OUTCOME_RETRYABLE,
            retry_after.map_or(NO_RETRY_AFTER, |d| {
                u64::try_from(d.as_millis()).unwrap_or(NO_RETRY_AFTER - 1)
            }),
            message.as_str(),
        ),
        Err(DeliverError::Permanent { message }) => {
            (OUTCOME_PERMANENT, NO_RETRY_AFTER, message.as_str())
        }
    };
    let outcome = Outcome {
        status,
        retry_after_ms,
        message: message.as_ptr(),
        message_len: message.len(),
    };
    // SAFETY: `callback` and `ctx` are the ones the host gave with this delivery, called once;
    // `outcome` and its message live until the callback returns, as the ABI promises.
    unsafe { callback(ctx.0, id, &outcome) };
}

/// # Safety
/// `instance` made by `create` of this plugin and not destroyed; the byte ranges readable
/// during the call; `callback` and `ctx` as the ABI describes.
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn deliver(
    instance: *mut c_void,
    event: *const u8,
    event_len: usize,
    delivery: *const u8,
    delivery_len: usize,
    delivery_id: u64,
    callback: DoneCallback,
    ctx: *mut c_void,
) {
    let queued = catch_unwind(|| {
        // SAFETY: the host lends both byte ranges for the duration of this call; they are
        // copied before it returns.
        let (event, delivery) = unsafe { (bytes(event, event_len), bytes(delivery, delivery_len)) };
        // SAFETY: `instance` came from `create` of this plugin (so it is an `Instance`) and
        // the host does not destroy it while a call on it runs.
        let instance = unsafe { &*instance.cast::<Instance>() };
        let job = Job {
            event: event.to_vec(),
            delivery: delivery.to_vec(),
            id: delivery_id,
            callback,
            ctx: Ctx(ctx),
        };
        // A send fails only if every thread has gone, which the threads never do: hand the
        // job back so the host hears of it.
        instance.queue.send(job).map_err(|e| e.0.ctx)
    });
    match queued {
        Ok(Ok(())) => {}
        Ok(Err(ctx)) => call_back(
            callback,
            ctx,
            delivery_id,
            &Err(DeliverError::retryable("the plugin's threads are gone")),
        ),
        Err(panic) => call_back(
            callback,
            Ctx(ctx),
            delivery_id,
            &Err(DeliverError::retryable(format!(
                "the plugin panicked: {}",
                panic_message(&*panic)
            ))),
        ),
    }
}

/// # Safety
/// `instance` made by `create` of this plugin, destroyed once, with no call on it running.
unsafe extern "C" fn destroy(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    let _ = catch_unwind(|| {
        // SAFETY: `instance` came from `Box::into_raw` in `create`, and the host gives it back
        // once. Dropping it closes the queue; the threads finish what is queued and end.
        drop(unsafe { Box::from_raw(instance.cast::<Instance>()) });
    });
}

/// # Safety
/// `buffer` made by this plugin (an error of `validate`/`create`), freed once; or empty.
unsafe extern "C" fn free_buffer(buffer: Buffer) {
    if buffer.ptr.is_null() {
        return;
    }
    let _ = catch_unwind(|| {
        // SAFETY: `ptr`, `len` and `cap` are those of a `Vec<u8>` that `write_error` gave up,
        // handed back once.
        drop(unsafe { Vec::from_raw_parts(buffer.ptr, buffer.len, buffer.cap) });
    });
}

/// Writes the entry point of a plugin library for a [`SinkPlugin`](crate::SinkPlugin) type:
/// `export_sink!(TeamsSink);` at the top level of a `cdylib` crate.
#[macro_export]
macro_rules! export_sink {
    ($plugin:ty) => {
        $crate::__export_sink_with_abi!($plugin, $crate::abi::ABI_VERSION);
    };
}

/// `export_sink!` with a chosen ABI version. Only for Herald's own test of a plugin built for
/// another ABI; a real plugin uses `export_sink!`.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_sink_with_abi {
    ($plugin:ty, $abi:expr) => {
        /// The entry point Herald looks up (`herald_plugin::abi::ENTRY_SYMBOL`).
        // SAFETY: `herald_sink_plugin` is Herald's entry point name; nothing else in a plugin
        // library may define it, and its type is `herald_plugin::abi::EntryFn`.
        #[unsafe(no_mangle)]
        pub extern "C" fn herald_sink_plugin() -> *const $crate::abi::SinkVTable {
            static VTABLE: $crate::abi::SinkVTable =
                $crate::export::vtable::<$plugin>($abi, env!("CARGO_PKG_VERSION"));
            &VTABLE
        }
    };
}
