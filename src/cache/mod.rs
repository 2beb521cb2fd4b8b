//! A moka cache in front of any [`CredentialStore`]: [`CachedStore`].
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use scopegate::cache::CachedStore;
//! use scopegate::{Credential, CredentialKind, MemoryStore};
//! use scopegate::credential::PresentedToken;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), scopegate::store::StoreError> {
//! let keys = MemoryStore::new();
//! keys.insert_token("ohk_1", Credential::new("key_1", "ws_acme", CredentialKind::ApiKey));
//! let token = PresentedToken::new("ohk_1");
//!
//! let cache = CachedStore::builder(keys.clone())
//!     .max_capacity(10_000)
//!     .time_to_live(Duration::from_secs(30))
//!     .build();
//!
//! assert_eq!(cache.resolve(&token).await?.unwrap().id(), "key_1");
//! assert_eq!(cache.resolve(&token).await?.unwrap().id(), "key_1");
//! let stats = cache.stats();
//! assert_eq!((stats.misses, stats.hits), (1, 1));
//!
//! // Revoke in the store, then drop the cached copy: the next lookup misses.
//! keys.revoke_credential("key_1");
//! cache.invalidate_credential("key_1");
//! assert!(cache.resolve(&token).await?.is_none());
//! # Ok(())
//! # }
//! ```
//!
//! The request path reads it in three steps (`Resolver`): this thread's own
//! copy of a recent answer (`front`), then moka if it answers without
//! waiting, then the store, single-flight per token.

mod doorkeeper;
mod epoch;
mod front;

use std::fmt;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use moka::future::Cache;
use moka::ops::compute::Op;

use crate::credential::{Credential, PresentedToken, TokenHash};
use crate::store::{CredentialStore, StoreError};
use crate::striped::Striped;
use doorkeeper::Doorkeeper;
use epoch::Epoch;

pub(crate) use front::{Cached, Epochs, Key};

const DEFAULT_MAX_CAPACITY: u64 = 100_000;
const DEFAULT_TIME_TO_LIVE: Duration = Duration::from_secs(60);
const DEFAULT_NEGATIVE_MAX_CAPACITY: u64 = 10_000;
const DEFAULT_NEGATIVE_TIME_TO_LIVE: Duration = Duration::from_secs(5);
const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest either time-to-live may be: a year, in effect "until
/// invalidated", and far inside what `Instant` arithmetic can represent.
const MAX_TIME_TO_LIVE: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Ids of `CachedStore`s, for the per-thread front tables.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A moka cache in front of a [`CredentialStore`].
///
/// - Found credentials are cached for `time_to_live`, and never past the
///   credential's own expiry. Without push invalidation, `time_to_live` is the
///   bound on how long a revocation made elsewhere can go unnoticed.
/// - Concurrent misses for one token make exactly one store call.
/// - "Not found" answers go to a separate, bounded, short-lived negative
///   cache, from a token's second one on: a flood of one bad token costs
///   two store calls per `negative_time_to_live`, and a flood of made-up
///   tokens, each sent once, fills no cache.
/// - Store errors and timeouts are never cached.
/// - `invalidate*` take effect on the very next lookup, including against a
///   store call that was already under way when they were called.
///
/// Memory: a cached credential costs about 630 bytes, moka's entry and the
/// credential together (`cargo bench --bench memory`; a plan's entitlements
/// are shared), so the default `max_capacity` of 100 000 is about 63 MB at
/// most; the negative cache's 10 000 entries, about 5 MB.
///
/// Cloning is cheap: clones share the cache. See the
/// [module docs](crate::cache) for an example.
pub struct CachedStore<S> {
    shared: Arc<Shared<S>>,
}

struct Shared<S> {
    store: S,
    /// Tells this cache's entries apart in the per-thread front tables.
    id: u64,
    positive: Cache<TokenHash, Entry, DigestHasher>,
    negative: Cache<TokenHash, NegativeEntry>,
    /// Which tokens the store said "not found" for before: only their
    /// answers are cached (see `doorkeeper.rs`).
    unknown: Doorkeeper,
    store_timeout: Option<Duration>,
    time_to_live: Duration,
    negative_time_to_live: Duration,
    /// Bumped before every invalidation of found credentials; a store call
    /// that straddles a bump drops what it cached, so it cannot resurrect a
    /// revoked credential.
    found_epoch: Epoch,
    /// The same for "not found" answers, so that a store call cannot
    /// re-cache "not found" for a key created meanwhile.
    not_found_epoch: Epoch,
    counters: Counters,
    /// Whether `metrics` counts this cache's entries.
    #[cfg(feature = "metrics")]
    registered: std::sync::Once,
}

#[derive(Default)]
struct Counters {
    hits: Striped,
    negative_hits: Striped,
    misses: AtomicU64,
    coalesced: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// An answer from this thread's front or from moka.
    #[inline]
    fn hit(&self, front: bool, found: bool) {
        if found {
            self.hits.bump();
        } else {
            self.negative_hits.bump();
        }
        #[cfg(feature = "metrics")]
        crate::metrics::hit(front, found);
        #[cfg(not(feature = "metrics"))]
        let _ = front;
    }
}

/// Counters of a [`CachedStore`], read with [`CachedStore::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Lookups answered with a cached credential.
    pub hits: u64,
    /// Lookups answered "not found" by the negative cache.
    pub negative_hits: u64,
    /// Lookups that called the store: one per store call.
    pub misses: u64,
    /// Lookups that waited for another lookup's store call instead of making one.
    pub coalesced: u64,
    /// Store calls that failed or timed out.
    pub errors: u64,
}

