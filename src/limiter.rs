//! Counting admitted requests against their credential's limits, in the
//! process.
//!
//! Private: the model is public in [`limit`](crate::limit). A [`Limiter`]
//! belongs to one gate. It keeps a state per distinct [`Limit`], and in
//! each state a budget per key or account: one atomic, GCRA's theoretical
//! arrival time for a rate, the month and the units used in it for a
//! quota. The first time a credential (the cached object) is counted, the
//! limiter finds or makes its states and budgets and binds them to it
//! ([`Bound`], kept in the credential's limits); every later request of that
//! credential goes straight to its atomics, with no table, map or lock.
//! Budgets are shared by value: two credentials of one account (or two
//! copies of one key, before and after a reload) find the same budget in
//! the state's map. A budget a cached credential holds is never swept.
//!
//! In cluster mode (feature `redis`), an admitted request also adds its
//! units to its budget's `pending`, and `sync.rs` is what the gate's sync
//! task ([`cluster`](crate::cluster)) reads and writes back; while Redis is
//! unreachable, each check counts this instance's share. A limiter is told
//! apart by an id rather than its address, so one built where a dropped
//! one lived never takes its bindings.
//!
//! GCRA is written here rather than taken from `governor`, which this
//! module first used: a request counted by an outer layer and then refused
//! by an inner one (its scope) must get its units back, and `governor` has
//! no way to give them back; nor can one of its keyed limiters hold keys of
//! different plans' rates. What GCRA needs is one atomic per key: a
//! request of `n` units fits if `max(tat, now) + n·T − now ≤ τ`, where `T`
//! is the time one unit takes to come back and `τ = burst·T`; it then moves
//! `tat` to the left side's sum. Giving back moves `tat` back by `n·T`.

use std::borrow::Cow;
use std::cell::{Cell, OnceCell};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dashmap::DashMap;
use http::HeaderValue;

use crate::credential::{Credential, LimitSet};
use crate::error::Rejection;
use crate::limit::{Cost, Limit, LimitKind};
use crate::render::{ErrorResponse, Render};

#[cfg(feature = "redis")]
mod sync;
#[cfg(feature = "redis")]
pub(crate) use sync::{Flush, Handed, Report, Shared, Totals, Watched};

/// The `RateLimit-Policy` and `RateLimit` values of one response.
pub(crate) type LimitHeaders = (HeaderValue, HeaderValue);

/// A request refused by a limit: the 429, and the headers naming the limit.
pub(crate) type Refused = (ErrorResponse, Option<LimitHeaders>);

/// One gate's limit states.
pub(crate) struct Limiter {
    render: Render,
    /// Whether responses carry `RateLimit-Policy` and `RateLimit`.
    headers: bool,
    /// Read only to bind a credential (once per cached credential), so a
    /// lock is cheap here.
    states: Mutex<Table>,
    /// Rates count nanoseconds from here, on quanta's clock (the TSC where
    /// it is reliable: a few instructions, no system call).
    origin: quanta::Instant,
    /// Unique in the process, unlike an address: a limiter made where a
    /// dropped one was must not take the credentials it bound for its own.
    id: u64,
    /// Cluster mode: what the gate's sync task reads and writes.
    #[cfg(feature = "redis")]
    shared: Option<Arc<Shared>>,
}

/// Limits hash to the digest they carry: hashing it again would be waste.
#[derive(Default)]
struct Digest(u64);

