//! Digests: deliveries for the same sender and recipients within a window become one email
//! (see the module doc). A task per sink holds the open digests; each `deliver()` waits for
//! the result of the email that carries it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use herald_core::SinkError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::sink::{Digest, Mail, Smtp};

/// How often open digests are checked for deliveries that gave up waiting.
const CHECK: Duration = Duration::from_secs(1);

pub(super) struct Digests {
    config: Digest,
    smtp: Mutex<Option<Arc<Smtp>>>,
    jobs: OnceLock<mpsc::UnboundedSender<Job>>,
}

struct Job {
    mail: Mail,
    done: oneshot::Sender<Result<(), SinkError>>,
}

struct Open {
    opened: Instant,
    closes: Instant,
    jobs: Vec<Job>,
}

impl Digests {
    pub fn new(config: Digest, smtp: Arc<Smtp>) -> Digests {
        Digests {
            config,
            smtp: Mutex::new(Some(smtp)),
            jobs: OnceLock::new(),
        }
    }

    /// Adds `mail` to the open digest for its recipients and waits until that digest is sent.
    pub async fn join(&self, mail: Mail) -> Result<(), SinkError> {
        let jobs = self.jobs.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let smtp = self.smtp.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(smtp) = smtp {
                tokio::spawn(run(rx, smtp, self.config));
            }
            tx
        });
        let (done, result) = oneshot::channel();
        if jobs.send(Job { mail, done }).is_err() {
            return Err(SinkError::retryable("the digest task has stopped"));
        }
        result
            .await
            .unwrap_or_else(|_| Err(SinkError::retryable("the digest task has stopped")))
    }
}

async fn run(mut jobs: mpsc::UnboundedReceiver<Job>, smtp: Arc<Smtp>, config: Digest) {
    let mut open: HashMap<String, Open> = HashMap::new();
    // Shortened when the engine turns out to give up on deliveries before the window closes.
    let mut window = config.window;
    loop {
        let next = open
            .values()
            .map(|o| o.closes)
            .min()
            .map_or(Instant::now() + Duration::from_secs(3600), |closes| {
                closes.min(Instant::now() + CHECK)
            });
        tokio::select! {
            job = jobs.recv() => {
                let Some(job) = job else {
                    // The sink is gone; whoever still waits gets their digest now.
                    for (_, digest) in open.drain() {
                        send(&smtp, digest.jobs);
                    }
                    return;
                };
                let key = job.mail.recipients();
                let digest = open.entry(key.clone()).or_insert_with(|| Open {
                    opened: Instant::now(),
                    closes: Instant::now() + window,
                    jobs: Vec::new(),
                });
                digest.jobs.push(job);
                if digest.jobs.len() >= config.max
                    && let Some(full) = open.remove(&key)
                {
                    send(&smtp, full.jobs);
                }
            }
            _ = tokio::time::sleep_until(next) => {
                let now = Instant::now();
                let due: Vec<String> = open
                    .iter()
                    .filter(|(_, d)| {
                        d.closes <= now || d.jobs.iter().any(|j| j.done.is_closed())
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in due {
                    let Some(digest) = open.remove(&key) else { continue };
                    if digest.closes > now {
                        // A delivery gave up before the window closed: the engine's timeout is
                        // shorter than the window (its oldest delivery waited about that long).
                        // Send what is left now, and from now on close digests in half that
                        // time, so they go out before the engine gives up; the deliveries that
                        // gave up are retried into the next digest. Nothing is lost.
                        let limit = now.duration_since(digest.opened).saturating_sub(CHECK);
                        let shorter = (limit / 2).max(Duration::from_millis(100));
                        if shorter < window {
                            window = shorter;
                            tracing::warn!(
                                configured = ?config.window,
                                now = ?window,
                                "digest deliveries time out before the digest window closes; digests now close sooner: raise the sink's `delivery.timeout` above `digest.window`"
                            );
                        }
                    }
                    send(&smtp, digest.jobs);
                }
            }
        }
    }
}

/// Sends one digest (in its own task, so digests for other recipients are not held up) and
/// gives its result to every delivery in it. Deliveries that gave up are left out: their
/// retry will carry them.
fn send(smtp: &Arc<Smtp>, jobs: Vec<Job>) {
    let jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.done.is_closed()).collect();
    if jobs.is_empty() {
        return;
    }
    let smtp = smtp.clone();
    tokio::spawn(async move {
        let mails: Vec<&Mail> = jobs.iter().map(|j| &j.mail).collect();
        let result = smtp.send(&mails).await;
        if let Err(e) = &result {
            tracing::debug!(events = jobs.len(), error = %e, "a digest was not sent");
        }
        for job in jobs {
            let _ = job.done.send(result.clone());
        }
    });
}
