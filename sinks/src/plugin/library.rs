//! Loading a plugin library and calling its vtable safely. Every `unsafe` of the host's side
//! of the ABI is here; the ownership rules it follows are written in `herald_plugin::abi`.

use std::collections::HashMap;
use std::ffi::c_void;
use std::fmt;
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};
use std::sync::{Mutex, OnceLock};

use herald_plugin::abi::{
    ABI_VERSION, Buffer, DoneCallback, ENTRY_SYMBOL, EntryFn, STATUS_OK, SinkVTable, StaticStr,
};

/// A loaded plugin library. Leaked on purpose: a library is never unloaded while the process
/// runs, since the plugin's threads may still run its code.
pub(super) struct Library {
    /// The canonical path it was loaded from.
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    vtable: &'static SinkVTable,
    /// Kept so the handle is never closed.
    _handle: libloading::Library,
}

impl fmt::Debug for Library {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Library")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Why a library cannot be used as a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LoadError {
    Missing { path: PathBuf, reason: String },
    Open { path: PathBuf, reason: String },
    NoEntry { path: PathBuf },
    AbiMismatch { path: PathBuf, found: u32 },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Missing { path, reason } => write!(
                f,
                "plugin library {} cannot be found ({reason}); build it (`cargo build --release` in the plugin's crate) and give its path, relative to this file",
                path.display()
            ),
            LoadError::Open { path, reason } => write!(
                f,
                "plugin library {} cannot be loaded: {reason}",
                path.display()
            ),
            LoadError::NoEntry { path } => write!(
                f,
                "{} is not a Herald sink plugin: it does not export the symbol `{}` (a plugin is a cdylib that calls `herald_plugin::export_sink!`)",
                path.display(),
                entry_name()
            ),
            LoadError::AbiMismatch { path, found } => write!(
                f,
                "plugin library {} was built for plugin ABI version {found}, but this Herald speaks ABI version {ABI_VERSION}; rebuild the plugin against a herald-plugin of ABI version {ABI_VERSION}",
                path.display()
            ),
        }
    }
}

fn entry_name() -> &'static str {
    std::str::from_utf8(&ENTRY_SYMBOL[..ENTRY_SYMBOL.len() - 1]).unwrap_or("herald_sink_plugin")
}

/// The libraries loaded so far, by canonical path.
fn loaded() -> &'static Mutex<HashMap<PathBuf, &'static Library>> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, &'static Library>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

