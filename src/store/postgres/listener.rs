//! Push invalidation: each instance listens for the migrations'
//! notifications and applies them to its cache.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::PgPool;

use super::PgCredentialStore;
use crate::cache::CachedStore;
use crate::credential::TokenHash;
use crate::store::CredentialStore;

/// The channel the migrations' triggers notify.
pub const INVALIDATION_CHANNEL: &str = "scopegate_invalidate";

/// What the invalidation listener reports through its handle.
#[derive(Debug, Default)]
struct ListenerState {
    connected: AtomicBool,
    reconnects: AtomicU64,
    applied: AtomicU64,
}

/// The running invalidation listener of one instance; see
/// [`PgCredentialStore::spawn_invalidation_listener`]. Dropping the handle
/// stops the listener.
#[derive(Debug)]
pub struct InvalidationListener {
    state: Arc<ListenerState>,
    task: tokio::task::JoinHandle<()>,
}

impl InvalidationListener {
    /// Whether the listener is connected: while it is, changes reach this
    /// instance's cache as soon as their transaction commits.
    pub fn is_connected(&self) -> bool {
        self.state.connected.load(Ordering::SeqCst)
    }

    /// How many times the listener has (re)connected.
    pub fn connections(&self) -> u64 {
        self.state.reconnects.load(Ordering::SeqCst)
    }

    /// How many notifications it has applied.
    pub fn applied(&self) -> u64 {
        self.state.applied.load(Ordering::SeqCst)
    }
}

impl Drop for InvalidationListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgCredentialStore {
    /// Starts this instance's invalidation listener: a task on a connection
    /// of its own (`application_name = scopegate-listener`) that applies the
    /// migrations' notifications to `cache`, so that a key revoked, a scope
    /// changed or a plan downgraded through any instance stops working on
    /// this one as soon as the change commits.
    ///
    /// If the connection drops, this instance cannot know what it missed: it
    /// invalidates its whole cache at once, and again every `fallback` until
    /// it is reconnected (then once more). The revocation bound is therefore
    /// the notification's delivery while connected, and `fallback` while not.
    ///
    /// Needs a Tokio runtime.
    pub fn spawn_invalidation_listener<S>(
        &self,
        cache: CachedStore<S>,
        fallback: Duration,
    ) -> InvalidationListener
    where
        S: CredentialStore + 'static,
    {
        let options = self
            .pool
            .connect_options()
            .as_ref()
            .clone()
            .application_name("scopegate-listener");
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(options);
        let state = Arc::new(ListenerState::default());
        let task = tokio::spawn(listen(pool, cache, fallback, Arc::clone(&state)));
        InvalidationListener { state, task }
    }
}

async fn listen<S: CredentialStore>(
    pool: PgPool,
    cache: CachedStore<S>,
    fallback: Duration,
    state: Arc<ListenerState>,
) {
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(INVALIDATION_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match listener.await {
            Ok(listener) => listener,
            Err(_error) => {
                #[cfg(feature = "tracing")]
                tracing::warn!(target: "scopegate::store", error = %_error, "invalidation listener cannot connect; dropping the cache every {fallback:?}");
                cache.invalidate_all();
                tokio::time::sleep(fallback).await;
                continue;
            }
        };
        // Whatever happened while not listening is unknown: start afresh.
        cache.invalidate_all();
        state.connected.store(true, Ordering::SeqCst);
        state.reconnects.fetch_add(1, Ordering::SeqCst);
        // `None` or `Err`: the connection was lost or failed.
        while let Ok(Some(notification)) = listener.try_recv().await {
            apply(&cache, notification.payload()).await;
            state.applied.fetch_add(1, Ordering::SeqCst);
        }
        state.connected.store(false, Ordering::SeqCst);
        #[cfg(feature = "tracing")]
        tracing::warn!(target: "scopegate::store", "invalidation listener disconnected; dropping the cache until it reconnects");
        cache.invalidate_all();
    }
}

/// Applies one notification to the cache.
async fn apply<S: CredentialStore>(cache: &CachedStore<S>, payload: &str) {
    match payload.split_once(':') {
        Some(("credential", id)) => cache.invalidate_credential(id),
        Some(("account", id)) => cache.invalidate_account(id),
        Some(("hash", hex)) => match TokenHash::from_hex(hex) {
            Ok(hash) => cache.invalidate_not_found(&hash).await,
            Err(_) => cache.invalidate_all(),
        },
        // Unknown: be safe.
        _ => cache.invalidate_all(),
    }
}
