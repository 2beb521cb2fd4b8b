//! A per-thread front for the credential cache: each thread keeps its own
//! copy of the answers it gave last, found or not found, so that a hot key's
//! hits (and a flood of one bad token) read neither moka nor a reference count
//! that other threads write.
//!
//! Entries are keyed by a [`Key`], a MAC of the token that costs half its
//! SHA-256; the digest is computed only when the front has no answer. The
//! table is set-associative (256 sets of 4 ways), and a way goes to the key
//! asked for most: each hit earns its entry a credit (at most 16), each
//! request for a key the set lacks spends one of its least-credited entry's,
//! and only an entry without credit is replaced, so a cold key cannot hold a
//! hot key's way for its whole lifetime.
//!
//! Correctness rests on two facts. An entry expires before the moka entry it
//! copies does (see [`Deadline`]; moka's entries are checked against their
//! own expiry on every read). And an entry carries the cache's
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

/// Sets per thread, and entries per set: 1,024 entries, which hold the
/// answers for the top of skewed traffic (Zipf(1.0) over 100,000 keys: the
/// top 1,024 keys carry 62 % of the requests). A key has one set, chosen by
/// its low bits (uniform: it is a MAC), and any of the set's ways, so hot
/// keys clash only when five of them share a set.
const SETS: usize = 256;
pub(super) const WAYS: usize = 4;

/// The most credit an entry can hold: an entry gone cold gives its way up
/// after at most this many requests for other keys of its set.
const MAX_CREDIT: u32 = 16;

struct Slot {
    /// Which `CachedStore` the entry belongs to; `EMPTY` for none.
    store: u64,
    key: Key,
    /// The epoch of the entry's kind.
    epoch: u64,
    deadline: Deadline,
    answer: Cached,
    /// Earned by each hit, spent by requests for keys the set lacks while
    /// this is its least-credited entry; at none, such a request takes the
    /// way. So ways go to the keys asked for most, not to the first ones
    /// seen: under skewed traffic over many keys, hot keys keep their copies.
    credit: Cell<u32>,
}