/// Loads the plugin at `path` (once per process) and checks its ABI version.
pub(super) fn load(path: &Path) -> Result<&'static Library, LoadError> {
    let canonical = std::fs::canonicalize(path).map_err(|e| LoadError::Missing {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let mut loaded = loaded().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(library) = loaded.get(&canonical) {
        return Ok(library);
    }
    let library: &'static Library = Box::leak(Box::new(open(&canonical)?));
    loaded.insert(canonical, library);
    Ok(library)
}

fn open(path: &Path) -> Result<Library, LoadError> {
    let handle = open_handle(path).map_err(|e| LoadError::Open {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    // SAFETY: the ABI declares the entry symbol's type as `EntryFn`; a library that exports
    // this name with another type breaks the contract every plugin signs by exporting it.
    let entry: EntryFn = match unsafe { handle.get::<EntryFn>(ENTRY_SYMBOL) } {
        Ok(symbol) => *symbol,
        Err(_) => {
            // Not a plugin, but it is loaded: never close it (its initialisers may have
            // started threads).
            std::mem::forget(handle);
            return Err(LoadError::NoEntry {
                path: path.to_owned(),
            });
        }
    };
    // SAFETY: `entry` is the plugin's entry point, which takes nothing and returns a pointer
    // to its static vtable.
    let table = unsafe { entry() };
    if table.is_null() {
        std::mem::forget(handle);
        return Err(LoadError::NoEntry {
            path: path.to_owned(),
        });
    }
    // The handshake: read the version alone first. Every ABI version starts its vtable with
    // a `u32` version, so this read is sound whatever version the library was built for.
    // SAFETY: non-null, pointing to the library's static vtable, which begins with a u32.
    let found = unsafe { table.cast::<u32>().read() };
    if found != ABI_VERSION {
        std::mem::forget(handle);
        return Err(LoadError::AbiMismatch {
            path: path.to_owned(),
            found,
        });
    }
    // SAFETY: the library speaks this ABI, so the pointer is to a `SinkVTable` in its static
    // data, valid while it is loaded: forever, as `handle` is never closed.
    let vtable: &'static SinkVTable = unsafe { &*table };
    Ok(Library {
        path: path.to_owned(),
        // SAFETY: the ABI's name and version are static UTF-8 text of the library.
        name: unsafe { text(vtable.name) },
        // SAFETY: as above.
        version: unsafe { text(vtable.version) },
        vtable,
        _handle: handle,
    })
}

/// `RTLD_NOW`: a library with an unresolved symbol fails here, at `herald check`, rather than
/// at its first delivery; `RTLD_LOCAL`: its symbols do not leak into later libraries.
#[cfg(unix)]
fn open_handle(path: &Path) -> Result<libloading::Library, libloading::Error> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: loading runs the library's initialisers. Naming a library in routes.yaml is the
    // operator's statement that it is a Herald plugin and trusted to run in the gateway; no
    // check can make foreign native code safe.
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map(Into::into)
}

#[cfg(not(unix))]
fn open_handle(path: &Path) -> Result<libloading::Library, libloading::Error> {
    // SAFETY: as for unix: naming the library is the operator's trust in it.
    unsafe { libloading::Library::new(path) }
}

/// # Safety
/// `s` must point to `len` bytes of static data of a loaded library.
unsafe fn text(s: StaticStr) -> String {
    if s.ptr.is_null() || s.len == 0 {
        return String::new();
    }
    // SAFETY: static bytes of the library, as the caller promised.
    let bytes = unsafe { std::slice::from_raw_parts(s.ptr, s.len) };
    String::from_utf8_lossy(bytes).into_owned()
}

impl Library {
    /// Asks the plugin to check `config` (JSON) without side effects.
    pub fn validate(&'static self, config: &[u8]) -> Result<(), String> {
        let mut err = Buffer::EMPTY;
        // SAFETY: `config` lives through the call (the plugin copies what it keeps); `err` is
        // writable. The plugin fills `err` only on failure.
        let status = unsafe { (self.vtable.validate)(config.as_ptr(), config.len(), &mut err) };
        match status {
            STATUS_OK => {
                self.free(err);
                Ok(())
            }
            _ => Err(self.take_error(err)),
        }
    }

    /// Makes a running instance of the plugin from `config` (JSON).
    pub fn create(&'static self, config: &[u8]) -> Result<Instance, String> {
        let mut out: *mut c_void = ptr::null_mut();
        let mut err = Buffer::EMPTY;
        // SAFETY: `config` lives through the call; `out` and `err` are writable.
        let status =
            unsafe { (self.vtable.create)(config.as_ptr(), config.len(), &mut out, &mut err) };
        match (status, NonNull::new(out)) {
            (STATUS_OK, Some(instance)) => {
                self.free(err);
                Ok(Instance {
                    library: self,
                    instance,
                })
            }
            (STATUS_OK, None) => Err("the plugin made no instance".into()),
            _ => Err(self.take_error(err)),
        }
    }

    /// The text of an error buffer the plugin filled, which is then given back to it.
    fn take_error(&self, err: Buffer) -> String {
        let message = if err.ptr.is_null() || err.len == 0 {
            "the plugin gave no reason".to_owned()
        } else {
            // SAFETY: the plugin filled `err` with `len` bytes it owns until `free_buffer`.
            let bytes = unsafe { std::slice::from_raw_parts(err.ptr, err.len) };
            String::from_utf8_lossy(bytes).into_owned()
        };
        self.free(err);
        message
    }

    fn free(&self, err: Buffer) {
        if !err.ptr.is_null() {
            // SAFETY: a buffer the plugin allocated, given back once; the host keeps no
            // pointer into it.
            unsafe { (self.vtable.free_buffer)(err) };
        }
    }
}

/// One running instance of a plugin, destroyed when dropped.
pub(super) struct Instance {
    library: &'static Library,
    instance: NonNull<c_void>,
}

// SAFETY: the ABI lets every function be called on an instance from any thread, concurrently
// (herald_plugin::abi, "Threads"); the host never touches what the pointer points to.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

impl Instance {
    /// Starts one delivery; the plugin calls `callback(ctx, id, outcome)` at most once.
    pub fn deliver(
        &self,
        event: &[u8],
        delivery: &[u8],
        id: u64,
        callback: DoneCallback,
        ctx: *mut c_void,
    ) {
        // SAFETY: the instance is live (destroyed only on drop, which cannot overlap this
        // borrow); both byte ranges live through the call, and the plugin copies them;
        // `callback` is valid for the whole process, and `ctx` is whatever it expects.
        unsafe {
            (self.library.vtable.deliver)(
                self.instance.as_ptr(),
                event.as_ptr(),
                event.len(),
                delivery.as_ptr(),
                delivery.len(),
                id,
                callback,
                ctx,
            )
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: made by this library's `create`, destroyed once, and no call on it is
        // running (`drop` has the only reference). Deliveries it started may still call back;
        // the host looks those up by id and ignores the ones no longer waited for.
        unsafe { (self.library.vtable.destroy)(self.instance.as_ptr()) };
    }
}
