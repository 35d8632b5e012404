//! Transaction helpers for the tables whose queries live in files this one
//! only calls into (inbound updates and the outbox, batch items, budget
//! periods), so the engine can compose them with its transitions. Nothing
//! imports this file back: the store files form no loop.

use super::{StoreResult, Tx};
use crate::domain::{ChatRef, Inbound, Outbound, RunId};

impl Tx {
    /// Marks an inbound update handled and queues its replies (see
    /// [`Store::finish_inbound`](super::Store::finish_inbound)); false when it was handled before.
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
