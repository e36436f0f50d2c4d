use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use herald_core::config::{BuildContext, SinkSpec};
use herald_core::{Delivery, Sink, SinkError};
use serde::Serialize;

#[derive(Debug, Clone)]
pub(super) enum Target {
    File { path: PathBuf, fsync: bool },
    Stdout,
}

#[derive(Debug)]
pub(super) struct FileSpec {
    pub target: Target,
    /// Whether the sink has a `line` template (else it writes the JSON record).
    pub templated: bool,
}

impl SinkSpec for FileSpec {
    fn build(&self, _context: &BuildContext) -> Result<Arc<dyn Sink>, String> {
        let out = match &self.target {
            Target::File { path, fsync } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                }
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                Output::File {
                    file,
                    fsync: *fsync,
                }
            }
            Target::Stdout => Output::Stdout,
        };
        Ok(Arc::new(FileSink {
            out: Mutex::new(out),
            templated: self.templated,
        }))
    }

    fn describe(&self) -> String {
        let what = if self.templated {
            "the `line` template"
        } else {
            "JSON records"
        };
        match &self.target {
            Target::File { path, .. } => format!("appends {what} to {}", path.display()),
            Target::Stdout => format!("writes {what} to standard output"),
        }
    }
}

enum Output {
    File { file: File, fsync: bool },
    Stdout,
}

/// Writes each delivery with one `write` call under a lock, so concurrent deliveries never
/// interleave within a line. A line is a few hundred bytes written to the page cache, short
/// enough to do on the runtime thread.
pub(super) struct FileSink {
    out: Mutex<Output>,
    templated: bool,
}

#[derive(Serialize)]
struct Record<'a> {
    route: &'a str,
    sink: &'a str,
    event: &'a herald_core::Event,
}

#[async_trait]
impl Sink for FileSink {
    async fn deliver(&self, delivery: Delivery<'_>) -> Result<(), SinkError> {
        let mut line = match delivery.rendered.get("line").filter(|_| self.templated) {
            Some(text) => text.trim_end_matches('\n').to_owned(),
            None => serde_json::to_string(&Record {
                route: delivery.route,
                sink: delivery.sink,
                event: delivery.event,
            })
            .map_err(|e| SinkError::permanent(format!("cannot serialize the event: {e}")))?,
        };
        line.push('\n');
        let mut out = self
            .out
            .lock()
            .map_err(|_| SinkError::retryable("file sink lock poisoned"))?;
        let result = match &mut *out {
            Output::File { file, fsync } => file
                .write_all(line.as_bytes())
                .and_then(|_| if *fsync { file.sync_data() } else { Ok(()) }),
            Output::Stdout => {
                let mut stdout = io::stdout().lock();
                stdout
                    .write_all(line.as_bytes())
                    .and_then(|_| stdout.flush())
            }
        };
        result.map_err(|e| SinkError::retryable(format!("write failed: {e}")))
    }

    async fn flush(&self) -> Result<(), SinkError> {
        let out = self
            .out
            .lock()
            .map_err(|_| SinkError::retryable("file sink lock poisoned"))?;
        match &*out {
            Output::File { file, .. } => file
                .sync_all()
                .map_err(|e| SinkError::retryable(format!("fsync failed: {e}"))),
            Output::Stdout => Ok(()),
        }
    }
}
