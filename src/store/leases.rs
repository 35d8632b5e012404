//! Leases on runs. A claim writes a fresh token into `lease_owner`: every
//! claim is exclusive, whoever asks (two engines of one process included),
//! and a write fenced by a token that is no longer the run's is refused.
//!
//! On SQLite, claims, heartbeats and pacing do not wait for their own flush
//! to disk (durability.rs): one lost in a power cut is simply taken again,
//! and what a run then does outside the machine follows a reservation or a
//! commit whose flush covers the claim as well.

use super::Tx;
use super::runs::{RUN_COLUMNS, run_from_row};
use super::{Backend, RunRow, Store, StoreResult, now_ms};
use crate::domain::{InputPurpose, RunId, RunStatus};

/// A run held under one claim's lease token.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    pub run: RunRow,
    /// Unique to this claim; the fence on every write made under it.
    pub token: String,
}

impl Store {
    /// Takes the lease on a runnable run under `token`, unless a live lease
    /// holds it, whoever owns that lease.
    pub async fn claim_run(
        &self,
        id: RunId,
        token: &str,
        lease_ms: i64,
    ) -> StoreResult<Option<ClaimedRun>> {
        let now = now_ms();
        // The run comes back with its claim: one statement, not a claim
        // and a read.
        let sql = format!(
            "UPDATE runs SET lease_owner = $1, lease_until = $2
             WHERE id = $3 AND status = 'runnable'
               AND (lease_owner IS NULL OR lease_until < $4)
             RETURNING {RUN_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(token)
            .bind(now + lease_ms)
            .bind(id.to_string())
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        claimed_from(row.as_ref(), token)
    }

    /// Claims the oldest runnable run nobody holds a live lease on: runs
    /// left behind by a crash, or woken by a decision. On PostgreSQL several
    /// workers can call this at once; `SKIP LOCKED` hands each a different
    /// run.
    pub async fn claim_next_runnable(
        &self,
        token: &str,
        lease_ms: i64,
    ) -> StoreResult<Option<ClaimedRun>> {
        let now = now_ms();
        // PostgreSQL: several workers may ask at once; `SKIP LOCKED` hands
        // each a different run. SQLite has one writer.
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE runs SET lease_owner = $1, lease_until = $2
             WHERE id = (SELECT id FROM runs
                         WHERE status = 'runnable' AND (lease_owner IS NULL OR lease_until < $3)
                         ORDER BY updated_at LIMIT 1{lock})
             RETURNING {RUN_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(token)
            .bind(now + lease_ms)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        claimed_from(row.as_ref(), token)
    }

    /// Extends a live lease (the heartbeat of a running step). False when
    /// the claim is no longer the run's: its commit will be refused.
    pub async fn renew_lease(&self, claimed: &ClaimedRun, lease_ms: i64) -> StoreResult<bool> {
        Ok(
            sqlx::query("UPDATE runs SET lease_until = $1 WHERE id = $2 AND lease_owner = $3")
                .bind(now_ms() + lease_ms)
                .bind(claimed.run.id.to_string())
                .bind(&claimed.token)
                .execute(&self.pool)
                .await?
                .rows_affected()
                == 1,
        )
    }

    pub async fn release_run(&self, claimed: &ClaimedRun) -> StoreResult<()> {
        sqlx::query(
            "UPDATE runs SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2",
        )
        .bind(claimed.run.id.to_string())
        .bind(&claimed.token)
        .execute(&self.pool)
        .await?;
        self.durable().await?;
        Ok(())
    }
}

/// The claim a claiming UPDATE's returned row makes, if it claimed one.
fn claimed_from(row: Option<&sqlx::any::AnyRow>, token: &str) -> StoreResult<Option<ClaimedRun>> {
    row.map(|row| {
        Ok(ClaimedRun {
            run: run_from_row(row)?,
            token: token.to_string(),
        })
    })
    .transpose()
}

/// The run's new status, written under a claim.
#[derive(Debug, Clone, Copy)]
pub struct Fenced<'a> {
    pub status: RunStatus,
    pub waiting_for: Option<InputPurpose>,
    pub summary: Option<&'a str>,
    pub lease_ms: i64,
}

impl Tx {
    /// Sets the run's status if `claimed` still holds its lease (and
    /// renews it, or clears it when the run stops being runnable). False,
    /// changing nothing, when another claim superseded it: the caller must
    /// then roll back everything else it wrote.
    pub async fn fence(&mut self, claimed: &ClaimedRun, new: Fenced<'_>) -> StoreResult<bool> {
        let now = now_ms();
        // A run left anything but runnable is released in the same write:
        // nothing more runs under this claim, and a decision that wakes
        // the run can be claimed at once rather than after a separate
        // release.
        Ok(sqlx::query(
            "UPDATE runs SET status = $1, waiting_for = $2, summary = COALESCE($3, summary),
                    updated_at = $4,
                    lease_owner = CASE WHEN $1 = 'runnable' THEN lease_owner END,
                    lease_until = CASE WHEN $1 = 'runnable' THEN $5 END
             WHERE id = $6 AND lease_owner = $7 AND status = 'runnable'",
        )
        .bind(new.status.as_str())
        .bind(new.waiting_for.map(InputPurpose::as_str))
        .bind(new.summary)
        .bind(now)
        .bind(now + new.lease_ms)
        .bind(claimed.run.id.to_string())
        .bind(&claimed.token)
        .execute(&mut *self.inner)
        .await?
        .rows_affected()
            == 1)
    }
}

/// Leader leases: work only one process may do at a time (see
/// `crate::coordination`). A lease is a row; taking it succeeds when no
/// live lease holds it, or when the taker already holds it (a renewal).
impl Store {
    /// Takes (or renews) the lease `name` under `token` until `lease_ms`
    /// from now. True when this token holds it now.
    pub async fn take_leader_lease(
        &self,
        name: &str,
        holder: &str,
        token: &str,
        lease_ms: i64,
    ) -> StoreResult<bool> {
        let now = now_ms();
        let taken = sqlx::query(
            "INSERT INTO leader_leases (name, holder, token, lease_until, acquired_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = excluded.token,
                 lease_until = excluded.lease_until,
                 acquired_at = CASE WHEN leader_leases.token = excluded.token
                                    THEN leader_leases.acquired_at ELSE excluded.acquired_at END
             WHERE leader_leases.lease_until < $5 OR leader_leases.token = excluded.token",
        )
        .bind(name)
        .bind(holder)
        .bind(token)
        .bind(now + lease_ms)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(taken == 1)
    }

    /// Gives the lease up at once (a clean stop), so another process need
    /// not wait for it to lapse.
    pub async fn release_leader_lease(&self, name: &str, token: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM leader_leases WHERE name = $1 AND token = $2")
            .bind(name)
            .bind(token)
            .execute(&self.pool)
            .await?;
        self.durable().await?;
        Ok(())
    }

    /// Drops the lease `name` whoever holds it: only for SQLite at start,
    /// where any holder is a dead process.
    pub async fn drop_leader_lease(&self, name: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM leader_leases WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        self.durable().await?;
        Ok(())
    }

    /// Who holds the lease `name` now, if anyone (for tests and doctor).
    pub async fn leader_lease_holder(&self, name: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT holder FROM leader_leases WHERE name = $1 AND lease_until >= $2",
        )
        .bind(name)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Takes one send slot of `scope` on `platform` under a shared limit
    /// of one send per `interval_ms` with bursts up to `tolerance_ms`
    /// ahead (GCRA, one row per scope, so every process on the database
    /// counts against the same limit). Ok(None) when the send may go now;
    /// Ok(Some(ms)) is how long to wait before asking again.
    pub async fn take_send_slot(
        &self,
        platform: &str,
        scope: &str,
        interval_ms: i64,
        tolerance_ms: i64,
    ) -> StoreResult<Option<i64>> {
        let now = now_ms();
        let taken: Option<i64> = sqlx::query_scalar(
            "INSERT INTO send_pacing (platform, scope, tat) VALUES ($1, $2, $3)
             ON CONFLICT (platform, scope) DO UPDATE
                 SET tat = (CASE WHEN send_pacing.tat > $4 THEN send_pacing.tat ELSE $4 END) + $5
             WHERE send_pacing.tat - $6 <= $4
             RETURNING tat",
        )
        .bind(platform)
        .bind(scope)
        .bind(now + interval_ms)
        .bind(now)
        .bind(interval_ms)
        .bind(tolerance_ms)
        .fetch_optional(&self.pool)
        .await?;
        if taken.is_some() {
            return Ok(None);
        }
        let tat: Option<i64> =
            sqlx::query_scalar("SELECT tat FROM send_pacing WHERE platform = $1 AND scope = $2")
                .bind(platform)
                .bind(scope)
                .fetch_optional(&self.pool)
                .await?;
        Ok(Some(tat.map_or(1, |tat| (tat - tolerance_ms - now).max(1))))
    }
}
