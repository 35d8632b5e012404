//! What every store file uses: the transaction handle the engine and the
//! controller compose their changes in, id parsing and JSON encoding. No
//! store file imports another for these, so the files form no loop.

use sqlx::{Any, Transaction};

use super::{Store, StoreResult, corrupt};
use crate::domain::{ChatRef, Inbound, Outbound, RunId};

/// One open transaction. The store's table helpers take it, so a caller can
/// make several changes (wake a run, journal why, mark the update handled)
/// commit together or not at all. Dropped without [`Tx::commit`], it rolls
/// back.
///
/// On SQLite the pool has one connection: while a `Tx` is open, the same
/// task must not use the [`Store`] directly, or it waits for itself.
pub struct Tx {
    pub(super) inner: Transaction<'static, Any>,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").finish_non_exhaustive()
    }
}

impl Store {
    pub async fn begin(&self) -> StoreResult<Tx> {
        Ok(Tx {
            inner: self.pool.begin().await?,
        })
    }
}

impl Tx {
    pub async fn commit(self) -> StoreResult<()> {
        Ok(self.inner.commit().await?)
    }

    pub async fn rollback(self) -> StoreResult<()> {
        Ok(self.inner.rollback().await?)
    }

    /// Marks an inbound update handled and queues its replies (see
    /// [`Store::finish_inbound`]); false when it was handled before.
    pub async fn finish_inbound(
        &mut self,
        inbound: &Inbound,
        replies: &[Outbound],
    ) -> StoreResult<bool> {
        super::messages::finish_inbound_in(&mut self.inner, inbound, replies).await
    }

    /// Queues one message, linked to a run when given.
    pub async fn enqueue(
        &mut self,
        chat: &ChatRef,
        run_id: Option<RunId>,
        message: &Outbound,
    ) -> StoreResult<()> {
        super::messages::enqueue_in(&mut self.inner, chat, run_id, message).await
    }

    /// Queues a model call for the next batch.
    pub async fn insert_batch_item(
        &mut self,
        run_id: RunId,
        item: &super::NewBatchItem,
    ) -> StoreResult<()> {
        super::batch::insert_batch_item(&mut self.inner, run_id, item).await
    }

    /// Raises one day's cap, once: false if it was raised already.
    pub async fn raise_daily_cap(&mut self, day: &str, amount_usd: f64) -> StoreResult<bool> {
        super::budget::raise_daily_cap_in(&mut self.inner, day, amount_usd).await
    }
}

pub(super) fn parse_id<T: std::str::FromStr>(text: &str) -> StoreResult<T> {
    text.parse()
        .map_err(|_| corrupt(format!("'{text}' is not a valid id")))
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| corrupt(format!("cannot encode: {e}")))
}