impl Hasher for Digest {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is called (`Limit`'s `Hash`); fold anything else.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Table = HashMap<Limit, Arc<State>, BuildHasherDefault<Digest>>;

/// Past this many states (limits seen), the table starts over: a process
/// whose plans change that often loses budgets rather than memory.
/// (Credentials bound to a forgotten state count on in it until the cache
/// drops them.)
const MAX_STATES: usize = 4096;

/// Refusals are rendered once for each wait up to this many seconds.
const MEMO_SECONDS: usize = 60;

/// The `Retry-After` of a quota refused by an instance's share while Redis
/// is unreachable (or the month's end, if sooner): the quota may have room
/// once Redis answers again.
const FALLBACK_QUOTA_WAIT: u64 = 60;

/// How many checks a thread makes between two sweeps of idle budgets.
const SWEEP_EVERY: u32 = 1 << 16;

/// A quota's budget packs the month (16 bits: past the year 7000) over the
/// units used in it (48 bits); a monthly count above this is counted as
/// this.
const USED_MAX: u64 = (1 << 48) - 1;

/// One subject's budget in one state: its value, and in cluster mode what
/// the sync task needs.
pub(crate) struct Budget {
    /// A rate's theoretical arrival time, or a quota's month and use.
    value: AtomicU64,
    /// Cluster mode: units admitted here and not yet reported (less those
    /// given back, which may make it negative: a refund to report).
    pending: AtomicI64,
    /// Cluster mode: whether the sync task holds this budget.
    #[cfg(feature = "redis")]
    watched: std::sync::atomic::AtomicBool,
    /// Cluster mode: the key's or account's id, which names the budget in
    /// Redis.
    #[cfg(feature = "redis")]
    subject: Box<str>,
}

impl Budget {
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    fn new(subject: &str) -> Self {
        Budget {
            value: AtomicU64::new(0),
            pending: AtomicI64::new(0),
            #[cfg(feature = "redis")]
            watched: std::sync::atomic::AtomicBool::new(false),
            #[cfg(feature = "redis")]
            subject: Box::from(subject),
        }
    }
}

/// One limit's budgets, by key or account.
struct State {
    limit: Limit,
    /// This limit's `RateLimit-Policy` item, as a header value of a
    /// `'static` string ([`interned`]): cloned per response without
    /// touching a reference count that every request would share.
    policy: HeaderValue,
    meter: Meter,
    budgets: DashMap<Box<str>, Arc<Budget>>,
    /// The 429 for a wait of `i + 1` seconds, rendered when first sent.
    refusals: [OnceLock<ErrorResponse>; MEMO_SECONDS],
}

/// How a state's budgets count.
enum Meter {
    /// GCRA; a budget holds the theoretical arrival time, in nanoseconds
    /// from the limiter's origin.
    Rate {
        /// `T`: the nanoseconds one unit takes to come back.
        interval: u64,
        /// `τ`: the burst's worth of nanoseconds.
        tolerance: u64,
    },
    /// A budget holds `month << 48 | used`, the month counted from January
    /// 1970.
    Monthly { count: u64 },
}

/// What a limiter found for one credential's limits, in their order: each
/// limit's state and the credential's budget in it.
struct Bound {
    /// The limiter's [`id`](Limiter::id).
    limiter: u64,
    meters: Box<[(Arc<State>, Arc<Budget>)]>,
}

/// What counting one limit answered.
enum Outcome {
    /// Let through: what is left, and the seconds until all of it is back.
    Within { remaining: u64, reset: u64 },
    /// Refused, for this many seconds.
    Spent(u64),
}

impl Limiter {
    pub(crate) fn new(render: Render, headers: bool) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Limiter {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            render,
            headers,
            states: Mutex::default(),
            origin: quanta::Instant::now(),
            #[cfg(feature = "redis")]
            shared: None,
        }
    }

    /// This limiter's identity, unique in the process (an address could be
    /// a dropped limiter's).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// This limiter in cluster mode: `shared` is what it and the gate's sync
    /// task share.
    #[cfg(feature = "redis")]
    pub(crate) fn with_shared(mut self, shared: Arc<Shared>) -> Self {
        self.origin = shared.origin;
        self.shared = Some(shared);
        self
    }

    /// What the limiter shares with its sync task, in cluster mode.
    #[cfg(feature = "redis")]
    pub(crate) fn shared(&self) -> Option<&Shared> {
        self.shared.as_deref()
    }

    /// 1, or in cluster mode while Redis is unreachable (or its last answer
    /// is stale), the number of instances.
    #[inline]
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    fn share(&self, now: &Now) -> u32 {
        #[cfg(feature = "redis")]
        if let Some(shared) = &self.shared {
            return shared.share(now.nanos);
        }
        1
    }

    /// Counts a request of `credential` costing `cost` against each of its
    /// limits the route counts. Refused by one, the request spends nothing
    /// from the others. `Ok` carries the headers, if the gate sends them.
    pub(crate) fn count(
        &self,
        credential: &Credential,
        cost: &Cost,
    ) -> Result<Option<LimitHeaders>, Refused> {
        let (Some(units), Some(set)) = (NonZeroU32::new(cost.units), credential.limit_set()) else {
            return Ok(None);
        };
        let meters = self.meters(credential, set);
        let now = self.now();
        self.sweep_now_and_then(&now);
        let share = self.share(&now);
        let mut headers = self.headers.then(HeaderWriter::default);
        let counted = counted(set, &meters, cost);
        for (done, (state, budget)) in counted.clone().enumerate() {
            match state.count(budget, units, &now, share) {
                Outcome::Spent(wait) => {
                    for (state, budget) in counted.take(done) {
                        state.give_back(budget, units, &now, share);
                    }
                    return Err(self.refused(state, wait));
                }
                Outcome::Within { remaining, reset } => {
                    if let Some(headers) = &mut headers {
                        headers.add(state, remaining, reset);
                    }
                }
            }
        }
        #[cfg(feature = "redis")]
        if let Some(shared) = &self.shared {
            for (state, budget) in counted {
                shared.admitted(state, budget, units);
            }
        }
        Ok(headers.and_then(HeaderWriter::finish))
    }

    /// Gives back what [`count`](Self::count) counted for a request of
    /// `credential` at `cost`, which an inner layer then refused.
    pub(crate) fn give_back(&self, credential: &Credential, cost: &Cost) {
        let (Some(units), Some(set)) = (NonZeroU32::new(cost.units), credential.limit_set()) else {
            return;
        };
        let meters = self.meters(credential, set);
        let now = self.now();
        let share = self.share(&now);
        for (state, budget) in counted(set, &meters, cost) {
            state.give_back(budget, units, &now, share);
            #[cfg(feature = "redis")]
            if self.shared.is_some() {
                Shared::given_back(budget, units);
            }
        }
    }

    /// The states and budgets of `credential`'s limits: those bound to it,
    /// or found (and bound, unless another limiter was first).
    #[inline]
    fn meters<'a>(
        &self,
        credential: &Credential,
        set: &'a LimitSet,
    ) -> Cow<'a, [(Arc<State>, Arc<Budget>)]> {
        let id = self.id;
        let bound = |set: &'a LimitSet| {
            set.bound
                .get()
                .and_then(|b| b.downcast_ref::<Bound>())
                .filter(|b| b.limiter == id)
                .map(|b| Cow::Borrowed(&*b.meters))
        };
        if let Some(meters) = bound(set) {
            return meters;
        }
        let meters = self.find(credential);
        if set.bound.get().is_none() {
            let _ = set.bound.set(Box::new(Bound {
                limiter: id,
                meters: meters.clone(),
            }));
        }
        bound(set).unwrap_or(Cow::Owned(meters.into_vec()))
    }

    /// Finds or makes the states of `credential`'s limits, and its budgets
    /// in them. Once per cached credential: it may lock and allocate.
    #[cold]
    #[inline(never)]
    fn find(&self, credential: &Credential) -> Box<[(Arc<State>, Arc<Budget>)]> {
        let mut table = self.table();
        let missing = credential
            .limits()
            .iter()
            .filter(|l| !table.contains_key(*l))
            .count();
        if table.len() + missing > MAX_STATES {
            table.clear();
        }
        credential
            .limits()
            .iter()
            .map(|limit| {
                let state = table
                    .entry(limit.clone())
                    .or_insert_with(|| Arc::new(State::new(limit.clone())));
                let subject = credential.subject(limit.per());
                let budget = match state.budgets.get(subject) {
                    Some(budget) => Arc::clone(&budget),
                    None => Arc::clone(
                        &state
                            .budgets
                            .entry(Box::from(subject))
                            .or_insert_with(|| Arc::new(Budget::new(subject))),
                    ),
                };
                // In cluster mode, watched from the start: the task's next
                // round says what the other instances used.
                #[cfg(feature = "redis")]
                if let Some(shared) = &self.shared {
                    shared.watch(state, &budget);
                }
                (Arc::clone(state), budget)
            })
            .collect()
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> Now {
        let elapsed = quanta::Instant::now().saturating_duration_since(self.origin);
        Now {
            // Past 584 years of uptime, the nanoseconds saturate.
            nanos: u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            wall: OnceCell::new(),
        }
    }

    /// Every [`SWEEP_EVERY`] checks on a thread, forgets the budgets no
    /// cached credential holds that are back to full (or in a past month):
    /// they hold no information.
    fn sweep_now_and_then(&self, now: &Now) {
        thread_local! {
            static CHECKS: Cell<u32> = const { Cell::new(0) };
        }
        let due = CHECKS.with(|checks| {
            let n = checks.get().wrapping_add(1);
            checks.set(n);
            n % SWEEP_EVERY == 0
        });
        if due {
            self.sweep(now);
        }
    }

    #[cold]
    #[inline(never)]
    fn sweep(&self, now: &Now) {
        let states: Vec<Arc<State>> = self.table().values().cloned().collect();
        for state in states {
            state
                .budgets
                .retain(|_, budget| Arc::strong_count(budget) > 1 || !state.idle(budget, now));
            state.budgets.shrink_to_fit();
        }
    }

    /// The 429 for `state`'s limit and a wait of `wait` seconds.
    #[cold]
    fn refused(&self, state: &State, wait: u64) -> Refused {
        let render = || {
            let limit = Arc::clone(state.limit.shared_name());
            let rejection = match state.meter {
                Meter::Rate { .. } => Rejection::RateLimited {
                    limit,
                    retry_after: wait,
                },
                Meter::Monthly { .. } => Rejection::QuotaExceeded {
                    limit,
                    retry_after: wait,
                },
            };
            ErrorResponse::new(rejection, &self.render)
        };
        let response = match usize::try_from(wait - 1)
            .ok()
            .and_then(|i| state.refusals.get(i))
        {
            Some(memo) => memo.get_or_init(render).clone(),
            None => render(),
        };
        let headers = self.headers.then(|| {
            let mut left = HeaderWriter::default();
            left.add(state, 0, wait);
            (state.policy.clone(), header(left.left))
        });
        (response, headers)
    }
}

