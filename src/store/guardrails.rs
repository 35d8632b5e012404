//! Guardrail audit rows (the policy layer's decisions), linked to runs.

use super::{Store, StoreResult, Tx, now_ms};
use crate::domain::RunId;

/// One guardrail decision: `kind` is `origin`, `redacted`, `flagged`,
/// `blocked` or `limited`; `detail` a sentence or a count, never a value
/// the guardrail kept back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardrailEvent {
    pub kind: String,
    pub detail: String,
}

impl Store {
    pub async fn record_guardrail(
        &self,
        run_id: Option<RunId>,
        kind: &str,
        detail: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO guardrail_events (run_id, kind, detail, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(run_id.map(|r| r.to_string()))
        .bind(kind)
        .bind(detail)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.durable().await?;
        Ok(())
    }

    /// A run's guardrail rows, oldest first.
    pub async fn guardrails_for_run(&self, run_id: RunId) -> StoreResult<Vec<GuardrailEvent>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT kind, detail FROM guardrail_events WHERE run_id = $1 ORDER BY id",
        )
        .bind(run_id.to_string())
        .fetch_all(&self.reads)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(kind, detail)| GuardrailEvent { kind, detail })
            .collect())
    }
}

impl Tx {
    /// [`Store::record_guardrail`] inside a transaction: a step's flags and
    /// refusals are committed with the step, or not at all (a claim that
    /// lost its lease leaves no row for an offer never made).
    pub async fn record_guardrail(
        &mut self,
        run_id: RunId,
        kind: &str,
        detail: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO guardrail_events (run_id, kind, detail, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(run_id.to_string())
        .bind(kind)
        .bind(detail)
        .bind(now_ms())
        .execute(&mut *self.inner)
        .await?;
        Ok(())
    }
}
