//! Cluster mode: the instances of a service share their plan limits
//! through Redis (feature `redis`).
//!
//! Requests are still counted in the process, on the hot path, with no
//! wait on Redis. A task per gate reports what each budget admitted to
//! Redis every round ([`RedisLimits::sync_every`], 10 ms by default), in
//! one script call, and writes back the budget all instances share. Rates
//! are GCRA in Redis too (the theoretical arrival time, on Redis's clock);
//! quotas are each instance's total per month, summed, so usage persists
//! in Redis across restarts. Needs Redis 5 or newer (the script reads
//! Redis's clock before it writes).
//!
//! # Accuracy
//!
//! An instance learns of the others' requests one round late, so the
//! instances together can admit more than a limit by what they admit in
//! about a round. BENCHMARKS.md measures four instances on one Redis:
//! within 0.5 % once warm. One more case is not exact: an instance's first
//! requests of a budget it has not watched yet (a new key on this
//! instance, or one idle here for 100 rounds) are judged on its own copy
//! until its first round with it, which may be fuller than the shared one.
//! A restarted instance counts a quota from Redis from its first round with
//! it; what it admitted before that counts too, but may pass the quota.
//! Units counted before a month ended and reported after it (in the round
//! that spans its end, or after an outage that did) count in the month they
//! were counted in, give or take a unit counted as the round began; after
//! an outage over more than one month's end, in the new month.
//!
//! Nothing counted is lost while the process runs: a round Redis does not
//! answer is sent again (a quota's total, set rather than added, so a late
//! answer to a round that did run counts it once; a rate's units are
//! dropped instead, so they never count twice), units given back after a
//! round are reported as a refund, and
//! [`Gate::flush_limits`](crate::Gate::flush_limits) runs a round at once
//! (call it after a graceful shutdown); a dropped gate also runs one last
//! round, while its runtime still runs. A crash loses what was admitted since the
//! last round (measured in BENCHMARKS.md: less than one round's worth).
//!
//! # When Redis is unreachable
//!
//! Each instance then admits its share: a rate of `L` per period becomes
//! `L/n` (the burst too, one request at least), and a quota the `n`th part
//! of what was left when Redis last answered; `n` is
//! [`RedisLimits::instances`] if set, or the instances Redis last saw (each
//! writes a heartbeat). Never unlimited, never a 5xx: a request over the
//! share is a 429 like any other (a quota's says to retry in a minute).
//! The same holds until Redis first answers, and when its last answer is
//! more than 50 rounds (a second at least) old, so a stalled task cannot
//! leave an instance counting alone. The task reconnects on its own,
//! backing off from 100 ms to 2 s while Redis refuses or fails its rounds,
//! and the full limits come back with the first answer. What was counted
//! meanwhile is reported then: a quota's units, and a rate's that have not
//! come back yet, so the minute after an outage does not start from a
//! full budget.
//!
//! # Example
//!
//! ```no_run
//! use scopegate::cluster::RedisLimits;
//! use scopegate::{CachedStore, Gate, MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), scopegate::error::ConfigError> {
//! let cache = CachedStore::new(MemoryStore::new());
//! let gate = Gate::builder(cache)
//!     .cluster(RedisLimits::new("redis://127.0.0.1:6379")?.instances(4))
//!     .build()?; // inside a Tokio runtime: the sync task starts here
//! let status = gate.cluster_status().expect("cluster mode");
//! println!("Redis answering: {}, instances: {}", status.connected(), status.instances());
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Script};
use tokio::time::Instant;

use crate::error::ConfigError;
use crate::limiter::{Flush, Handed, Report, Shared, Totals, Watched};

