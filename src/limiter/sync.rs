//! Cluster mode's side of the budgets: what the hot path tells the gate's
//! sync task, and what the task reports to Redis and writes back.
//!
//! Private; no Redis here (that is [`cluster`](crate::cluster)'s). A budget
//! is handed to the task when a limiter first finds it
//! ([`Shared::watch`]); an admitted request adds its units to the budget's
//! `pending` ([`Shared::admitted`]), a refund takes them off. Every round,
//! the task takes each watched budget's pending units
//! ([`Watched::report`]), Redis adds them to the shared budget, and the
//! task sets the local budget to the shared one plus what was admitted here
//! meanwhile ([`Watched::apply`]). So each instance enforces what all of
//! them have used, a round late at most.
//!
//! A rate's report adds units to a GCRA time in Redis: a report whose
//! answer is lost is not sent again ([`Watched::failed`] drops it), so a
//! late reply never counts twice. A quota's report is this instance's
//! total for the month ([`Totals`]), set rather than added: sent again, it
//! changes nothing, so its units go back for the next round.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use super::{month_in, month_of, pack, used_in, Budget, Meter, State};
use crate::limit::Per;

/// Rounds without a unit admitted here (and, for a rate, with the shared
/// budget full) after which the task stops watching a budget; the next
/// admitted request hands it over again.
const IDLE_ROUNDS: u32 = 100;

/// How long Redis keeps a quota's month after it ends.
const MONTH_GRACE: Duration = Duration::from_secs(35 * 86_400);

/// A request for a round now, and where to say whether Redis took it.
pub(crate) type Flush = tokio::sync::oneshot::Sender<bool>;

/// Budgets handed to the task and not yet taken; the task holds them too,
/// so that a last round after the gate is dropped still sees them.
#[derive(Clone, Default)]
pub(crate) struct Handed(Arc<Mutex<Vec<StateBudget>>>);

/// A limit's state and one subject's budget in it.
type StateBudget = (Arc<State>, Arc<Budget>);

impl Handed {
    /// Takes the budgets handed over since the last call, keyed under
    /// `prefix`.
    pub(crate) fn take(&self, prefix: &str) -> Vec<Watched> {
        let new = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        new.into_iter()
            .map(|(state, budget)| Watched::new(prefix, state, budget))
            .collect()
    }
}

/// What a gate's limiter and its sync task share.
pub(crate) struct Shared {
    /// The clock the limiter counts rates on (the task writes budgets in it).
    pub(super) origin: quanta::Instant,
    /// The limiter's clock until which Redis's last answer holds: past it
    /// (no answer for a while, or a failed round, which sets 0), each
    /// instance admits its share.
    fresh_until: AtomicU64,
    /// How long an answer holds.
    stale_after: u64,
    /// The instances Redis last saw (this one included), or the configured
    /// number while it is unreachable: the share.
    instances: AtomicU32,
    connected: AtomicBool,
    handed: Handed,
    /// Asks the task for a round now ([`flush`](Self::flush)); dropped
    /// with the gate, it tells the task to run its last round at once.
    rounds: tokio::sync::mpsc::UnboundedSender<Flush>,
}

impl Shared {
    /// Starts unreachable: until Redis first answers, each instance admits
    /// its `fallback` share. An answer holds for `stale_after`; `rounds`
    /// reaches the task.
    pub(crate) fn new(
        fallback: u32,
        stale_after: Duration,
        rounds: tokio::sync::mpsc::UnboundedSender<Flush>,
    ) -> Self {
        Shared {
            origin: quanta::Instant::now(),
            fresh_until: AtomicU64::new(0),
            stale_after: u64::try_from(stale_after.as_nanos()).unwrap_or(u64::MAX),
            instances: AtomicU32::new(fallback.max(1)),
            connected: AtomicBool::new(false),
            handed: Handed::default(),
            rounds,
        }
    }

    /// 1 while Redis's last answer holds at `now`, otherwise the instances.
    #[inline]
    pub(crate) fn share(&self, now: u64) -> u32 {
        if now < self.fresh_until.load(Ordering::Relaxed) {
            1
        } else {
            self.instances.load(Ordering::Relaxed)
        }
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
            .fetch_add(i64::from(units.get()), Ordering::SeqCst);
        if !budget.watched.load(Ordering::SeqCst) {
            self.watch(state, budget);
        }
    }

    /// Hands `budget` to the task unless it holds it.
    #[cold]
    pub(super) fn watch(&self, state: &Arc<State>, budget: &Arc<Budget>) {
        if !budget.watched.swap(true, Ordering::SeqCst) {
            self.handed
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((Arc::clone(state), Arc::clone(budget)));
        }
    }

    /// Takes back `units` of a request an inner layer refused (reported
    /// as a refund if the units went to Redis meanwhile).
    pub(super) fn given_back(budget: &Budget, units: NonZeroU32) {
        budget
            .pending
            .fetch_sub(i64::from(units.get()), Ordering::SeqCst);
    }

    /// Has the task run a round now; answers whether Redis took it.
    pub(crate) async fn flush(&self) -> bool {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.rounds.send(reply).is_ok() && answer.await.unwrap_or(false)
    }

