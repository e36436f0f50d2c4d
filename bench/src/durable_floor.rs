//! The floor under any gateway that keeps the promise of issue #4 ("answered 2xx only once
//! durable"), measured beside the bare server in `bench/run.sh`. Per request it does only what
//! no such gateway can skip, each part as cheaply as this machine allows:
//!
//! * read the body, check the channel token header, parse the body as JSON;
//! * build the event record (one JSON line with the message number and the body);
//! * hand it to a writer thread that group-commits every record waiting with a single
//!   `pwrite` + `fdatasync` into a file written in full beforehand (reused as a ring, so no
//!   commit has to allocate blocks or grow the file: the cheapest durable write there is);
//! * answer 200 once the record's batch is durable.
//!
//! It routes nothing, delivers nothing, suppresses no duplicates and keeps no index, so the
//! real gateway can only be slower. If this floor stays under 0.7 of the bare server, so does
//! every implementation of the issue on this machine.
//!
//! `durable-floor ADDR DIR [workers=N] [writers=N] [linger_us=N] [append=1] [deliver=1]
//! [window=1]`
//!
//! * `workers`: tokio worker threads (default 2, like `#[tokio::main]` on two cores; 0 runs
//!   the current-thread runtime);
//! * `writers`: writer threads (default 1). With more, one gathers and writes the next batch
//!   while another waits for its fdatasync (pipelined commits);
//! * `linger_us`: how long a writer waits for more records before it writes (default 0).
//! * `append=1`: append to a file that grows (as a log of segments does) instead of
//!   overwriting the pre-written ring, so every fdatasync also commits the file's new size and
//!   blocks.
//! * `deliver=1`: also do what delivering every event to a file sink and recording the
//!   outcome durably costs at least: after each commit a delivery thread writes the batch's
//!   records to `DIR/events.jsonl` with one `write`, then hands one small outcome record per
//!   event back to the writer, which commits it with the next batch. With `append=1` this is
//!   the floor under Herald's shape of journal (bench/run.sh's "delivering floor").
//! * `window=1`: also keep a duplicate window in memory, as small as one can be: a 32-bit
//!   fingerprint of each committed event's id and nothing else (no position to confirm a hit
//!   on disk from, no index of what is pending), in 256 KiB chunks so no slack is allocated
//!   ahead and nothing is copied as it grows. The floor under the memory a sink outage costs
//!   any gateway that keeps the duplicate window in memory (bench/memory.sh, part 3).
//!
//! On the 2-core machine of the closing note of issue #4 none of the variants beat the
//! default: one worker was as fast, the current-thread runtime, a 150 µs linger and 2 or 3
//! pipelined writers were slower (README.md, "Benchmark").

use std::convert::Infallible;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};

/// The ring the records are written into, written in full before the first request.
const RING_BYTES: u64 = 64 * 1024 * 1024;

/// A record and whom to tell once it is durable (no one for an outcome record).
type Record = (Vec<u8>, Option<oneshot::Sender<()>>);

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // parsed like a decoder would, not otherwise used
struct User {
    kind: String,
    id: String,
    primary_email: String,
}

struct Options {
    addr: String,
    dir: String,
    workers: usize,
    writers: usize,
    linger: Duration,
    append: bool,
    deliver: bool,
    window: bool,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        addr: args.next().unwrap_or_else(|| "127.0.0.1:0".into()),
        dir: args.next().unwrap_or_else(|| "./durable-floor".into()),
        workers: 2,
        writers: 1,
        linger: Duration::ZERO,
        append: false,
        deliver: false,
        window: false,
    };
    for arg in args {
        let (name, value) = arg
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=NUMBER, not {arg:?}"))?;
        let value: u64 = value
            .parse()
            .map_err(|_| format!("{name} must be a number, not {value:?}"))?;
        match name {
            "workers" => options.workers = value as usize,
            "writers" => options.writers = (value as usize).max(1),
            "linger_us" => options.linger = Duration::from_micros(value),
            "append" => options.append = value != 0,
            "deliver" => options.deliver = value != 0,
            "window" => options.window = value != 0,
            _ => {
                return Err(format!(
                    "unknown option {name:?} (workers, writers, linger_us, append, deliver, window)"
                ));
            }
        }
    }
    Ok(options)
}