/// Adds each budget's report to its shared budget and answers it. A rate
/// (`r`): units added to GCRA's arrival time, in microseconds on Redis's
/// clock (a refund, if negative, never below now); the answer is how far
/// ahead of now it is. A quota (`m`): this instance's total for the month,
/// set in a hash by instance (so a report sent twice counts once), with
/// the instances' sum kept in its `sum` field; the answer is that sum. `ARGV[1]` is this
/// instance's name, then three arguments per key.
const SYNC: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, key in ipairs(KEYS) do
  local kind, units, param = ARGV[3 * i - 1], tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
  if kind == 'r' then
    local tat = tonumber(redis.call('GET', key) or now)
    if tat < now then tat = now end
    if units ~= 0 then
      tat = math.max(now, tat + units * param)
      redis.call('SET', key, string.format('%.3f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
    end
    out[i] = math.floor(tat - now)
  else
    local old = tonumber(redis.call('HGET', key, ARGV[1]) or 0)
    redis.call('HSET', key, ARGV[1], string.format('%d', units))
    out[i] = redis.call('HINCRBY', key, 'sum', units - old)
    redis.call('EXPIRE', key, param)
  end
end
return out
";

/// Writes this instance's heartbeat and answers how many instances wrote
/// one within the window.
const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[2]))
return redis.call('ZCARD', KEYS[1])
";

/// Budgets per script call.
const CHUNK: usize = 256;

/// How often an instance writes its heartbeat, and how long one counts.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
const HEARTBEAT_WINDOW: Duration = Duration::from_secs(3);

/// The first and the longest wait between two connection attempts.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Where and how a gate shares its limits; give it to
/// [`GateBuilder::cluster`](crate::gate::GateBuilder::cluster). See the [module
/// docs](crate::cluster).
#[derive(Clone)]
#[must_use]
pub struct RedisLimits {
    client: Client,
    prefix: String,
    sync_every: Duration,
    timeout: Duration,
    instances: Option<NonZeroU32>,
}

impl RedisLimits {
    /// Limits shared through the Redis at `url` (`redis://host:port/db`,
    /// `rediss://` needs redis's TLS features). Nothing connects yet.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Cluster`] when `url` is not a Redis URL.
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        let client = Client::open(url)
            // Not the error's text: it may quote the URL, password and all.
            .map_err(|_| {
                ConfigError::Cluster("not a Redis URL (redis://host:port/db)".to_owned())
            })?;
        Ok(RedisLimits {
            client,
            prefix: "scopegate".to_owned(),
            sync_every: Duration::from_millis(10),
            timeout: Duration::from_millis(200),
            instances: None,
        })
    }

    /// What the keys in Redis start with (default `scopegate`): services
    /// whose limits must not mix use different prefixes.
    pub fn prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// How often budgets are reported to Redis (default 10 ms; 1 ms at
    /// least). Shorter is more exact and costs Redis more calls.
    pub fn sync_every(mut self, every: Duration) -> Self {
        self.sync_every = every.max(Duration::from_millis(1));
        self
    }

    /// How long a connection attempt or a round may take before Redis is
    /// taken to be unreachable (default 200 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How many instances share the limits while Redis is unreachable
    /// (each then admits `1/n` of them). Unset, the number Redis last saw;
    /// set it when instances may start while Redis is down (they would
    /// otherwise count on 1).
    pub fn instances(mut self, n: u32) -> Self {
        self.instances = NonZeroU32::new(n);
        self
    }

    /// Starts the sync task on the current Tokio runtime; it ends when the
    /// gate is dropped.
    pub(crate) fn start(self) -> Result<Arc<Shared>, ConfigError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ConfigError::Cluster(
                "cluster mode starts its sync task on a Tokio runtime: build the gate inside one"
                    .to_owned(),
            )
        })?;
        let fallback = self.instances.map_or(1, NonZeroU32::get);
        // An answer older than 50 rounds (a second at least) is stale: the
        // task has stopped or cannot keep up, so the share applies.
        let stale_after = (self.sync_every * 50).max(Duration::from_secs(1));
        let (rounds, requests) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(fallback, stale_after, rounds));
        runtime.spawn(run(
            self,
            Arc::downgrade(&shared),
            shared.handed(),
            requests,
        ));
        Ok(shared)
    }
}

impl fmt::Debug for RedisLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The address only: the URL may carry a password.
        f.debug_struct("RedisLimits")
            .field("addr", &self.client.get_connection_info().addr())
            .field("prefix", &self.prefix)
            .field("sync_every", &self.sync_every)
            .field("timeout", &self.timeout)
            .field("instances", &self.instances)
            .finish()
    }
}