/// A cached credential, the instant its entry expires, and the deadline of
/// the per-thread front's copies, taken just before.
#[derive(Clone)]
struct Entry {
    credential: Arc<Credential>,
    expires: Instant,
    deadline: front::Deadline,
}

/// A cached "not found": when it expires, and the deadline of the front's
/// copies, taken just before.
#[derive(Clone, Copy)]
struct NegativeEntry {
    expires: Instant,
    deadline: front::Deadline,
}

/// What a single-flight store call produced when it did not produce a credential.
enum LoadFailure {
    NotFound,
    Store(StoreError),
}

impl<S: CredentialStore> CachedStore<S> {
    /// A cache with the default settings: `max_capacity` 100 000,
    /// `time_to_live` 60 s, negative cache 10 000 entries for 5 s, and a 5 s
    /// store timeout.
    pub fn new(store: S) -> Self {
        Self::builder(store).build()
    }

    /// Starts configuring a cache in front of `store`.
    pub fn builder(store: S) -> CachedStoreBuilder<S> {
        CachedStoreBuilder {
            store,
            max_capacity: DEFAULT_MAX_CAPACITY,
            time_to_live: DEFAULT_TIME_TO_LIVE,
            negative_max_capacity: DEFAULT_NEGATIVE_MAX_CAPACITY,
            negative_time_to_live: DEFAULT_NEGATIVE_TIME_TO_LIVE,
            store_timeout: Some(DEFAULT_STORE_TIMEOUT),
        }
    }

    /// Resolves `token` through the cache, calling the store on a miss.
    ///
    /// `Ok(None)` means unknown, revoked or expired.
    ///
    /// # Errors
    ///
    /// The store's error, or [`StoreError::timeout`] when it did not answer in
    /// time. Errors are not cached.
    pub async fn resolve(
        &self,
        token: &PresentedToken,
    ) -> Result<Option<Arc<Credential>>, StoreError> {
        let shared = &*self.shared;
        let hash = token.hash();
        if let Some(entry) = live(shared.positive.get(hash).await) {
            shared.counters.hit(false, true);
            return Ok(Some(entry.credential));
        }
        if live(shared.negative.get(hash).await).is_some() {
            shared.counters.hit(false, false);
            return Ok(None);
        }
        shared.load(token).await.map(Cached::found)
    }

    /// The cache as the request path sees it: without the store's type.
    pub(crate) fn resolver(&self) -> Arc<dyn Resolver>
    where
        S: 'static,
    {
        // A cache behind a gate has its entries counted in the metrics.
        #[cfg(feature = "metrics")]
        self.shared.registered.call_once(|| {
            let shared: Arc<dyn crate::metrics::Entries> = self.shared.clone();
            crate::metrics::register(Arc::downgrade(&shared));
        });
        self.shared.clone()
    }

    /// What the request path answers without waiting. The tests know
    /// tokens by their hashes, so the front key is taken of that: one key
    /// per token all the same.
    #[cfg(test)]
    fn cached(&self, hash: &TokenHash) -> Option<Option<Arc<Credential>>>
    where
        S: 'static,
    {
        let key = front::Key::of(hash.as_bytes());
        let answer = match self.shared.on_this_thread(&key) {
            Ok(answer) => Some(answer),
            Err(epochs) => self.shared.cached_now(hash, &key, epochs),
        };
        answer.map(Cached::found)
    }

    // Every invalidation bumps the epochs it concerns twice, as the guards
    // of `Epoch::invalidating` do: before it touches moka, and after moka
    // no longer returns the entry (see `epoch.rs`, and its loom model).

    /// Drops whatever is cached for `hash`, found or not found.
    pub async fn invalidate(&self, hash: &TokenHash) {
        let shared = &*self.shared;
        let _found = shared.found_epoch.invalidating();
        let _not_found = shared.not_found_epoch.invalidating();
        shared.positive.invalidate(hash).await;
        shared.negative.invalidate(hash).await;
    }

    /// Drops a cached "not found" for `hash`, and nothing else: a key with
    /// this hash was just created somewhere, and a found entry is already
    /// correct.
    #[cfg(feature = "postgres")]
    pub(crate) async fn invalidate_not_found(&self, hash: &TokenHash) {
        let shared = &*self.shared;
        let _not_found = shared.not_found_epoch.invalidating();
        shared.negative.invalidate(hash).await;
    }

    /// Drops every cached token of the credential `id`.
    pub fn invalidate_credential(&self, id: &str) {
        let id: Box<str> = id.into();
        self.invalidate_if(move |credential| credential.id() == &*id);
    }

    /// Drops every cached token of the account `id` (after a plan change, for
    /// example).
    pub fn invalidate_account(&self, id: &str) {
        let id: Box<str> = id.into();
        self.invalidate_if(move |credential| credential.account_id() == &*id);
    }

    /// Drops everything.
    pub fn invalidate_all(&self) {
        let shared = &*self.shared;
        let _found = shared.found_epoch.invalidating();
        let _not_found = shared.not_found_epoch.invalidating();
        shared.positive.invalidate_all();
        shared.negative.invalidate_all();
    }

    fn invalidate_if(&self, predicate: impl Fn(&Credential) -> bool + Send + Sync + 'static) {
        let shared = &*self.shared;
        let _found = shared.found_epoch.invalidating();
        // moka guarantees that no read returns an entry the predicate matches,
        // from now on. It can only refuse if closures were not enabled at
        // build time, which `build` always does; dropping everything is the
        // safe answer all the same.
        if shared
            .positive
            .invalidate_entries_if(move |_, entry| predicate(&entry.credential))
            .is_err()
        {
            shared.positive.invalidate_all();
        }
    }

