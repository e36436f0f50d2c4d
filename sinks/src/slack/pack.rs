//! The Slack sender: one task per sink that paces messages per webhook URL and packs the
//! deliveries waiting behind the pace into one message (see the module doc).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use herald_core::SinkError;
use herald_core::sink::Turn;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::config::MAX_BLOCKS;

/// Slack shows about this many characters of a message's text before truncating it; a pack
/// stops growing here (a single longer message is still sent whole).
const MAX_PACK_TEXT: usize = 4000;

/// Who a message is posted as and where; only deliveries with the same target share a message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct Target {
    pub channel: Option<String>,
    pub username: Option<String>,
    pub icon_emoji: Option<String>,
}

/// One delivery's part of a message.
#[derive(Clone, Debug)]
pub(super) struct Part {
    pub target: Target,
    pub text: String,
    /// The rendered `blocks`, if the sink (or the route) has them.
    pub blocks: Option<Vec<Value>>,
}

/// The Slack message (JSON) for one or more parts with the same target.
pub(super) fn payload(parts: &[&Part]) -> Value {
    let mut message = serde_json::Map::new();
    let text: Vec<&str> = parts.iter().map(|p| p.text.as_str()).collect();
    message.insert("text".into(), Value::from(text.join("\n")));
    if parts.iter().any(|p| p.blocks.is_some()) {
        // A part without blocks still has to be seen where the others show blocks.
        let blocks: Vec<Value> = parts
            .iter()
            .flat_map(|p| match &p.blocks {
                Some(blocks) => blocks.clone(),
                None => {
                    vec![json!({"type": "section", "text": {"type": "mrkdwn", "text": p.text}})]
                }
            })
            .collect();
        message.insert("blocks".into(), Value::from(blocks));
    }
    if let Some(target) = parts.first().map(|p| &p.target) {
        for (key, value) in [
            ("channel", &target.channel),
            ("username", &target.username),
            ("icon_emoji", &target.icon_emoji),
        ] {
            if let Some(v) = value.as_deref().filter(|v| !v.trim().is_empty()) {
                message.insert(key.into(), Value::from(v));
            }
        }
    }
    Value::Object(message)
}

/// Why a message was not delivered, and whether it was its content that was refused (then
/// its parts are worth sending one by one).
#[derive(Debug)]
pub(super) struct Failure {
    pub error: SinkError,
    pub content: bool,
}

/// Posts one message.
pub(super) trait Post: Send + Sync + 'static {
    fn post(&self, message: Value) -> impl Future<Output = Result<(), Failure>> + Send;
}

/// A waiting `deliver()` call.
pub(super) struct Job {
    pub part: Part,
    /// Send this part in a message of its own (its pack was refused for its content).
    pub alone: bool,
    /// This gateway's turn at the sink (docs/architecture.md §10.2, "Paced sinks"): a job
    /// still waiting when it ends is not sent here.
    pub turn: Turn,
    pub done: oneshot::Sender<Result<(), SinkError>>,
}

/// The sink's sender task, started on the first delivery (building a sink may happen outside
/// a runtime); it ends when the sink is dropped.
pub(super) struct Packer<P: Post> {
    post: Mutex<Option<P>>,
    pacer: Arc<Pacer>,
    max_pack: usize,
    jobs: OnceLock<mpsc::UnboundedSender<Job>>,
}

impl<P: Post> Packer<P> {
    pub fn new(post: P, pacer: Arc<Pacer>, max_pack: usize) -> Self {
        Packer {
            post: Mutex::new(Some(post)),
            pacer,
            max_pack,
            jobs: OnceLock::new(),
        }
    }

    /// Queues `part` and waits for the result of the message that carries it.
    pub async fn send(&self, part: Part, turn: Turn) -> Result<(), SinkError> {
        let jobs = self.jobs.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            if let Some(post) = lock(&self.post).take() {
                tokio::spawn(run(rx, post, self.pacer.clone(), self.max_pack));
            }
            tx
        });
        let (done, result) = oneshot::channel();
        let job = Job {
            part,
            alone: false,
            turn,
            done,
        };
        if jobs.send(job).is_err() {
            return Err(SinkError::retryable("the Slack sender has stopped"));
        }
        result
            .await
            .unwrap_or_else(|_| Err(SinkError::retryable("the Slack sender has stopped")))
    }
}