fn open_ring(dir: &Path) -> std::io::Result<File> {
    std::fs::create_dir_all(dir)?;
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.join("ring"))?;
    let chunk = vec![0u8; 1024 * 1024];
    for _ in 0..RING_BYTES / chunk.len() as u64 {
        file.write_all(&chunk)?;
    }
    file.sync_all()?;
    Ok(file)
}

/// A log that grows: appended to, never written in advance.
fn open_growing(dir: &Path) -> std::io::Result<File> {
    std::fs::create_dir_all(dir)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.join("log"))?;
    file.sync_all()?;
    File::open(dir)?.sync_all()?;
    Ok(file)
}

/// Where the writers are in the ring, and the records they take turns gathering.
struct Log {
    file: File,
    records: Mutex<mpsc::UnboundedReceiver<Record>>,
    offset: Mutex<u64>,
    linger: Duration,
    /// Appending to a growing file, not a ring.
    append: bool,
    /// Committed batches to deliver (`deliver=1`).
    delivered: Option<std::sync::mpsc::Sender<Vec<u8>>>,
    /// `window=1`: the fingerprints of the events committed.
    window: Option<Mutex<Window>>,
}

/// The least duplicate window: 4 bytes per event, allocated a chunk at a time.
#[derive(Default)]
struct Window {
    chunks: Vec<Box<[u32]>>,
    /// Fingerprints in the last chunk.
    used: usize,
}

impl Window {
    const CHUNK: usize = 64 * 1024;

    /// Notes the event in `record` (`{"id":"<number>",…`) by a 32-bit FNV-1a of its id.
    fn note(&mut self, record: &[u8]) {
        let id = record.get(7..).unwrap_or_default();
        let id = &id[..id.iter().position(|b| *b == b'"').unwrap_or(id.len())];
        let mut h: u32 = 0x811c_9dc5;
        for b in id {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
        if self.chunks.is_empty() || self.used == Self::CHUNK {
            self.chunks.push(vec![0u32; Self::CHUNK].into_boxed_slice());
            self.used = 0;
        }
        if let Some(last) = self.chunks.last_mut() {
            last[self.used] = h;
            self.used += 1;
        }
    }
}

/// `deliver=1`: writes each committed batch to the file sink's file with one `write`, then
/// queues one outcome record per event for the next commit.
fn deliver(
    batches: std::sync::mpsc::Receiver<Vec<u8>>,
    mut out: File,
    outcomes: mpsc::UnboundedSender<Record>,
) {
    while let Ok(batch) = batches.recv() {
        if let Err(e) = out.write_all(&batch) {
            eprintln!("durable-floor: delivering failed: {e}");
            std::process::exit(1);
        }
        for line in batch.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            // What an outcome names: the event (its id, here the start of the line) and the
            // sink and route.
            let mut outcome = Vec::with_capacity(48);
            outcome.extend_from_slice(b"{\"delivered\":");
            outcome.extend_from_slice(&line[..line.len().min(24)]);
            outcome.extend_from_slice(b",\"sink\":\"audit\"}\n");
            let _ = outcomes.send((outcome, None));
        }
    }
}