/// The `store` of a way that holds nothing (no `CachedStore` has this id).
const EMPTY: u64 = u64::MAX;

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
    fn empty() -> Self {
        Slot {
            store: EMPTY,
            key: Key(0),
            epoch: 0,
            deadline: Deadline(clock().now()),
            answer: Cached::NotFound,
            credit: Cell::new(0),
        }
    }

    fn epoch_is(&self, epochs: Epochs) -> bool {
        self.epoch == epochs.of(&self.answer)
    }

    /// Whether this way holds `store`'s current answer for `key`.
    #[inline]
    fn answers(&self, store: u64, key: &Key, epochs: Epochs) -> bool {
        self.store == store && self.key == *key && self.epoch_is(epochs) && !self.deadline.passed()
    }

    /// Whether the entry may still be served: not empty, not expired, and,
    /// if it is `store`'s, of the current epoch (another store's epochs are
    /// not known here; its deadline bounds it).
    fn is_live(&self, store: u64, epochs: Epochs) -> bool {
        self.store != EMPTY
            && !self.deadline.passed()
            && (self.store != store || self.epoch_is(epochs))
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
/// the entry expires. What comes after the deadline is answered by the
/// cache's read of the entry, which checks its exact expiry.
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
    static FRONT: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// The ways of `key`'s set in the table.
pub(super) fn set_of(key: &Key) -> std::ops::Range<usize> {
    // The low bits of a MAC are as uniform as the rest.
    let set = (key.0 as usize) % SETS;
    set * WAYS..(set + 1) * WAYS
}

/// This thread's copy of the answer for `key`, if it is current; `None`:
/// ask moka.
#[inline]
pub(super) fn get(store: u64, key: &Key, epochs: Epochs) -> Option<Cached> {
    FRONT
        .try_with(|front| {
            let front = front.try_borrow().ok()?;
            let slot = front
                .get(set_of(key))?
                .iter()
                .find(|slot| slot.answers(store, key, epochs))?;
            slot.credit.set((slot.credit.get() + 1).min(MAX_CREDIT));
            Some(slot.answer.clone())
        })
        .ok()
        .flatten()
}

/// Keeps a copy of an answer for this thread, in its set's way that holds
/// the key already, or a free one, or the least-credited one once it has no
/// credit left. A credential is copied (but for its plan's shared
/// entitlements), once per thread and key, so that threads do not share its
/// reference count.
pub(super) fn put(store: u64, key: &Key, epochs: Epochs, deadline: Deadline, answer: &Cached) {
    let _ = FRONT.try_with(|front| {
        let Ok(mut front) = front.try_borrow_mut() else {
            return;
        };
        if front.is_empty() {
            front.resize_with(SETS * WAYS, Slot::empty);
        }
        let Some(ways) = front.get_mut(set_of(key)) else {
            return;
        };
        let way = match ways
            .iter()
            .position(|s| (s.store == store && s.key == *key) || !s.is_live(store, epochs))
        {
            Some(way) => way,
            None => {
                // Every way holds a live entry of another key. The one with
                // the least credit pays one for this request, and gives its
                // way up only when it has none: keys asked for alike do not
                // take ways from each other (which would copy a credential
                // on every request), and those asked for more keep them.
                let (way, coldest) = ways
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.credit.get())
                    .map(|(way, s)| (way, s.credit.get()))
                    .unwrap_or_default();
                if coldest > 0 {
                    ways[way].credit.set(coldest - 1);
                    return;
                }
                way
            }
        };
        ways[way] = Slot {
            store,
            key: *key,
            epoch: epochs.of(answer),
            deadline,
            answer: match answer {
                Cached::Found(credential) => Cached::Found(Arc::new(Credential::clone(credential))),
                Cached::NotFound => Cached::NotFound,
            },
            credit: Cell::new(1),
        };
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
    fn ways_go_to_the_keys_asked_for_most() {
        use crate::credential::CredentialKind;
        // Keys that share one set.
        let first = Key::of(b"token-0");
        let keys: Vec<Key> = (0..)
            .map(|i| Key::of(format!("token-{i}").as_bytes()))
            .filter(|k| set_of(k) == set_of(&first))
            .take(WAYS + 1 + 200)
            .collect();
        let (store, epochs) = (
            u64::MAX - 7,
            Epochs {
                found: 0,
                not_found: 0,
            },
        );
        let put = |key: &Key| {
            let credential = Credential::new("id", "ws", CredentialKind::ApiKey);
            let found = Cached::Found(Arc::new(credential));
            put(
                store,
                key,
                epochs,
                Deadline::after(Duration::from_secs(60)),
                &found,
            );
        };
        let holds = |key: &Key| get(store, key, epochs).is_some();

        // The set's ways fill up; a hit each: credit 2 each.
        for key in &keys[..WAYS] {
            put(key);
            assert!(holds(key));
        }
        // A newcomer drains the least-credited entry (the first of equals)
        // before it takes that way.
        let newcomer = &keys[WAYS];
        put(newcomer); // 1
        put(newcomer); // 0
        assert!(
            !holds(newcomer),
            "the set's entries keep their ways while they have credit"
        );
        put(newcomer);
        assert!(holds(newcomer), "asked for more, it took a way");
        assert!(!holds(&keys[0]), "from the least-credited entry");
        assert!(keys[1..WAYS].iter().all(&holds), "the others kept theirs");

        // A hot key keeps its way through a flood of keys seen once.
        for _ in 0..100 {
            assert!(holds(&keys[1]));
        }
        for key in &keys[WAYS + 1..] {
            put(key);
        }
        assert!(holds(&keys[1]));
        // And one entry of this store's dropped epoch is a free way.
        let later = Epochs {
            found: 1,
            not_found: 0,
        };
        assert!(get(store, &keys[1], later).is_none());
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
