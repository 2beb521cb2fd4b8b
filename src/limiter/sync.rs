//! Cluster mode's side of the budgets: what the hot path tells the gate's
//! sync task, and what the task reports to Redis and writes back.
//!
//! Private; no Redis here (that is [`cluster`](crate::cluster)'s). An
//! admitted request adds its units to its budget's `pending` and, the first
//! time, hands the budget to the task ([`Shared::admitted`]). Every round,
//! the task takes each watched budget's pending units ([`Watched::report`]),
//! adds them to the shared budget in Redis, and sets the local budget to
//! the shared one plus what was admitted here meanwhile
//! ([`Watched::apply`]). So each instance enforces what all of them have
//! used, a round late at most.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use super::{month_of, pack, used_in, Budget, Meter, State};
use crate::limit::Per;

/// Rounds without a unit admitted here (and, for a rate, with the shared
/// budget full) after which the task stops watching a budget; the next
/// admitted request hands it over again.
const IDLE_ROUNDS: u32 = 100;

/// How long Redis keeps a quota's month after it ends.
const MONTH_GRACE: Duration = Duration::from_secs(35 * 86_400);

/// What a gate's limiter and its sync task share.
pub(crate) struct Shared {
    /// The clock the limiter counts rates on (the task writes budgets in it).
    pub(super) origin: quanta::Instant,
    /// 1 while Redis answers; otherwise the instances this one shares with.
    share: AtomicU32,
    connected: AtomicBool,
    /// The instances Redis last said were running (this one included).
    instances: AtomicU32,
    /// Budgets admitted into since the task last took them.
    new: Mutex<Vec<(Arc<State>, Arc<Budget>)>>,
    /// What Redis keys start with.
    prefix: Box<str>,
}

impl Shared {
    /// Starts unreachable: until Redis first answers, each instance admits
    /// its `fallback` share.
    pub(crate) fn new(prefix: &str, fallback: u32) -> Self {
        let fallback = fallback.max(1);
        Shared {
            origin: quanta::Instant::now(),
            share: AtomicU32::new(fallback),
            connected: AtomicBool::new(false),
            instances: AtomicU32::new(fallback),
            new: Mutex::default(),
            prefix: Box::from(prefix),
        }
    }

    #[inline]
    pub(super) fn share(&self) -> u32 {
        self.share.load(Ordering::Relaxed)
    }

    /// Notes `units` admitted against `budget`, and hands the budget to the
    /// task unless it holds it.
    #[inline]
    pub(super) fn admitted(&self, state: &Arc<State>, budget: &Arc<Budget>, units: NonZeroU32) {
        // SeqCst here and in `Watched::release` (free on x86: the add is a
        // locked instruction, the load a plain one): either this sees the
        // task's release, or the task sees these units.
        budget
            .pending
            .fetch_add(u64::from(units.get()), Ordering::SeqCst);
        if !budget.watched.load(Ordering::SeqCst) && !budget.watched.swap(true, Ordering::SeqCst) {
            self.hand_over(state, budget);
        }
    }

    #[cold]
    fn hand_over(&self, state: &Arc<State>, budget: &Arc<Budget>) {
        self.new
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((Arc::clone(state), Arc::clone(budget)));
    }

