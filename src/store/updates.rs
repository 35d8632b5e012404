//! Raw platform updates, recorded before the platform is told they arrived
//! (Telegram confirms an update when the next `getUpdates` asks for a
//! higher offset, or when a webhook answers 200; Discord's interactions are
//! acknowledged after this). Handling them is tracked here too, so a
//! restart handles what was recorded but never finished, and an update
//! that kept failing is marked failed instead of handled. Also the
//! interactions waiting for their answer (Discord's deferred responses).

use std::collections::HashSet;

use super::{Backend, Store, StoreResult, now_ms, to_json};
use crate::domain::{Inbound, Platform, RunId};

/// One update as an adapter received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedUpdate {
    pub update_id: i64,
    pub chat_id: String,
    /// The adapter's own JSON for the update.
    pub payload: String,
}

/// An interaction acknowledged and not answered yet. The token answers
/// it (Discord: for 15 minutes); `kind` is the adapter's own word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingInteraction {
    pub platform: Platform,
    pub update_key: String,
    pub channel_id: String,
    pub token: String,
    pub kind: String,
    pub opened_at_ms: i64,
}

impl Store {
    /// Records a batch of updates in one transaction; returns those not
    /// recorded before (a redelivered update is recorded once).
    pub async fn record_updates(
        &self,
        platform: Platform,
        updates: &[RecordedUpdate],
    ) -> StoreResult<Vec<RecordedUpdate>> {
        let mut tx = self.pool.begin().await?;
        let fresh = insert_updates_in(&mut tx, self.backend, platform, updates.iter()).await?;
        self.commit_durably(tx).await?;
        Ok(fresh.into_iter().map(|at| updates[at].clone()).collect())
    }

    /// [`Store::record_updates`], and each fresh update's [`Inbound`] (its
    /// dedup row and its line in the conversation log) in the same
    /// transaction: the raw update and the inbound are one commit, shared
    /// by the whole batch the platform sent, and four statements whatever
    /// its size (four a row before: most of the database's work on a busy
    /// bot).
    pub async fn record_arrivals(
        &self,
        platform: Platform,
        updates: &[(RecordedUpdate, Inbound)],
    ) -> StoreResult<Vec<RecordedUpdate>> {
        let mut tx = self.pool.begin().await?;
        let fresh = insert_updates_in(
            &mut tx,
            self.backend,
            platform,
            updates.iter().map(|(u, _)| u),
        )
        .await?;
        let inbounds: Vec<&Inbound> = fresh.iter().map(|&at| &updates[at].1).collect();
        super::messages::record_inbounds_in(&mut tx, self.backend, &inbounds).await?;
        self.commit_durably(tx).await?;
        Ok(fresh.into_iter().map(|at| updates[at].0.clone()).collect())
    }

