//! The budget gate: no model call starts unless its worst-case cost fits in
//! what is left of today's and this month's budget. Days and months are the
//! business's own, in its time zone.

use chrono::Utc;
use chrono_tz::Tz;

use crate::config::Policy;
use crate::store::{
    BudgetRefusal, Caps, LedgerEntry, PeriodStatus, Reservation, Store, StoreResult,
};

#[derive(Clone)]
pub struct BudgetGate {
    store: Store,
    caps: Caps,
    timezone: Tz,
}

/// The business's current day and month, as period keys
/// ("2026-11-25", "2026-11").
pub fn period_keys(timezone: Tz) -> (String, String) {
    let local = Utc::now().with_timezone(&timezone);
    (
        local.format("%Y-%m-%d").to_string(),
        local.format("%Y-%m").to_string(),
    )
}

impl BudgetGate {
    pub fn new(store: Store, policy: &Policy, timezone: Tz) -> Self {
        BudgetGate {
            store,
            caps: Caps {
                daily_usd: policy.daily_budget_usd,
                monthly_usd: policy.monthly_budget_usd,
            },
            timezone,
        }
    }

    pub fn caps(&self) -> Caps {
        self.caps
    }

    pub fn periods(&self) -> (String, String) {
        period_keys(self.timezone)
    }

    /// Reserves `worst_case_usd` now, or says why not.
    pub async fn reserve(
        &self,
        worst_case_usd: f64,
    ) -> StoreResult<Result<Reservation, BudgetRefusal>> {
        let (day, month) = self.periods();
        self.store
            .reserve_budget(&day, &month, worst_case_usd, self.caps)
            .await
    }

    /// Replaces the reservation by what the call really cost (and records
    /// it), or releases it when no call was made.
    pub async fn settle(
        &self,
        reservation: &Reservation,
        entry: Option<&LedgerEntry>,
    ) -> StoreResult<()> {
        self.store.settle_budget(reservation, entry).await
    }

    pub async fn status(&self) -> StoreResult<(PeriodStatus, PeriodStatus)> {
        let (day, month) = self.periods();
        self.store.budget_status(&day, &month, self.caps).await
    }
}
