use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use herald_core::config::{BuildContext, SinkSpec};
use herald_core::{Delivery, Sink, SinkError};
use herald_plugin::abi::{
    ABI_VERSION, NO_RETRY_AFTER, OUTCOME_DELIVERED, OUTCOME_PERMANENT, Outcome,
};
use serde::Serialize;
use tokio::sync::oneshot;

use super::library::{Instance, Library};

/// The longest error message kept from a plugin: it goes into the journal with every attempt.
const MAX_MESSAGE: usize = 4096;

pub(super) struct PluginSpec {
    pub library: &'static Library,
    /// The plugin's `config`, as JSON; it may hold secrets, so it is never printed.
    pub config: Vec<u8>,
}

impl fmt::Debug for PluginSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginSpec")
            .field("library", &self.library)
            .finish_non_exhaustive()
    }
}

impl SinkSpec for PluginSpec {
    fn build(&self, _context: &BuildContext) -> Result<Arc<dyn Sink>, String> {
        let instance = self.library.create(&self.config).map_err(|e| {
            format!(
                "plugin `{}` ({}): cannot start: {e}",
                self.library.name,
                self.library.path.display()
            )
        })?;
        Ok(Arc::new(PluginSink { instance }))
    }

    fn describe(&self) -> String {
        format!(
            "plugin `{}` {} (ABI {ABI_VERSION}) from {}",
            self.library.name,
            self.library.version,
            self.library.path.display()
        )
    }
}

pub(super) struct PluginSink {
    instance: Instance,
}

/// What the plugin receives besides the event: `{"route", "sink", "templates"}`.
#[derive(Serialize)]
struct DeliveryJson<'a> {
    route: &'a str,
    sink: &'a str,
    templates: BTreeMap<&'a str, &'a str>,
}

#[async_trait]
impl Sink for PluginSink {
    async fn deliver(&self, delivery: Delivery<'_>) -> Result<(), SinkError> {
        let event = delivery.json.as_bytes();
        let templates = delivery
            .rendered
            .iter()
            .filter_map(|(field, text)| Some((field.strip_prefix("templates.")?, text)))
            .collect();
        let body = serde_json::to_vec(&DeliveryJson {
            route: delivery.route,
            sink: delivery.sink,
            templates,
        })
        .map_err(|e| SinkError::permanent(format!("cannot serialize the delivery: {e}")))?;

        let (id, answer) = Pending::register();
        // Unregisters the delivery however this future ends, including when the engine drops
        // it at its timeout: a later callback then finds nothing.
        let _waiting = Waiting(id);
        self.instance
            .deliver(event, &body, id, on_done, std::ptr::null_mut());
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(SinkError::retryable("the plugin dropped the delivery")),
        }
    }
}

/// Deliveries waiting for their callback, by id, for the whole process. The plugin is given
/// only the id (and a null `ctx`): nothing it sends back can point into freed memory, and a
/// callback that comes late, twice, or with an unknown id is ignored.
pub(super) struct Pending {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Result<(), SinkError>>>>,
}

impl Pending {
    fn get() -> &'static Pending {
        static PENDING: OnceLock<Pending> = OnceLock::new();
        PENDING.get_or_init(|| Pending {
            next: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
        })
    }

    pub(super) fn register() -> (u64, oneshot::Receiver<Result<(), SinkError>>) {
        let pending = Pending::get();
        let id = pending.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        pending.lock().insert(id, tx);
        (id, rx)
    }

    fn take(id: u64) -> Option<oneshot::Sender<Result<(), SinkError>>> {
        Pending::get().lock().remove(&id)
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Result<(), SinkError>>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Waiting(u64);

impl Drop for Waiting {
    fn drop(&mut self) {
        Pending::take(self.0);
    }
}

/// Called by the plugin, from its own thread, when a delivery ends.
///
/// # Safety
/// `outcome` must be null or point to an `Outcome` whose message (`message_len` bytes) is
/// readable during the call, as herald_plugin::abi requires of the plugin.
pub(super) unsafe extern "C" fn on_done(_ctx: *mut c_void, id: u64, outcome: *const Outcome) {
    // Nothing may unwind into the plugin's frames.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: null, or valid during this call, as the caller promised.
        let result = match unsafe { outcome.as_ref() } {
            // SAFETY: as above.
            Some(outcome) => unsafe { result_of(outcome) },
            None => Err(SinkError::retryable(
                "the plugin called back without an outcome",
            )),
        };
        if let Some(waiting) = Pending::take(id) {
            let _ = waiting.send(result);
        }
    }));
}

/// # Safety
/// `outcome.message` must point to `message_len` readable bytes (or be null).
unsafe fn result_of(outcome: &Outcome) -> Result<(), SinkError> {
    if outcome.status == OUTCOME_DELIVERED {
        return Ok(());
    }
    let message = if outcome.message.is_null() || outcome.message_len == 0 {
        "the plugin reported a failure without a message".to_owned()
    } else {
        let len = outcome.message_len.min(MAX_MESSAGE);
        // SAFETY: readable for `message_len` bytes, as the caller promised; we read fewer.
        let bytes = unsafe { std::slice::from_raw_parts(outcome.message, len) };
        String::from_utf8_lossy(bytes).into_owned()
    };
    match outcome.status {
        OUTCOME_PERMANENT => Err(SinkError::permanent(message)),
        // Retryable, and any status this host does not know.
        _ => Err(SinkError::Retryable {
            message,
            retry_after: (outcome.retry_after_ms != NO_RETRY_AFTER)
                .then(|| Duration::from_millis(outcome.retry_after_ms)),
        }),
    }
}