    /// The hit, miss, negative-hit, coalesced and error counters.
    pub fn stats(&self) -> CacheStats {
        let c = &self.shared.counters;
        CacheStats {
            hits: c.hits.sum(),
            negative_hits: c.negative_hits.sum(),
            misses: c.misses.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
        }
    }

    /// How many credentials are cached (approximate until
    /// [`run_pending_tasks`](Self::run_pending_tasks) has run).
    pub fn entry_count(&self) -> u64 {
        self.shared.positive.entry_count()
    }

    /// Runs moka's pending maintenance (evictions, counts) now. Tests call it
    /// before asserting [`entry_count`](Self::entry_count).
    pub async fn run_pending_tasks(&self) {
        self.shared.positive.run_pending_tasks().await;
        self.shared.negative.run_pending_tasks().await;
    }

    /// The store behind the cache.
    pub fn store(&self) -> &S {
        &self.shared.store
    }
}

impl<S: CredentialStore> Shared<S> {
    /// How long `credential` may stay cached: `time_to_live`, cut short by
    /// the store's `max_cache_age` and by the credential's own expiry.
    fn lifetime(&self, credential: &Credential) -> Duration {
        let mut left = credential
            .max_cache_age()
            .map_or(self.time_to_live, |age| age.min(self.time_to_live));
        if let Some(at) = credential.expires_at() {
            left = left.min(
                at.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO),
            );
        }
        left
    }

    fn epochs(&self) -> Epochs {
        Epochs {
            found: self.found_epoch.read(),
            not_found: self.not_found_epoch.read(),
        }
    }

    /// The miss path: one store call per hash however many requests wait
    /// for it (moka's `try_get_with`), its answer cached unless an
    /// invalidation ran meanwhile.
    async fn load(&self, token: &PresentedToken) -> Result<Cached, StoreError> {
        let hash = token.hash();
        let started = Instant::now();
        let epochs = self.epochs();
        let called = AtomicBool::new(false);
        let mut result = self
            .positive
            .try_get_with_by_ref(hash, self.fetch_entry(token, &called))
            .await;
        // moka drops entries `time_to_live` after they were made. One whose
        // own lifetime was shorter may still be there, expired before this
        // lookup began: drop it and ask the store. (One that expires while
        // this lookup waits for it is served to this lookup once, as an
        // answer no older than the wait.)
        let stale = result.as_ref().ok().filter(|entry| entry.expires < started);
        if let Some(stale) = stale.map(|entry| Arc::clone(&entry.credential)) {
            self.forget(hash, &stale).await;
            result = self
                .positive
                .try_get_with_by_ref(hash, self.fetch_entry(token, &called))
                .await;
        }
        if !called.load(Ordering::Relaxed) {
            Counters::bump(&self.counters.coalesced);
        } else {
            // If an invalidation ran while the store was being read, what the
            // store said may predate it: serve it to this request, which
            // began before the invalidation, but do not keep it.
            // The epoch is bumped again afterwards, for a front copy another
            // thread may have made of the answer meanwhile.
            let now = self.epochs();
            match &result {
                Ok(entry) if now.found != epochs.found => {
                    self.forget(hash, &entry.credential).await;
                    self.found_epoch.bump();
                }
                Err(failure)
                    if matches!(**failure, LoadFailure::NotFound)
                        && now.not_found != epochs.not_found =>
                {
                    self.negative.invalidate(hash).await;
                    self.not_found_epoch.bump();
                }
                _ => {}
            }
        }
        match result {
            Ok(entry) => Ok(Cached::Found(entry.credential)),
            Err(failure) => match &*failure {
                LoadFailure::NotFound => Ok(Cached::NotFound),
                LoadFailure::Store(error) => Err(error.clone()),
            },
        }
    }

    /// Drops `hash`'s entry if it still holds `credential`: one another
    /// lookup put there meanwhile is newer, and stays.
    async fn forget(&self, hash: &TokenHash, credential: &Arc<Credential>) {
        self.positive
            .entry_by_ref(hash)
            .and_compute_with(|current| {
                let same = current.is_some_and(|e| Arc::ptr_eq(&e.value().credential, credential));
                std::future::ready(if same { Op::Remove } else { Op::Nop })
            })
            .await;
    }

    /// A store call for `load`'s single flight, and what it answered as
    /// moka's entry; "not found" goes to the negative cache.
    async fn fetch_entry(
        &self,
        token: &PresentedToken,
        called: &AtomicBool,
    ) -> Result<Entry, LoadFailure> {
        let hash = token.hash();
        called.store(true, Ordering::Relaxed);
        Counters::bump(&self.counters.misses);
        match self.fetch(token).await {
            Ok(Some(credential)) if !credential.is_expired(SystemTime::now()) => {
                let lifetime = self.lifetime(&credential);
                // The deadline first: it must fall before `expires`.
                let deadline = front::Deadline::after(lifetime);
                Ok(Entry {
                    expires: Instant::now() + lifetime,
                    deadline,
                    credential: Arc::new(credential),
                })
            }
            Ok(_) => {
                // Fill the negative cache before the waiters wake, so
                // none of them, nor the next request, calls the store;
                // for as long as the store allows. But only for a
                // token it said "not found" for before: a flood of
                // made-up tokens would fill the cache with answers
                // nobody reads (see `doorkeeper.rs`).
                let lifetime = token
                    .not_found_max_age()
                    .map_or(self.negative_time_to_live, |max| {
                        max.min(self.negative_time_to_live)
                    });
                if !lifetime.is_zero() && self.unknown.seen_before(hash) {
                    // The deadline first: it must fall before `expires`.
                    let deadline = front::Deadline::after(lifetime);
                    let expires = Instant::now() + lifetime;
                    let entry = NegativeEntry { expires, deadline };
                    self.negative.insert(*hash, entry).await;
                }
                Err(LoadFailure::NotFound)
            }
            Err(error) => {
                Counters::bump(&self.counters.errors);
                Err(LoadFailure::Store(error))
            }
        }
    }

    async fn fetch(&self, token: &PresentedToken) -> Result<Option<Credential>, StoreError> {
        #[cfg(any(feature = "tracing", feature = "metrics"))]
        let started = Instant::now();
        let result = match self.store_timeout {
            Some(limit) => tokio::time::timeout(limit, self.store.resolve(token))
                .await
                .unwrap_or_else(|_| Err(StoreError::timeout())),
            None => self.store.resolve(token).await,
        };
        #[cfg(any(feature = "tracing", feature = "metrics"))]
        let (outcome, latency) = (
            match &result {
                Ok(Some(_)) => "found",
                Ok(None) => "not_found",
                Err(e) if e.is_timeout() => "timeout",
                Err(_) => "error",
            },
            started.elapsed(),
        );
        #[cfg(feature = "metrics")]
        crate::metrics::store_call(latency, outcome, result.is_err());
        #[cfg(feature = "tracing")]
        {
            let hash = token.hash();
            let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            match &result {
                Err(error) => {
                    tracing::warn!(target: "scopegate::store", ?hash, outcome, latency_us, %error, "store call failed")
                }
                Ok(_) => {
                    tracing::debug!(target: "scopegate::store", ?hash, outcome, latency_us, "store call")
                }
            }
        }
        result
    }
}

