//! Metrics (feature `metrics`): decisions, cache hits, store calls and
//! cache entries, through the [`metrics`](https://docs.rs/metrics) facade,
//! so any exporter serves them (Prometheus, StatsD, OpenTelemetry…).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `scopegate_decisions_total` | counter | `outcome` (`allowed`, `rejected`), `reason` (`none`, or the error body's `type`: `unauthorized`, `invalid_request`, `invalid_token`, `insufficient_scope`, `forbidden`, `not_found`, `service_unavailable`, `rate_limited`, `quota_exceeded`), `kind` (`api_key`, `oauth`, `none`) |
//! | `scopegate_cache_hits_total` | counter | `tier` (`front`: the thread's own copy; `moka`), `answer` (`found`, `not_found`) |
//! | `scopegate_cache_misses_total` | counter | (a store call each) |
//! | `scopegate_store_errors_total` | counter | (failed or timed out) |
//! | `scopegate_store_latency_seconds` | histogram | `outcome` (`found`, `not_found`, `error`, `timeout`) |
//! | `scopegate_cache_entries` | gauge | `answer` (`found`, `not_found`): over every `CachedStore` behind a gate (moka's count, which its housekeeping brings up to date) |
//!
//! Every label has a handful of fixed values: never a token, a hash, a
//! credential id or a path. Each request counts once, by its final
//! decision: a request the outer layer let through and an inner one refused
//! is `rejected`; one let through without a credential (a public route of a
//! policy table, or no token on [`Gate::optional`](crate::gate::Gate::optional))
//! is `allowed` of kind `none`.
//!
//! The request path does not call the facade: each thread bumps counters of
//! its own (a plain load and store, no locked instruction, nothing another
//! thread writes), and [`publish`] hands their totals to the facade. Call it before an exporter renders
//! (as the example's `/metrics` does), or let [`spawn_publisher`] call it on
//! an interval. Store latencies go to the facade as they happen: they occur
//! only on cache misses.
//!
//! # Example
//!
//! ```
//! use scopegate::{CachedStore, Gate, MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Install any `metrics` recorder first, e.g. metrics-exporter-prometheus.
//! let gate = Gate::new(CachedStore::new(MemoryStore::new()));
//! // … serve requests through `gate`'s layers …
//! scopegate::metrics::publish(); // before rendering, or:
//! let publisher = scopegate::metrics::spawn_publisher(std::time::Duration::from_secs(5));
//! # publisher.abort();
//! # let _ = gate;
//! # }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use crate::credential::{Credential, CredentialKind};
use crate::error::RejectionKind;

const KINDS: [&str; 3] = ["api_key", "oauth", "none"];
/// `none` (allowed), then each rejection's `type`.
const REASONS: [&str; 10] = [
    "none",
    "unauthorized",
    "invalid_request",
    "invalid_token",
    "insufficient_scope",
    "forbidden",
    "not_found",
    "service_unavailable",
    "rate_limited",
    "quota_exceeded",
];

// Where each counter sits in a thread's block.
const DECISIONS: usize = 0;
/// Requests counted allowed by an outer layer, then refused by an inner one.
const OVERRULED: usize = DECISIONS + REASONS.len() * KINDS.len();
/// Front found, front not found, moka found, moka not found.
const HITS: usize = OVERRULED + KINDS.len();
const MISSES: usize = HITS + 4;
const ERRORS: usize = MISSES + 1;
const COUNTERS: usize = ERRORS + 1;

/// One thread's counters. Only that thread writes them, with a plain load
/// and store (no locked instruction, no cache line shared with another
/// writer); [`publish`] reads every thread's.
struct Block([AtomicU64; COUNTERS]);

impl Block {
    const fn new() -> Self {
        Block([const { AtomicU64::new(0) }; COUNTERS])
    }
}

