//! Counting admitted requests against their credential's limits, in the
//! process.
//!
//! Private: the model is public in [`limit`](crate::limit). A [`Limiter`]
//! belongs to one gate. It keeps a state per distinct [`Limit`] (GCRA's
//! theoretical arrival time for a rate, exact counters for a monthly
//! quota), found through a table that requests read without a lock (an
//! `ArcSwap`) and that only a limit seen for the first time rewrites. Each
//! state keeps its keys in a sharded map (`DashMap`), so requests of
//! different keys share no lock; requests of one key share one shard, as
//! they share one budget.
//!
//! GCRA is written here rather than taken from `governor`, which this
//! module first used: a request counted by an outer layer and then refused
//! by an inner one (its scope) must get its units back, and `governor` has
//! no way to give them back; nor can one of its keyed limiters hold keys of
//! different plans' rates. What GCRA needs is one atomic per key: a
//! request of `n` units fits if `max(tat, now) + n·T − now ≤ τ`, where `T`
//! is the time one unit takes to come back and `τ = burst·T`; it then moves
//! `tat` to the left side's sum. Giving back moves `tat` back by `n·T`.

use std::cell::{Cell, OnceCell};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use dashmap::DashMap;
use http::HeaderValue;

use crate::credential::Credential;
use crate::error::Rejection;
use crate::limit::{Cost, Limit, LimitKind};
use crate::render::{ErrorResponse, Render};

/// The `RateLimit-Policy` and `RateLimit` values of one response.
pub(crate) type LimitHeaders = (HeaderValue, HeaderValue);

/// A request refused by a limit: the 429, and the headers naming the limit.
pub(crate) type Refused = (ErrorResponse, Option<LimitHeaders>);

/// One gate's limit states.
pub(crate) struct Limiter {
    render: Render,
    /// Whether responses carry `RateLimit-Policy` and `RateLimit`.
    headers: bool,
    states: ArcSwap<Table>,
    /// Held by whoever adds a state, so that two never race to.
    adding: Mutex<()>,
    /// Rates count nanoseconds from here, on quanta's clock (the TSC where
    /// it is reliable: a few instructions, no system call).
    origin: quanta::Instant,
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
const MAX_STATES: usize = 4096;

/// Refusals are rendered once for each wait up to this many seconds.
const MEMO_SECONDS: usize = 60;

/// How many checks a thread makes between two sweeps of a state's idle keys.
const SWEEP_EVERY: u32 = 1 << 16;

/// One limit's budgets, by key or account.
struct State {
    limit: Limit,
    /// This limit's `RateLimit-Policy` item, as a header value of a
    /// `'static` string ([`interned`]): cloned per response without
    /// touching a reference count that every request would share.
    policy: HeaderValue,
    counter: Counter,
    /// The 429 for a wait of `i + 1` seconds, rendered when first sent.
    refusals: [OnceLock<ErrorResponse>; MEMO_SECONDS],
}

enum Counter {
    Rate {
        /// Per key or account: the theoretical arrival time, in
        /// nanoseconds from the limiter's origin.
        tat: DashMap<Box<str>, AtomicU64>,
        /// `T`: the nanoseconds one unit takes to come back.
        interval: u64,
        /// `τ`: the burst's worth of nanoseconds.
        tolerance: u64,
    },
    Monthly {
        count: u64,
        /// Per key or account: the month (counted from January 1970) and
        /// the units used in it.
        used: DashMap<Box<str>, (u32, u64)>,
    },
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
        Limiter {
            render,
            headers,
            states: ArcSwap::default(),
            adding: Mutex::new(()),
            origin: quanta::Instant::now(),
        }
    }

    /// Counts a request of `credential` costing `cost` against each of its
    /// limits the route counts. Refused by one, the request spends nothing
    /// from the others. `Ok` carries the headers, if the gate sends them.
    pub(crate) fn count(
        &self,
        credential: &Credential,
        cost: &Cost,
    ) -> Result<Option<LimitHeaders>, Refused> {
        let Some(units) = NonZeroU32::new(cost.units) else {
            return Ok(None);
        };
        let table = self.states.load();
        let now = self.now();
        let mut headers = self.headers.then(HeaderWriter::default);
        let counted = credential.limits().iter().filter(|l| cost.counts(l));
        for (done, limit) in counted.clone().enumerate() {
            let Some(state) = table.get(limit) else {
                give_back_first(&table, credential, counted, done, units, &now);
                return self.count_with_new(credential, cost);
            };
            match state.count(credential.subject(limit.per()), units, &now) {
                Outcome::Spent(wait) => {
                    give_back_first(&table, credential, counted, done, units, &now);
                    return Err(self.refused(state, wait));
                }
                Outcome::Within { remaining, reset } => {
                    if let Some(headers) = &mut headers {
                        headers.add(state, remaining, reset);
                    }
                }
            }
        }
        Ok(headers.and_then(HeaderWriter::finish))
    }

    /// Gives back what [`count`](Self::count) counted for a request of
    /// `credential` at `cost`, which an inner layer then refused.
    pub(crate) fn give_back(&self, credential: &Credential, cost: &Cost) {
        let Some(units) = NonZeroU32::new(cost.units) else {
            return;
        };
        let table = self.states.load();
        let counted = credential.limits().iter().filter(|l| cost.counts(l));
        give_back_first(&table, credential, counted, usize::MAX, units, &self.now());
    }

    fn now(&self) -> Now {
        let elapsed = quanta::Instant::now().saturating_duration_since(self.origin);
        Now {
            // Past 584 years of uptime, the nanoseconds saturate.
            nanos: u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            wall: OnceCell::new(),
        }
    }