async fn run<P: Post>(
    mut jobs: mpsc::UnboundedReceiver<Job>,
    post: P,
    pacer: Arc<Pacer>,
    max_pack: usize,
) {
    let mut queue: VecDeque<Job> = VecDeque::new();
    loop {
        if queue.is_empty() {
            match jobs.recv().await {
                Some(job) => queue.push_back(job),
                None => return,
            }
        }
        pacer.ready().await;
        // Whatever arrived while waiting for the slot goes into this message.
        while let Ok(job) = jobs.try_recv() {
            queue.push_back(job);
        }
        // A caller that gave up (the engine's timeout) will retry; do not send it now too.
        queue.retain(|job| !job.done.is_closed());
        // On a shared queue another gateway may have the sink's turn by now: what waited
        // here past this gateway's turn goes back to the queue, unsent.
        let (ended, waiting): (VecDeque<Job>, VecDeque<Job>) =
            queue.drain(..).partition(|job| !job.turn.holds());
        queue = waiting;
        finish(
            ended.into_iter().collect(),
            &Err(SinkError::retryable(
                "this gateway's turn at the sink ended before the message was sent",
            )),
        );
        let batch = take_pack(&mut queue, max_pack);
        if batch.is_empty() {
            continue;
        }
        let parts: Vec<&Part> = batch.iter().map(|j| &j.part).collect();
        match post.post(payload(&parts)).await {
            Ok(()) => finish(batch, &Ok(())),
            Err(Failure { content: true, .. }) if batch.len() > 1 => {
                tracing::debug!(
                    parts = batch.len(),
                    "Slack refused a packed message; sending its parts one by one"
                );
                for mut job in batch.into_iter().rev() {
                    job.alone = true;
                    queue.push_front(job);
                }
            }
            Err(Failure { error, .. }) => {
                if let SinkError::Retryable {
                    retry_after: Some(delay),
                    ..
                } = &error
                {
                    // Slack asked for quiet: everyone waiting gets the same answer, and the
                    // engine pauses the sink for that long.
                    pacer.pause(*delay);
                    finish(queue.drain(..).collect(), &Err(error.clone()));
                }
                finish(batch, &Err(error));
            }
        }
    }
}

fn finish(batch: Vec<Job>, result: &Result<(), SinkError>) {
    for job in batch {
        let _ = job.done.send(result.clone());
    }
}

/// The oldest job and, unless it must go alone, the following jobs for the same target that
/// fit in one message.
fn take_pack(queue: &mut VecDeque<Job>, max_pack: usize) -> Vec<Job> {
    let Some(first) = queue.pop_front() else {
        return Vec::new();
    };
    if first.alone || max_pack <= 1 {
        return vec![first];
    }
    let target = first.part.target.clone();
    let mut text = first.part.text.chars().count();
    let mut blocks = block_count(&first.part);
    let mut batch = vec![first];
    let mut i = 0;
    while i < queue.len() && batch.len() < max_pack {
        let job = &queue[i];
        if job.alone || job.part.target != target {
            i += 1;
            continue;
        }
        let more_text = job.part.text.chars().count() + 1;
        let more_blocks = block_count(&job.part);
        if text + more_text > MAX_PACK_TEXT || blocks + more_blocks > MAX_BLOCKS {
            break;
        }
        text += more_text;
        blocks += more_blocks;
        if let Some(job) = queue.remove(i) {
            batch.push(job);
        }
    }
    batch
}

fn block_count(part: &Part) -> usize {
    part.blocks.as_ref().map_or(1, Vec::len)
}

/// A token bucket per webhook URL, shared by every sink posting to that URL.
#[derive(Debug)]
pub(super) struct Pacer {
    /// `None`: no pacing.
    per_second: Option<f64>,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    paused_until: Option<Instant>,
}

