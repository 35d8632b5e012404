//! Schedules, their fires and their misses. A fire is keyed on
//! `(schedule_id, scheduled_for)` (and, for once-a-day schedules, on the
//! local date too), so two processes, a restart or a clock jump can insert
//! it only once; due schedules are claimed with `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL so two schedulers do not even plan the same tick together.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::messages::enqueue_in;
use super::{Backend, Store, StoreResult, Tx, corrupt};
use crate::domain::{ChatRef, Outbound};

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    pub id: String,
    pub name: String,
    pub cron: String,
    pub timezone: String,
    /// A built-in job (`digest`, …) or a flow name.
    pub target: String,
    pub input: String,
    pub catch_up: String,
    pub paused: bool,
    pub next_fire_at: Option<i64>,
}

/// A schedule to (re)define from the config file.
#[derive(Debug, Clone)]
pub struct DueSchedule {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub target: String,
    pub input: String,
    pub catch_up: String,
}

/// What the scheduler decided for one due schedule, applied in the claim's
/// transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FirePlan {
    /// The tick to fire: when, its local date (once-a-day schedules), and
    /// whether it fires late.
    pub fire: Option<(i64, Option<String>, bool)>,
    pub miss: Option<MissRecord>,
    pub next_fire_at: Option<i64>,
}

/// Ticks that did not fire on time.
#[derive(Debug, Clone, PartialEq)]
pub struct MissRecord {
    pub schedule: String,
    pub first_tick: i64,
    pub last_tick: i64,
    pub ticks: i64,
    /// `caught_up` (one late run covered them) or `skipped`.
    pub action: String,
    pub detected_at: i64,
}

/// A fire whose job has not run yet.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingFire {
    pub schedule_id: String,
    pub name: String,
    pub target: String,
    pub input: String,
    pub scheduled_for: i64,
    pub late: bool,
}

const COLUMNS: &str =
    "id, name, cron, timezone, flow, input, catch_up, paused, next_fire_at FROM schedules";

