//! Run rows and their artifacts: creating a run, reading runs, and the
//! guarded status moves the engine's transitions are made of. The run
//! state machine itself is the engine's; this file knows the table.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::journal::append_events;
use super::{Store, StoreResult, corrupt, now_ms};
use super::{Tx, parse_id, to_json};
use crate::domain::{
    ApprovalId, ArtifactId, ChatRef, InputPurpose, JournalEvent, Platform, RunId, RunInput,
    RunStatus,
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

#[derive(Debug, Clone)]
pub struct NewArtifact {
    pub id: ArtifactId,
    pub kind: String,
    pub status: String,
    pub content: String,
    pub note: Option<String>,
}

pub(super) const RUN_COLUMNS: &str =
    "id, flow, status, waiting_for, platform, chat_id, input, summary, created_at, updated_at";

impl Store {
    /// Creates the run and journals `Started`, or returns the run already
    /// created under the same idempotency key.
    pub async fn create_run(&self, new: &NewRun) -> StoreResult<(RunId, bool)> {
        let mut tx = self.begin().await?;
        let created = tx.create_run(new).await?;
        tx.commit().await?;
        Ok(created)
    }

    pub async fn run(&self, id: RunId) -> StoreResult<Option<RunRow>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.reads)
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
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    pub async fn recent_runs(&self, limit: i64) -> StoreResult<Vec<RunRow>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC, id LIMIT $1");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    pub async fn artifact(
        &self,
        id: ArtifactId,
    ) -> StoreResult<Option<(String, String, Option<String>)>> {
        Ok(
            sqlx::query_as("SELECT status, content, note FROM artifacts WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.reads)
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
                .fetch_one(&self.reads)
                .await?;
            counts.push((table.to_string(), n));
        }
        Ok(counts)
    }
}

impl Tx {
    /// See [`Store::create_run`].
    pub async fn create_run(&mut self, new: &NewRun) -> StoreResult<(RunId, bool)> {
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
        .execute(&mut *self.inner)
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            let existing: String =
                sqlx::query_scalar("SELECT id FROM runs WHERE idempotency_key = $1")
                    .bind(&new.idempotency_key)
                    .fetch_one(&mut *self.inner)
                    .await?;
            return Ok((parse_id(&existing)?, false));
        }
        let started = JournalEvent::Started {
            flow: new.flow.clone(),
            input: new.input.clone(),
        };
        append_events(&mut self.inner, id, std::slice::from_ref(&started)).await?;
        Ok((id, true))
    }

    /// Moves a run from one status to another (clearing what it waited for
    /// and any lease); false when it was not in `from`.
    pub async fn move_run(
        &mut self,
        id: RunId,
        from: RunStatus,
        to: RunStatus,
        summary: Option<&str>,
    ) -> StoreResult<bool> {
        Ok(sqlx::query(
            "UPDATE runs SET status = $1, waiting_for = NULL, summary = COALESCE($2, summary),
                    updated_at = $3, lease_owner = NULL, lease_until = NULL
             WHERE id = $4 AND status = $5",
        )
        .bind(to.as_str())
        .bind(summary)
        .bind(now_ms())
        .bind(id.to_string())
        .bind(from.as_str())
        .execute(&mut *self.inner)
        .await?
        .rows_affected()
            == 1)
    }

    /// Remembers whose message the run will take when it next asks for
    /// input: the person who pressed the button. None: anyone allowed.
    pub async fn set_input_from(&mut self, id: RunId, user_id: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE runs SET input_from = $1 WHERE id = $2")
            .bind(user_id)
            .bind(id.to_string())
            .execute(&mut *self.inner)
            .await?;
        Ok(())
    }

    /// The run in `chat` waiting for input from `user_id` (newest first),
    /// with what it asked for.
    pub async fn run_waiting_for_input(
        &mut self,
        chat: &ChatRef,
        user_id: &str,
    ) -> StoreResult<Option<(RunId, InputPurpose)>> {
        let waiting: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT id, waiting_for FROM runs
             WHERE platform = $1 AND chat_id = $2 AND status = 'waiting_input'
               AND (input_from IS NULL OR input_from = $3)
             ORDER BY updated_at DESC LIMIT 1",
        )
        .bind(chat.platform.as_str())
        .bind(&chat.chat_id)
        .bind(user_id)
        .fetch_optional(&mut *self.inner)
        .await?;
        let Some((id, purpose)) = waiting else {
            return Ok(None);
        };
        let purpose = purpose
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(corrupt)?;
        Ok(Some((parse_id(&id)?, purpose)))
    }

    pub async fn insert_artifact(
        &mut self,
        run_id: RunId,
        artifact: &NewArtifact,
    ) -> StoreResult<()> {
        insert_artifact(&mut self.inner, run_id, artifact).await
    }

    /// Saves the reason given for a rejection with its decision.
    pub async fn set_decision_reason(
        &mut self,
        approval_id: ApprovalId,
        reason: &str,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE decisions SET reason = $1 WHERE approval_id = $2")
            .bind(reason)
            .bind(approval_id.to_string())
            .execute(&mut *self.inner)
            .await?;
        Ok(())
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

pub(super) fn run_from_row(row: &AnyRow) -> StoreResult<RunRow> {
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
