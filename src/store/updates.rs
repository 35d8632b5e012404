//! Raw platform updates, recorded before the platform is told they arrived
//! (Telegram confirms an update when the next `getUpdates` asks for a
//! higher offset, or when a webhook answers 200). Handling them is tracked
//! here too, so a restart handles what was recorded but never finished.

use super::{Store, StoreResult, now_ms};
use crate::domain::Platform;

/// One update as an adapter received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedUpdate {
    pub update_id: i64,
    pub chat_id: String,
    /// The adapter's own JSON for the update.
    pub payload: String,
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
        let now = now_ms();
        let mut fresh = Vec::with_capacity(updates.len());
        for update in updates {
            let inserted = sqlx::query(
                "INSERT INTO platform_updates (platform, update_id, chat_id, payload, received_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (platform, update_id) DO NOTHING",
            )
            .bind(platform.as_str())
            .bind(update.update_id)
            .bind(&update.chat_id)
            .bind(&update.payload)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if inserted {
                fresh.push(update.clone());
            }
        }
        tx.commit().await?;
        Ok(fresh)
    }

    /// Updates recorded but not yet handled, oldest first.
    pub async fn unhandled_updates(&self, platform: Platform) -> StoreResult<Vec<RecordedUpdate>> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT update_id, chat_id, payload FROM platform_updates
             WHERE platform = $1 AND handled_at IS NULL ORDER BY update_id",
        )
        .bind(platform.as_str())
        .fetch_all(&self.pool)
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
        Ok(())
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
        .fetch_one(&self.pool)
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