/// The request path's way into the cache, in the order it asks: this
/// thread's copy, then moka without waiting, then the store. Object-safe, so
/// that a gate holds any `CachedStore<S>` without being generic over `S`.
pub(crate) trait Resolver: Send + Sync {
    /// This thread's copy of the answer for the token whose front key is
    /// `key`, if it is current (see `front`); else the epochs to hand to
    /// [`cached_now`](Resolver::cached_now).
    fn on_this_thread(&self, key: &Key) -> Result<Cached, Epochs>;

    /// moka's answer for `hash`, if it can give one without waiting, copied
    /// into this thread's front under `key`; `None`: ask the store
    /// ([`load`](Resolver::load)).
    fn cached_now(&self, hash: &TokenHash, key: &Key, epochs: Epochs) -> Option<Cached>;

    /// The miss path, boxed: the only allocation a lookup makes, and only
    /// when nothing cached answers.
    fn load(self: Arc<Self>, token: PresentedToken) -> Lookup;
}

/// A store lookup under way.
pub(crate) type Lookup = Pin<Box<dyn Future<Output = Result<Cached, StoreError>> + Send>>;

#[cfg(feature = "metrics")]
impl<S: CredentialStore + 'static> crate::metrics::Entries for Shared<S> {
    fn entries(&self) -> (u64, u64) {
        (self.positive.entry_count(), self.negative.entry_count())
    }
}

impl<S: CredentialStore + 'static> Resolver for Shared<S> {
    #[inline]
    fn on_this_thread(&self, key: &Key) -> Result<Cached, Epochs> {
        // Read before the moka lookups: an invalidation that races them
        // leaves the copy made after them with an outdated epoch, so it is
        // never served.
        let epochs = self.epochs();
        let answer = front::get(self.id, key, epochs).ok_or(epochs)?;
        self.counters.hit(true, matches!(answer, Cached::Found(_)));
        Ok(answer)
    }

    // moka's `get` completes at once unless it has to wait for its own
    // housekeeping, so polling it once avoids boxing a future on a hit.
    fn cached_now(&self, hash: &TokenHash, key: &Key, epochs: Epochs) -> Option<Cached> {
        match live(poll_once(self.positive.get(hash))?) {
            Some(entry) => {
                let answer = Cached::Found(entry.credential);
                front::put(self.id, key, epochs, entry.deadline, &answer);
                self.counters.hit(false, true);
                Some(answer)
            }
            None => {
                let entry = live(poll_once(self.negative.get(hash))?)?;
                front::put(self.id, key, epochs, entry.deadline, &Cached::NotFound);
                self.counters.hit(false, false);
                Some(Cached::NotFound)
            }
        }
    }

    fn load(self: Arc<Self>, token: PresentedToken) -> Lookup {
        Box::pin(async move { Shared::load(&self, &token).await })
    }
}

/// Polls a future once with a no-op waker.
fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

impl<S> Clone for CachedStore<S> {
    fn clone(&self) -> Self {
        CachedStore {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for CachedStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedStore")
            .field("store", &self.shared.store)
            .field("entry_count", &self.shared.positive.entry_count())
            .field("store_timeout", &self.shared.store_timeout)
            .finish_non_exhaustive()
    }
}

/// Configures a [`CachedStore`]; start with [`CachedStore::builder`].
#[derive(Debug)]
#[must_use]
pub struct CachedStoreBuilder<S> {
    store: S,
    max_capacity: u64,
    time_to_live: Duration,
    negative_max_capacity: u64,
    negative_time_to_live: Duration,
    store_timeout: Option<Duration>,
}

impl<S: CredentialStore> CachedStoreBuilder<S> {
    /// The most credentials to cache (default 100 000).
    pub fn max_capacity(mut self, max_capacity: u64) -> Self {
        self.max_capacity = max_capacity;
        self
    }

    /// How long a found credential stays cached (default 60 s); an entry also
    /// never outlives the credential's own expiry. This is the revocation
    /// bound when nothing calls `invalidate*`. Longer than a year counts as a
    /// year.
    pub fn time_to_live(mut self, time_to_live: Duration) -> Self {
        self.time_to_live = time_to_live.min(MAX_TIME_TO_LIVE);
        self
    }