impl Store {
    /// Creates the schedule, or brings it in line with the config file. The
    /// cron expression changes only when the file's own value changed since
    /// the last start, so `/schedule digest 07:30` survives a restart.
    pub async fn define_schedule(&self, def: &DueSchedule, now: i64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let existing: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT id, config_cron FROM schedules WHERE name = $1")
                .bind(&def.name)
                .fetch_optional(&mut *tx)
                .await?;
        match existing {
            None => {
                sqlx::query(
                    "INSERT INTO schedules (id, name, cron, timezone, flow, input, enabled, created_at,
                         catch_up, paused, next_fire_at, config_cron, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, 0, NULL, $9, $10)
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(uuid::Uuid::new_v4().to_string())
                .bind(&def.name)
                .bind(&def.cron)
                .bind(&def.timezone)
                .bind(&def.target)
                .bind(&def.input)
                .bind(now)
                .bind(&def.catch_up)
                .bind(&def.cron)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            Some((id, config_cron)) => {
                let file_changed = config_cron.as_deref() != Some(def.cron.as_str());
                sqlx::query(
                    "UPDATE schedules SET timezone = $1, flow = $2, input = $3, catch_up = $4,
                         cron = CASE WHEN $5 = 1 THEN $6 ELSE cron END,
                         next_fire_at = CASE WHEN $5 = 1 OR timezone <> $1 OR enabled = 0
                             THEN NULL ELSE next_fire_at END,
                         config_cron = $6, updated_at = $7, enabled = 1
                     WHERE id = $8",
                )
                .bind(&def.timezone)
                .bind(&def.target)
                .bind(&def.input)
                .bind(&def.catch_up)
                .bind(i64::from(file_changed))
                .bind(&def.cron)
                .bind(now)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            }
        }
        self.commit_durably(tx).await?;
        Ok(())
    }

    /// Turns off every schedule not named in `keep` (nothing declares it
    /// any more: its flow file dropped `schedule`, or the config entry went
    /// or says `enabled = false`): it no longer fires, lists or pauses. Its
    /// fire and miss rows stay as history; declaring it again turns it
    /// back on, planned from then. Returns the names turned off.
    pub async fn retire_schedules(&self, keep: &[String], now: i64) -> StoreResult<Vec<String>> {
        let mut retired = Vec::new();
        for schedule in self.schedules().await? {
            if keep.contains(&schedule.name) {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "UPDATE schedules SET enabled = 0, next_fire_at = NULL, updated_at = $1
                 WHERE id = $2",
            )
            .bind(now)
            .bind(&schedule.id)
            .execute(&mut *tx)
            .await?;
            // A fire still pending would run the day the schedule is
            // declared again, for a tick long past: it is closed with the
            // schedule (done, with no run).
            sqlx::query(
                "UPDATE schedule_fires SET status = 'done', done_at = $1
                 WHERE schedule_id = $2 AND status = 'pending'",
            )
            .bind(now)
            .bind(&schedule.id)
            .execute(&mut *tx)
            .await?;
            self.commit_durably(tx).await?;
            retired.push(schedule.name);
        }
        Ok(retired)
    }

    /// The schedules in use (not retired), by name.
    pub async fn schedules(&self) -> StoreResult<Vec<ScheduleRow>> {
        let sql = format!("SELECT {COLUMNS} WHERE enabled = 1 ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(schedule_from_row).collect()
    }

    pub async fn schedule_named(&self, name: &str) -> StoreResult<Option<ScheduleRow>> {
        let sql = format!("SELECT {COLUMNS} WHERE name = $1 AND enabled = 1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&self.reads)
            .await?;
        row.as_ref().map(schedule_from_row).transpose()
    }

    /// Pauses or resumes; resuming plans from now, so the paused stretch is
    /// not reported as missed. False when there is no such schedule.
    pub async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        now: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let found = set_schedule_paused_in(&mut tx, name, paused, now).await?;
        self.commit_durably(tx).await?;
        Ok(found)
    }

    /// A new cron expression (from chat); the next tick is planned afresh.
    pub async fn set_schedule_cron(&self, name: &str, cron: &str, now: i64) -> StoreResult<bool> {
        let result = sqlx::query(
            "UPDATE schedules SET cron = $1, next_fire_at = NULL, updated_at = $2
             WHERE name = $3 AND enabled = 1",
        )
        .bind(cron)
        .bind(now)
        .bind(name)
        .execute(&self.pool)
        .await?;
        self.durable().await?;
        Ok(result.rows_affected() == 1)
    }

    /// Claims the schedules due at `now` (or never planned), asks `plan`
    /// what to do with each, and applies the plans in the same
    /// transaction. A schedule another process holds is left to it.
    pub async fn claim_due_schedules(
        &self,
        now: i64,
        mut plan: impl FnMut(&ScheduleRow) -> FirePlan,
    ) -> StoreResult<Vec<(ScheduleRow, FirePlan)>> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "SELECT {COLUMNS} WHERE enabled = 1 AND paused = 0
                 AND (next_fire_at IS NULL OR next_fire_at <= $1) ORDER BY name{lock}"
        );
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
        let mut applied = Vec::with_capacity(rows.len());
        for row in &rows {
            let schedule = schedule_from_row(row)?;
            let decided = plan(&schedule);
            let decided = apply_plan(&mut tx, &schedule, decided, now).await?;
            applied.push((schedule, decided));
        }
        self.commit_durably(tx).await?;
        Ok(applied)
    }