/// Every live thread's block, and what exited threads counted.
struct Registry {
    live: Vec<Arc<Block>>,
    retired: [u64; COUNTERS],
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    live: Vec::new(),
    retired: [0; COUNTERS],
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This thread's block, registered while the thread lives; its counts
/// are folded into the registry's when the thread exits.
struct Local(Arc<Block>);

impl Local {
    fn new() -> Self {
        let block = Arc::new(Block::new());
        registry().live.push(Arc::clone(&block));
        Local(block)
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let mut registry = registry();
        for (total, cell) in registry.retired.iter_mut().zip(&self.0 .0) {
            *total += cell.load(Ordering::Relaxed);
        }
        registry.live.retain(|block| !Arc::ptr_eq(block, &self.0));
    }
}

thread_local! {
    static LOCAL: Local = Local::new();
}

#[inline]
fn bump(counter: usize) {
    let _ = LOCAL.try_with(|local| {
        let cell = &local.0 .0[counter];
        cell.store(cell.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    });
}

/// Every thread's counts, summed.
fn totals() -> [u64; COUNTERS] {
    let registry = registry();
    let mut totals = registry.retired;
    for block in &registry.live {
        for (total, cell) in totals.iter_mut().zip(&block.0) {
            *total += cell.load(Ordering::Relaxed);
        }
    }
    totals
}

/// The caches whose entries `publish` counts.
static CACHES: Mutex<Vec<Weak<dyn Entries>>> = Mutex::new(Vec::new());

/// A cache's entry counts, found and not found.
pub(crate) trait Entries: Send + Sync {
    fn entries(&self) -> (u64, u64);
}

fn kind(credential: Option<&Credential>) -> usize {
    match credential.map(Credential::kind) {
        Some(CredentialKind::ApiKey) => 0,
        Some(CredentialKind::OAuthClient { .. }) => 1,
        None => 2,
    }
}

fn reason(rejection: RejectionKind) -> usize {
    match rejection {
        RejectionKind::Unauthorized => 1,
        RejectionKind::InvalidRequest => 2,
        RejectionKind::InvalidToken => 3,
        RejectionKind::InsufficientScope => 4,
        RejectionKind::Forbidden => 5,
        RejectionKind::NotFound => 6,
        RejectionKind::ServiceUnavailable => 7,
        RejectionKind::RateLimited => 8,
        RejectionKind::QuotaExceeded => 9,
    }
}

/// A request let through with `credential`, by the layer that resolved it.
#[inline]
pub(crate) fn allowed(credential: &Credential) {
    bump(DECISIONS + kind(Some(credential)));
}

/// A request let through without a credential (a public route, or no token
/// on an optional one).
pub(crate) fn anonymous() {
    bump(DECISIONS + kind(None));
}

/// A request refused.
pub(crate) fn rejected(rejection: RejectionKind, credential: Option<&Credential>) {
    bump(DECISIONS + reason(rejection) * KINDS.len() + kind(credential));
}

/// A request an outer layer let through (and counted), refused here.
pub(crate) fn overruled(credential: &Credential) {
    bump(OVERRULED + kind(Some(credential)));
}

/// A cache answer: from this thread's front or from moka.
#[inline]
pub(crate) fn hit(front: bool, found: bool) {
    bump(HITS + usize::from(!front) * 2 + usize::from(!found));
}

/// A store call, its latency and outcome.
pub(crate) fn store_call(latency: Duration, outcome: &'static str, failed: bool) {
    bump(MISSES);
    if failed {
        bump(ERRORS);
    }
    metrics::histogram!("scopegate_store_latency_seconds", "outcome" => outcome)
        .record(latency.as_secs_f64());
}

/// Counts `cache`'s entries in [`publish`] for as long as it lives.
pub(crate) fn register(cache: Weak<dyn Entries>) {
    CACHES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(cache);
}

/// Hands the totals counted so far to the installed `metrics` recorder
/// (counters as absolute values, the entry gauges as they are now). Cheap:
/// a few dozen loads per thread that has counted. See the [module docs](crate::metrics).
pub fn publish() {
    let totals = totals();
    for (r, reason) in REASONS.iter().enumerate() {
        for (k, kind) in KINDS.iter().enumerate() {
            let mut total = totals[DECISIONS + r * KINDS.len() + k];
            if r == 0 {
                total = total.saturating_sub(totals[OVERRULED + k]);
            }
            if total > 0 {
                let outcome = if r == 0 { "allowed" } else { "rejected" };
                metrics::counter!(
                    "scopegate_decisions_total",
                    "outcome" => outcome, "reason" => *reason, "kind" => *kind
                )
                .absolute(total);
            }
        }
    }
    for i in 0..4usize {
        let tier = if i < 2 { "front" } else { "moka" };
        let answer = if i.is_multiple_of(2) {
            "found"
        } else {
            "not_found"
        };
        metrics::counter!("scopegate_cache_hits_total", "tier" => tier, "answer" => answer)
            .absolute(totals[HITS + i]);
    }
    metrics::counter!("scopegate_cache_misses_total").absolute(totals[MISSES]);
    metrics::counter!("scopegate_store_errors_total").absolute(totals[ERRORS]);
    let (mut found, mut not_found) = (0, 0);
    CACHES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|cache| match cache.upgrade() {
            Some(cache) => {
                let (f, n) = cache.entries();
                found += f;
                not_found += n;
                true
            }
            None => false,
        });
    metrics::gauge!("scopegate_cache_entries", "answer" => "found").set(found as f64);
    metrics::gauge!("scopegate_cache_entries", "answer" => "not_found").set(not_found as f64);
}

/// Calls [`publish`] every `every`, on the current Tokio runtime, until the
/// handle is aborted or the runtime shuts down.
///
/// # Panics
///
/// Outside a Tokio runtime, as `tokio::spawn` does.
pub fn spawn_publisher(every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            publish();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_of_exited_threads_are_kept_and_their_blocks_dropped() {
        // A counter no request path bumps (overruled needs a credential).
        let unused = OVERRULED + 2;
        let before = totals()[unused];
        let threads: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(move || (0..5).for_each(|_| bump(unused))))
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(totals()[unused], before + 40);
        let live = registry().live.len();
        std::thread::spawn(move || bump(unused)).join().unwrap();
        assert!(
            registry().live.len() <= live,
            "an exited thread's block stays"
        );
        assert_eq!(totals()[unused], before + 41);
    }
}
