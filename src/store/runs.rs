//! Runs, their journal, leases, and the one-transaction commit of a step's
//! outcome.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::approvals::{NewApproval, insert_approval};
use super::batch::{NewBatchItem, insert_batch_item};
use super::budget::insert_actions;
use super::messages::enqueue_in;
use super::{Backend, Store, StoreResult, corrupt, now_ms};
use crate::domain::{
    Action, ApprovalId, ArtifactId, ButtonToken, ChatRef, InputPurpose, JournalEvent, Outbound,
    Platform, RunId, RunInput, RunStatus, Tier,
};

/// A run to create. The idempotency key makes creation safe to repeat: the
/// same key returns the run that already exists.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub flow: String,
    pub chat: ChatRef,
    pub input: RunInput,
    pub idempotency_key: String,
}

#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: RunId,
    pub flow: String,
    pub status: RunStatus,
    pub waiting_for: Option<InputPurpose>,
    pub chat: ChatRef,
    pub input: RunInput,
    pub summary: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A run this worker holds the lease on.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    pub run: RunRow,
    pub worker: String,
}

#[derive(Debug, Clone)]
pub struct NewArtifact {
    pub id: ArtifactId,
    pub kind: String,
    pub status: String,
    pub content: String,
    pub note: Option<String>,
}

/// Everything one step execution changes, committed in one transaction: the
/// journal events, the run's new status, the messages to send, and any
/// approval, artifact or decision reason the step produced.
#[derive(Debug, Clone)]
pub struct Transition {
    pub events: Vec<JournalEvent>,
    pub status: RunStatus,
    pub waiting_for: Option<InputPurpose>,
    pub summary: Option<String>,
    pub messages: Vec<Outbound>,
    pub approval: Option<NewApproval>,
    pub artifact: Option<NewArtifact>,
    pub reject_reason: Option<(ApprovalId, String)>,
    /// Action buttons the messages carry (retry, cancel, raise the cap).
    pub actions: Vec<(ButtonToken, Action)>,
    /// A non-urgent model call to queue for the next batch.
    pub batch_item: Option<NewBatchItem>,
}

impl Transition {
    pub fn new(status: RunStatus) -> Self {
        Transition {
            events: Vec::new(),
            status,
            waiting_for: None,
            summary: None,
            messages: Vec::new(),
            approval: None,
            artifact: None,
            reject_reason: None,
            actions: Vec::new(),
            batch_item: None,
        }
    }
}

const RUN_COLUMNS: &str =
    "id, flow, status, waiting_for, platform, chat_id, input, summary, created_at, updated_at";

impl Store {
    /// Creates the run and journals `Started`, or returns the run already
    /// created under the same idempotency key.
    pub async fn create_run(&self, new: &NewRun) -> StoreResult<(RunId, bool)> {
        let mut tx = self.pool.begin().await?;
        let id = RunId::new();
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO runs (id, flow, status, idempotency_key, platform, chat_id, requested_by, input, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(&new.flow)
        .bind(RunStatus::Runnable.as_str())
        .bind(&new.idempotency_key)
        .bind(new.chat.platform.as_str())
        .bind(&new.chat.chat_id)
        .bind(&new.input.requested_by)
        .bind(to_json(&new.input)?)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            let existing: String =
                sqlx::query_scalar("SELECT id FROM runs WHERE idempotency_key = $1")
                    .bind(&new.idempotency_key)
                    .fetch_one(&mut *tx)
                    .await?;
            tx.commit().await?;
            return Ok((parse_id(&existing)?, false));
        }
        let started = JournalEvent::Started {
            flow: new.flow.clone(),
            input: new.input.clone(),
        };
        append_events(&mut tx, id, std::slice::from_ref(&started)).await?;
        tx.commit().await?;
        Ok((id, true))
    }