    /// What the task holds to take the budgets handed over.
    pub(crate) fn handed(&self) -> Handed {
        self.handed.clone()
    }

    /// Redis answered part of a round: the full limits hold a while longer,
    /// if Redis counted as reachable.
    pub(crate) fn still_answering(&self) {
        if self.connected.load(Ordering::Relaxed) {
            let until = self.now_nanos().saturating_add(self.stale_after);
            self.fresh_until.store(until, Ordering::Relaxed);
        }
    }

    /// Redis answered a round (with `instances` running): the full limits
    /// hold until the answer is stale.
    pub(crate) fn answered(&self, instances: u32) {
        self.instances.store(instances.max(1), Ordering::Relaxed);
        self.connected.store(true, Ordering::Relaxed);
        let until = self.now_nanos().saturating_add(self.stale_after);
        self.fresh_until.store(until, Ordering::Relaxed);
    }

    /// Redis did not answer: from now on each instance admits its share of
    /// `instances`.
    pub(crate) fn unreachable(&self, instances: u32) {
        self.instances.store(instances.max(1), Ordering::Relaxed);
        self.connected.store(false, Ordering::Relaxed);
        self.fresh_until.store(0, Ordering::Relaxed);
    }

    /// Whether the full limits hold now (Redis answered, recently), and the
    /// instance count.
    pub(crate) fn status(&self) -> (bool, u32) {
        let fresh = self.share(self.now_nanos()) == 1 && self.connected.load(Ordering::Relaxed);
        (fresh, self.instances.load(Ordering::Relaxed))
    }