    /// Fires whose job has not run yet, oldest first.
    pub async fn pending_fires(&self) -> StoreResult<Vec<PendingFire>> {
        let rows: Vec<(String, String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT f.schedule_id, s.name, s.flow, s.input, f.scheduled_for, f.late
             FROM schedule_fires f JOIN schedules s ON s.id = f.schedule_id
             WHERE f.status = 'pending' AND s.enabled = 1 ORDER BY f.scheduled_for",
        )
        .fetch_all(&self.reads)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(schedule_id, name, target, input, scheduled_for, late)| PendingFire {
                    schedule_id,
                    name,
                    target,
                    input,
                    scheduled_for,
                    late: late == 1,
                },
            )
            .collect())
    }

    /// Takes a pending fire for `lease_ms` so that only this process runs
    /// its job now. False when it is done or another process holds it.
    pub async fn claim_fire(
        &self,
        fire: &PendingFire,
        now: i64,
        lease_ms: i64,
    ) -> StoreResult<bool> {
        Ok(sqlx::query(
            "UPDATE schedule_fires SET claimed_until = $1
             WHERE schedule_id = $2 AND scheduled_for = $3 AND status = 'pending'
               AND (claimed_until IS NULL OR claimed_until < $4)",
        )
        .bind(now + lease_ms)
        .bind(&fire.schedule_id)
        .bind(fire.scheduled_for)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Gives a fire whose job failed back, for the next tick to try again.
    pub async fn release_fire(&self, fire: &PendingFire) -> StoreResult<()> {
        sqlx::query(
            "UPDATE schedule_fires SET claimed_until = NULL
             WHERE schedule_id = $1 AND scheduled_for = $2 AND status = 'pending'",
        )
        .bind(&fire.schedule_id)
        .bind(fire.scheduled_for)
        .execute(&self.pool)
        .await?;
        self.durable().await?;
        Ok(())
    }

    /// Marks a fire done and queues its messages in one transaction. False
    /// (nothing queued) when another process completed it first.
    pub async fn complete_fire(
        &self,
        fire: &PendingFire,
        run_id: Option<&str>,
        messages: &[(ChatRef, Outbound)],
        now: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query(
            "UPDATE schedule_fires SET status = 'done', done_at = $1, run_id = $2
             WHERE schedule_id = $3 AND scheduled_for = $4 AND status = 'pending'",
        )
        .bind(now)
        .bind(run_id)
        .bind(&fire.schedule_id)
        .bind(fire.scheduled_for)
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() != 1 {
            return Ok(false);
        }
        for (chat, message) in messages {
            enqueue_in(&mut tx, chat, None, message).await?;
        }
        self.commit_durably(tx).await?;
        Ok(true)
    }

    /// How many fires a schedule has (tests and `/schedules`).
    pub async fn fire_count(&self, name: &str) -> StoreResult<i64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM schedule_fires f JOIN schedules s ON s.id = f.schedule_id WHERE s.name = $1",
        )
        .bind(name)
        .fetch_one(&self.reads)
        .await?;
        Ok(count)
    }

    /// Forgets finished fires scheduled before `before_ms`, and misses
    /// detected before it: a frequent housekeeping schedule would
    /// otherwise add a row per tick forever. Pending fires stay (their job
    /// has yet to run); the unique keys only matter for ticks still ahead
    /// of `next_fire_at`, far newer than any retention window.
    pub async fn prune_schedule_history(&self, before_ms: i64) -> StoreResult<u64> {
        let fires =
            sqlx::query("DELETE FROM schedule_fires WHERE status = 'done' AND scheduled_for < $1")
                .bind(before_ms)
                .execute(&self.pool)
                .await?
                .rows_affected();
        let misses = sqlx::query("DELETE FROM schedule_misses WHERE detected_at < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(fires + misses)
    }

    /// The ticks `name` fired for, oldest first.
    pub async fn fired_ticks(&self, name: &str) -> StoreResult<Vec<i64>> {
        let ticks: Vec<i64> = sqlx::query_scalar(
            "SELECT f.scheduled_for FROM schedule_fires f JOIN schedules s ON s.id = f.schedule_id
             WHERE s.name = $1 ORDER BY f.scheduled_for",
        )
        .bind(name)
        .fetch_all(&self.reads)
        .await?;
        Ok(ticks)
    }

    /// Misses detected in `[from, to)`, oldest first.
    pub async fn schedule_misses(&self, from: i64, to: i64) -> StoreResult<Vec<MissRecord>> {
        let rows: Vec<(String, i64, i64, i64, String, i64)> = sqlx::query_as(
            "SELECT s.name, m.first_tick, m.last_tick, m.ticks, m.action, m.detected_at
             FROM schedule_misses m JOIN schedules s ON s.id = m.schedule_id
             WHERE m.detected_at >= $1 AND m.detected_at < $2 ORDER BY m.detected_at, m.id",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.reads)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(schedule, first_tick, last_tick, ticks, action, detected_at)| MissRecord {
                    schedule,
                    first_tick,
                    last_tick,
                    ticks,
                    action,
                    detected_at,
                },
            )
            .collect())
    }

    /// The database's own clock, in Unix milliseconds: one time source for
    /// every process sharing it.
    pub async fn database_now_ms(&self) -> StoreResult<i64> {
        let sql = match self.backend {
            Backend::Postgres => {
                "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
            }
            Backend::Sqlite => {
                "SELECT CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
            }
        };
        Ok(sqlx::query_scalar(sql).fetch_one(&self.reads).await?)
    }
}

