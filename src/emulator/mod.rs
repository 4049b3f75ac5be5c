//! The user-posting emulator (seed task 3), also this project's load generator: picks posts from a
//! source (the generator, JSON-lines files, or a SQL database read at random offsets as the
//! original did) and sends each post's three rows to the pin, geo and user streams, through the
//! REST API (`/record` one at a time, or `/records` batches) or straight to Kinesis.
//!
//! Sends are bounded in concurrency; only the failed entries of a request are retried, with
//! backoff, so the final counts are exact: every record is either accepted once or counted failed.

mod sender;
mod source;

pub use sender::Target;
pub use source::PostSource;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::dataset::{DatasetError, Post};

/// How fast posts are sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// The original's: a random sleep of 0 or 1 s between posts.
    Original,
    /// A steady number of posts per second.
    Rate(f64),
    /// As fast as the target takes them.
    Max,
}

/// Which partition key each record gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMode {
    /// A random uuid per record.
    Uuid,
    /// The post id.
    Id,
    /// The same key for every record.
    Constant(String),
}

/// What the emulator does.
#[derive(Debug, Clone)]
pub struct EmulatorSettings {
    /// The pin, geo and user stream names.
    pub streams: [String; 3],
    /// How fast.
    pub pace: Pace,
    /// Stop after this many posts.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Posts per request (`/records` or PutRecords); `None` sends each record on its own (`/record`).
    pub batch: Option<usize>,
    /// Read rows in order instead of at random offsets.
    pub sequential: bool,
    /// Seeds the random offsets (the original used 100).
    pub seed: u64,
    /// Partition keys.
    pub keys: KeyMode,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Tries per record before it is counted failed.
    pub max_attempts: u32,
}

/// Live counts, shared with whoever shows progress.
#[derive(Debug, Default)]
pub struct Counters {
    /// Posts taken from the source.
    pub posts: AtomicU64,
    /// Records accepted, per stream (pin, geo, user).
    pub accepted: [AtomicU64; 3],
    /// Record sends retried.
    pub retried: AtomicU64,
    /// Records given up on.
    pub failed: AtomicU64,
    /// Every request's round trip, in microseconds.
    pub latencies_us: std::sync::Mutex<Vec<u32>>,
}

impl Counters {
    /// Records one request's round trip.
    pub fn record_latency(&self, elapsed: Duration) {
        let us = u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX);
        if let Ok(mut all) = self.latencies_us.lock() {
            all.push(us);
        }
    }

    /// (requests, p50, p99) of the round trips so far.
    pub fn latency(&self) -> RequestLatency {
        let mut all = self
            .latencies_us
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        all.sort_unstable();
        let at = |q: f64| {
            let i = ((all.len() as f64 * q).ceil() as usize).clamp(1, all.len().max(1)) - 1;
            all.get(i).map_or(0.0, |us| f64::from(*us) / 1000.0)
        };
        RequestLatency {
            requests: all.len() as u64,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
        }
    }
}

/// Request round trips of a run.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct RequestLatency {
    /// Requests made.
    pub requests: u64,
    /// Median round trip, ms.
    pub p50_ms: f64,
    /// 99th percentile round trip, ms.
    pub p99_ms: f64,
}

/// The exact outcome of a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Posts sent (each is three records).
    pub posts: u64,
    /// Records accepted per stream.
    pub accepted: BTreeMap<String, u64>,
    /// Record sends that were retried (throttling, 5xx, network, partial failures).
    pub retried: u64,
    /// Records that were never accepted.
    pub failed: u64,
    /// Wall-clock seconds of the run.
    pub seconds: f64,
    /// Request round trips.
    pub latency: RequestLatency,
}

/// Why the emulator could not run.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The target did not answer at start.
    #[error("cannot reach {target}: {message}")]
    Unreachable {
        /// The API URL or Kinesis endpoint.
        target: String,
        /// What went wrong and what to do.
        message: String,
    },
    /// The source failed.
    #[error(transparent)]
    Source(#[from] DatasetError),
    /// The source has no rows.
    #[error("the source has no rows to post")]
    EmptySource,
}