    /// The limiter's clock now, in nanoseconds.
    pub(crate) fn now_nanos(&self) -> u64 {
        let elapsed = quanta::Instant::now().saturating_duration_since(self.origin);
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// This instance's total per quota key and month, kept by the task apart
/// from the budgets it watches: a budget released when idle and watched
/// again, or two budgets under one key (a plan change that kept the
/// limit's name), add to the same total rather than start it over. The
/// month before is kept too, for the units counted before it ended and
/// reported after ([`Watched::report`]).
#[derive(Default)]
pub(crate) struct Totals {
    month: u32,
    by_key: HashMap<String, u64>,
    previous: (u32, HashMap<String, u64>),
}

impl Totals {
    /// Makes a quota `report`'s units this instance's total for its key.
    pub(crate) fn add(&mut self, report: &mut Report) {
        if report.kind != "m" {
            return;
        }
        if report.month > self.month {
            // A new month: the one before it is kept for late reports.
            let current = std::mem::take(&mut self.by_key);
            self.previous = (self.month, current);
            self.month = report.month;
        }
        let Some(totals) = self.of(report.month) else {
            // A late report of a month this task moved past without
            // reporting to it: these units are its whole total there.
            report.units = report.taken.max(0);
            return;
        };
        let total = totals.entry(report.key.clone()).or_default();
        *total = total.saturating_add_signed(report.taken);
        report.units = i64::try_from(*total).unwrap_or(i64::MAX);
    }

    fn undo(&mut self, report: &Report) {
        if let Some(total) = self
            .of(report.month)
            .and_then(|totals| totals.get_mut(&report.key))
        {
            *total = total.saturating_add_signed(report.taken.saturating_neg());
        }
    }

    fn of(&mut self, month: u32) -> Option<&mut HashMap<String, u64>> {
        if month == self.month {
            Some(&mut self.by_key)
        } else if month == self.previous.0 {
            Some(&mut self.previous.1)
        } else {
            None
        }
    }
}

/// One budget the task reports.
pub(crate) struct Watched {
    state: Arc<State>,
    budget: Arc<Budget>,
    /// The Redis key (a quota's without its month).
    key: String,
    /// The month of a quota's last report.
    month: u32,
    idle_rounds: u32,
}

/// One budget's part of a round: its key, and the script's arguments.
pub(crate) struct Report {
    pub(crate) key: String,
    /// `r` for a rate, `m` for a quota.
    pub(crate) kind: &'static str,
    /// A rate's units to add (a refund if negative); a quota's total of
    /// this instance in the month.
    pub(crate) units: i64,
    /// A rate's microseconds per unit; a quota's seconds to keep its month.
    pub(crate) param: f64,
    /// The units taken from `pending` for this report.
    taken: i64,
    /// A quota's month.
    pub(super) month: u32,
    /// A quota's units counted before its month ended, reported after it:
    /// Redis's answer is the old month's, not to be written back.
    late: bool,
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

    #[cfg(test)]
    pub(crate) fn key_for_tests(&self) -> &str {
        &self.key
    }

    #[cfg(test)]
    pub(crate) fn watched_again_for_tests(&self, prefix: &str) -> Watched {
        Watched::new(prefix, Arc::clone(&self.state), Arc::clone(&self.budget))
    }

    #[cfg(test)]
    pub(crate) fn set_used_for_tests(&self, month: u32, used: u64) {
        self.budget
            .value
            .store(pack(month, used), Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn pending_for_tests(&self) -> i64 {
        self.budget.pending.load(Ordering::SeqCst)
    }

    /// An identity: the budget's address.
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.budget) as usize
    }

    /// Takes the units admitted since the last report. A quota's first
    /// report after its month ended also reports, for the month before,
    /// what this instance counted in it: the units pending beyond those
    /// its budget holds for the new month (no answer of the new month has
    /// been written to it yet, so those are this instance's own, give or
    /// take a unit being counted meanwhile). After an outage over more
    /// than one month's end, all of them count in the new month.
    pub(crate) fn report(&mut self, wall: SystemTime) -> (Report, Option<Report>) {
        let taken = self.budget.pending.swap(0, Ordering::SeqCst);
        match self.state.meter {
            Meter::Rate { interval, .. } => (
                Report {
                    key: self.key.clone(),
                    kind: "r",
                    units: taken,
                    param: interval as f64 / 1_000.0,
                    taken,
                    month: 0,
                    late: false,
                },
                None,
            ),
            Meter::Monthly { .. } => {
                let (month, next) = month_of(wall);
                let value = self.budget.value.load(Ordering::Relaxed);
                // The month of the last report; for a budget not reported
                // yet, the one its value was counted in.
                let before = match self.month {
                    0 => month_in(value),
                    reported => reported,
                };
                let (taken, late) = if before + 1 == month && taken > 0 {
                    let own = i64::try_from(used_in(value, month)).unwrap_or(i64::MAX);
                    let now = taken.min(own);
                    (now, taken - now)
                } else {
                    (taken, 0)
                };
                let report = |month, taken, keep: Duration, late| Report {
                    key: format!("{}:{month}", self.key),
                    kind: "m",
                    // The task's [`Totals`] makes it this instance's total.
                    units: taken,
                    param: keep.as_secs() as f64,
                    taken,
                    month,
                    late,
                };
                let keep = next.duration_since(wall).unwrap_or_default() + MONTH_GRACE;
                let late = (late > 0).then(|| report(before, late, MONTH_GRACE, true));
                (report(month, taken, keep, false), late)
            }
        }
    }

    /// Writes back what Redis answered to `report`: a rate's microseconds
    /// ahead of Redis's clock, a quota's units used in the month by all
    /// instances. `now` is the limiter's clock, `wall` the calendar.
    pub(crate) fn apply(&mut self, report: &Report, answer: i64, now: u64, wall: SystemTime) {
        let since = self.budget.pending.load(Ordering::SeqCst);
        let answer = u64::try_from(answer).unwrap_or(0);
        self.idle_rounds = if report.taken == 0 {
            self.idle_rounds + 1
        } else {
            0
        };
        match self.state.meter {
            Meter::Rate { interval, .. } => {
                let ahead = answer
                    .saturating_mul(1_000)
                    .saturating_add_signed(since.saturating_mul(interval as i64));
                self.budget
                    .value
                    .store(now.saturating_add(ahead), Ordering::Relaxed);
                if answer > 0 {
                    self.idle_rounds = 0;
                }
            }
            Meter::Monthly { .. } if !report.late => {
                // Reported in this month: from now on, a later month's
                // first report finds what was counted before it.
                self.month = report.month;
                let month = month_of(wall).0;
                if month == report.month {
                    // Never below what this instance counted: a Redis that
                    // lost the month must not make it count again.
                    let shared = answer.saturating_add_signed(since);
                    let _ = self.budget.value.fetch_update(
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                        |current| Some(pack(month, used_in(current, month).max(shared))),
                    );
                }
            }
            Meter::Monthly { .. } => {}
        }
    }

    /// Redis did not take `report`, or its answer was lost (it may have
    /// run): a quota's units go back for the next round, which sets the
    /// total again (`totals` forgets them); a rate's are dropped, as adding
    /// them again could count them twice.
    pub(crate) fn failed(&mut self, report: &Report, totals: &mut Totals) {
        if report.kind == "m" {
            // The round may have run: the next one reports these units in
            // the same month (a late one, if the month has ended by then).
            self.month = match self.month {
                0 => report.month,
                reported => reported.min(report.month),
            };
            totals.undo(report);
            self.budget
                .pending
                .fetch_add(report.taken, Ordering::SeqCst);
        }
    }

    /// A round with Redis unreachable, at `now` on the limiter's clock and
    /// with this instance's `share`: a rate keeps no more pending units
    /// than are still ahead of `now`, so that what it admits meanwhile
    /// reaches Redis when it answers again, and what has come back since
    /// does not.
    pub(crate) fn unreported(&self, now: u64, share: u32) {
        if let Meter::Rate { interval, .. } = self.state.meter {
            let ahead = self
                .budget
                .value
                .load(Ordering::Relaxed)
                .saturating_sub(now);
            let per_unit = interval.saturating_mul(u64::from(share)).max(1);
            let left = i64::try_from(ahead.div_ceil(per_unit)).unwrap_or(i64::MAX);
            let _ =
                self.budget
                    .pending
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |pending| {
                        (pending > left).then_some(left)
                    });
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
        if self.budget.pending.load(Ordering::SeqCst) != 0
            && !self.budget.watched.swap(true, Ordering::SeqCst)
        {
            return false;
        }
        true
    }
}