/// Cluster mode's state, from [`Gate::cluster_status`](crate::Gate::cluster_status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    connected: bool,
    instances: u32,
}

impl ClusterStatus {
    pub(crate) fn of(shared: &Shared) -> Self {
        let (connected, instances) = shared.status();
        ClusterStatus {
            connected,
            instances,
        }
    }

    /// Whether Redis answered the last round: the limits are shared. If
    /// not, this instance admits its share.
    pub fn connected(&self) -> bool {
        self.connected
    }

    /// The instances the limits are shared by: those Redis last saw, or
    /// [`RedisLimits::instances`] when set and Redis is unreachable.
    pub fn instances(&self) -> u32 {
        self.instances
    }
}

/// The sync task: a round every `sync_every`, and one at once for each
/// batch of flushes, until the gate is dropped; then a last one.
async fn run(
    config: RedisLimits,
    shared: Weak<Shared>,
    handed: Handed,
    mut requests: tokio::sync::mpsc::UnboundedReceiver<Flush>,
) {
    let id = instance_id();
    let (sync, heartbeat) = (Script::new(SYNC), Script::new(HEARTBEAT));
    let instances_key = format!("{}:instances", config.prefix);
    let connection_config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.timeout))
        .set_response_timeout(Some(config.timeout));
    let mut connection: Option<MultiplexedConnection> = None;
    let mut watched: HashMap<usize, Watched> = HashMap::new();
    let mut totals = Totals::default();
    let (mut next_attempt, mut backoff) = (Instant::now(), RECONNECT_MIN);
    let mut next_heartbeat = Instant::now();
    let mut seen = config.instances.map_or(1, NonZeroU32::get);
    let mut next_round = Instant::now();
    loop {
        // Until the next round is due, a flush asks for one, or the gate
        // is dropped (the sender with it), whichever comes first.
        // Flushes asked for meanwhile share the round.
        let mut replies = Vec::new();
        let shared = match tokio::time::timeout_at(next_round, requests.recv()).await {
            Err(_) => {
                next_round = (next_round + config.sync_every).max(Instant::now());
                shared.upgrade()
            }
            Ok(Some(reply)) => {
                replies.push(reply);
                while let Ok(reply) = requests.try_recv() {
                    replies.push(reply);
                }
                shared.upgrade()
            }
            Ok(None) => None,
        };
        for budget in handed.take(&config.prefix) {
            watched.entry(budget.id()).or_insert(budget);
        }
        let Some(shared) = shared else {
            // The gate is gone: report what it counted since the last
            // round, so that stopping loses nothing.
            if let Some(redis) = &mut connection {
                round(redis, &sync, &id, &mut watched, &mut totals, None).await;
            }
            return;
        };
        // A flush tries at once, backing off or not: it is the last
        // chance before a graceful exit.
        if connection.is_none() && (!replies.is_empty() || Instant::now() >= next_attempt) {
            let attempt = config
                .client
                .get_multiplexed_async_connection_with_config(&connection_config);
            match tokio::time::timeout(config.timeout, attempt).await {
                Ok(Ok(connected)) => {
                    connection = Some(connected);
                    next_heartbeat = Instant::now();
                }
                _ => {
                    next_attempt = Instant::now() + backoff;
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                }
            }
        }
        // Whether Redis took the round (what a flush answers), and whether
        // it answered all that was asked (a heartbeat too, when due).
        let (took, answered) = match &mut connection {
            Some(redis) => {
                let took = round(redis, &sync, &id, &mut watched, &mut totals, Some(&shared)).await;
                let mut answered = took;
                if took && Instant::now() >= next_heartbeat {
                    let mut call = heartbeat.key(&instances_key);
                    call.arg(&id).arg(HEARTBEAT_WINDOW.as_millis() as u64);
                    let count = call.invoke_async::<u32>(redis);
                    match tokio::time::timeout(config.timeout, count).await {
                        Ok(Ok(count)) => {
                            seen = count.max(1);
                            next_heartbeat = Instant::now() + HEARTBEAT_EVERY;
                        }
                        _ => answered = false,
                    }
                }
                (took, answered)
            }
            None => (false, false),
        };
        if answered {
            shared.answered(seen);
            backoff = RECONNECT_MIN;
        } else {
            // Connected but not answering (a replica, no permission, a
            // stall): reconnect later, backing off as for a refused
            // connection.
            if connection.take().is_some() {
                next_attempt = Instant::now() + backoff;
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
            shared.unreachable(config.instances.map_or(seen, NonZeroU32::get));
            let now = shared.now_nanos();
            let share = shared.share(now);
            for budget in watched.values() {
                budget.unreported(now, share);
            }
        }
        watched.retain(|_, budget| !budget.release());
        for reply in replies {
            let _ = reply.send(took);
        }
    }
}

