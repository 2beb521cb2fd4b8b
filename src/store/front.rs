//! A per-thread front for the credential cache: each thread keeps its own
//! copy of the answers it gave last, found or not found, so that a hot key's
//! hits (and a flood of one bad token) read neither moka nor a reference count
//! that other threads write.
//!
//! Correctness rests on two facts. An entry expires before the moka entry it
//! copies (see [`Deadline`]). And an entry carries the cache's
//! epoch for its kind (`found_epoch` or `not_found_epoch`) as it was read
//! *before* the moka lookup that produced it; every invalidation bumps the
//! epoch again *after* moka stops returning the entry. A copy of the old
//! entry was read from moka before that, so its epoch predates the bump:
//! after an `invalidate*` call returns, no thread serves it, and the lookup
//! falls through to moka.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::credential::{Credential, TokenHash};

/// Entries per thread. The table is direct-mapped by the token hash, which is
/// uniform, so hot keys rarely share a slot; a clash only costs a moka read.
const SLOTS: usize = 64;

struct Slot {
    /// Which `CachedStore` the entry belongs to.
    store: u64,
    hash: TokenHash,
    /// The epoch of the entry's kind.
    epoch: u64,
    deadline: Deadline,
    /// `None`: the store said "not found".
    credential: Option<Arc<Credential>>,
}

/// The cache's epochs, read before its moka lookups.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Epochs {
    pub(super) found: u64,
    pub(super) not_found: u64,
}

impl Slot {
    fn epoch_is(&self, epochs: Epochs) -> bool {
        let current = match self.credential {
            Some(_) => epochs.found,
            None => epochs.not_found,
        };
        self.epoch == current
    }
}

/// When a front copy stops being served, on the `quanta` clock: the TSC
/// where it is invariant (read in a few ns, where `Instant::now` costs
/// ~25 ns, a tenth of a hit), else the monotonic clock.
///
/// A deadline is taken *before* the moka entry's own expiry is computed, and
/// falls a 64th of the lifetime short of it, so that a TSC whose rate was
/// calibrated with an error under 1.5 % still stops serving the copy before
/// moka drops the entry. What comes after the deadline is answered by moka,
/// which is exact.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(quanta::Instant);

impl Deadline {
    /// The deadline for an entry that moka keeps for `lifetime` from now.
    pub(crate) fn after(lifetime: Duration) -> Self {
        Deadline(clock().now() + (lifetime - lifetime / 64))
    }

    fn passed(self) -> bool {
        clock().now() >= self.0
    }
}

/// The process's `quanta` clock. The first call calibrates the TSC against
/// the monotonic clock (up to 200 ms), so `CachedStore::build` makes it.
pub(crate) fn clock() -> &'static quanta::Clock {
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

thread_local! {
    static FRONT: RefCell<Vec<Option<Slot>>> = const { RefCell::new(Vec::new()) };
}

fn slot_of(hash: &TokenHash) -> usize {
    usize::from(hash.as_bytes()[0]) % SLOTS
}

/// This thread's copy of the answer for `hash`, if it is current:
/// `Some(Some(_))` found, `Some(None)` not found, `None` ask moka.
#[inline]
pub(super) fn get(store: u64, hash: &TokenHash, epochs: Epochs) -> Option<Option<Arc<Credential>>> {
    FRONT
        .try_with(|front| {
            let front = front.try_borrow().ok()?;
            let slot = front.get(slot_of(hash))?.as_ref()?;
            (slot.store == store
                && slot.hash == *hash
                && slot.epoch_is(epochs)
                && !slot.deadline.passed())
            .then(|| slot.credential.clone())
        })
        .ok()
        .flatten()
}

/// Keeps a copy of an answer (`None`: not found) for this thread, unless its
/// slot holds a live entry of another key. A credential is copied deeply,
/// once per thread and key, so that threads do not share its reference count.
pub(super) fn put(
    store: u64,
    hash: &TokenHash,
    epochs: Epochs,
    deadline: Deadline,
    credential: Option<&Credential>,
) {
    let _ = FRONT.try_with(|front| {
        let Ok(mut front) = front.try_borrow_mut() else {
            return;
        };
        if front.is_empty() {
            front.resize_with(SLOTS, || None);
        }
        let Some(slot) = front.get_mut(slot_of(hash)) else {
            return;
        };
        // A slot held by a live entry of another key stays: two hot keys in
        // one slot would otherwise copy a credential on every request.
        if slot.as_ref().is_some_and(|s| {
            s.store == store && s.hash != *hash && s.epoch_is(epochs) && !s.deadline.passed()
        }) {
            return;
        }
        *slot = Some(Slot {
            store,
            hash: *hash,
            epoch: match credential {
                Some(_) => epochs.found,
                None => epochs.not_found,
            },
            deadline,
            credential: credential.map(|c| Arc::new(c.clone())),
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_passes_before_the_lifetime_it_was_given() {
        // A long lifetime has not passed at once.
        assert!(!Deadline::after(Duration::from_secs(60)).passed());
        // After sleeping the whole lifetime (sleeps never end early), the
        // deadline, a 64th short of it, has passed: the TSC is not slower
        // than the monotonic clock by the margin.
        let lifetime = Duration::from_millis(64);
        let deadline = Deadline::after(lifetime);
        std::thread::sleep(lifetime);
        assert!(deadline.passed());
        // A zero lifetime has passed at once.
        assert!(Deadline::after(Duration::ZERO).passed());
    }
}