impl Pacer {
    pub fn new(per_second: Option<f64>, burst: u32) -> Pacer {
        let burst = f64::from(burst.max(1));
        Pacer {
            per_second,
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                at: Instant::now(),
                paused_until: None,
            }),
        }
    }

    /// The pacer of `url`: the existing one while any sink uses it, else a new one. The first
    /// sink's `rate_limit` and `burst` hold for the URL.
    pub fn for_url(url: &str, per_second: Option<f64>, burst: u32) -> Arc<Pacer> {
        static PACERS: OnceLock<Mutex<HashMap<String, Weak<Pacer>>>> = OnceLock::new();
        let mut pacers = lock(PACERS.get_or_init(Default::default));
        pacers.retain(|_, p| p.strong_count() > 0);
        if let Some(pacer) = pacers.get(url).and_then(Weak::upgrade) {
            return pacer;
        }
        let pacer = Arc::new(Pacer::new(per_second, burst));
        pacers.insert(url.to_owned(), Arc::downgrade(&pacer));
        pacer
    }

    /// Waits for a slot and takes it.
    pub async fn ready(&self) {
        loop {
            let wait = {
                let mut b = lock(&self.state);
                let now = Instant::now();
                match b.paused_until {
                    Some(until) if now < until => until - now,
                    _ => {
                        b.paused_until = None;
                        let Some(rate) = self.per_second else { return };
                        let refill = now.duration_since(b.at).as_secs_f64() * rate;
                        b.tokens = (b.tokens + refill).min(self.burst);
                        b.at = now;
                        if b.tokens >= 1.0 {
                            b.tokens -= 1.0;
                            return;
                        }
                        Duration::from_secs_f64((1.0 - b.tokens) / rate)
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// No slot before `delay` has passed (Slack's `Retry-After`), then one.
    pub fn pause(&self, delay: Duration) {
        let mut b = lock(&self.state);
        let until = Instant::now() + delay;
        let until = b.paused_until.map_or(until, |u| u.max(until));
        b.paused_until = Some(until);
        b.tokens = 1.0;
        b.at = until;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(text: &str) -> Part {
        Part {
            target: Target::default(),
            text: text.into(),
            blocks: None,
        }
    }

    #[test]
    fn packed_texts_are_one_per_line_and_blocks_are_concatenated() {
        let a = part("a");
        let b = Part {
            blocks: Some(vec![json!({"type": "divider"})]),
            ..part("b")
        };
        let mut c = part("c");
        c.target.channel = Some("#it".into());
        assert_eq!(payload(&[&a]), json!({"text": "a"}));
        assert_eq!(
            payload(&[&a, &b]),
            json!({"text": "a\nb", "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": "a"}},
                {"type": "divider"}
            ]})
        );
        assert_eq!(payload(&[&c]), json!({"text": "c", "channel": "#it"}));
    }

    #[test]
    fn packs_keep_to_one_target_and_to_the_limits() {
        let job = |text: &str, channel: Option<&str>| {
            let mut p = part(text);
            p.target.channel = channel.map(Into::into);
            Job {
                part: p,
                alone: false,
                turn: Turn::default(),
                done: oneshot::channel().0,
            }
        };
        let mut queue: VecDeque<Job> = VecDeque::new();
        queue.push_back(job("1", None));
        queue.push_back(job("other channel", Some("#x")));
        for i in 2..=5 {
            queue.push_back(job(&i.to_string(), None));
        }
        let texts = |b: &[Job]| b.iter().map(|j| j.part.text.clone()).collect::<Vec<_>>();
        assert_eq!(texts(&take_pack(&mut queue, 3)), ["1", "2", "3"]);
        assert_eq!(texts(&take_pack(&mut queue, 3)), ["other channel"]);
        assert_eq!(texts(&take_pack(&mut queue, 3)), ["4", "5"]);
        assert!(queue.is_empty());

        let long = "x".repeat(MAX_PACK_TEXT / 2);
        for _ in 0..3 {
            queue.push_back(job(&long, None));
        }
        assert_eq!(take_pack(&mut queue, 20).len(), 1, "text limit");
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_allows_a_burst_then_the_rate() {
        let pacer = Pacer::new(Some(2.0), 3);
        let start = Instant::now();
        for _ in 0..3 {
            pacer.ready().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        pacer.ready().await;
        pacer.ready().await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        pacer.pause(Duration::from_secs(10));
        pacer.ready().await;
        assert_eq!(start.elapsed(), Duration::from_secs(11));
        pacer.ready().await;
        assert_eq!(start.elapsed(), Duration::from_millis(11_500));
    }
}
