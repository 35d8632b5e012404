//! FUNNEL: publications (what a publish step put out, or will) and the
//! results the operator reports for them. A due publication is claimed by
//! one process at a time (`scheduled` -> `sending` under a lease) and
//! recorded as `published` with the platform's message id, which a
//! retraction needs; see [`crate::funnel`].

use super::{Store, StoreResult, Tx, corrupt, now_ms, parse_id};
use crate::domain::{ChatRef, Platform, RunId};

/// A publication a publish step decided on, inserted with its step.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPublication {
    pub id: String,
    pub step: String,
    pub platform: Platform,
    pub channel_id: String,
    pub text: String,
    pub due_at: i64,
    /// The operator's chat: told when it is out (with a Retract button).
    pub notify: ChatRef,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    pub id: String,
    pub run_id: RunId,
    pub step: String,
    pub platform: Platform,
    pub channel_id: String,
    pub text: String,
    pub due_at: i64,
    /// scheduled | sending | published | failed | cancelled | retracted
    pub status: String,
    pub message_id: Option<String>,
    pub error: Option<String>,
    pub notify: ChatRef,
    pub published_at: Option<i64>,
}

/// One run's reported numbers, with when it was published.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub run_id: RunId,
    pub published_at: i64,
    pub metrics: Vec<(String, f64)>,
}

const COLUMNS: &str = "id, run_id, step, platform, channel_id, text, due_at, status, \
                       message_id, error, notify_platform, notify_chat, published_at";

type Row = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    Option<i64>,
);

fn publication(row: Row) -> StoreResult<Publication> {
    let (id, run_id, step, platform, channel_id, text, due_at, status, message_id, error) = (
        row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9,
    );
    let notify_platform: Platform = row.10.parse().map_err(corrupt)?;
    Ok(Publication {
        id,
        run_id: parse_id(&run_id)?,
        step,
        platform: platform.parse().map_err(corrupt)?,
        channel_id,
        text,
        due_at,
        status,
        message_id,
        error,
        notify: ChatRef::new(notify_platform, row.11),
        published_at: row.12,
    })
}

/// A due row, or one whose sender's claim lapsed (a crash between claim and
/// record: sent again, the one documented exception to "once").
const DUE: &str =
    "(status = 'scheduled' AND due_at <= $2) OR (status = 'sending' AND claimed_until < $2)";

impl Store {
    /// Claims the earliest due publication for `lease_ms`: at most one
    /// process holds it, however many tick at once.
    pub async fn claim_due_publication(
        &self,
        now: i64,
        lease_ms: i64,
    ) -> StoreResult<Option<Publication>> {
        let sql = format!(
            "UPDATE publications SET status = 'sending', claimed_until = $1
             WHERE id = (SELECT id FROM publications WHERE {DUE} ORDER BY due_at, id LIMIT 1)
               AND ({DUE})
             RETURNING {COLUMNS}"
        );
        let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(now + lease_ms)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        // A claim lost in a power cut would publish twice: on disk first.
        let row = self.flushed(row).await?;
        row.map(publication).transpose()
    }

    /// A send that may work later (the platform was down): due again.
    pub async fn release_publication(&self, id: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE publications SET status = 'scheduled', claimed_until = NULL
             WHERE id = $1 AND status = 'sending'",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.durable().await?;
        Ok(())
    }

    /// The run's publications, oldest first.
    pub async fn publications_for_run(&self, run_id: RunId) -> StoreResult<Vec<Publication>> {
        let sql =
            format!("SELECT {COLUMNS} FROM publications WHERE run_id = $1 ORDER BY created_at, id");
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(run_id.to_string())
            .fetch_all(&self.reads)
            .await?;
        rows.into_iter().map(publication).collect()
    }

    /// Published runs (newest first, at most `limit`) with the numbers
    /// reported for them.
    pub async fn published_results(&self, limit: i64) -> StoreResult<Vec<ResultRow>> {
        let runs: Vec<(String, i64)> = sqlx::query_as(
            "SELECT run_id, MIN(published_at) AS at FROM publications
             WHERE published_at IS NOT NULL GROUP BY run_id ORDER BY at DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.reads)
        .await?;
        let mut rows = Vec::with_capacity(runs.len());
        for (run_id, published_at) in runs {
            let metrics: Vec<(String, f64)> = sqlx::query_as(
                "SELECT metric, value FROM results WHERE run_id = $1 ORDER BY metric",
            )
            .bind(&run_id)
            .fetch_all(&self.reads)
            .await?;
            rows.push(ResultRow {
                run_id: parse_id(&run_id)?,
                published_at,
                metrics,
            });
        }
        Ok(rows)
    }
}

impl Tx {
    /// Inserts a publication once (a repeated step inserts nothing).
    pub async fn insert_publication(
        &mut self,
        run_id: RunId,
        new: &NewPublication,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO publications (id, run_id, step, platform, channel_id, text, due_at, status,
                                       notify_platform, notify_chat, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'scheduled', $8, $9, $10)
             ON CONFLICT DO NOTHING",
        )
        .bind(&new.id)
        .bind(run_id.to_string())
        .bind(&new.step)
        .bind(new.platform.as_str())
        .bind(&new.channel_id)
        .bind(&new.text)
        .bind(new.due_at)
        .bind(new.notify.platform.as_str())
        .bind(&new.notify.chat_id)
        .bind(now_ms())
        .execute(&mut *self.inner)
        .await?;
        Ok(())
    }

    /// Records a claimed send as published; false when the claim was lost
    /// (another process took the row after this one's lease lapsed).
    pub async fn mark_published(
        &mut self,
        id: &str,
        message_id: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE publications SET status = 'published', message_id = $1, published_at = $2,
                                     claimed_until = NULL, error = NULL
             WHERE id = $3 AND status = 'sending'",
        )
        .bind(message_id)
        .bind(now)
        .bind(id)
        .execute(&mut *self.inner)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A send the platform refused: it will not be tried again.
    pub async fn mark_publication_failed(&mut self, id: &str, error: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE publications SET status = 'failed', error = $1, claimed_until = NULL
             WHERE id = $2 AND status = 'sending'",
        )
        .bind(error)
        .bind(id)
        .execute(&mut *self.inner)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Cancels one not-yet-sent publication; false when it is no longer
    /// scheduled (the publisher claimed it first).
    pub async fn cancel_publication(&mut self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE publications SET status = 'cancelled', retracted_at = $1
             WHERE id = $2 AND status = 'scheduled'",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&mut *self.inner)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A published post taken down (deleted, or its text replaced by a
    /// retraction note: `how`).
    pub async fn mark_retracted(&mut self, id: &str, how: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE publications SET status = 'retracted', retracted_at = $1, error = $2
             WHERE id = $3 AND status = 'published'",
        )
        .bind(now_ms())
        .bind(how)
        .bind(id)
        .execute(&mut *self.inner)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores one reported number for a run (replacing an earlier one).
    pub async fn record_result(
        &mut self,
        run_id: RunId,
        metric: &str,
        value: f64,
    ) -> StoreResult<()> {
        sqlx::query("DELETE FROM results WHERE run_id = $1 AND metric = $2")
            .bind(run_id.to_string())
            .bind(metric)
            .execute(&mut *self.inner)
            .await?;
        sqlx::query(
            "INSERT INTO results (run_id, metric, value, recorded_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(run_id.to_string())
        .bind(metric)
        .bind(value)
        .bind(now_ms())
        .execute(&mut *self.inner)
        .await?;
        Ok(())
    }
}
