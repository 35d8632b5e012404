//! Batch items: non-urgent model calls queued with the budget they reserved,
//! submitted together, and finished one by one: the result journaled, the
//! budget settled, the ledger written and the run woken, in one transaction.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::budget::settle_in;
use super::journal::append_events;
use super::ledger::insert_call;
use super::parse_id;
use super::{LedgerEntry, Reservation, Store, StoreResult, now_ms};
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
    pub reservation: Reservation,
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

const ITEM_COLUMNS: &str = "id, run_id, step, flow, provider, model, tier, request, batch_id, reserved_usd, budget_day, budget_month, created_at";

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
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(item_from_row).collect()
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
        tx.commit().await?;
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
        tx.commit().await?;
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
             reserved_usd, budget_day, budget_month, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9, $10, $11, $12)",
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
    .execute(&mut **tx)
    .await?;
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
            day: row.try_get("budget_day")?,
            month: row.try_get("budget_month")?,
            amount_usd: row.try_get("reserved_usd")?,
        },
        created_at: row.try_get("created_at")?,
    })
}