    /// Adds the states of the credential's limits not seen yet, then counts.
    #[cold]
    #[inline(never)]
    fn count_with_new(
        &self,
        credential: &Credential,
        cost: &Cost,
    ) -> Result<Option<LimitHeaders>, Refused> {
        {
            let _adding = self.adding.lock().unwrap_or_else(PoisonError::into_inner);
            let current = self.states.load();
            let missing: Vec<&Limit> = credential
                .limits()
                .iter()
                .filter(|l| !current.contains_key(*l))
                .collect();
            if !missing.is_empty() {
                let mut table = if current.len() + missing.len() > MAX_STATES {
                    Table::default()
                } else {
                    (**current).clone()
                };
                for limit in credential.limits() {
                    table
                        .entry(limit.clone())
                        .or_insert_with(|| Arc::new(State::new(limit.clone())));
                }
                self.states.store(Arc::new(table));
            }
        }
        self.count(credential, cost)
    }

    /// The 429 for `state`'s limit and a wait of `wait` seconds.
    #[cold]
    fn refused(&self, state: &State, wait: u64) -> Refused {
        let render = || {
            let limit = Arc::clone(state.limit.shared_name());
            let rejection = match state.counter {
                Counter::Rate { .. } => Rejection::RateLimited {
                    limit,
                    retry_after: wait,
                },
                Counter::Monthly { .. } => Rejection::QuotaExceeded {
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

/// Gives back `units` to the first `n` of `limits` (all of them if fewer).
fn give_back_first<'a>(
    table: &Table,
    credential: &Credential,
    limits: impl Iterator<Item = &'a Limit>,
    n: usize,
    units: NonZeroU32,
    now: &Now,
) {
    for limit in limits.take(n) {
        if let Some(state) = table.get(limit) {
            state.give_back(credential, units, now);
        }
    }
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
        let counter = match limit.kind() {
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
                Counter::Rate {
                    tat: DashMap::new(),
                    interval,
                    tolerance: interval.saturating_mul(u64::from(burst.get())),
                }
            }
            LimitKind::Monthly { count } => Counter::Monthly {
                count,
                used: DashMap::new(),
            },
        };
        State {
            policy: HeaderValue::from_static(interned(limit.policy_item())),
            limit,
            counter,
            refusals: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Counts `units` for `subject`.
    fn count(&self, subject: &str, units: NonZeroU32, now: &Now) -> Outcome {
        self.sweep_now_and_then(now);
        let units = u64::from(units.get());
        match &self.counter {
            Counter::Rate {
                tat,
                interval,
                tolerance,
            } => {
                let cell = match tat.get(subject) {
                    Some(cell) => cell,
                    None => tat
                        .entry(Box::from(subject))
                        .or_insert_with(|| AtomicU64::new(0))
                        .downgrade(),
                };
                let spend = units.saturating_mul(*interval);
                if spend > *tolerance {
                    // More than a burst can never pass: wait a whole one.
                    return Outcome::Spent(ceil_nanos(*tolerance));
                }
                let mut current = cell.load(Ordering::Relaxed);
                loop {
                    let next = current.max(now.nanos).saturating_add(spend);
                    let ahead = next - now.nanos;
                    if ahead > *tolerance {
                        return Outcome::Spent(ceil_nanos(ahead - tolerance));
                    }
                    match cell.compare_exchange_weak(
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
            Counter::Monthly { count, used } => {
                let (month, next) = month_of(now.wall());
                let wait = || {
                    next.duration_since(now.wall())
                        .map_or(1, |left| ceil_secs(left).max(1))
                };
                let mut cell = match used.get_mut(subject) {
                    Some(cell) => cell,
                    None => used.entry(Box::from(subject)).or_insert((month, 0)),
                };
                if cell.0 != month {
                    *cell = (month, 0);
                }
                match cell.1.checked_add(units) {
                    Some(total) if total <= *count => {
                        cell.1 = total;
                        Outcome::Within {
                            remaining: count - total,
                            reset: wait(),
                        }
                    }
                    _ => Outcome::Spent(wait()),
                }
            }
        }
    }

    /// Gives back `units` counted for `credential`.
    fn give_back(&self, credential: &Credential, units: NonZeroU32, now: &Now) {
        let subject = credential.subject(self.limit.per());
        let units = u64::from(units.get());
        match &self.counter {
            Counter::Rate { tat, interval, .. } => {
                if let Some(cell) = tat.get(subject) {
                    let spend = units.saturating_mul(*interval);
                    // Never behind now: that would bank a burst.
                    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                        Some(tat.saturating_sub(spend).max(now.nanos.min(tat)))
                    });
                }
            }
            Counter::Monthly { used, .. } => {
                let (month, _) = month_of(now.wall());
                if let Some(mut cell) = used.get_mut(subject) {
                    if cell.0 == month {
                        cell.1 = cell.1.saturating_sub(units);
                    }
                }
            }
        }
    }

    /// Every [`SWEEP_EVERY`] checks on a thread, forgets this state's keys
    /// that are back to a full budget (or in a past month): they hold no
    /// information.
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
            match &self.counter {
                Counter::Rate { tat, .. } => {
                    tat.retain(|_, cell| cell.load(Ordering::Relaxed) > now.nanos);
                    tat.shrink_to_fit();
                }
                Counter::Monthly { used, .. } => {
                    let (month, _) = month_of(now.wall());
                    used.retain(|_, cell| cell.0 == month);
                    used.shrink_to_fit();
                }
            }
        }
    }
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
            .field("limits", &self.states.load().len())
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
}