    /// The most "not found" answers to cache (default 10 000).
    pub fn negative_max_capacity(mut self, max_capacity: u64) -> Self {
        self.negative_max_capacity = max_capacity;
        self
    }

    /// How long a "not found" answer stays cached (default 5 s): how long a
    /// key created elsewhere can be refused after one failed attempt, unless
    /// [`CachedStore::invalidate`] is called for its hash. Longer than a year
    /// counts as a year.
    pub fn negative_time_to_live(mut self, time_to_live: Duration) -> Self {
        self.negative_time_to_live = time_to_live.min(MAX_TIME_TO_LIVE);
        self
    }

    /// How long to wait for the store before answering 503 (default 5 s);
    /// `None` waits forever.
    ///
    /// # Panics
    ///
    /// With a timeout set, a store call made outside a Tokio runtime with
    /// its time driver enabled panics, as `tokio::time::timeout` does.
    /// `#[tokio::main]`, `axum::serve` and tonic's server all provide one.
    pub fn store_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// Builds the cache.
    pub fn build(self) -> CachedStore<S> {
        // Calibrates the front's clock now, not on the first request.
        front::clock();
        let positive = Cache::builder()
            .max_capacity(self.max_capacity)
            .time_to_live(self.time_to_live)
            .support_invalidation_closures()
            .build_with_hasher(DigestHasher::new());
        let negative = Cache::builder()
            .max_capacity(self.negative_max_capacity)
            .time_to_live(self.negative_time_to_live)
            .build();
        CachedStore {
            shared: Arc::new(Shared {
                store: self.store,
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                time_to_live: self.time_to_live,
                negative_time_to_live: self.negative_time_to_live,
                positive,
                negative,
                unknown: Doorkeeper::new(self.negative_max_capacity),
                store_timeout: self.store_timeout,
                found_epoch: Epoch::new(),
                not_found_epoch: Epoch::new(),
                counters: Counters::default(),
                #[cfg(feature = "metrics")]
                registered: std::sync::Once::new(),
            }),
        }
    }
}

/// The positive cache's hasher: a seeded multiply-rotate fold of the key.
///
/// Its keys are SHA-256 digests of tokens that resolved to a credential:
/// already uniform, and not chosen by whoever sends requests, so SipHash's
/// flood resistance buys nothing here and costs ~20 ns a lookup. The random
/// seed keeps bucket and sketch positions unpredictable all the same. The
/// negative cache, whose keys attackers do choose, keeps SipHash.
#[derive(Clone)]
struct DigestHasher {
    seed: u64,
}

impl DigestHasher {
    fn new() -> Self {
        use std::hash::BuildHasher;
        DigestHasher {
            seed: std::collections::hash_map::RandomState::new().hash_one(0x5C09_E6A7_u64),
        }
    }
}

impl std::hash::BuildHasher for DigestHasher {
    type Hasher = DigestFold;

    fn build_hasher(&self) -> DigestFold {
        DigestFold(self.seed)
    }
}

struct DigestFold(u64);

impl std::hash::Hasher for DigestFold {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(29);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// An entry's own expiry, checked on every read: moka expires entries by
/// the cache's `time_to_live` alone, which costs less per read and per
/// entry than an expiry of its own per entry, and an entry whose lifetime
/// was shorter (the credential expires sooner, or the store capped its age)
/// is refused here from the instant computed when it was loaded (see
/// `Shared::lifetime`).
trait Expires {
    fn expires(&self) -> Instant;

    fn is_live(&self) -> bool {
        Instant::now() < self.expires()
    }
}

impl Expires for Entry {
    fn expires(&self) -> Instant {
        self.expires
    }
}

impl Expires for NegativeEntry {
    fn expires(&self) -> Instant {
        self.expires
    }
}

/// `entry`, if it has not expired.
fn live<T: Expires>(entry: Option<T>) -> Option<T> {
    entry.filter(Expires::is_live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::CredentialKind;
    use crate::store::MemoryStore;
    use async_trait::async_trait;
    use futures_util::future::join_all as futures_join_all;
    use std::sync::atomic::AtomicUsize;

    /// A store that counts calls, can be slowed down, and can fail.
    #[derive(Default)]
    struct Probe {
        inner: MemoryStore,
        calls: AtomicUsize,
        delay: Option<Duration>,
        fail: AtomicBool,
    }

    #[async_trait]
    impl CredentialStore for Probe {
        async fn resolve(&self, token: &PresentedToken) -> Result<Option<Credential>, StoreError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            // Read first, then take time answering: the answer can be stale
            // by the time it arrives, as with a real database.
            let answer = self.inner.resolve(token).await;
            if let Some(delay) = self.delay {
                tokio::time::sleep(delay).await;
            }
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::new("connection refused"));
            }
            answer
        }
    }

    /// The probe's store reads only the hash.
    fn presented(hash: &TokenHash) -> PresentedToken {
        PresentedToken::with_hash("(only the hash is read)", *hash)
    }

    fn key(id: &str, account: &str) -> Credential {
        Credential::new(id, account, CredentialKind::ApiKey).with_entitlements(["api-access"])
    }

    fn probe(delay: Option<Duration>) -> Probe {
        Probe {
            delay,
            ..Probe::default()
        }
    }

