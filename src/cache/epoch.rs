//! The cache's invalidation epochs: the one piece of lock-free reasoning in
//! the crate, and the part of it that `loom` model-checks.
//!
//! A front copy (`front.rs`) carries the epoch of its kind as it was read
//! *before* the moka lookup that produced it, and is served only while that
//! is still the epoch. An invalidation bumps the epoch when it starts, so
//! that a store call under way cannot re-cache what it read before, and
//! again when it ends, after moka stops returning the entry: a copy made
//! from moka meanwhile read the epoch before that second bump, so once the
//! invalidation has returned no thread serves it. [`Epoch::invalidating`]
//! is both bumps, as a guard: the second runs when it drops, even if the
//! invalidation's future is dropped half-way.
//!
//! # The model
//!
//! `epoch::model` checks, for every interleaving, a thread that reads the
//! epoch, then moka (a mutex in the model: moka is linearizable per key),
//! and keeps a copy, against a thread that invalidates with this type.
//! Once `invalidating`'s guard has dropped, the copy is never served. It
//! fails if the guard does not bump when it drops (the bug the second bump
//! fixed). Run it with
//!
//! ```text
//! RUSTFLAGS="--cfg scopegate_loom" CARGO_TARGET_DIR=target/loom \
//!   cargo test --lib --no-default-features cache::epoch
//! ```
//!
//! (`.ci/run` does.) The name is the crate's own, not `loom`, so that
//! dependencies which know `cfg(loom)` are built as usual.

#[cfg(scopegate_loom)]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(scopegate_loom))]
use std::sync::atomic::{AtomicU64, Ordering};

/// One kind's invalidation epoch.
#[derive(Debug)]
pub(crate) struct Epoch(AtomicU64);

impl Epoch {
    pub(crate) fn new() -> Self {
        Epoch(AtomicU64::new(0))
    }

    /// The epoch now: read before a moka lookup.
    pub(crate) fn read(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Moves the epoch on once: a store call that straddled an
    /// invalidation has just dropped what it cached.
    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// Starts an invalidation: bumps now, and again when the guard drops.
    /// Drop it after moka no longer returns what is invalidated.
    #[must_use = "the second bump happens when the guard drops"]
    pub(crate) fn invalidating(&self) -> Invalidating<'_> {
        self.bump();
        Invalidating(self)
    }
}

/// An invalidation under way; see [`Epoch::invalidating`].
pub(crate) struct Invalidating<'a>(&'a Epoch);

impl Drop for Invalidating<'_> {
    fn drop(&mut self) {
        self.0.bump();
    }
}

#[cfg(all(test, scopegate_loom))]
mod model {
    use loom::sync::atomic::AtomicBool;
    use loom::sync::{Arc, Mutex};

    use super::*;

    /// A front copy: the epoch read before the moka read, and what it read.
    type Copy = Option<(u64, u32)>;

    /// Served only while its epoch is the epoch now, as `front::get` does.
    fn served(copy: Copy, epoch: &Epoch) -> Option<u32> {
        copy.filter(|(at, _)| *at == epoch.read()).map(|(_, v)| v)
    }

    #[test]
    fn no_front_copy_is_served_once_an_invalidation_has_returned() {
        loom::model(|| {
            let epoch = Arc::new(Epoch::new());
            let moka = Arc::new(Mutex::new(Some(7u32)));
            let returned = Arc::new(AtomicBool::new(false));

            let reader = {
                let (epoch, moka, returned) =
                    (Arc::clone(&epoch), Arc::clone(&moka), Arc::clone(&returned));
                loom::thread::spawn(move || {
                    // A front miss: the epoch first, then moka, then a copy.
                    let at = epoch.read();
                    let copy: Copy = moka.lock().unwrap().map(|v| (at, v));
                    // A later request on this thread.
                    if returned.load(Ordering::SeqCst) {
                        assert_eq!(
                            served(copy, &epoch),
                            None,
                            "served after invalidate returned"
                        );
                    }
                    copy
                })
            };
            {
                let _invalidating = epoch.invalidating();
                *moka.lock().unwrap() = None;
            }
            returned.store(true, Ordering::SeqCst);
            let copy = reader.join().unwrap();
            assert_eq!(
                served(copy, &epoch),
                None,
                "served after invalidate returned"
            );
        });
    }
}
