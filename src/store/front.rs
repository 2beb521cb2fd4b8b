//! A per-thread front for the credential cache: each thread keeps its own
//! copy of the answers it gave last, found or not found, so that a hot key's
//! hits (and a flood of one bad token) read neither moka nor a reference count
//! that other threads write.
//!
//! Correctness rests on two facts. An entry expires no later than the moka
//! entry it copies (the same `Instant` for found credentials; one taken just
//! before moka's insert for "not found"). And an entry carries the cache's
//! epoch for its kind (`found_epoch` or `not_found_epoch`) as it was read
//! *before* the moka lookup that produced it; every invalidation bumps the
//! epoch again *after* moka stops returning the entry. A copy of the old
//! entry was read from moka before that, so its epoch predates the bump:
//! after an `invalidate*` call returns, no thread serves it, and the lookup
//! falls through to moka.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

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
    expires: Instant,
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
                && Instant::now() < slot.expires)
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
    expires: Instant,
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
        let now = Instant::now();
        if slot.as_ref().is_some_and(|s| {
            s.store == store && s.hash != *hash && s.epoch_is(epochs) && now < s.expires
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
            expires,
            credential: credential.map(|c| Arc::new(c.clone())),
        });
    });
}
