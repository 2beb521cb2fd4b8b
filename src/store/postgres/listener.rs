//! Push invalidation: each instance listens for the migrations'
//! notifications and applies them to its cache.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

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
    heartbeats_missed: AtomicU64,
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

    /// How many times a connection was given up because it answered no
    /// heartbeat (it hung half-open).
    pub fn heartbeats_missed(&self) -> u64 {
        self.state.heartbeats_missed.load(Ordering::SeqCst)
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
    /// A connection that hangs half-open (a partition that drops packets and
    /// sends no reset) is noticed by a heartbeat: after `fallback` without a
    /// notification the listener sends `SELECT 1`, and gives the connection
    /// up if no answer comes within `fallback` more. Such a partition is
    /// therefore noticed within 2 × `fallback`, and the revocation bound
    /// during one is 2 × `fallback` too. The heartbeat costs one query per
    /// `fallback` on an idle connection.
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
        let state = Arc::new(ListenerState::default());
        let task = tokio::spawn(listen(options, cache, fallback, Arc::clone(&state)));
        InvalidationListener { state, task }
    }
}

async fn listen<S: CredentialStore>(
    options: PgConnectOptions,
    cache: CachedStore<S>,
    fallback: Duration,
    state: Arc<ListenerState>,
) {
    loop {
        // A pool of its own for each connection, so that a dead one is
        // never handed back; and a bounded wait for it, so that the cache
        // keeps being dropped every `fallback` while the server is
        // unreachable, even when packets to it vanish without an answer.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(fallback)
            .connect_lazy_with(options.clone());
        let connect = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            // A lost connection must be reported at once, not after sqlx has
            // tried to reconnect: while the server is down, that try waits
            // for the pool's whole acquire timeout, and a server shut down
            // for a restart went unnoticed for that long. This loop makes a
            // new listener, and drops the cache once it is listening.
            listener.eager_reconnect(false);
            listener.listen(INVALIDATION_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match tokio::time::timeout(fallback, connect).await {
            Ok(Ok(listener)) => listener,
            _failed => {
                #[cfg(feature = "tracing")]
                {
                    let why = match _failed {
                        Ok(Err(error)) => error.to_string(),
                        _ => format!("no answer within {fallback:?}"),
                    };
                    tracing::warn!(target: "scopegate::store", error = %why, "invalidation listener cannot connect; dropping the cache every {fallback:?}");
                }
                cache.invalidate_all();
                tokio::time::sleep(fallback).await;
                continue;
            }
        };
        // Whatever happened while not listening is unknown: start afresh.
        cache.invalidate_all();
        state.connected.store(true, Ordering::SeqCst);
        state.reconnects.fetch_add(1, Ordering::SeqCst);
        loop {
            // Notifications, or after `fallback` without any, a heartbeat:
            // a connection that hangs half-open (a partition that sends no
            // reset) answers neither, and is given up within 2 × `fallback`.
            match tokio::time::timeout(fallback, listener.try_recv()).await {
                Ok(Ok(Some(notification))) => {
                    apply(&cache, notification.payload()).await;
                    state.applied.fetch_add(1, Ordering::SeqCst);
                }
                // `None` or `Err`: the connection was lost or failed.
                Ok(_) => break,
                Err(_idle) => {
                    let ping = sqlx::query("SELECT 1").execute(&mut listener);
                    if !matches!(tokio::time::timeout(fallback, ping).await, Ok(Ok(_))) {
                        state.heartbeats_missed.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                }
            }
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