/// The states and budgets a route counts against, with their limits'
/// order.
fn counted<'a>(
    set: &'a LimitSet,
    meters: &'a [(Arc<State>, Arc<Budget>)],
    cost: &'a Cost,
) -> impl Iterator<Item = &'a (Arc<State>, Arc<Budget>)> + Clone {
    set.limits()
        .iter()
        .zip(meters)
        .filter(|(limit, _)| cost.counts(limit))
        .map(|(_, meter)| meter)
}

/// `RateLimit-Policy` and `RateLimit` for what was counted, written as it
/// is counted: bytes and `itoa`, no formatting machinery on the hot path.
#[derive(Default)]
struct HeaderWriter {
    /// The first limit's prerendered policy; a second one joins it into
    /// `policies`.
    policy: Option<HeaderValue>,
    policies: Vec<u8>,
    left: Vec<u8>,
}

impl HeaderWriter {
    fn add(&mut self, state: &State, remaining: u64, reset: u64) {
        match &self.policy {
            None => self.policy = Some(state.policy.clone()),
            Some(first) => {
                if self.policies.is_empty() {
                    self.policies.extend_from_slice(first.as_bytes());
                }
                self.policies.extend_from_slice(b", ");
                self.policies.extend_from_slice(state.policy.as_bytes());
            }
        }
        let (mut r, mut t) = (itoa::Buffer::new(), itoa::Buffer::new());
        let (r, t) = (r.format(remaining).as_bytes(), t.format(reset).as_bytes());
        let name = state.limit.name().as_bytes();
        let comma: &[u8] = if self.left.is_empty() { b"" } else { b", " };
        // Exactly: a one-limit value then becomes its `Bytes` without a copy.
        self.left
            .reserve_exact(comma.len() + name.len() + r.len() + t.len() + 9);
        for part in [comma, b"\"", name, b"\";r=", r, b";t=", t] {
            self.left.extend_from_slice(part);
        }
    }

