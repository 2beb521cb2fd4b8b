//! A per-thread front for the credential cache: each thread keeps its own
//! copy of the credentials it served last, so that a hot key's hits read
//! neither moka nor a reference count that other threads write.
//!
//! Correctness rests on two facts. An entry expires exactly when the moka
//! entry it copies does (the same `Instant`). And an entry carries the cache's
//! `found_epoch` as it was read *before* the moka lookup that produced it;
//! every invalidation bumps that epoch before it touches moka, so after an
//! `invalidate*` call returns, no thread serves an entry from before it: the
//! epoch differs, and the lookup falls through to moka.

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
    epoch: u64,
    expires: Instant,
    credential: Arc<Credential>,
}

thread_local! {
    static FRONT: RefCell<Vec<Option<Slot>>> = const { RefCell::new(Vec::new()) };
}

fn slot_of(hash: &TokenHash) -> usize {
    usize::from(hash.as_bytes()[0]) % SLOTS
}

/// This thread's copy of the credential for `hash`, if it is current.
#[inline]
pub(super) fn get(store: u64, hash: &TokenHash, epoch: u64) -> Option<Arc<Credential>> {
    FRONT
        .try_with(|front| {
            let front = front.try_borrow().ok()?;
            let slot = front.get(slot_of(hash))?.as_ref()?;
            (slot.store == store
                && slot.epoch == epoch
                && slot.hash == *hash
                && Instant::now() < slot.expires)
                .then(|| Arc::clone(&slot.credential))
        })
        .ok()
        .flatten()
}

/// Keeps a copy of `credential` for this thread, unless its slot holds a live
/// entry of another key. The copy is deep, made once per thread and key, so
/// that threads do not share its reference count.
pub(super) fn put(
    store: u64,
    hash: &TokenHash,
    epoch: u64,
    expires: Instant,
    credential: &Credential,
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
            s.store == store && s.epoch == epoch && s.hash != *hash && now < s.expires
        }) {
            return;
        }
        *slot = Some(Slot {
            store,
            hash: *hash,
            epoch,
            expires,
            credential: Arc::new(credential.clone()),
        });
    });
}