    /// Marks many updates handled in one statement (the front door groups
    /// its marks: a mark lost in a crash only makes a restart hand the
    /// update to the controller again, which finds it done).
    pub async fn mark_updates_handled(&self, platform: Platform, ids: &[i64]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE platform_updates SET handled_at = $1
             WHERE platform = $2 AND update_id IN ({}) AND handled_at IS NULL",
            self.backend.json_integers("$3")
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms())
            .bind(platform.as_str())
            .bind(super::to_json(&ids)?)
            .execute(&self.pool)
            .await?;
        self.durable().await?;
        Ok(())
    }

    /// Updates recorded but not yet handled, oldest first.
    pub async fn unhandled_updates(&self, platform: Platform) -> StoreResult<Vec<RecordedUpdate>> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT update_id, chat_id, payload FROM platform_updates
             WHERE platform = $1 AND handled_at IS NULL AND failed_at IS NULL
             ORDER BY update_id",
        )
        .bind(platform.as_str())
        .fetch_all(&self.reads)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(update_id, chat_id, payload)| RecordedUpdate {
                update_id,
                chat_id,
                payload,
            })
            .collect())
    }

    pub async fn mark_update_handled(&self, platform: Platform, update_id: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE platform_updates SET handled_at = $1 WHERE platform = $2 AND update_id = $3",
        )
        .bind(now_ms())
        .bind(platform.as_str())
        .bind(update_id)
        .execute(&self.pool)
        .await?;
        self.durable().await?;
        Ok(())
    }

    /// Marks an update that failed every attempt: not handled again after
    /// a restart, and visible for the operator (`attempts`, `failed_at`).
    pub async fn mark_update_failed(
        &self,
        platform: Platform,
        update_id: i64,
        attempts: u32,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE platform_updates SET failed_at = $1, attempts = $2
             WHERE platform = $3 AND update_id = $4",
        )
        .bind(now_ms())
        .bind(i64::from(attempts))
        .bind(platform.as_str())
        .bind(update_id)
        .execute(&self.pool)
        .await?;
        self.durable().await?;
        Ok(())
    }

    /// How many updates of `platform` were given up on.
    pub async fn failed_updates(&self, platform: Platform) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM platform_updates WHERE platform = $1 AND failed_at IS NOT NULL",
        )
        .bind(platform.as_str())
        .fetch_one(&self.reads)
        .await?)
    }

    /// Empties the raw payload of finished updates received before
    /// `before_ms`: the row (id, chat, when) stays for the polling offset
    /// and the audit trail, what was said does not.
    pub async fn forget_payloads(&self, platform: Platform, before_ms: i64) -> StoreResult<u64> {
        Ok(sqlx::query(
            "UPDATE platform_updates SET payload = ''
             WHERE platform = $1 AND received_at < $2 AND payload <> ''
               AND (handled_at IS NOT NULL OR failed_at IS NOT NULL)",
        )
        .bind(platform.as_str())
        .bind(before_ms)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Remembers an interaction acknowledged and waiting for its answer.
    pub async fn save_pending_interaction(&self, pending: &PendingInteraction) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO pending_interactions (platform, update_key, channel_id, token, kind, opened_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (platform, update_key) DO NOTHING",
        )
        .bind(pending.platform.as_str())
        .bind(&pending.update_key)
        .bind(&pending.channel_id)
        .bind(&pending.token)
        .bind(&pending.kind)
        .bind(pending.opened_at_ms)
        .execute(&self.pool)
        .await?;
        self.durable().await?;
        Ok(())
    }

    /// Forgets an interaction once answered (or no longer answerable).
    pub async fn forget_pending_interaction(
        &self,
        platform: Platform,
        update_key: &str,
    ) -> StoreResult<()> {
        sqlx::query("DELETE FROM pending_interactions WHERE platform = $1 AND update_key = $2")
            .bind(platform.as_str())
            .bind(update_key)
            .execute(&self.pool)
            .await?;
        self.durable().await?;
        Ok(())
    }

    /// Interactions opened since `since_ms` and not answered, oldest
    /// first; older ones are deleted (their tokens no longer work).
    pub async fn pending_interactions(
        &self,
        platform: Platform,
        since_ms: i64,
    ) -> StoreResult<Vec<PendingInteraction>> {
        sqlx::query("DELETE FROM pending_interactions WHERE platform = $1 AND opened_at < $2")
            .bind(platform.as_str())
            .bind(since_ms)
            .execute(&self.pool)
            .await?;
        self.durable().await?;
        let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
            "SELECT update_key, channel_id, token, kind, opened_at FROM pending_interactions
             WHERE platform = $1 ORDER BY opened_at",
        )
        .bind(platform.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(update_key, channel_id, token, kind, opened_at_ms)| PendingInteraction {
                    platform,
                    update_key,
                    channel_id,
                    token,
                    kind,
                    opened_at_ms,
                },
            )
            .collect())
    }

    /// The key of the update that started `run` on `platform`, if an
    /// update did (runs started from a chat are keyed
    /// `inbound:<platform>:<update key>`).
    pub async fn run_origin(&self, platform: Platform, run: RunId) -> StoreResult<Option<String>> {
        let key: Option<String> =
            sqlx::query_scalar("SELECT idempotency_key FROM runs WHERE id = $1")
                .bind(run.to_string())
                .fetch_optional(&self.reads)
                .await?;
        let prefix = format!("inbound:{platform}:");
        Ok(key.and_then(|k| k.strip_prefix(&prefix).map(str::to_string)))
    }

    /// The highest update id recorded for `platform` since `since_ms`
    /// (Unix milliseconds), if any.
    pub async fn last_update_id(
        &self,
        platform: Platform,
        since_ms: i64,
    ) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(update_id) FROM platform_updates WHERE platform = $1 AND received_at >= $2",
        )
        .bind(platform.as_str())
        .bind(since_ms)
        .fetch_one(&self.reads)
        .await?)
    }

    /// Per chat of `platform`, the highest update id recorded at
    /// `since_ms` or later and before `before_ms` (Unix milliseconds), the
    /// chats with the newest update first: where a platform's history can
    /// be read from after the last update seen there.
    pub async fn last_update_per_chat(
        &self,
        platform: Platform,
        since_ms: i64,
        before_ms: i64,
    ) -> StoreResult<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT chat_id, MAX(update_id) AS last_id FROM platform_updates
             WHERE platform = $1 AND received_at >= $2 AND received_at < $3
             GROUP BY chat_id ORDER BY last_id DESC",
        )
        .bind(platform.as_str())
        .bind(since_ms)
        .bind(before_ms)
        .fetch_all(&self.reads)
        .await?)
    }

    /// Forgets handled updates received before `before_ms`.
    pub async fn prune_updates(&self, platform: Platform, before_ms: i64) -> StoreResult<u64> {
        Ok(sqlx::query(
            "DELETE FROM platform_updates
             WHERE platform = $1 AND handled_at IS NOT NULL AND received_at < $2",
        )
        .bind(platform.as_str())
        .bind(before_ms)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}

/// Stores one raw update unless the platform sent it before; true when it
/// is new (a redelivered update is recorded once).
/// Inserts the updates not recorded before, in one statement; returns
/// their positions among `updates`, in order, each update once.
async fn insert_updates_in<'a>(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    platform: Platform,
    updates: impl Iterator<Item = &'a RecordedUpdate>,
) -> StoreResult<Vec<usize>> {
    #[derive(serde::Serialize)]
    struct Row<'a> {
        update_id: i64,
        chat_id: &'a str,
        payload: &'a str,
    }
    let rows: Vec<Row> = updates
        .map(|u| Row {
            update_id: u.update_id,
            chat_id: &u.chat_id,
            payload: &u.payload,
        })
        .collect();
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    // `WHERE true`: SQLite would read the ON of ON CONFLICT as a join's
    // otherwise.
    let sql = format!(
        "INSERT INTO platform_updates (platform, update_id, chat_id, payload, received_at)
         SELECT $1, update_id, chat_id, payload, $2 FROM ({}) r WHERE true ORDER BY n
         ON CONFLICT (platform, update_id) DO NOTHING
         RETURNING update_id",
        backend.json_rows(
            "$3",
            &[("update_id", true), ("chat_id", false), ("payload", false)]
        )
    );
    let mut inserted: HashSet<i64> = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
        .bind(platform.as_str())
        .bind(now_ms())
        .bind(to_json(&rows)?)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
    // An id twice in the batch was inserted once: it is fresh once.
    Ok((0..rows.len())
        .filter(|&at| inserted.remove(&rows[at].update_id))
        .collect())
}
