use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use herald_core::config::{BuildContext, SinkSpec};
use herald_core::{Delivery, Sink, SinkError};

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
            out: Mutex::new(Writing {
                out,
                line: Vec::new(),
            }),
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
    out: Mutex<Writing>,
    templated: bool,
}

/// Where lines go, and the buffer each is put together in (kept between deliveries, so a
/// delivery allocates nothing for its line).
struct Writing {
    out: Output,
    line: Vec<u8>,
}

/// A line buffer grown past this by a large event is let go after its write.
const KEEP_LINE: usize = 64 * 1024;

/// `{"route":…,"sink":…,"event":…}` and a newline into `line`: the event's JSON is the
/// journal's own, spliced in rather than serialized again.
fn record_line(
    line: &mut Vec<u8>,
    route: &str,
    sink: &str,
    json: &str,
) -> Result<(), serde_json::Error> {
    line.reserve(json.len() + route.len() + sink.len() + 32);
    line.extend_from_slice(br#"{"route":"#);
    serde_json::to_writer(&mut *line, route)?;
    line.extend_from_slice(br#","sink":"#);
    serde_json::to_writer(&mut *line, sink)?;
    line.extend_from_slice(br#","event":"#);
    line.extend_from_slice(json.as_bytes());
    line.extend_from_slice(b"}\n");
    Ok(())
}

#[async_trait]
impl Sink for FileSink {
    async fn deliver(&self, delivery: Delivery<'_>) -> Result<(), SinkError> {
        let mut writing = self
            .out
            .lock()
            .map_err(|_| SinkError::retryable("file sink lock poisoned"))?;
        let Writing { out, line } = &mut *writing;
        line.clear();
        match delivery.rendered.get("line").filter(|_| self.templated) {
            Some(text) => {
                line.extend_from_slice(text.trim_end_matches('\n').as_bytes());
                line.push(b'\n');
            }
            None => record_line(line, delivery.route, delivery.sink, delivery.json)
                .map_err(|e| SinkError::permanent(format!("cannot serialize the record: {e}")))?,
        }
        let result = match out {
            Output::File { file, fsync } => file
                .write_all(line)
                .and_then(|_| if *fsync { file.sync_data() } else { Ok(()) }),
            Output::Stdout => {
                let mut stdout = io::stdout().lock();
                stdout.write_all(line).and_then(|_| stdout.flush())
            }
        };
        if line.capacity() > KEEP_LINE {
            *line = Vec::new();
        }
        result.map_err(|e| SinkError::retryable(format!("write failed: {e}")))
    }

    async fn flush(&self) -> Result<(), SinkError> {
        let writing = self
            .out
            .lock()
            .map_err(|_| SinkError::retryable("file sink lock poisoned"))?;
        match &writing.out {
            Output::File { file, .. } => file
                .sync_all()
                .map_err(|e| SinkError::retryable(format!("fsync failed: {e}"))),
            Output::Stdout => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_the_events_json_with_route_and_sink() {
        let event = herald_core::Event::new(
            "c1/7",
            "directory",
            "directory.users.add",
            chrono::Utc::now(),
            serde_json::json!({"primaryEmail": "a\"b@example.edu"}),
        );
        let mut line = b"left over from the last line".to_vec();
        line.clear();
        record_line(&mut line, "all \"users\"", "audit\n", &event.to_json()).unwrap();
        let text = String::from_utf8(line).unwrap();
        assert!(
            text.ends_with("}\n") && text.matches('\n').count() == 1,
            "{text:?}"
        );
        let record: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(record["route"], "all \"users\"");
        assert_eq!(record["sink"], "audit\n");
        let back: herald_core::Event = serde_json::from_value(record["event"].clone()).unwrap();
        assert_eq!(back, event);
    }
}
