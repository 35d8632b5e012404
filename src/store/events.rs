//! Events: something that happened (`lead.received`, `draft.approved`,
//! `run.failed`, …), written by [`emit_in`] in the transaction of the change
//! that caused it, so an event exists exactly when its cause committed. The
//! event worker (`crate::events`) claims pending events (`FOR UPDATE SKIP
//! LOCKED` on PostgreSQL, a guarded UPDATE on SQLite), starts each
//! subscribing flow once (`event_runs` is unique on `(event_id, flow)`) and
//! marks the event done.

use super::{Backend, Store, StoreResult, Tx, corrupt, now_ms};
use crate::domain::RunId;

/// One stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub id: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub created_at: i64,
}

/// An event under a worker's claim: only that claim may mark it done.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedEvent {
    pub event: EventRow,
    pub token: String,
}

/// Records an event in the caller's transaction. The same idempotency key
/// twice is one event: true when this call stored it.
pub async fn emit_in(
    tx: &mut Tx,
    kind: &str,
    payload: serde_json::Value,
    idempotency_key: &str,
) -> StoreResult<bool> {
    let inserted = sqlx::query(
        "INSERT INTO events (id, kind, payload, idempotency_key, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(kind)
    .bind(payload.to_string())
    .bind(idempotency_key)
    .bind(now_ms())
    .execute(&mut *tx.inner)
    .await?
    .rows_affected();
    if inserted == 1 {
        tracing::info!(kind, key = idempotency_key, "event emitted");
    }
    Ok(inserted == 1)
}

const COLUMNS: &str = "id, kind, payload, created_at";

fn event_from(row: (String, String, String, i64)) -> StoreResult<EventRow> {
    let (id, kind, payload, created_at) = row;
    let payload = serde_json::from_str(&payload)
        .map_err(|e| corrupt(format!("event {id}'s payload is not JSON: {e}")))?;
    Ok(EventRow {
        id,
        kind,
        payload,
        created_at,
    })
}

impl Store {
    /// [`emit_in`] in a transaction of its own.
    pub async fn emit(
        &self,
        kind: &str,
        payload: serde_json::Value,
        idempotency_key: &str,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let inserted = emit_in(&mut tx, kind, payload, idempotency_key).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// Claims the oldest pending event nobody holds a live claim on, for
    /// `lease_ms`. A worker that dies holding one leaves it to lapse.
    pub async fn claim_event(
        &self,
        token: &str,
        lease_ms: i64,
    ) -> StoreResult<Option<ClaimedEvent>> {
        let now = now_ms();
        // PostgreSQL: a second worker skips the row the first has locked
        // instead of waiting for it. SQLite has one writer; the guarded
        // UPDATE below is what makes the claim exclusive there.
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let pending = "done_at IS NULL AND (claimed_until IS NULL OR claimed_until < $3)";
        // One statement, so SQLite never upgrades a read lock to a write
        // lock (two such upgrades deadlock there); the outer guard makes the
        // claim exclusive on SQLite, SKIP LOCKED on PostgreSQL.
        let sql = format!(
            "UPDATE events SET claim_token = $1, claimed_until = $2 \
             WHERE id = (SELECT id FROM events WHERE {pending} ORDER BY created_at, id LIMIT 1{lock}) \
             AND {pending} RETURNING {COLUMNS}"
        );
        let row: Option<(String, String, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(token)
            .bind(now + lease_ms)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(Some(ClaimedEvent {
                event: event_from(row)?,
                token: token.to_string(),
            })),
            None => Ok(None),
        }
    }

    /// The event that started a run, if one did.
    pub async fn event_for_run(&self, run_id: RunId) -> StoreResult<Option<EventRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE id = (SELECT event_id FROM event_runs WHERE run_id = $1)"
        );
        let row: Option<(String, String, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(run_id.to_string())
            .fetch_optional(&self.reads)
            .await?;
        row.map(event_from).transpose()
    }

    /// Events of a kind, oldest first (for tools and tests).
    pub async fn events_of_kind(&self, kind: &str) -> StoreResult<Vec<EventRow>> {
        let sql = format!("SELECT {COLUMNS} FROM events WHERE kind = $1 ORDER BY created_at, id");
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(kind)
            .fetch_all(&self.reads)
            .await?;
        rows.into_iter().map(event_from).collect()
    }

    /// The runs each event started: (event id, flow, run id).
    pub async fn event_runs(&self) -> StoreResult<Vec<(String, String, String)>> {
        Ok(
            sqlx::query_as("SELECT event_id, flow, run_id FROM event_runs ORDER BY event_id, flow")
                .fetch_all(&self.reads)
                .await?,
        )
    }
}

impl Tx {
    /// Links a run to the event that started it: false when this event
    /// already started this flow (then the caller's run is not new either,
    /// since runs are keyed on the event too).
    pub async fn record_event_run(
        &mut self,
        event_id: &str,
        flow: &str,
        run_id: RunId,
    ) -> StoreResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO event_runs (event_id, flow, run_id, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (event_id, flow) DO NOTHING",
        )
        .bind(event_id)
        .bind(flow)
        .bind(run_id.to_string())
        .bind(now_ms())
        .execute(&mut *self.inner)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Marks a claimed event handled; false when the claim lapsed and
    /// another worker holds it now (it will find the runs already there).
    pub async fn finish_event(&mut self, claimed: &ClaimedEvent) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE events SET done_at = $1, claimed_until = NULL WHERE id = $2 AND claim_token = $3 AND done_at IS NULL",
        )
        .bind(now_ms())
        .bind(&claimed.event.id)
        .bind(&claimed.token)
        .execute(&mut *self.inner)
        .await?
        .rows_affected();
        Ok(done == 1)
    }
}
