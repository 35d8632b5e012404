//! The journal: a run's history, one event per row, in order.

use sqlx::{Any, Transaction};

use super::{Backend, Store, StoreResult, corrupt, now_ms};
use super::{Tx, to_json};
use crate::domain::{JournalEvent, RunId};

impl Store {
    /// The run's journal, in order.
    pub async fn journal(&self, id: RunId) -> StoreResult<Vec<JournalEvent>> {
        let payloads: Vec<String> =
            sqlx::query_scalar("SELECT payload FROM journal WHERE run_id = $1 ORDER BY seq")
                .bind(id.to_string())
                .fetch_all(&self.reads)
                .await?;
        payloads.iter().map(|p| parse_event(p)).collect()
    }
}

impl Tx {
    /// Appends the events; returns the `seq` of the event they follow (the
    /// journal's length before them: seqs run 1, 2, 3…).
    pub async fn append_events(
        &mut self,
        run_id: RunId,
        events: &[JournalEvent],
    ) -> StoreResult<i64> {
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

/// Appends after the run's last event, in one statement whatever their
/// number: the next `seq` is read in the same statement (it was one
/// statement for it and one an event, about thirteen a draft). The
/// (run_id, seq) key turns a racing append into an error instead of a
/// silent interleave.
pub(super) async fn append_events(
    tx: &mut Transaction<'_, Any>,
    run_id: RunId,
    events: &[JournalEvent],
) -> StoreResult<i64> {
    if events.is_empty() {
        let last: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM journal WHERE run_id = $1")
                .bind(run_id.to_string())
                .fetch_one(&mut **tx)
                .await?;
        return Ok(last);
    }
    let rows = events
        .iter()
        .enumerate()
        .map(|(offset, event)| {
            Ok(serde_json::json!({
                "i": offset as i64 + 1,
                "event": event.name(),
                "payload": to_json(event)?,
            }))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let events_table =
        Backend::of(tx).json_rows("$3", &[("i", true), ("event", false), ("payload", false)]);
    // Both databases read the table whole before inserting into it (SQLite
    // through a temporary table, since the SELECT reads the table it fills),
    // so every event is numbered from the same last `seq`.
    let sql = format!(
        "INSERT INTO journal (run_id, seq, event, payload, created_at)
         SELECT $1, last.seq + e.i, e.event, e.payload, $2
         FROM (SELECT COALESCE(MAX(seq), 0) AS seq FROM journal WHERE run_id = $1) last,
              ({events_table}) e
         ORDER BY e.i
         RETURNING seq"
    );
    let seqs: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(run_id.to_string())
        .bind(now_ms())
        .bind(to_json(&rows)?)
        .fetch_all(&mut **tx)
        .await?;
    let first = seqs.into_iter().min().unwrap_or(1);
    Ok(first - 1)
}

fn parse_event(payload: &str) -> StoreResult<JournalEvent> {
    serde_json::from_str(payload).map_err(|e| corrupt(format!("journal event: {e}")))
}