/// Inserts the fire and the miss (each at most once, whatever raced) and
/// moves the schedule on. Returns the plan as applied: a fire that was
/// already there is dropped from it.
impl Tx {
    /// Pauses or resumes a schedule inside the caller's transaction (a
    /// pause button: the press and the change commit together); false
    /// when there is no schedule by that name.
    pub async fn set_schedule_paused(
        &mut self,
        name: &str,
        paused: bool,
        now: i64,
    ) -> StoreResult<bool> {
        set_schedule_paused_in(&mut self.inner, name, paused, now).await
    }
}

async fn set_schedule_paused_in(
    tx: &mut Transaction<'_, Any>,
    name: &str,
    paused: bool,
    now: i64,
) -> StoreResult<bool> {
    let result = sqlx::query(
        "UPDATE schedules SET paused = $1, next_fire_at = NULL, updated_at = $2
         WHERE name = $3 AND enabled = 1",
    )
    .bind(i64::from(paused))
    .bind(now)
    .bind(name)
    .execute(&mut **tx)
    .await?;
    Ok(result.rows_affected() == 1)
}

async fn apply_plan(
    tx: &mut Transaction<'_, Any>,
    schedule: &ScheduleRow,
    mut plan: FirePlan,
    now: i64,
) -> StoreResult<FirePlan> {
    if let Some((at, local_date, late)) = &plan.fire {
        let inserted = sqlx::query(
            "INSERT INTO schedule_fires (schedule_id, scheduled_for, run_id, local_date, status, late, created_at)
             VALUES ($1, $2, NULL, $3, 'pending', $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&schedule.id)
        .bind(*at)
        .bind(local_date.as_deref())
        .bind(i64::from(*late))
        .bind(now)
        .execute(&mut **tx)
        .await?;
        if inserted.rows_affected() == 0 {
            tracing::info!(schedule = %schedule.name, tick = at, "tick already fired; not firing again");
            plan.fire = None;
        }
    }
    if let Some(miss) = &plan.miss {
        sqlx::query(
            "INSERT INTO schedule_misses (schedule_id, first_tick, last_tick, ticks, action, detected_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(&schedule.id)
        .bind(miss.first_tick)
        .bind(miss.last_tick)
        .bind(miss.ticks)
        .bind(&miss.action)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query("UPDATE schedules SET next_fire_at = $1 WHERE id = $2")
        .bind(plan.next_fire_at)
        .bind(&schedule.id)
        .execute(&mut **tx)
        .await?;
    Ok(plan)
}

fn schedule_from_row(row: &AnyRow) -> StoreResult<ScheduleRow> {
    let get = |e: sqlx::Error| corrupt(format!("a schedules row: {e}"));
    Ok(ScheduleRow {
        id: row.try_get(0).map_err(get)?,
        name: row.try_get(1).map_err(get)?,
        cron: row.try_get(2).map_err(get)?,
        timezone: row.try_get(3).map_err(get)?,
        target: row.try_get(4).map_err(get)?,
        input: row.try_get(5).map_err(get)?,
        catch_up: row.try_get(6).map_err(get)?,
        paused: row.try_get::<i64, _>(7).map_err(get)? == 1,
        next_fire_at: row.try_get(8).map_err(get)?,
    })
}