/// One round: every watched budget's units reported, its shared budget
/// written back (unless the gate is gone). `false` if Redis did not
/// answer: the chunk's reports are dealt with as [`Watched::failed`] says,
/// and later chunks wait for the next round.
async fn round(
    redis: &mut MultiplexedConnection,
    sync: &Script,
    id: &str,
    watched: &mut HashMap<usize, Watched>,
    totals: &mut Totals,
    shared: Option<&Shared>,
) -> bool {
    let mut budgets: Vec<&mut Watched> = watched.values_mut().collect();
    for chunk in budgets.chunks_mut(CHUNK) {
        let wall = SystemTime::now();
        // Each report with the budget it is of (a quota's may have two:
        // the month just ended and this one).
        let mut reports: Vec<(usize, Report)> = Vec::with_capacity(chunk.len());
        for (owner, budget) in chunk.iter_mut().enumerate() {
            let (report, late) = budget.report(wall);
            reports.extend(late.into_iter().chain([report]).map(|r| (owner, r)));
        }
        let mut call = sync.prepare_invoke();
        call.arg(id);
        for (_, report) in &mut reports {
            totals.add(report);
            call.key(&report.key)
                .arg(report.kind)
                .arg(report.units)
                .arg(report.param);
        }
        let answers = call.invoke_async::<Vec<i64>>(redis).await.ok();
        let Some(answers) = answers.filter(|a| a.len() == reports.len()) else {
            for (owner, report) in &reports {
                chunk[*owner].failed(report, totals);
            }
            return false;
        };
        if let Some(shared) = shared {
            let (now, wall) = (shared.now_nanos(), SystemTime::now());
            for ((owner, report), answer) in reports.iter().zip(answers) {
                chunk[*owner].apply(report, answer, now, wall);
            }
            // A long round (many budgets) is no sign of a stalled task.
            shared.still_answering();
        }
    }
    true
}

/// A random name for this instance's heartbeat.
fn instance_id() -> String {
    let mut bytes = [0u8; 8];
    // Without randomness, the clock: instances need only differ.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = (nanos as u64).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CachedStore, Gate, MemoryStore};

    #[test]
    fn a_bad_url_and_a_missing_runtime_are_config_errors() {
        let bad = RedisLimits::new("http://127.0.0.1:6379").unwrap_err();
        assert_eq!(
            bad.to_string(),
            "cluster mode: not a Redis URL (redis://host:port/db)"
        );
        let outside = Gate::builder(CachedStore::new(MemoryStore::new()))
            .cluster(RedisLimits::new("redis://127.0.0.1:6379").unwrap())
            .build()
            .unwrap_err();
        assert!(
            matches!(&outside, ConfigError::Cluster(reason) if reason.contains("Tokio runtime")),
            "{outside}"
        );
    }

    #[test]
    fn debug_leaves_the_password_out() {
        let redis = RedisLimits::new("redis://scopegate:s3cret-pass@127.0.0.1:6380/2")
            .unwrap()
            .instances(3);
        let debug = format!("{redis:?}");
        assert!(!debug.contains("s3cret-pass"), "{debug}");
        assert!(
            debug.contains("6380") && debug.contains("instances: Some(3)"),
            "{debug}"
        );
    }
}