impl Log {
    /// Group commit: every record waiting goes out in one write and one fdatasync. Reports
    /// every 5 s on stderr: commits, records per commit, wall time per fdatasync.
    fn write(&self) {
        let mut buf = Vec::with_capacity(1 << 20);
        let mut replies = Vec::new();
        let (mut commits, mut committed, mut syncing) = (0u64, 0u64, Duration::ZERO);
        let mut reported = Instant::now();
        loop {
            let mut delivering = Vec::new();
            {
                // One writer gathers and writes at a time; the fdatasync happens outside.
                let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
                let Some(first) = records.blocking_recv() else {
                    return;
                };
                let deliver_too = self.delivered.is_some();
                // Every record goes into the batch; an event (one with a reply) is also noted
                // in the window and queued for delivery.
                let mut take = |(record, reply): Record| {
                    buf.extend_from_slice(&record);
                    let Some(reply) = reply else {
                        return;
                    };
                    if let Some(window) = &self.window {
                        window
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .note(&record);
                    }
                    if deliver_too {
                        delivering.extend_from_slice(&record);
                    }
                    replies.push(reply);
                };
                take(first);
                let mut gather = |records: &mut mpsc::UnboundedReceiver<Record>| {
                    while let Ok(record) = records.try_recv() {
                        take(record);
                    }
                };
                gather(&mut records);
                if !self.linger.is_zero() {
                    std::thread::sleep(self.linger);
                    gather(&mut records);
                }
                let mut offset = self.offset.lock().unwrap_or_else(|p| p.into_inner());
                if !self.append && *offset + buf.len() as u64 > RING_BYTES {
                    *offset = 0;
                }
                if let Err(e) = self.file.write_all_at(&buf, *offset) {
                    eprintln!("durable-floor: write failed: {e}");
                    std::process::exit(1);
                }
                *offset += buf.len() as u64;
            }
            let started = Instant::now();
            if let Err(e) = self.file.sync_data() {
                eprintln!("durable-floor: fdatasync failed: {e}");
                std::process::exit(1);
            }
            syncing += started.elapsed();
            commits += 1;
            committed += replies.len() as u64;
            if reported.elapsed() >= Duration::from_secs(5) {
                eprintln!(
                    "durable-floor: {commits} commits, {:.1} records per commit, {:.0} µs per fdatasync",
                    committed as f64 / commits as f64,
                    syncing.as_secs_f64() * 1e6 / commits as f64
                );
                (commits, committed, syncing) = (0, 0, Duration::ZERO);
                reported = Instant::now();
            }
            buf.clear();
            for reply in replies.drain(..) {
                let _ = reply.send(());
            }
            if let Some(delivered) = &self.delivered
                && !delivering.is_empty()
            {
                let _ = delivered.send(delivering);
            }
        }
    }
}

fn answer(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    records: mpsc::UnboundedSender<Record>,
) -> Response<Full<Bytes>> {
    let headers = req.headers();
    if headers.get("x-goog-channel-token").map(|v| v.as_bytes()) != Some(b"bench-token") {
        return answer(StatusCode::UNAUTHORIZED);
    }
    let number = headers
        .get("x-goog-message-number")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(number) = number else {
        return answer(StatusCode::BAD_REQUEST);
    };
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return answer(StatusCode::BAD_REQUEST);
    };
    if serde_json::from_slice::<User>(&body).is_err() {
        return answer(StatusCode::BAD_REQUEST);
    }
    let mut record = Vec::with_capacity(body.len() + 64);
    let _ = write!(record, "{{\"id\":\"{number}\",\"data\":");
    record.extend_from_slice(&body);
    record.extend_from_slice(b"}\n");
    let (reply, durable) = oneshot::channel();
    if records.send((record, Some(reply))).is_err() || durable.await.is_err() {
        return answer(StatusCode::SERVICE_UNAVAILABLE);
    }
    answer(StatusCode::OK)
}

async fn serve(addr: String, records: mpsc::UnboundedSender<Record>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let records = records.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let records = records.clone();
                async move { Ok::<_, Infallible>(handle(req, records).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn main() -> std::io::Result<()> {
    let options =
        options().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let (records, rx) = mpsc::unbounded_channel();
    let dir = Path::new(&options.dir);
    let file = if options.append {
        open_growing(dir)?
    } else {
        open_ring(dir)?
    };
    let delivered = if options.deliver {
        let (tx, batches) = std::sync::mpsc::channel();
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("events.jsonl"))?;
        let outcomes = records.clone();
        std::thread::Builder::new()
            .name("floor-sink".into())
            .spawn(move || deliver(batches, out, outcomes))?;
        Some(tx)
    } else {
        None
    };
    let log = Arc::new(Log {
        file,
        records: Mutex::new(rx),
        offset: Mutex::new(0),
        linger: options.linger,
        append: options.append,
        delivered,
        window: options.window.then(Mutex::default),
    });
    for _ in 0..options.writers {
        let log = log.clone();
        std::thread::Builder::new()
            .name("floor-writer".into())
            .spawn(move || log.write())?;
    }
    let runtime = match options.workers {
        0 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    runtime.block_on(serve(options.addr, records))
}
