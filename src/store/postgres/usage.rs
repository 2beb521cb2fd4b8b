//! `last_used_at`, recorded off the request path.

use std::sync::Arc;
use std::time::Duration;

use super::PgCredentialStore;
use crate::credential::Credential;
use crate::store::UsageRecorder;

/// Batches `last_used_at` updates off the request path; see
/// [`PgCredentialStore::spawn_usage_recorder`]. Give it to
/// [`GateBuilder::usage_recorder`](crate::gate::GateBuilder::usage_recorder).
/// Dropping every clone stops the flusher after a last flush.
#[derive(Clone, Debug)]
pub struct PgUsageRecorder {
    queue: tokio::sync::mpsc::Sender<Arc<Credential>>,
}

impl UsageRecorder for PgUsageRecorder {
    fn record(&self, credential: &Arc<Credential>) {
        // Never waits: when the queue is full the use is not recorded, and
        // the key's next use will be.
        let _ = self.queue.try_send(Arc::clone(credential));
    }
}

/// Uses queued before the flusher drops what it cannot take.
const USAGE_QUEUE: usize = 4096;

impl PgCredentialStore {
    /// Starts a task that sets `last_used_at` for the keys used since its
    /// last flush, every `every`, in one `UPDATE`; returns the recorder to
    /// give the gate. Requests never wait for it; under extreme load a use
    /// may go unrecorded (the next one is recorded). Needs a Tokio runtime.
    pub fn spawn_usage_recorder(&self, every: Duration) -> PgUsageRecorder {
        let (queue, mut uses) = tokio::sync::mpsc::channel::<Arc<Credential>>(USAGE_QUEUE);
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let mut used: std::collections::HashSet<String> = std::collections::HashSet::new();
            loop {
                tokio::time::sleep(every).await;
                let closed = loop {
                    match uses.try_recv() {
                        Ok(credential) => {
                            if !used.contains(credential.id()) {
                                used.insert(credential.id().to_owned());
                            }
                        }
                        Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break false,
                        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => break true,
                    }
                };
                if !used.is_empty() {
                    let ids: Vec<String> = used.drain().collect();
                    let _result = sqlx::query(
                        "UPDATE scopegate_api_keys SET last_used_at = now() WHERE id = ANY($1)",
                    )
                    .bind(&ids)
                    .execute(&pool)
                    .await;
                    #[cfg(feature = "tracing")]
                    if let Err(error) = _result {
                        tracing::warn!(target: "scopegate::store", %error, keys = ids.len(), "last_used_at not recorded");
                    }
                }
                if closed {
                    return;
                }
            }
        });
        PgUsageRecorder { queue }
    }
}
