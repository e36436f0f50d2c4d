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
                lines: Vec::new(),
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

/// Writes the lines of each attempt (one delivery, or the batch the engine gathers from a
/// page of the backlog) with one `write` call under a lock, so concurrent attempts never
/// interleave within a line. The lines are a few hundred bytes each written to the page
/// cache, short enough to do on the runtime thread.
pub(super) struct FileSink {
    out: Mutex<Writing>,
    templated: bool,
}

/// Where lines go, and the buffer they are put together in (kept between attempts, so an
/// attempt allocates nothing for its lines).
struct Writing {
    out: Output,
    lines: Vec<u8>,
}

/// A buffer grown past this by a large batch or event is let go after its write.
const KEEP_LINES: usize = 512 * 1024;

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

/// Writes `bytes` to `out` as `write_all` does, and says how many were written before an
/// error: the lines that end within them are in the file.
fn write_counted(out: &mut impl Write, bytes: &[u8]) -> (usize, io::Result<()>) {
    let mut written = 0;
    while written < bytes.len() {
        match out.write(&bytes[written..]) {
            Ok(0) => {
                let e = io::Error::new(io::ErrorKind::WriteZero, "the file took no more bytes");
                return (written, Err(e));
            }
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Err(e)),
        }
    }
    (written, Ok(()))
}

impl FileSink {
    /// The line of `delivery` appended to `lines`.
    fn put_line(&self, lines: &mut Vec<u8>, delivery: &Delivery<'_>) -> Result<(), SinkError> {
        match delivery.rendered.get("line").filter(|_| self.templated) {
            Some(text) => {
                lines.extend_from_slice(text.trim_end_matches('\n').as_bytes());
                lines.push(b'\n');
                Ok(())
            }
            None => record_line(lines, delivery.route, delivery.sink, delivery.json)
                .map_err(|e| SinkError::permanent(format!("cannot serialize the record: {e}"))),
        }
    }

    /// Writes the lines of `deliveries` with one write (and one fsync when asked), and
    /// answers for each: `Ok` once its whole line is written. After a failed write, the
    /// lines written whole before it are delivered and the rest retryable.
    fn write_lines(&self, deliveries: &[Delivery<'_>]) -> Vec<Result<(), SinkError>> {
        let Ok(mut writing) = self.out.lock() else {
            return vec![Err(SinkError::retryable("file sink lock poisoned")); deliveries.len()];
        };
        let Writing { out, lines } = &mut *writing;
        lines.clear();
        // Where each delivery's line ends in `lines`, or why it has none.
        let ends: Vec<Result<usize, SinkError>> = deliveries
            .iter()
            .map(|delivery| {
                let start = lines.len();
                self.put_line(lines, delivery)
                    .map(|()| lines.len())
                    .inspect_err(|_| lines.truncate(start))
            })
            .collect();
        let (written, result) = match out {
            Output::File { file, fsync } => match write_counted(file, lines) {
                (written, Ok(())) if *fsync => match file.sync_data() {
                    Ok(()) => (written, Ok(())),
                    // Written, but not known to be on disk: none counts as delivered.
                    Err(e) => (0, Err(e)),
                },
                written => written,
            },
            Output::Stdout => {
                let mut stdout = io::stdout().lock();
                match write_counted(&mut stdout, lines) {
                    (written, Ok(())) => (written, stdout.flush()),
                    written => written,
                }
            }
        };
        if lines.capacity() > KEEP_LINES {
            *lines = Vec::new();
        }
        answers(ends, written, &result)
    }
}

/// The answer for each line ending at `ends[i]` (or not put together), once `written` bytes
/// of them were written and the write ended with `result`.
fn answers(
    ends: Vec<Result<usize, SinkError>>,
    written: usize,
    result: &io::Result<()>,
) -> Vec<Result<(), SinkError>> {
    ends.into_iter()
        .map(|end| match (end?, result) {
            (_, Ok(())) => Ok(()),
            (end, Err(_)) if end <= written => Ok(()),
            (_, Err(e)) => Err(SinkError::retryable(format!("write failed: {e}"))),
        })
        .collect()
}

#[async_trait]
impl Sink for FileSink {
    async fn deliver(&self, delivery: Delivery<'_>) -> Result<(), SinkError> {
        self.write_lines(&[delivery])
            .pop()
            .unwrap_or_else(|| Err(SinkError::retryable("the line was not written")))
    }

    fn batches(&self) -> bool {
        true
    }

    async fn deliver_batch(&self, deliveries: &[Delivery<'_>]) -> Vec<Result<(), SinkError>> {
        self.write_lines(deliveries)
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

    /// Takes `room` bytes, then fails as a full disk does.
    struct Filling {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Filling {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from_raw_os_error(28));
            }
            // A few bytes at a time, as a short write may be.
            let n = bytes.len().min(self.room).min(7);
            self.taken.extend_from_slice(&bytes[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn after_a_failed_write_the_lines_written_whole_are_delivered_and_the_rest_retried() {
        let lines = b"first\nsecond\nthird\n";
        let ends = vec![
            Ok(6),
            Err(SinkError::permanent("cannot serialize the record")),
            Ok(13),
            Ok(19),
        ];
        // Room for the first line and half of the next (the second delivery has none).
        let mut out = Filling {
            taken: Vec::new(),
            room: 9,
        };
        let (written, result) = write_counted(&mut out, lines);
        assert_eq!((written, out.taken.as_slice()), (9, &b"first\nsec"[..]));
        let first = answers(ends.clone(), written, &result);
        assert_eq!(first[0], Ok(()));
        assert_eq!(
            first[1],
            Err(SinkError::permanent("cannot serialize the record"))
        );
        for answer in &first[2..] {
            let e = answer.as_ref().unwrap_err();
            assert!(e.is_retryable(), "{e}");
            assert!(e.message().starts_with("write failed: "), "{e}");
        }

        // Room for everything: every line written, short writes or not.
        let mut out = Filling {
            taken: Vec::new(),
            room: 100,
        };
        let (written, result) = write_counted(&mut out, lines);
        assert_eq!((written, out.taken.as_slice()), (19, &lines[..]));
        let answers = answers(ends, written, &result);
        assert!(answers[0].is_ok() && answers[2].is_ok() && answers[3].is_ok());
    }
}