    fn calls(cache: &CachedStore<Arc<Probe>>) -> usize {
        cache.store().calls.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn hundred_concurrent_cold_lookups_make_one_store_call() {
        let probe = Arc::new(probe(Some(Duration::from_millis(50))));
        let hash = probe.inner.insert_token("cold", key("key_1", "ws"));
        let cache = CachedStore::new(Arc::clone(&probe));
        let token = presented(&hash);
        let lookups = (0..100).map(|_| cache.resolve(&token));
        let results = futures_join_all(lookups).await;
        assert!(results
            .iter()
            .all(|r| r.as_ref().unwrap().as_ref().unwrap().id() == "key_1"));
        assert_eq!(calls(&cache), 1);
        let stats = cache.stats();
        assert_eq!((stats.misses, stats.coalesced, stats.hits), (1, 99, 0));
        cache.resolve(&presented(&hash)).await.unwrap();
        assert_eq!(cache.stats().hits, 1);
        assert_eq!(calls(&cache), 1);
    }

    #[tokio::test]
    async fn a_flood_of_one_unknown_token_makes_two_store_calls() {
        let cache = CachedStore::new(Arc::new(probe(Some(Duration::from_millis(20)))));
        let hash = TokenHash::of("nope");
        let token = presented(&hash);
        // One store call for 100 at once; its "not found", the first for
        // this token, is not cached.
        let results = futures_join_all((0..100).map(|_| cache.resolve(&token))).await;
        assert!(results.iter().all(|r| matches!(r, Ok(None))));
        assert_eq!(cache.cached(&hash), None);
        // The second is, and answers every later lookup.
        for _ in 0..100 {
            assert!(cache.resolve(&presented(&hash)).await.unwrap().is_none());
        }
        assert_eq!(calls(&cache), 2);
        let stats = cache.stats();
        assert_eq!(
            (stats.misses, stats.coalesced, stats.negative_hits),
            (2, 99, 99)
        );
        assert_eq!(cache.cached(&hash), Some(None));
    }

    #[tokio::test]
    async fn a_flood_of_distinct_unknown_tokens_fills_no_cache() {
        let cache = CachedStore::new(Arc::new(Probe::default()));
        for i in 0..1000 {
            let hash = TokenHash::of(format!("made-up {i}"));
            assert!(cache.resolve(&presented(&hash)).await.unwrap().is_none());
            assert_eq!(cache.cached(&hash), None);
        }
        cache.run_pending_tasks().await;
        assert_eq!(cache.shared.negative.entry_count(), 0);
        assert_eq!(calls(&cache), 1000);
    }

    #[tokio::test]
    async fn negative_entries_expire() {
        let probe = Arc::new(Probe::default());
        let cache = CachedStore::builder(Arc::clone(&probe))
            .negative_time_to_live(Duration::from_millis(100))
            .build();
        let hash = TokenHash::of("later");
        // Twice: the second "not found" is cached.
        for _ in 0..2 {
            assert!(cache.resolve(&presented(&hash)).await.unwrap().is_none());
        }
        probe.inner.insert(hash, key("key_new", "ws"));
        assert!(
            cache.resolve(&presented(&hash)).await.unwrap().is_none(),
            "still negatively cached"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            cache
                .resolve(&presented(&hash))
                .await
                .unwrap()
                .unwrap()
                .id(),
            "key_new"
        );
        assert_eq!(calls(&cache), 3);
    }

    /// Answers "not found", allowing it to be cached for `max` at most.
    struct Hinting {
        calls: AtomicUsize,
        max: Duration,
    }

    #[async_trait]
    impl CredentialStore for Hinting {
        async fn resolve(&self, token: &PresentedToken) -> Result<Option<Credential>, StoreError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            token.cache_not_found_for(self.max);
            Ok(None)
        }
    }

    #[tokio::test]
    async fn a_store_can_cap_how_long_not_found_is_cached() {
        let hash = TokenHash::of("soon");
        let cache = |max| {
            CachedStore::builder(Hinting {
                calls: AtomicUsize::new(0),
                max,
            })
            .negative_time_to_live(Duration::from_millis(300))
            .build()
        };
        let calls = |cache: &CachedStore<Hinting>| cache.store().calls.load(Ordering::SeqCst);
        // Zero: not cached at all.
        let never = cache(Duration::ZERO);
        for _ in 0..3 {
            assert!(never.resolve(&presented(&hash)).await.unwrap().is_none());
        }
        assert_eq!(calls(&never), 3);
        assert_eq!(never.cached(&hash), None);
        // Shorter than the negative time-to-live: that long (from the
        // second "not found", the first that is cached).
        let short = cache(Duration::from_millis(60));
        for _ in 0..2 {
            short.resolve(&presented(&hash)).await.unwrap();
        }
        assert_eq!(short.cached(&hash), Some(None));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(short.cached(&hash), None, "expired with the store's cap");
        // Longer: the negative time-to-live still bounds it.
        let long = cache(Duration::from_secs(60));
        for _ in 0..2 {
            long.resolve(&presented(&hash)).await.unwrap();
        }
        assert_eq!(long.cached(&hash), Some(None));
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(
            long.cached(&hash),
            None,
            "expired with negative_time_to_live"
        );
    }

    #[tokio::test]
    async fn invalidate_hash_clears_a_negative_entry_too() {
        let probe = Arc::new(Probe::default());
        let cache = CachedStore::new(Arc::clone(&probe));
        let hash = TokenHash::of("created-after-a-guess");
        assert!(cache.resolve(&presented(&hash)).await.unwrap().is_none());
        probe.inner.insert(hash, key("key_new", "ws"));
        cache.invalidate(&hash).await;
        assert_eq!(
            cache
                .resolve(&presented(&hash))
                .await
                .unwrap()
                .unwrap()
                .id(),
            "key_new"
        );
    }

