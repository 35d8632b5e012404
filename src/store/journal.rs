//! The journal: a run's history, one event per row, in order.

use sqlx::{Any, Transaction};

use super::{Store, StoreResult, corrupt, now_ms};
use super::{Tx, to_json};
use crate::domain::{JournalEvent, RunId};

impl Store {
    /// The run's journal, in order.
    pub async fn journal(&self, id: RunId) -> StoreResult<Vec<JournalEvent>> {
        let payloads: Vec<String> =
            sqlx::query_scalar("SELECT payload FROM journal WHERE run_id = $1 ORDER BY seq")
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await?;
        payloads.iter().map(|p| parse_event(p)).collect()
    }
}

impl Tx {
    pub async fn append_events(
        &mut self,
        run_id: RunId,
        events: &[JournalEvent],
    ) -> StoreResult<()> {
        append_events(&mut self.inner, run_id, events).await
    }

    /// The run's latest request for input or approval, if any.
    pub async fn latest_request(&mut self, run_id: RunId) -> StoreResult<Option<JournalEvent>> {
        let payload: Option<String> = sqlx::query_scalar(
            "SELECT payload FROM journal WHERE run_id = $1
               AND event IN ('input_requested', 'approval_requested')
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(run_id.to_string())
        .fetch_optional(&mut *self.inner)
        .await?;
        payload.as_deref().map(parse_event).transpose()
    }
}

/// Appends after the run's last event. The (run_id, seq) key turns a racing
/// append into an error instead of a silent interleave.
pub(super) async fn append_events(
    tx: &mut Transaction<'_, Any>,
    run_id: RunId,
    events: &[JournalEvent],
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let last: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM journal WHERE run_id = $1")
            .bind(run_id.to_string())
            .fetch_one(&mut **tx)
            .await?;
    let now = now_ms();
    for (offset, event) in events.iter().enumerate() {
        sqlx::query(
            "INSERT INTO journal (run_id, seq, event, payload, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(run_id.to_string())
        .bind(last + 1 + offset as i64)
        .bind(event.name())
        .bind(to_json(event)?)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn parse_event(payload: &str) -> StoreResult<JournalEvent> {
    serde_json::from_str(payload).map_err(|e| corrupt(format!("journal event: {e}")))
}
