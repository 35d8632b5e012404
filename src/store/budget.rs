//! Budget periods. A model call reserves its worst-case
//! cost in the day's and the month's period before it starts; the guarded
//! UPDATE makes concurrent reservations queue on the row, so together they
//! can never pass the cap. After the call the reservation becomes the real
//! cost, in the same transaction as the call's ledger row.

use sqlx::{Any, Transaction};

use super::ledger::insert_call;
use super::reservations::{HeldReservation, claim_held, give_back_amount, insert_reservation};
use super::{LedgerEntry, Store, StoreResult};

/// Where a reservation was made, and how much. `id` names its row in
/// `budget_reservations` (empty for reservations older than those rows).
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub id: String,
    pub day: String,
    pub month: String,
    pub amount_usd: f64,
}

/// A period's state, for messages and `/cost`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PeriodStatus {
    pub spent_usd: f64,
    pub reserved_usd: f64,
    pub cap_usd: f64,
}

impl PeriodStatus {
    pub fn left_usd(&self) -> f64 {
        (self.cap_usd - self.spent_usd - self.reserved_usd).max(0.0)
    }
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetRefusal {
    pub needed_usd: f64,
    pub day: PeriodStatus,
    pub month: PeriodStatus,
    /// Which cap stopped it: "today's" or "this month's".
    pub which: &'static str,
}

/// The caps a reservation is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub daily_usd: f64,
    pub monthly_usd: f64,
}

impl Store {
    /// Reserves `amount_usd` in both periods, or nothing if either cap
    /// would be passed. The reservation is a row too, and the guard
    /// returned gives it back if it is dropped unsettled.
    pub async fn reserve_budget(
        &self,
        day: &str,
        month: &str,
        amount_usd: f64,
        caps: Caps,
    ) -> StoreResult<Result<HeldReservation, BudgetRefusal>> {
        let mut tx = self.pool.begin().await?;
        let day_ok = reserve_in(&mut tx, &format!("day:{day}"), amount_usd, caps.daily_usd).await?;
        let month_ok = day_ok
            && reserve_in(
                &mut tx,
                &format!("month:{month}"),
                amount_usd,
                caps.monthly_usd,
            )
            .await?;
        if day_ok && month_ok {
            let reservation = Reservation {
                id: uuid::Uuid::new_v4().simple().to_string(),
                day: day.to_string(),
                month: month.to_string(),
                amount_usd,
            };
            insert_reservation(&mut tx, &reservation).await?;
            self.commit_durably(tx).await?;
            return Ok(Ok(HeldReservation::new(self.clone(), reservation)));
        }
        tx.rollback().await?;
        let (day_status, month_status) = self.budget_status(day, month, caps).await?;
        Ok(Err(BudgetRefusal {
            needed_usd: amount_usd,
            day: day_status,
            month: month_status,
            which: if day_ok { "this month's" } else { "today's" },
        }))
    }

    /// Turns a reservation into the call's real cost and records the call
    /// (when one was made), in one transaction.
    pub async fn settle_budget(
        &self,
        reservation: &Reservation,
        entry: Option<&LedgerEntry>,
    ) -> StoreResult<()> {
        let spent = entry.and_then(|e| e.cost_usd).unwrap_or(0.0);
        let mut tx = self.pool.begin().await?;
        settle_in(&mut tx, reservation, spent).await?;
        if let Some(entry) = entry {
            insert_call(&mut tx, entry).await?;
        }
        self.commit_durably(tx).await?;
        Ok(())
    }

    pub async fn budget_status(
        &self,
        day: &str,
        month: &str,
        caps: Caps,
    ) -> StoreResult<(PeriodStatus, PeriodStatus)> {
        let read = |period: String, cap: f64| async move {
            let row: Option<(f64, f64, f64)> = sqlx::query_as(
                "SELECT spent_usd, reserved_usd, extra_cap_usd FROM budget_periods WHERE period = $1",
            )
            .bind(period)
            .fetch_optional(&self.reads)
            .await?;
            let (spent, reserved, extra) = row.unwrap_or((0.0, 0.0, 0.0));
            StoreResult::Ok(PeriodStatus {
                spent_usd: spent,
                reserved_usd: reserved,
                cap_usd: cap + extra,
            })
        };
        Ok((
            read(format!("day:{day}"), caps.daily_usd).await?,
            read(format!("month:{month}"), caps.monthly_usd).await?,
        ))
    }

    /// Raises one day's cap, once: false if it was raised already.
    pub async fn raise_daily_cap(&self, day: &str, amount_usd: f64) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let raised = raise_daily_cap_in(&mut tx, day, amount_usd).await?;
        self.commit_durably(tx).await?;
        Ok(raised)
    }
}

pub(super) async fn raise_daily_cap_in(
    tx: &mut Transaction<'_, Any>,
    day: &str,
    amount_usd: f64,
) -> StoreResult<bool> {
    let period = format!("day:{day}");
    ensure_period(tx, &period).await?;
    Ok(sqlx::query(
        "UPDATE budget_periods SET extra_cap_usd = $1 WHERE period = $2 AND extra_cap_usd = 0",
    )
    .bind(amount_usd)
    .bind(&period)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1)
}

/// Replaces a reservation by what was spent, in both its periods. A
/// reservation already released (swept while its call still ran) adds what
/// was spent without giving its amount back a second time.
pub(super) async fn settle_in(
    tx: &mut Transaction<'_, Any>,
    reservation: &Reservation,
    spent: f64,
) -> StoreResult<()> {
    let reserved = if claim_held(tx, reservation).await? {
        reservation.amount_usd
    } else {
        0.0
    };
    give_back_amount(tx, reservation, reserved, spent).await
}

async fn ensure_period(tx: &mut Transaction<'_, Any>, period: &str) -> StoreResult<()> {
    sqlx::query("INSERT INTO budget_periods (period) VALUES ($1) ON CONFLICT (period) DO NOTHING")
        .bind(period)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The guarded reservation: succeeds only if spent + reserved + amount stays
/// within the cap (plus any raise). The period's row is made only when the
/// guarded UPDATE finds none (the first call of a day or a month), so a
/// reservation is one statement a period, not two.
async fn reserve_in(
    tx: &mut Transaction<'_, Any>,
    period: &str,
    amount: f64,
    cap: f64,
) -> StoreResult<bool> {
    if guarded_reserve(tx, period, amount, cap).await? {
        return Ok(true);
    }
    // Refused, or no row yet: make the row if it is missing and try once
    // more. Tried again even when another transaction made the row first
    // (its insert wins and ours does nothing): that row is as new.
    ensure_period(tx, period).await?;
    guarded_reserve(tx, period, amount, cap).await
}

async fn guarded_reserve(
    tx: &mut Transaction<'_, Any>,
    period: &str,
    amount: f64,
    cap: f64,
) -> StoreResult<bool> {
    Ok(sqlx::query(
        "UPDATE budget_periods SET reserved_usd = reserved_usd + $1
         WHERE period = $2 AND spent_usd + reserved_usd + $1 <= $3 + extra_cap_usd",
    )
    .bind(amount)
    .bind(period)
    .bind(cap)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1)
}
