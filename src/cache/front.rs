//! A per-thread front for the credential cache: each thread keeps its own
//! copy of the answers it gave last, found or not found, so that a hot key's
//! hits (and a flood of one bad token) read neither moka nor a reference count
//! that other threads write.
//!
//! Entries are keyed by a [`Key`], a MAC of the token that costs half its
//! SHA-256; the digest is computed only when the front has no answer. A slot
//! goes to the key asked for most: each hit earns its entry a credit (at
//! most 16), each request for another key of the slot spends one, and only
//! an entry without credit is replaced, so a cold key cannot hold a hot
//! key's slot for its whole lifetime.
//!
//! Correctness rests on two facts. An entry expires before the moka entry it
//! copies (see [`Deadline`]). And an entry carries the cache's
//! epoch for its kind (`found_epoch` or `not_found_epoch`) as it was read
//! *before* the moka lookup that produced it; every invalidation bumps the
//! epoch again *after* moka stops returning the entry. A copy of the old
//! entry was read from moka before that, so its epoch predates the bump:
//! after an `invalidate*` call returns, no thread serves it, and the lookup
//! falls through to moka.

use std::cell::{Cell, RefCell};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use siphasher::sip128::{Hasher128, SipHasher24};

use crate::credential::Credential;

/// Entries per thread. The table is direct-mapped by the key, which is
/// uniform, so hot tokens rarely share a slot; a clash only costs a moka read.
const SLOTS: usize = 64;

/// The most credit a slot's entry can hold: an entry gone cold gives its
/// slot up after at most this many requests for other keys of the slot.
const MAX_CREDIT: u32 = 16;

struct Slot {
    /// Which `CachedStore` the entry belongs to.
    store: u64,
    key: Key,
    /// The epoch of the entry's kind.
    epoch: u64,
    deadline: Deadline,
    answer: Cached,
    /// Earned by each hit, spent by each request for another key of this
    /// slot; at none, such a request takes the slot. So the slot goes to the
    /// key that is asked for most, not to the first one seen: under skewed
    /// traffic over many keys, hot keys keep their copies.
    credit: Cell<u32>,
}

/// An answer the cache gives without calling the store.
#[derive(Clone, Debug)]
pub(crate) enum Cached {
    /// The token stands for this credential.
    Found(Arc<Credential>),
    /// The store said "not found": unknown, revoked or expired.
    NotFound,
}

impl Cached {
    /// The credential, if found.
    pub(crate) fn found(self) -> Option<Arc<Credential>> {
        match self {
            Cached::Found(credential) => Some(credential),
            Cached::NotFound => None,
        }
    }
}

/// A cache's invalidation epochs, one per kind of answer, as read at one
/// moment (before its moka lookups): every invalidation moves on the epoch
/// of what it drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Epochs {
    pub(super) found: u64,
    pub(super) not_found: u64,
}

impl Epochs {
    /// The epoch of `answer`'s kind.
    fn of(self, answer: &Cached) -> u64 {
        match answer {
            Cached::Found(_) => self.found,
            Cached::NotFound => self.not_found,
        }
    }
}

impl Slot {
    fn epoch_is(&self, epochs: Epochs) -> bool {
        self.epoch == epochs.of(&self.answer)
    }
}

/// What the front is keyed by: SipHash-2-4 of the token, 128 bits, under a
/// key drawn at random once per process (40 ns for an API key, where its
/// SHA-256 takes 80 ns).
///
/// SipHash-2-4 is a MAC. Serving a token another token's answer would take
/// a collision with it under a secret key nobody outside the process can
/// read: a chance of 2⁻¹²⁸ per attempt. Like the SHA-256 digest, a `Key`
/// tells nothing about the token, and it is worthless outside this process.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key(u128);

impl Key {
    /// The key of `token`.
    #[inline]
    pub(crate) fn of(token: &[u8]) -> Key {
        let &(k0, k1) = secret();
        let mut mac = SipHasher24::new_with_keys(k0, k1);
        mac.write(token);
        Key(mac.finish128().as_u128())
    }
}

/// The process's SipHash key: 128 bits from the standard library's
/// randomly seeded `RandomState` (seeded from the OS's generator).
fn secret() -> &'static (u64, u64) {
    static SECRET: OnceLock<(u64, u64)> = OnceLock::new();
    SECRET.get_or_init(|| {
        let draw = |n: u64| std::collections::hash_map::RandomState::new().hash_one(n);
        (draw(0), draw(1))
    })
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