    pub async fn run(&self, id: RunId) -> StoreResult<Option<RunRow>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| run_from_row(&r)).transpose()
    }

    /// Runs whose id starts with `prefix` (what people type: the short id).
    pub async fn runs_with_prefix(&self, prefix: &str) -> StoreResult<Vec<RunRow>> {
        let cleaned: String = prefix
            .chars()
            .filter(|c| c.is_ascii_hexdigit() || *c == '-')
            .collect::<String>()
            .to_ascii_lowercase();
        if cleaned.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id LIKE $1 ORDER BY created_at DESC LIMIT 5"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(format!("{cleaned}%"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    pub async fn recent_runs(&self, limit: i64) -> StoreResult<Vec<RunRow>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC, id LIMIT $1");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// The run's journal, in order.
    pub async fn journal(&self, id: RunId) -> StoreResult<Vec<JournalEvent>> {
        let payloads: Vec<String> =
            sqlx::query_scalar("SELECT payload FROM journal WHERE run_id = $1 ORDER BY seq")
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await?;
        payloads
            .iter()
            .map(|p| serde_json::from_str(p).map_err(|e| corrupt(format!("journal event: {e}"))))
            .collect()
    }

    /// Takes the lease on a runnable run, unless a live lease of another
    /// worker holds it.
    pub async fn claim_run(
        &self,
        id: RunId,
        worker: &str,
        lease_ms: i64,
    ) -> StoreResult<Option<ClaimedRun>> {
        let now = now_ms();
        let claimed = sqlx::query(
            "UPDATE runs SET lease_owner = $1, lease_until = $2
             WHERE id = $3 AND status = 'runnable'
               AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $4)",
        )
        .bind(worker)
        .bind(now + lease_ms)
        .bind(id.to_string())
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            return Ok(None);
        }
        Ok(self.run(id).await?.map(|run| ClaimedRun {
            run,
            worker: worker.to_string(),
        }))
    }

    /// Claims the oldest runnable run nobody holds a live lease on: runs
    /// left behind by a crash, or woken by a decision. On PostgreSQL several
    /// workers can call this at once; `SKIP LOCKED` hands each a different
    /// run.
    pub async fn claim_next_runnable(
        &self,
        worker: &str,
        lease_ms: i64,
    ) -> StoreResult<Option<ClaimedRun>> {
        let now = now_ms();
        let sql = match self.backend {
            Backend::Postgres => {
                "UPDATE runs SET lease_owner = $1, lease_until = $2
                 WHERE id = (SELECT id FROM runs
                             WHERE status = 'runnable' AND (lease_owner IS NULL OR lease_until < $3)
                             ORDER BY updated_at LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING id"
            }
            Backend::Sqlite => {
                "UPDATE runs SET lease_owner = $1, lease_until = $2
                 WHERE id = (SELECT id FROM runs
                             WHERE status = 'runnable' AND (lease_owner IS NULL OR lease_until < $3)
                             ORDER BY updated_at LIMIT 1)
                 RETURNING id"
            }
        };
        let id: Option<String> = sqlx::query_scalar(sql)
            .bind(worker)
            .bind(now + lease_ms)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        match id {
            None => Ok(None),
            Some(id) => Ok(self.run(parse_id(&id)?).await?.map(|run| ClaimedRun {
                run,
                worker: worker.to_string(),
            })),
        }
    }

    pub async fn release_run(&self, claimed: &ClaimedRun) -> StoreResult<()> {
        sqlx::query(
            "UPDATE runs SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2",
        )
        .bind(claimed.run.id.to_string())
        .bind(&claimed.worker)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Commits a step's outcome, all or nothing. Returns false, changing
    /// nothing, when this worker no longer holds the run's lease (another
    /// worker took over after it lapsed).
    pub async fn commit_transition(
        &self,
        claimed: &ClaimedRun,
        lease_ms: i64,
        transition: &Transition,
    ) -> StoreResult<bool> {
        let run = &claimed.run;
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let still_ours = sqlx::query(
            "UPDATE runs SET status = $1, waiting_for = $2, summary = COALESCE($3, summary),
                    updated_at = $4, lease_until = $5
             WHERE id = $6 AND lease_owner = $7 AND status = 'runnable'",
        )
        .bind(transition.status.as_str())
        .bind(transition.waiting_for.map(InputPurpose::as_str))
        .bind(transition.summary.as_deref())
        .bind(now)
        .bind(now + lease_ms)
        .bind(run.id.to_string())
        .bind(&claimed.worker)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !still_ours {
            tx.rollback().await?;
            return Ok(false);
        }
        append_events(&mut tx, run.id, &transition.events).await?;
        for message in &transition.messages {
            enqueue_in(&mut tx, &run.chat, Some(run.id), message).await?;
        }
        if let Some(approval) = &transition.approval {
            insert_approval(&mut tx, run, approval).await?;
        }
        insert_actions(&mut tx, &transition.actions).await?;
        if let Some(item) = &transition.batch_item {
            insert_batch_item(&mut tx, run.id, item).await?;
        }
        if let Some(artifact) = &transition.artifact {
            insert_artifact(&mut tx, run.id, artifact).await?;
        }
        if let Some((approval_id, reason)) = &transition.reject_reason {
            sqlx::query("UPDATE decisions SET reason = $1 WHERE approval_id = $2")
                .bind(reason)
                .bind(approval_id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Hands the operator's message to the run in `chat` that waits for
    /// input, journaled as `InputReceived`. Returns that run, or None when no
    /// run there waits for input.
    pub async fn deliver_input(
        &self,
        chat: &ChatRef,
        text: &str,
        by: &str,
    ) -> StoreResult<Option<RunId>> {
        let mut tx = self.pool.begin().await?;
        let waiting: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT id, waiting_for FROM runs
             WHERE platform = $1 AND chat_id = $2 AND status = 'waiting_input'
             ORDER BY updated_at DESC LIMIT 1",
        )
        .bind(chat.platform.as_str())
        .bind(&chat.chat_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, purpose)) = waiting else {
            return Ok(None);
        };
        let run_id = parse_id(&id)?;
        let purpose: InputPurpose = purpose
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(corrupt)?;
        let woken = sqlx::query(
            "UPDATE runs SET status = 'runnable', waiting_for = NULL, updated_at = $1
             WHERE id = $2 AND status = 'waiting_input'",
        )
        .bind(now_ms())
        .bind(&id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !woken {
            return Ok(None);
        }
        let step = current_step(&mut tx, run_id).await?;
        let event = JournalEvent::InputReceived {
            step,
            purpose,
            text: text.to_string(),
            by: by.to_string(),
        };
        append_events(&mut tx, run_id, &[event]).await?;
        tx.commit().await?;
        Ok(Some(run_id))
    }

    /// Makes a failed run runnable again, journaled as `Retried` (with the
    /// tier its model steps should switch to, if any).
    pub async fn retry_run(&self, id: RunId, by: &str, tier: Option<Tier>) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let woken = sqlx::query(
            "UPDATE runs SET status = 'runnable', updated_at = $1, lease_owner = NULL, lease_until = NULL
             WHERE id = $2 AND status = 'failed'",
        )
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if woken {
            let event = JournalEvent::Retried {
                by: by.to_string(),
                tier,
            };
            append_events(&mut tx, id, &[event]).await?;
        }
        tx.commit().await?;
        Ok(woken)
    }

    /// Gives up on a failed run: it completes as cancelled.
    pub async fn cancel_run(&self, id: RunId, by: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let cancelled = sqlx::query(
            "UPDATE runs SET status = 'completed', summary = $1, updated_at = $2,
                    lease_owner = NULL, lease_until = NULL
             WHERE id = $3 AND status = 'failed'",
        )
        .bind(format!("cancelled by {by}"))
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if cancelled {
            let event = JournalEvent::Completed {
                summary: format!("cancelled by {by}"),
            };
            append_events(&mut tx, id, &[event]).await?;
        }
        tx.commit().await?;
        Ok(cancelled)
    }

    pub async fn artifact(
        &self,
        id: ArtifactId,
    ) -> StoreResult<Option<(String, String, Option<String>)>> {
        Ok(
            sqlx::query_as("SELECT status, content, note FROM artifacts WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Rows in the main tables, for checks that nothing was lost or added.
    pub async fn table_counts(&self) -> StoreResult<Vec<(String, i64)>> {
        let mut counts = Vec::new();
        for table in [
            "runs",
            "journal",
            "approvals",
            "decisions",
            "artifacts",
            "cost_ledger",
            "outbox",
            "inbound_updates",
            "messages",
            "platform_updates",
        ] {
            let sql = format!("SELECT COUNT(*) FROM {table}");
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&self.pool)
                .await?;
            counts.push((table.to_string(), n));
        }
        Ok(counts)
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

/// The step a waiting run is on: the one named by its latest request for
/// input or approval.
async fn current_step(tx: &mut Transaction<'_, Any>, run_id: RunId) -> StoreResult<String> {
    let payload: Option<String> = sqlx::query_scalar(
        "SELECT payload FROM journal WHERE run_id = $1
           AND event IN ('input_requested', 'approval_requested')
         ORDER BY seq DESC LIMIT 1",
    )
    .bind(run_id.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    let event: Option<JournalEvent> = payload
        .map(|p| serde_json::from_str(&p))
        .transpose()
        .map_err(|e| corrupt(format!("journal event: {e}")))?;
    match event {
        Some(JournalEvent::InputRequested { step, .. })
        | Some(JournalEvent::ApprovalRequested { step, .. }) => Ok(step),
        _ => Err(corrupt(format!("run {run_id} waits but asked for nothing"))),
    }
}

async fn insert_artifact(
    tx: &mut Transaction<'_, Any>,
    run_id: RunId,
    artifact: &NewArtifact,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO artifacts (id, run_id, kind, status, content, note, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(artifact.id.to_string())
    .bind(run_id.to_string())
    .bind(&artifact.kind)
    .bind(&artifact.status)
    .bind(&artifact.content)
    .bind(artifact.note.as_deref())
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn run_from_row(row: &AnyRow) -> StoreResult<RunRow> {
    let platform: String = row.try_get("platform")?;
    let input: String = row.try_get("input")?;
    let waiting_for: Option<String> = row.try_get("waiting_for")?;
    let status: String = row.try_get("status")?;
    Ok(RunRow {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        flow: row.try_get("flow")?,
        status: status.parse().map_err(corrupt)?,
        waiting_for: waiting_for
            .map(|w| w.parse::<InputPurpose>())
            .transpose()
            .map_err(corrupt)?,
        chat: ChatRef::new(
            platform.parse::<Platform>().map_err(corrupt)?,
            row.try_get::<String, _>("chat_id")?,
        ),
        input: serde_json::from_str(&input).map_err(|e| corrupt(format!("run input: {e}")))?,
        summary: row.try_get("summary")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(super) fn parse_id<T: std::str::FromStr>(text: &str) -> StoreResult<T> {
    text.parse()
        .map_err(|_| corrupt(format!("'{text}' is not a valid id")))
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| corrupt(format!("cannot encode: {e}")))
}