    #[tokio::test]
    async fn entries_expire_with_the_ttl_and_never_outlive_the_credential() {
        let probe = Arc::new(Probe::default());
        let short = probe.inner.insert_token(
            "short",
            key("key_short", "ws").with_expires_at(SystemTime::now() + Duration::from_millis(150)),
        );
        let long = probe.inner.insert_token("long", key("key_long", "ws"));
        let expired = probe.inner.insert_token(
            "expired",
            key("key_old", "ws").with_expires_at(SystemTime::now()),
        );
        let cache = CachedStore::builder(Arc::clone(&probe))
            .time_to_live(Duration::from_millis(400))
            .build();
        assert!(
            cache.resolve(&presented(&expired)).await.unwrap().is_none(),
            "expired is not found"
        );
        assert!(cache.resolve(&presented(&short)).await.unwrap().is_some());
        assert!(cache.resolve(&presented(&long)).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The short credential expired in the cache even though the TTL has not.
        assert!(cache.cached(&short).is_none());
        assert!(cache.cached(&long).is_some());
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(cache.cached(&long).is_none(), "ttl elapsed");
    }

    #[tokio::test]
    async fn a_store_can_cap_how_long_its_answer_is_cached() {
        let probe = Arc::new(Probe::default());
        let capped = probe.inner.insert_token(
            "capped",
            key("key_capped", "ws").with_max_cache_age(Duration::from_millis(100)),
        );
        let cache = CachedStore::new(Arc::clone(&probe));
        assert!(cache.resolve(&presented(&capped)).await.unwrap().is_some());
        assert!(cache.cached(&capped).is_some());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(cache.cached(&capped).is_none(), "max_cache_age elapsed");
        assert!(cache.resolve(&presented(&capped)).await.unwrap().is_some());
        assert_eq!(calls(&cache), 2);
    }

    #[tokio::test]
    async fn the_per_thread_front_never_outlives_an_invalidation_or_its_entry() {
        let probe = Arc::new(Probe::default());
        let hash = probe.inner.insert_token("hot", key("key_hot", "ws"));
        let cache = CachedStore::builder(Arc::clone(&probe))
            .time_to_live(Duration::from_millis(200))
            .build();
        let hot = move |cache: &CachedStore<Arc<Probe>>| cache.cached(&hash).flatten();
        let warm = || async {
            cache.resolve(&presented(&hash)).await.unwrap().unwrap();
            for _ in 0..3 {
                assert_eq!(hot(&cache).unwrap().id(), "key_hot", "moka, then the front");
            }
        };
        warm().await;
        // Another thread's copy, then an invalidation from this one.
        let (to_other, from_here) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn({
            let cache = cache.clone();
            move || {
                for _ in 0..3 {
                    assert!(hot(&cache).is_some());
                }
                from_here.recv().unwrap();
                hot(&cache).is_some()
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        cache.invalidate_credential("key_hot");
        to_other.send(()).unwrap();
        assert!(!other.join().unwrap(), "the other thread's copy is dropped");
        assert!(hot(&cache).is_none(), "and this thread's");

        for invalidate in [0, 1, 2] {
            warm().await;
            match invalidate {
                0 => cache.invalidate(&hash).await,
                1 => cache.invalidate_account("ws"),
                _ => cache.invalidate_all(),
            }
            assert!(hot(&cache).is_none(), "invalidation {invalidate}");
        }
        warm().await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(hot(&cache).is_none(), "expired with the moka entry");

        // Two caches with the same token: each serves its own credential.
        let other_store = Arc::new(Probe::default());
        other_store.inner.insert(hash, key("key_other", "ws"));
        let other_cache = CachedStore::new(other_store);
        other_cache.resolve(&presented(&hash)).await.unwrap();
        warm().await;
        for _ in 0..3 {
            assert_eq!(hot(&other_cache).unwrap().id(), "key_other");
            assert_eq!(hot(&cache).unwrap().id(), "key_hot");
        }
    }

    #[tokio::test]
    async fn the_front_keeps_not_found_no_longer_than_moka_or_an_invalidation() {
        let probe = Arc::new(Probe::default());
        let cache = CachedStore::builder(Arc::clone(&probe))
            .negative_time_to_live(Duration::from_millis(150))
            .build();
        let hash = TokenHash::of("guessed");
        let unknown = || async {
            // The second "not found" is the one cached.
            for _ in 0..2 {
                assert!(cache.resolve(&presented(&hash)).await.unwrap().is_none());
            }
            for _ in 0..3 {
                assert_eq!(cache.cached(&hash), Some(None), "moka, then the front");
            }
        };
        unknown().await;
        assert_eq!(cache.stats().negative_hits, 3);
        // The key is created, and its hash invalidated: the next lookup asks.
        probe.inner.insert(hash, key("key_new", "ws"));
        cache.invalidate(&hash).await;
        assert_eq!(cache.cached(&hash), None);
        assert!(cache.resolve(&presented(&hash)).await.unwrap().is_some());

        let other = TokenHash::of("another guess");
        for _ in 0..2 {
            assert!(cache.resolve(&presented(&other)).await.unwrap().is_none());
        }
        assert_eq!(cache.cached(&other), Some(None));
        assert_eq!(cache.cached(&other), Some(None));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(cache.cached(&other), None, "expired with the moka entry");
        assert_eq!(calls(&cache), 5);
    }

    #[tokio::test]
    async fn endless_times_to_live_count_as_a_year() {
        let probe = Arc::new(Probe::default());
        let found = probe.inner.insert_token("found", key("key_found", "ws"));
        let cache = CachedStore::builder(Arc::clone(&probe))
            .time_to_live(Duration::MAX)
            .negative_time_to_live(Duration::MAX)
            .build();
        let unknown = TokenHash::of("unknown");
        // A first "not found" is not cached; the second is, as long as any.
        assert!(cache.resolve(&presented(&unknown)).await.unwrap().is_none());
        for _ in 0..2 {
            assert!(cache.resolve(&presented(&found)).await.unwrap().is_some());
            assert!(cache.resolve(&presented(&unknown)).await.unwrap().is_none());
            assert!(cache.cached(&found).flatten().is_some());
            assert_eq!(cache.cached(&unknown), Some(None));
        }
        assert_eq!(calls(&cache), 3);
    }

    #[tokio::test]
    async fn tokens_that_share_a_front_set_get_their_own_answers() {
        // More tokens whose front keys fall into one set of this thread's
        // table than the set has ways.
        let set = |hash: &TokenHash| front::set_of(&front::Key::of(hash.as_bytes()));
        let first = TokenHash::of("token 0");
        let sharing: Vec<TokenHash> = (0..)
            .map(|i| TokenHash::of(format!("token {i}")))
            .filter(|hash| set(hash) == set(&first))
            .take(front::WAYS + 3)
            .collect();
        let (found, unknown) = sharing.split_at(front::WAYS + 2);

        let probe = Arc::new(Probe::default());
        for (i, hash) in found.iter().enumerate() {
            probe.inner.insert(*hash, key(&format!("key_{i}"), "ws"));
        }
        let cache = CachedStore::new(Arc::clone(&probe));
        let id = |hash: &TokenHash| cache.cached(hash).flatten().map(|c| c.id().to_owned());
        for hash in sharing.iter().chain(unknown) {
            cache.resolve(&presented(hash)).await.unwrap();
        }
        // Whichever hold the ways are served from the front, the others from
        // moka: never one token's answer for another.
        for _ in 0..3 {
            for (i, hash) in found.iter().enumerate() {
                assert_eq!(id(hash), Some(format!("key_{i}")));
            }
            assert_eq!(cache.cached(&unknown[0]), Some(None));
        }
        assert_eq!(calls(&cache), sharing.len() + unknown.len());
    }

    #[tokio::test]
    async fn each_invalidation_takes_effect_on_the_next_lookup() {
        let probe = Arc::new(Probe::default());
        let a1 = probe.inner.insert_token("a1", key("key_a", "ws_1"));
        let a2 = probe.inner.insert_token("a2", key("key_a", "ws_1"));
        let b = probe.inner.insert_token("b", key("key_b", "ws_1"));
        let c = probe.inner.insert_token("c", key("key_c", "ws_2"));
        let cache = CachedStore::new(Arc::clone(&probe));
        let warm = |cache: CachedStore<Arc<Probe>>| async move {
            for h in [a1, a2, b, c] {
                cache.resolve(&presented(&h)).await.unwrap();
            }
        };
        warm(cache.clone()).await;
        let cached = |h: &TokenHash| cache.cached(h).is_some();

        cache.invalidate(&b).await;
        assert!(!cached(&b) && cached(&a1) && cached(&c));

        warm(cache.clone()).await;
        cache.invalidate_credential("key_a");
        assert!(!cached(&a1) && !cached(&a2) && cached(&b) && cached(&c));

        warm(cache.clone()).await;
        cache.invalidate_account("ws_1");
        assert!(!cached(&a1) && !cached(&a2) && !cached(&b) && cached(&c));

        warm(cache.clone()).await;
        cache.invalidate_all();
        assert!([a1, a2, b, c].iter().all(|h| !cached(h)));
        cache.run_pending_tasks().await;
        assert_eq!(cache.entry_count(), 0);
    }

    #[tokio::test]
    async fn a_revocation_during_a_store_call_is_not_undone_by_it() {
        let probe = Arc::new(probe(Some(Duration::from_millis(100))));
        let hash = probe.inner.insert_token("racy", key("key_r", "ws"));
        let cache = CachedStore::new(Arc::clone(&probe));
        let lookup = tokio::spawn({
            let cache = cache.clone();
            async move { cache.resolve(&presented(&hash)).await }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        // The store was read before the revocation; the lookup still returns it …
        probe.inner.revoke(&hash);
        cache.invalidate_credential("key_r");
        assert!(lookup.await.unwrap().unwrap().is_some());
        // … but it was not cached.
        assert!(cache.resolve(&presented(&hash)).await.unwrap().is_none());
        assert_eq!(calls(&cache), 2);
    }

    #[tokio::test]
    async fn errors_are_shared_by_waiters_but_never_cached() {
        let probe = Arc::new(probe(Some(Duration::from_millis(20))));
        let hash = probe.inner.insert_token("t", key("key_1", "ws"));
        probe.fail.store(true, Ordering::SeqCst);
        let cache = CachedStore::new(Arc::clone(&probe));
        let token = presented(&hash);
        let results = futures_join_all((0..10).map(|_| cache.resolve(&token))).await;
        for r in &results {
            assert_eq!(
                r.as_ref().unwrap_err().to_string(),
                "credential store failed: connection refused"
            );
        }
        assert_eq!((calls(&cache), cache.stats().errors), (1, 1));
        assert!(
            cache.cached(&hash).is_none(),
            "neither positive nor negative"
        );
        probe.fail.store(false, Ordering::SeqCst);
        assert!(cache.resolve(&presented(&hash)).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_hanging_store_times_out() {
        let probe = Arc::new(probe(Some(Duration::from_secs(3600))));
        let cache = CachedStore::builder(Arc::clone(&probe))
            .store_timeout(Some(Duration::from_millis(50)))
            .build();
        let err = cache.resolve(&PresentedToken::new("t")).await.unwrap_err();
        assert!(err.is_timeout());
        assert_eq!(err.to_string(), "credential store timed out");
        assert_eq!(cache.stats().errors, 1);
    }
}