    /// Takes back `units` of a request an inner layer refused.
    pub(super) fn given_back(budget: &Budget, units: NonZeroU32) {
        let units = u64::from(units.get());
        let _ = budget
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |pending| {
                Some(pending.saturating_sub(units))
            });
    }

    /// The budgets handed over since the last call.
    pub(crate) fn take_new(&self) -> Vec<Watched> {
        let new = std::mem::take(&mut *self.new.lock().unwrap_or_else(PoisonError::into_inner));
        new.into_iter()
            .map(|(state, budget)| Watched::new(&self.prefix, state, budget))
            .collect()
    }

    /// Redis answered (`instances` running) or did not (this instance then
    /// admits its share of `instances`).
    pub(crate) fn set_connected(&self, connected: bool, instances: u32) {
        let instances = instances.max(1);
        self.instances.store(instances, Ordering::Relaxed);
        self.connected.store(connected, Ordering::Relaxed);
        self.share
            .store(if connected { 1 } else { instances }, Ordering::Relaxed);
    }

    /// Whether Redis answered the last round, and the instance count.
    pub(crate) fn status(&self) -> (bool, u32) {
        (
            self.connected.load(Ordering::Relaxed),
            self.instances.load(Ordering::Relaxed),
        )
    }

    /// The limiter's clock now, in nanoseconds.
    pub(crate) fn now_nanos(&self) -> u64 {
        let elapsed = quanta::Instant::now().saturating_duration_since(self.origin);
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// One budget the task reports.
pub(crate) struct Watched {
    state: Arc<State>,
    budget: Arc<Budget>,
    /// The Redis key (a quota's without its month).
    key: String,
    /// The month a quota's last report was counted in.
    month: u32,
    idle_rounds: u32,
}

/// One budget's part of a round: its key, and the script's arguments.
pub(crate) struct Report {
    pub(crate) key: String,
    /// `r` for a rate, `m` for a quota.
    pub(crate) kind: &'static str,
    /// Units admitted here since the last report.
    pub(crate) units: u64,
    /// A rate's microseconds per unit; a quota's seconds to keep its month.
    pub(crate) param: f64,
}

impl Watched {
    fn new(prefix: &str, state: Arc<State>, budget: Arc<Budget>) -> Self {
        let (kind, per) = (
            match state.meter {
                Meter::Rate { .. } => 'r',
                Meter::Monthly { .. } => 'm',
            },
            match state.limit.per() {
                Per::Key => 'k',
                Per::Account => 'a',
            },
        );
        let key = format!(
            "{prefix}:{kind}:{}:{per}:{}",
            state.limit.name(),
            budget.subject
        );
        Watched {
            state,
            budget,
            key,
            month: 0,
            idle_rounds: 0,
        }
    }

    /// An identity: the budget's address.
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.budget) as usize
    }

    /// Takes the units admitted since the last report.
    pub(crate) fn report(&mut self, wall: SystemTime) -> Report {
        let units = self.budget.pending.swap(0, Ordering::Relaxed);
        match self.state.meter {
            Meter::Rate { interval, .. } => Report {
                key: self.key.clone(),
                kind: "r",
                units,
                param: interval as f64 / 1_000.0,
            },
            Meter::Monthly { .. } => {
                let (month, next) = month_of(wall);
                self.month = month;
                let keep = next.duration_since(wall).unwrap_or_default() + MONTH_GRACE;
                Report {
                    key: format!("{}:{month}", self.key),
                    kind: "m",
                    units,
                    param: keep.as_secs() as f64,
                }
            }
        }
    }

    /// Writes back what Redis answered to `report`: a rate's microseconds
    /// ahead of Redis's clock, a quota's units used in the month. `now` is
    /// the limiter's clock, `wall` the calendar.
    pub(crate) fn apply(&mut self, report: &Report, answer: i64, now: u64, wall: SystemTime) {
        let since = self.budget.pending.load(Ordering::Relaxed);
        let answer = u64::try_from(answer).unwrap_or(0);
        match self.state.meter {
            Meter::Rate { interval, .. } => {
                let value = now
                    .saturating_add(answer.saturating_mul(1_000))
                    .saturating_add(since.saturating_mul(interval));
                self.budget.value.store(value, Ordering::Relaxed);
                self.idle_rounds = if report.units == 0 && answer == 0 {
                    self.idle_rounds + 1
                } else {
                    0
                };
            }
            Meter::Monthly { .. } => {
                let month = month_of(wall).0;
                if month == self.month {
                    // Never below what this instance counted: a Redis that
                    // lost the month must not make it count again.
                    let shared = answer.saturating_add(since);
                    let _ = self.budget.value.fetch_update(
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                        |current| {
                            let used = used_in(current, month).max(shared);
                            Some(pack(month, used))
                        },
                    );
                }
                self.idle_rounds = if report.units == 0 {
                    self.idle_rounds + 1
                } else {
                    0
                };
            }
        }
    }

    /// Redis did not take `report`: a quota's units are reported later, a
    /// rate's are dropped (by then they would count against the future).
    pub(crate) fn failed(&self, report: &Report) {
        if report.kind == "m" {
            self.budget
                .pending
                .fetch_add(report.units, Ordering::Relaxed);
        }
    }

    /// A round with Redis unreachable: a rate's units admitted meanwhile
    /// are dropped, for the same reason.
    pub(crate) fn unreported(&self) {
        if let Meter::Rate { .. } = self.state.meter {
            self.budget.pending.store(0, Ordering::Relaxed);
        }
    }

    /// Whether the task should stop watching this budget (idle long
    /// enough); if so, the hot path hands it over again on its next unit.
    pub(crate) fn release(&self) -> bool {
        if self.idle_rounds < IDLE_ROUNDS {
            return false;
        }
        self.budget.watched.store(false, Ordering::SeqCst);
        // A unit admitted meanwhile that saw the flag still set: keep it.
        if self.budget.pending.load(Ordering::SeqCst) > 0
            && !self.budget.watched.swap(true, Ordering::SeqCst)
        {
            return false;
        }
        true
    }
}