    fn finish(self) -> Option<LimitHeaders> {
        let policy = if self.policies.is_empty() {
            self.policy?
        } else {
            header(self.policies)
        };
        Some((policy, header(self.left)))
    }
}

/// `item` as a `'static` string, the same for every state of the same
/// policy. Leaked once per distinct policy the process meets (a few dozen
/// bytes each): a process meets few, even as plans change.
fn interned(item: String) -> &'static str {
    static POLICIES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut policies = POLICIES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = policies.get(item.as_str()) {
        return known;
    }
    let leaked: &'static str = Box::leak(item.into_boxed_str());
    policies.insert(leaked);
    leaked
}

/// A header value built from limit names (checked to be `a-z0-9_-.`) and
/// numbers: always valid.
fn header(value: impl Into<Bytes>) -> HeaderValue {
    HeaderValue::from_maybe_shared(value.into()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whole seconds, rounded up.
fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// The time of a check: the limiter's clock for rates, the calendar's for
/// quotas (read only if a quota is counted).
struct Now {
    nanos: u64,
    wall: OnceCell<SystemTime>,
}

impl Now {
    fn wall(&self) -> SystemTime {
        *self.wall.get_or_init(SystemTime::now)
    }
}

impl State {
    fn new(limit: Limit) -> Self {
        let meter = match limit.kind() {
            LimitKind::Rate {
                count,
                period,
                burst,
            } => {
                // `Limit` keeps the period within 1 ms and a year: `T` is
                // at least 1 ns unless the count is over a million a
                // millisecond, which the floor covers.
                let period = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
                let interval = (period / u64::from(count.get())).max(1);
                Meter::Rate {
                    interval,
                    tolerance: interval.saturating_mul(u64::from(burst.get())),
                }
            }
            LimitKind::Monthly { count } => Meter::Monthly {
                count: count.min(USED_MAX),
            },
        };
        State {
            policy: HeaderValue::from_static(interned(limit.policy_item())),
            limit,
            meter,
            budgets: DashMap::new(),
            refusals: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Counts `units` against `budget`, this instance's `share`: 1, or in
    /// cluster mode while Redis is unreachable, the number of instances
    /// (each then admits its part of the rate, and of what was left of the
    /// quota when Redis last answered).
    #[inline]
    fn count(&self, budget: &Budget, units: NonZeroU32, now: &Now, share: u32) -> Outcome {
        let units = u64::from(units.get());
        match self.meter {
            Meter::Rate {
                interval,
                tolerance,
            } => {
                let (interval, tolerance) = shared_rate(interval, tolerance, share);
                let spend = units.saturating_mul(interval);
                if spend > tolerance {
                    // More than a burst can never pass: wait a whole one.
                    return Outcome::Spent(ceil_nanos(tolerance));
                }
                let mut current = budget.value.load(Ordering::Relaxed);
                loop {
                    let next = current.max(now.nanos).saturating_add(spend);
                    let ahead = next - now.nanos;
                    if ahead > tolerance {
                        return Outcome::Spent(ceil_nanos(ahead - tolerance));
                    }
                    match budget.value.compare_exchange_weak(
                        current,
                        next,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => {
                            return Outcome::Within {
                                remaining: (tolerance - ahead) / interval,
                                reset: ceil_nanos(ahead),
                            }
                        }
                        Err(actual) => current = actual,
                    }
                }
            }
            Meter::Monthly { count } => {
                let (month, next) = month_of(now.wall());
                let wait = next
                    .duration_since(now.wall())
                    .map_or(1, |left| ceil_secs(left).max(1));
                let mut current = budget.value.load(Ordering::Relaxed);
                loop {
                    let used = used_in(current, month);
                    let total = match used.checked_add(units) {
                        Some(total) if total <= count => total,
                        _ => return Outcome::Spent(wait),
                    };
                    if share > 1 {
                        // Units not yet reported are this instance's own
                        // (those of this month, at most).
                        let own = budget.pending.load(Ordering::Relaxed);
                        let own = u64::try_from(own).unwrap_or(0).min(used);
                        let left = count - (used - own);
                        if own + units > left / u64::from(share) {
                            return Outcome::Spent(FALLBACK_QUOTA_WAIT.min(wait));
                        }
                    }
                    match budget.value.compare_exchange_weak(
                        current,
                        pack(month, total),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => {
                            return Outcome::Within {
                                remaining: count - total,
                                reset: wait,
                            }
                        }
                        Err(actual) => current = actual,
                    }
                }
            }
        }
    }

    /// Gives back `units` counted against `budget` at `share`.
    fn give_back(&self, budget: &Budget, units: NonZeroU32, now: &Now, share: u32) {
        let units = u64::from(units.get());
        let _ = budget
            .value
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
                Some(match self.meter {
                    // Never behind now: that would bank a burst.
                    Meter::Rate {
                        interval,
                        tolerance,
                    } => {
                        let interval = shared_rate(interval, tolerance, share).0;
                        current
                            .saturating_sub(units.saturating_mul(interval))
                            .max(now.nanos.min(current))
                    }
                    Meter::Monthly { .. } => {
                        let month = month_of(now.wall()).0;
                        pack(month, used_in(current, month).saturating_sub(units))
                    }
                })
            });
    }

    /// Whether `budget` is full: it says nothing a new one would not.
    fn idle(&self, budget: &Budget, now: &Now) -> bool {
        let current = budget.value.load(Ordering::Relaxed);
        match self.meter {
            Meter::Rate { .. } => current <= now.nanos,
            Meter::Monthly { .. } => used_in(current, month_of(now.wall()).0) == 0,
        }
    }
}

/// A rate's `T` and `τ` for one instance of `share`: `share` times the
/// interval, and a burst divided by `share` (one unit at least).
#[inline]
fn shared_rate(interval: u64, tolerance: u64, share: u32) -> (u64, u64) {
    if share <= 1 {
        return (interval, tolerance);
    }
    let interval = interval.saturating_mul(u64::from(share));
    (interval, tolerance.max(interval))
}

/// The month a quota's budget holds.
fn month_in(budget: u64) -> u32 {
    u32::try_from(budget >> 48).unwrap_or(0)
}

/// What a quota's budget has used in `month` (nothing if it holds another).
fn used_in(budget: u64, month: u32) -> u64 {
    if month_in(budget) == month {
        budget & USED_MAX
    } else {
        0
    }
}

/// A quota's budget: `used` units in `month`.
fn pack(month: u32, used: u64) -> u64 {
    (u64::from(month) << 48) | used.min(USED_MAX)
}

/// Whole seconds in `nanos`, rounded up.
fn ceil_nanos(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

/// The calendar month (UTC) of `now`, counted from January 1970, and when
/// the next one starts.
fn month_of(now: SystemTime) -> (u32, SystemTime) {
    let days = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    let (year, month) = civil_from_days(i64::try_from(days).unwrap_or(i64::MAX));
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let next_days = days_from_civil(next_year, next_month);
    let index = (year - 1970) * 12 + i64::from(month) - 1;
    let next = UNIX_EPOCH + Duration::from_secs(u64::try_from(next_days).unwrap_or(0) * 86_400);
    (u32::try_from(index).unwrap_or(0), next)
}

/// The year and month (1 to 12) of a day counted from 1970-01-01, in the
/// proleptic Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // 1 to 12 by construction.
    (year, u32::try_from(month).unwrap_or(1))
}

/// The day, counted from 1970-01-01, on which `month` of `year` starts.
fn days_from_civil(year: i64, month: u32) -> i64 {
    let month = i64::from(month);
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("headers", &self.headers)
            .field("limits", &self.table().len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::Per;
    use crate::CredentialKind;

    fn date(days: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(days).unwrap() * 86_400 + 3_600)
    }

    #[test]
    fn months_and_their_ends() {
        // 1970-01-01, 2000-02-29 (a leap day), 2026-12-03, 2027-01-01.
        for (days, year, month, next_days) in [
            (0, 1970, 1, 31),
            (11_016, 2000, 2, 11_017),
            (20_790, 2026, 12, 20_819),
            (20_819, 2027, 1, 20_850),
        ] {
            assert_eq!(civil_from_days(days), (year, month), "day {days}");
            let (index, next) = month_of(date(days));
            assert_eq!(i64::from(index), (year - 1970) * 12 + i64::from(month) - 1);
            assert_eq!(next, UNIX_EPOCH + Duration::from_secs(next_days * 86_400));
        }
        // Every day of 400 years maps back to the first of its month.
        for days in (0..146_097).step_by(7) {
            let (year, month) = civil_from_days(days);
            let first = days_from_civil(year, month);
            assert!(first <= days && days - first < 31, "day {days}");
        }
    }

    fn credential(id: &str, limits: impl IntoIterator<Item = Limit>) -> Credential {
        Credential::new(id, "ws_acme", CredentialKind::ApiKey).with_limits(limits)
    }

    fn strings(headers: Option<LimitHeaders>) -> (String, String) {
        let (policy, left) = headers.unwrap();
        (
            policy.to_str().unwrap().to_owned(),
            left.to_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn a_rate_limit_admits_its_burst_then_refuses_with_the_wait() {
        let limiter = Limiter::new(Render::default(), true);
        let limit = Limit::rate("requests", 5, Duration::from_secs(60)).unwrap();
        let key = credential("key_1", [limit.clone()]);
        for left in (0..5).rev() {
            let headers = limiter.count(&key, &Cost::default()).unwrap();
            assert_eq!(
                strings(headers),
                (
                    r#""requests";q=5;w=60"#.to_owned(),
                    format!(r#""requests";r={left};t={}"#, (5 - left) * 12)
                )
            );
        }
        let (refused, headers) = limiter.count(&key, &Cost::default()).unwrap_err();
        let wait = refused.rejection().retry_after().unwrap();
        assert!((11..=12).contains(&wait), "{wait}");
        assert_eq!(
            strings(headers),
            (
                r#""requests";q=5;w=60"#.to_owned(),
                format!(r#""requests";r=0;t={wait}"#)
            )
        );
        // Another key has its own budget; a cost of 0 counts nothing.
        assert!(limiter
            .count(&credential("key_2", [limit]), &Cost::default())
            .is_ok());
        let free = Cost {
            units: 0,
            only: None,
        };
        assert_eq!(limiter.count(&key, &free).unwrap(), None);
    }

    #[test]
    fn a_quota_refused_by_a_later_rate_spends_nothing() {
        let limiter = Limiter::new(Render::default(), false);
        let monthly = Limit::monthly("monthly", 3).unwrap().per_account();
        let rate = Limit::rate("requests", 1, Duration::from_secs(3600)).unwrap();
        assert_eq!(monthly.per(), Per::Account);
        let key = credential("key_1", [rate, monthly.clone()]);
        assert_eq!(limiter.count(&key, &Cost::default()).unwrap(), None);
        let (refused, _) = limiter.count(&key, &Cost::default()).unwrap_err();
        assert!(matches!(refused.rejection(), Rejection::RateLimited { .. }));
        // The account's quota lost only the admitted request: 2 are left, to
        // another key of the account (counted per account).
        let other = credential("key_2", [monthly]);
        let two = Cost {
            units: 2,
            only: None,
        };
        assert!(limiter.count(&other, &two).is_ok());
        let (refused, _) = limiter.count(&other, &Cost::default()).unwrap_err();
        let Rejection::QuotaExceeded { limit, retry_after } = refused.rejection() else {
            panic!("{:?}", refused.rejection());
        };
        assert_eq!(&**limit, "monthly");
        assert!(*retry_after >= 1 && *retry_after <= 31 * 86_400);
    }

    #[test]
    fn copies_and_accounts_share_budgets_that_sweeps_keep() {
        let limiter = Limiter::new(Render::default(), false);
        let rate = Limit::rate("requests", 1, Duration::from_secs(3600))
            .unwrap()
            .per_account();
        let first = credential("key_1", [rate.clone()]);
        // Counted and given back: full, so a sweep would forget it, but
        // `first` holds it.
        assert!(limiter.count(&first, &Cost::default()).is_ok());
        limiter.give_back(&first, &Cost::default());
        limiter.sweep(&limiter.now());
        assert!(limiter.count(&first, &Cost::default()).is_ok());
        // A reloaded copy of the key (a new object), another key of the
        // account, and a clone all count against that budget.
        for same in [
            credential("key_1", [rate.clone()]),
            credential("key_2", [rate]),
            first.clone(),
        ] {
            let (refused, _) = limiter.count(&same, &Cost::default()).unwrap_err();
            assert!(matches!(refused.rejection(), Rejection::RateLimited { .. }));
        }
    }

    #[test]
    fn a_route_counts_only_the_limits_it_names() {
        let limiter = Limiter::new(Render::default(), true);
        let writes = Limit::rate("writes", 1, Duration::from_secs(60)).unwrap();
        let requests = Limit::rate("requests", 100, Duration::from_secs(60)).unwrap();
        let key = credential("key_1", [requests, writes]);
        let reads = Cost {
            units: 1,
            only: Some(Arc::from(vec![Arc::from("requests")])),
        };
        for _ in 0..3 {
            assert!(limiter.count(&key, &reads).is_ok());
        }
        let (policy, left) = strings(limiter.count(&key, &Cost::default()).unwrap());
        assert_eq!(policy, r#""requests";q=100;w=60, "writes";q=1;w=60"#);
        assert_eq!(left, r#""requests";r=96;t=3, "writes";r=0;t=60"#);
    }

    /// A limiter in cluster mode with no task: the tests play its part.
    /// Unreachable until told otherwise, at a share of `fallback`.
    #[cfg(feature = "redis")]
    fn clustered(fallback: u32) -> (Arc<Shared>, Limiter) {
        let shared = Arc::new(Shared::new(
            fallback,
            Duration::from_secs(60),
            tokio::sync::mpsc::unbounded_channel().0,
        ));
        let limiter = Limiter::new(Render::default(), false).with_shared(Arc::clone(&shared));
        (shared, limiter)
    }

    #[cfg(feature = "redis")]
    #[test]
    fn cut_off_from_the_cluster_an_instance_admits_its_share() {
        let (shared, limiter) = clustered(2);
        let rate = Limit::rate("requests", 40, Duration::from_secs(60)).unwrap();
        let quota = Limit::monthly("monthly", 10).unwrap();
        let (key, other) = (credential("key_1", [rate]), credential("key_2", [quota]));
        let admitted = |credential: &Credential, n: usize| {
            (0..n)
                .filter(|_| limiter.count(credential, &Cost::default()).is_ok())
                .count()
        };
        // Half the burst, half the quota; a quota refused by its share says
        // to come back in a minute.
        assert_eq!(admitted(&key, 30), 20);
        assert_eq!(admitted(&other, 10), 5);
        let (refused, _) = limiter.count(&other, &Cost::default()).unwrap_err();
        assert_eq!(refused.rejection().retry_after(), Some(FALLBACK_QUOTA_WAIT));
        // Redis answers: the whole quota, what is left of it.
        shared.answered(2);
        assert_eq!(admitted(&other, 10), 5);

        // The task reports the 10 units and writes back what Redis says:
        // 25 of the month's units used (others counted 15).
        let mut watched = shared.handed().take("t");
        assert_eq!(watched.len(), 2, "each budget handed over once");
        let wall = SystemTime::now();
        for budget in &mut watched {
            let (report, late) = budget.report(wall);
            assert!(late.is_none(), "a first report has no month before");
            let answer = match report.kind {
                "m" => {
                    assert_eq!(report.units, 10);
                    assert!(
                        report.key.starts_with("t:m:monthly:k:key_2:"),
                        "{}",
                        report.key
                    );
                    25
                }
                _ => {
                    assert_eq!(
                        (report.key.as_str(), report.units),
                        ("t:r:requests:k:key_1", 20)
                    );
                    assert_eq!(report.param, 1_500_000.0, "µs per unit");
                    // Redis: 60 s ahead, the whole burst spent elsewhere.
                    60_000_000
                }
            };
            budget.apply(&report, answer, shared.now_nanos(), wall);
        }
        assert!(limiter.count(&other, &Cost::default()).is_err());
        assert!(limiter.count(&key, &Cost::default()).is_err());
        assert!(shared.handed().take("t").is_empty(), "still watched");
        // Redis stops answering: the share again.
        shared.unreachable(2);
        assert_eq!(shared.status(), (false, 2));
    }

    #[cfg(feature = "redis")]
    #[test]
    fn units_counted_before_a_month_ended_are_reported_in_it() {
        let (shared, limiter) = clustered(1);
        shared.answered(1);
        let quota = credential("key_q", [Limit::monthly("monthly", 100).unwrap()]);
        let one = Cost::default();
        let mut totals = Totals::default();
        for _ in 0..5 {
            assert!(limiter.count(&quota, &one).is_ok());
        }
        let mut watched = shared.handed().take("t");
        let budget = &mut watched[0];
        let wall = SystemTime::now();
        let (this, next) = month_of(wall);
        let (mut report, late) = budget.report(wall);
        assert!(late.is_none());
        totals.add(&mut report);
        assert_eq!((report.month, report.units), (this, 5));
        budget.apply(&report, 5, shared.now_nanos(), wall);
        // Three more, the last after the month ended: the budget holds one
        // unit of the new month.
        for _ in 0..3 {
            assert!(limiter.count(&quota, &one).is_ok());
        }
        budget.set_used_for_tests(this + 1, 1);
        let after = next + Duration::from_secs(1);
        let reported = |budget: &mut Watched, totals: &mut Totals| {
            let (mut report, late) = budget.report(after);
            let mut late = late.expect("the units of the month before");
            totals.add(&mut late);
            totals.add(&mut report);
            (late, report)
        };
        let (late, report) = reported(budget, &mut totals);
        assert!(late.key.ends_with(&format!(":{this}")), "{}", late.key);
        assert_eq!((late.month, late.units), (this, 7), "5 + 2 in the month");
        assert!(report.key.ends_with(&format!(":{}", this + 1)));
        assert_eq!((report.month, report.units), (this + 1, 1));
        // Not taken by Redis: both sent again, split the same way.
        budget.failed(&late, &mut totals);
        budget.failed(&report, &mut totals);
        let (late, report) = reported(budget, &mut totals);
        assert_eq!((late.units, report.units), (7, 1));
        // Taken: the new month's reports are its own from then on.
        let now = shared.now_nanos();
        budget.apply(&late, 7, now, after);
        budget.apply(&report, 1, now, after);
        let (mut report, late) = budget.report(after);
        assert!(late.is_none());
        totals.add(&mut report);
        assert_eq!((report.month, report.units), (this + 1, 1));
        // A budget watched anew (released when idle) knows the month of its
        // units from its value: two counted now, reported in the next month.
        for _ in 0..2 {
            assert!(limiter.count(&quota, &one).is_ok());
        }
        let mut again = budget.watched_again_for_tests("t");
        let (mut late, mut report) = reported(&mut again, &mut totals);
        assert_eq!((late.month, late.units), (this, 9), "7 + 2 in the month");
        assert_eq!((report.month, report.units), (this + 1, 1), "none new");
        // Its round may have run though its answer was lost: the next
        // round, still reporting late, does not count them in both months.
        again.failed(&late, &mut totals);
        again.failed(&report, &mut totals);
        (late, report) = reported(&mut again, &mut totals);
        assert_eq!((late.units, report.units), (9, 1));
    }

    #[cfg(feature = "redis")]
    #[test]
    fn reports_survive_lost_answers_refunds_and_outages() {
        let (shared, limiter) = clustered(2);
        shared.answered(1);
        let quota = credential("key_q", [Limit::monthly("monthly", 100).unwrap()]);
        let rate = credential(
            "key_r",
            [Limit::rate("requests", 60, Duration::from_secs(60)).unwrap()],
        );
        let one = Cost::default();
        let mut totals = Totals::default();
        let mut units = |watched: &mut [Watched]| {
            let wall = SystemTime::now();
            let mut units: Vec<(&str, i64)> = watched
                .iter_mut()
                .map(|b| {
                    let mut report = b.report(wall).0;
                    totals.add(&mut report);
                    (report.kind, report.units)
                })
                .collect();
            units.sort_unstable();
            units
        };
        for _ in 0..3 {
            assert!(limiter.count(&quota, &one).is_ok() && limiter.count(&rate, &one).is_ok());
        }
        let mut watched = shared.handed().take("t");
        // A round whose answer is lost: the quota's total is sent again (a
        // total, set, not added), the rate's units are not.
        let wall = SystemTime::now();
        let mut lost = Totals::default();
        for budget in &mut watched {
            let mut report = budget.report(wall).0;
            lost.add(&mut report);
            budget.failed(&report, &mut lost);
        }
        assert!(limiter.count(&quota, &one).is_ok() && limiter.count(&rate, &one).is_ok());
        assert_eq!(units(&mut watched), [("m", 4), ("r", 1)]);
        // Released when idle and watched again, the quota's budget adds to
        // this instance's total: it does not start it over.
        assert!(limiter.count(&quota, &one).is_ok());
        let quota_at = usize::from(watched[0].key_for_tests().starts_with("t:r:"));
        let mut again = vec![watched[quota_at].watched_again_for_tests("t")];
        assert_eq!(units(&mut again), [("m", 5)]);
        // Refunds after the report: the quota's total goes down, the rate
        // reports negative units.
        limiter.give_back(&quota, &one);
        limiter.give_back(&rate, &one);
        assert_eq!(units(&mut watched), [("m", 4), ("r", -1)]);
        // Redis unreachable: what a rate admits meanwhile is kept while it
        // is still ahead of now, and forgotten once it has come back.
        shared.unreachable(2);
        assert!(limiter.count(&rate, &one).is_ok() && limiter.count(&rate, &one).is_ok());
        let rate_budget = watched
            .iter()
            .find(|b| b.key_for_tests().starts_with("t:r:"))
            .unwrap();
        let now = shared.now_nanos();
        rate_budget.unreported(now, 2);
        assert_eq!(rate_budget.pending_for_tests(), 2);
        rate_budget.unreported(now + 3_600_000_000_000, 2);
        assert_eq!(rate_budget.pending_for_tests(), 0);
    }
}