/// Sends posts until the count or duration is reached, or `cancel` fires.
pub async fn run(
    source: &PostSource,
    target: &Target,
    settings: &EmulatorSettings,
    counters: Arc<Counters>,
    cancel: &CancellationToken,
) -> Result<Summary, EmulatorError> {
    let rows = source.len();
    if rows == 0 {
        return Err(EmulatorError::EmptySource);
    }
    let mut rng = StdRng::seed_from_u64(settings.seed);
    let started = Instant::now();
    let deadline = settings.duration.map(|d| started + d);
    let batch_size = settings.batch.unwrap_or(1).max(1);
    let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let mut buffer: Vec<Post> = Vec::with_capacity(batch_size);
    let mut buffered_since = Instant::now();
    let mut sent: u64 = 0;
    loop {
        if cancel.is_cancelled()
            || settings.count.is_some_and(|c| sent >= c)
            || deadline.is_some_and(|d| Instant::now() >= d)
        {
            break;
        }
        let wait = match settings.pace {
            Pace::Original => Some(Instant::now() + Duration::from_secs(rng.random_range(0..=1))),
            Pace::Rate(rate) => {
                Some(started + Duration::from_secs_f64(sent as f64 / rate.max(1e-9)))
            }
            Pace::Max => None,
        };
        if let Some(at) = wait {
            let at = deadline.map_or(at, |d| at.min(d));
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = cancel.cancelled() => break,
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        let offset = if settings.sequential {
            usize::try_from(sent % rows as u64).unwrap_or(0)
        } else {
            rng.random_range(0..rows)
        };
        if buffer.is_empty() {
            buffered_since = Instant::now();
        }
        buffer.push(source.post(offset).await?);
        sent += 1;
        counters.posts.fetch_add(1, Ordering::Relaxed);
        // A batch goes when full, or after a second at a slow pace.
        if buffer.len() >= batch_size || buffered_since.elapsed() >= Duration::from_secs(1) {
            let posts = std::mem::replace(&mut buffer, Vec::with_capacity(batch_size));
            spawn_send(
                &mut tasks, &permits, posts, target, settings, &counters, &mut rng,
            )
            .await;
        }
    }
    if !buffer.is_empty() {
        spawn_send(
            &mut tasks, &permits, buffer, target, settings, &counters, &mut rng,
        )
        .await;
    }
    while tasks.join_next().await.is_some() {}
    let accepted = settings
        .streams
        .iter()
        .zip(&counters.accepted)
        .map(|(s, n)| (s.clone(), n.load(Ordering::SeqCst)))
        .collect();
    Ok(Summary {
        posts: sent,
        accepted,
        retried: counters.retried.load(Ordering::SeqCst),
        failed: counters.failed.load(Ordering::SeqCst),
        seconds: started.elapsed().as_secs_f64(),
        latency: counters.latency(),
    })
}

async fn spawn_send(
    tasks: &mut JoinSet<()>,
    permits: &Arc<Semaphore>,
    posts: Vec<Post>,
    target: &Target,
    settings: &EmulatorSettings,
    counters: &Arc<Counters>,
    rng: &mut StdRng,
) {
    let Ok(permit) = Arc::clone(permits).acquire_owned().await else {
        return;
    };
    let key = |rng: &mut StdRng, id: i64| match &settings.keys {
        KeyMode::Uuid => uuid::Builder::from_random_bytes(rng.random())
            .into_uuid()
            .to_string(),
        KeyMode::Id => id.to_string(),
        KeyMode::Constant(k) => k.clone(),
    };
    let mut records: [Vec<sender::Entry>; 3] = Default::default();
    for post in &posts {
        let rows = [
            serde_json::value::to_raw_value(&post.pin),
            serde_json::value::to_raw_value(&post.geo),
            serde_json::value::to_raw_value(&post.user),
        ];
        for (table, row) in rows.into_iter().enumerate() {
            if let Ok(data) = row {
                records[table].push(sender::Entry {
                    key: key(rng, post.pin.index),
                    data,
                });
            }
        }
    }
    let target = target.clone();
    let streams = settings.streams.clone();
    let single = settings.batch.is_none();
    let max_attempts = settings.max_attempts;
    let counters = Arc::clone(counters);
    tasks.spawn(async move {
        let [pin, geo, user] = records;
        let send = |table: usize, entries: Vec<sender::Entry>| {
            sender::send_all(
                &target,
                &streams[table],
                entries,
                single,
                max_attempts,
                &counters,
                table,
            )
        };
        tokio::join!(send(0, pin), send(1, geo), send(2, user));
        drop(permit);
    });
}