pub(super) fn slot_of(key: &Key) -> usize {
    // The low bits of a MAC are as uniform as the rest.
    (key.0 as usize) % SLOTS
}

/// This thread's copy of the answer for `key`, if it is current; `None`:
/// ask moka.
#[inline]
pub(super) fn get(store: u64, key: &Key, epochs: Epochs) -> Option<Cached> {
    FRONT
        .try_with(|front| {
            let front = front.try_borrow().ok()?;
            let slot = front.get(slot_of(key))?.as_ref()?;
            let current = slot.store == store
                && slot.key == *key
                && slot.epoch_is(epochs)
                && !slot.deadline.passed();
            current.then(|| {
                slot.credit.set((slot.credit.get() + 1).min(MAX_CREDIT));
                slot.answer.clone()
            })
        })
        .ok()
        .flatten()
}

/// Keeps a copy of an answer for this thread, unless its slot holds a live
/// entry of another key. A credential is copied deeply, once per thread and
/// key, so that threads do not share its reference count.
pub(super) fn put(store: u64, key: &Key, epochs: Epochs, deadline: Deadline, answer: &Cached) {
    let _ = FRONT.try_with(|front| {
        let Ok(mut front) = front.try_borrow_mut() else {
            return;
        };
        if front.is_empty() {
            front.resize_with(SLOTS, || None);
        }
        let Some(slot) = front.get_mut(slot_of(key)) else {
            return;
        };
        // A live entry of another key keeps its slot while it has credit,
        // and pays one for this request: two keys asked for alike do not
        // take the slot from each other (which would copy a credential on
        // every request), and the one asked for more keeps it.
        if let Some(incumbent) = slot.as_ref().filter(|s| {
            s.store == store && s.key != *key && s.epoch_is(epochs) && !s.deadline.passed()
        }) {
            let credit = incumbent.credit.get();
            if credit > 0 {
                incumbent.credit.set(credit - 1);
                return;
            }
        }
        *slot = Some(Slot {
            store,
            key: *key,
            epoch: epochs.of(answer),
            deadline,
            answer: match answer {
                Cached::Found(credential) => Cached::Found(Arc::new(Credential::clone(credential))),
                Cached::NotFound => Cached::NotFound,
            },
            credit: Cell::new(1),
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_tell_tokens_apart_and_are_stable() {
        let token = b"ohk_demo_all_scopes";
        assert!(Key::of(token) == Key::of(token));
        assert!(Key::of(token) != Key::of(b"ohk_demo_all_scopez"));
        assert!(Key::of(b"") != Key::of(b"\0"));
        // Not a bare hash of the token: the secret key is mixed in.
        let mut unkeyed = SipHasher24::new_with_keys(0, 0);
        unkeyed.write(token);
        assert!(Key::of(token).0 != unkeyed.finish128().as_u128());
    }

    #[test]
    fn a_slot_goes_to_the_key_asked_for_most() {
        use crate::credential::CredentialKind;
        // Two tokens whose keys share a slot.
        let a = Key::of(b"token-a");
        let b = (0..)
            .map(|i| Key::of(format!("token-b{i}").as_bytes()))
            .find(|k| slot_of(k) == slot_of(&a) && *k != a)
            .unwrap();
        let (store, epochs) = (
            u64::MAX - 7,
            Epochs {
                found: 0,
                not_found: 0,
            },
        );
        let found =
            |id: &str| Cached::Found(Arc::new(Credential::new(id, "ws", CredentialKind::ApiKey)));
        let put = |key: &Key, id: &str| {
            put(
                store,
                key,
                epochs,
                Deadline::after(Duration::from_secs(60)),
                &found(id),
            );
        };
        let holds = |key: &Key| get(store, key, epochs).is_some();

        put(&a, "a");
        assert!(holds(&a)); // credit 2
        put(&b, "b"); // 1
        put(&b, "b"); // 0
        assert!(!holds(&b), "a keeps the slot while it has credit");
        assert!(holds(&a)); // 1: hit again, so b has to try again
        put(&b, "b"); // 0
        put(&b, "b");
        assert!(holds(&b), "b, asked for more, took the slot");
        assert!(!holds(&a));

        // An entry gone cold gives its slot up within MAX_CREDIT requests,
        // however often it was hit before.
        for _ in 0..100 {
            assert!(holds(&b));
        }
        for _ in 0..MAX_CREDIT {
            put(&a, "a");
            assert!(holds(&b) && !holds(&a));
            // (each check above earned b one credit back: spend it too)
            put(&a, "a");
        }
        put(&a, "a");
        assert!(holds(&a), "a took the slot back");
    }

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
