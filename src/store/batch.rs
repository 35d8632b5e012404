//! Batch items: non-urgent model calls queued with the budget they reserved,
//! submitted together, and finished one by one: the result journaled, the
//! budget settled, the ledger written and the run woken, in one transaction.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::budget::settle_in;
use super::journal::append_events;
use super::ledger::insert_call;
use super::parse_id;
use super::reservations::hand_to_batch;
use super::{HeldReservation, LedgerEntry, Reservation, Store, StoreResult, now_ms};
use crate::domain::{JournalEvent, RunId};

/// A call to queue, built by the model router.
#[derive(Debug, Clone, PartialEq)]
pub struct NewBatchItem {
    pub id: String,
    pub step: String,
    pub flow: String,
    pub provider: String,
    pub model: String,
    pub tier: String,
    /// The provider's request body (JSON).
    pub request: serde_json::Value,
    /// Released if the item is never committed (its step lost the run).
    pub reservation: HeldReservation,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BatchItem {
    pub id: String,
    pub run_id: RunId,
    pub step: String,
    pub flow: String,
    pub provider: String,
    pub model: String,
    pub tier: String,
    pub request: serde_json::Value,
    pub batch_id: Option<String>,
    pub reservation: Reservation,
    pub created_at: i64,
    /// Set before the provider is asked to create the batch; the batch's
    /// metadata carries it.
    pub submission_id: Option<String>,
    pub submission_started_at: Option<i64>,
}

/// How one item came back.
#[derive(Debug, Clone)]
pub enum BatchOutcome {
    /// The step's output and the call's ledger row.
    Done {
        output: serde_json::Value,
        entry: Box<LedgerEntry>,
    },
    Failed(String),
}

const ITEM_COLUMNS: &str = "id, run_id, step, flow, provider, model, tier, request, batch_id, reserved_usd, budget_day, budget_month, created_at, reservation_id, submission_id, submission_started_at";

impl Store {
    /// Queued items of a provider, oldest first.
    pub async fn queued_batch_items(&self, provider: &str) -> StoreResult<Vec<BatchItem>> {
        self.batch_items_in(provider, "queued").await
    }

    /// Items sent in batches that have not come back, oldest first.
    pub async fn submitted_batch_items(&self, provider: &str) -> StoreResult<Vec<BatchItem>> {
        self.batch_items_in(provider, "submitted").await
    }

    async fn batch_items_in(&self, provider: &str, status: &str) -> StoreResult<Vec<BatchItem>> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM batch_items WHERE status = $1 AND provider = $2 ORDER BY created_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(status)
            .bind(provider)
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(item_from_row).collect()
    }

    /// Records the intent to send these queued items as submission
    /// `submission_id`, before the provider hears of it. Returns the items
    /// this call claimed (another process may have claimed some first).
    pub async fn begin_batch_submission(
        &self,
        item_ids: &[String],
        submission_id: &str,
    ) -> StoreResult<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        let mut claimed = Vec::new();
        for id in item_ids {
            let taken = sqlx::query(
                "UPDATE batch_items SET submission_id = $1, submission_started_at = $2
                 WHERE id = $3 AND status = 'queued' AND submission_id IS NULL",
            )
            .bind(submission_id)
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if taken {
                claimed.push(id.clone());
            }
        }
        self.commit_durably(tx).await?;
        Ok(claimed)
    }

    /// Records that these items went out in batch `batch_id`.
    pub async fn mark_batch_submitted(
        &self,
        item_ids: &[String],
        batch_id: &str,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for id in item_ids {
            sqlx::query("UPDATE batch_items SET status = 'submitted', batch_id = $1 WHERE id = $2 AND status = 'queued'")
                .bind(batch_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        self.commit_durably(tx).await?;
        Ok(())
    }

    /// Finishes one item, once: journals the result, settles its budget,
    /// writes its ledger row and wakes its run. Returns false if it was
    /// finished already.
    pub async fn finish_batch_item(
        &self,
        item: &BatchItem,
        outcome: &BatchOutcome,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let status = match outcome {
            BatchOutcome::Done { .. } => "done",
            BatchOutcome::Failed(_) => "failed",
        };
        let finished = sqlx::query(
            "UPDATE batch_items SET status = $1, finished_at = $2 WHERE id = $3 AND status IN ('queued', 'submitted')",
        )
        .bind(status)
        .bind(now_ms())
        .bind(&item.id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !finished {
            return Ok(false);
        }
        let (output, error, spent) = match outcome {
            BatchOutcome::Done { output, entry } => {
                insert_call(&mut tx, entry).await?;
                (Some(output.clone()), None, entry.cost_usd.unwrap_or(0.0))
            }
            BatchOutcome::Failed(error) => (None, Some(error.clone()), 0.0),
        };
        settle_in(&mut tx, &item.reservation, spent).await?;
        let event = JournalEvent::BatchFinished {
            step: item.step.clone(),
            item_id: item.id.clone(),
            output,
            error,
        };
        append_events(&mut tx, item.run_id, &[event]).await?;
        sqlx::query("UPDATE runs SET status = 'runnable', updated_at = $1 WHERE id = $2 AND status = 'waiting_batch'")
            .bind(now_ms())
            .bind(item.run_id.to_string())
            .execute(&mut *tx)
            .await?;
        self.commit_durably(tx).await?;
        Ok(true)
    }
}

pub(super) async fn insert_batch_item(
    tx: &mut Transaction<'_, Any>,
    run_id: RunId,
    item: &NewBatchItem,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO batch_items (id, run_id, step, flow, provider, model, tier, request, status,
             reserved_usd, budget_day, budget_month, created_at, reservation_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9, $10, $11, $12, $13)",
    )
    .bind(&item.id)
    .bind(run_id.to_string())
    .bind(&item.step)
    .bind(&item.flow)
    .bind(&item.provider)
    .bind(&item.model)
    .bind(&item.tier)
    .bind(item.request.to_string())
    .bind(item.reservation.amount_usd)
    .bind(&item.reservation.day)
    .bind(&item.reservation.month)
    .bind(now_ms())
    .bind(&item.reservation.id)
    .execute(&mut **tx)
    .await?;
    hand_to_batch(tx, &item.reservation).await?;
    Ok(())
}

fn item_from_row(row: &AnyRow) -> StoreResult<BatchItem> {
    let request: String = row.try_get("request")?;
    Ok(BatchItem {
        id: row.try_get("id")?,
        run_id: parse_id(&row.try_get::<String, _>("run_id")?)?,
        step: row.try_get("step")?,
        flow: row.try_get("flow")?,
        provider: row.try_get("provider")?,
        model: row.try_get("model")?,
        tier: row.try_get("tier")?,
        request: serde_json::from_str(&request)
            .map_err(|e| super::corrupt(format!("batch request: {e}")))?,
        batch_id: row.try_get("batch_id")?,
        reservation: Reservation {
            id: row
                .try_get::<Option<String>, _>("reservation_id")?
                .unwrap_or_default(),
            day: row.try_get("budget_day")?,
            month: row.try_get("budget_month")?,
            amount_usd: row.try_get("reserved_usd")?,
        },
        created_at: row.try_get("created_at")?,
        submission_id: row.try_get("submission_id")?,
        submission_started_at: row.try_get("submission_started_at")?,
    })
}
