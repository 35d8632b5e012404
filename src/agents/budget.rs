//! The budget gate: no model call starts unless its worst-case cost fits in
//! what is left of today's and this month's budget. Days and months are the
//! business's own, in its time zone. A granted reservation is a guard that
//! gives the money back if its call ends without settling, and the sweeper
//! releases what a crashed process left behind.

use std::time::Duration;

use chrono::Utc;
use chrono_tz::Tz;

use super::router::backoff;
use super::{Agents, Attempt, ModelError, conservative_prompt_tokens, count_prompt_tokens};
use crate::config::{ModelsSettings, Policy};
use crate::store::{
    BudgetRefusal, Caps, HeldReservation, PeriodStatus, Reservation, Store, StoreResult,
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

/// Slack on top of the longest call: the ledger writes around it, a slow
/// database, clocks of two processes.
const SWEEP_MARGIN: Duration = Duration::from_secs(60);

/// The longest one reservation can legitimately be held: every try of one
/// model timing out, with the longest wait allowed between tries.
pub fn longest_call(settings: &ModelsSettings) -> Duration {
    let retries = settings
        .labels
        .values()
        .map(|p| p.retries)
        .max()
        .unwrap_or(0);
    let timeout = Duration::from_secs(settings.timeout_secs.max(1));
    let longest_retry_after = Duration::from_secs(settings.max_retry_after_secs);
    let waits: Duration = (0..retries)
        .map(|tries| longest_retry_after.max(backoff(settings.backoff_ms, tries)))
        .sum();
    timeout * (retries + 1) + waits + SWEEP_MARGIN
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

    /// Reserves `worst_case_usd` now, or says why not. Settle the guard
    /// with the call's ledger row; dropped unsettled, it gives the money
    /// back.
    pub async fn reserve(
        &self,
        worst_case_usd: f64,
    ) -> StoreResult<Result<HeldReservation, BudgetRefusal>> {
        let (day, month) = self.periods();
        self.store
            .reserve_budget(&day, &month, worst_case_usd, self.caps)
            .await
    }

    pub async fn status(&self) -> StoreResult<(PeriodStatus, PeriodStatus)> {
        let (day, month) = self.periods();
        self.store.budget_status(&day, &month, self.caps).await
    }
}

impl Agents {
    /// Releases reservations older than the longest possible call: their
    /// process died mid-call. The runtime calls this periodically; each
    /// release is logged and kept (status `swept`) for `/cost`.
    pub async fn sweep_reservations(&self) -> StoreResult<Vec<Reservation>> {
        let max_age = longest_call(&self.inner.settings);
        self.inner
            .store
            .sweep_reservations(max_age.as_millis() as i64)
            .await
    }

    /// Reserves the attempt's worst case: the prompt's tokens at the input
    /// price plus every allowed output token at the output price.
    pub(super) async fn reserve(
        &self,
        attempt: &Attempt<'_>,
    ) -> Result<Result<HeldReservation, BudgetRefusal>, ModelError> {
        self.reserve_at(attempt, 1.0).await
    }

    /// Reserves the worst case at `price_factor` times the model's price.
    pub(super) async fn reserve_at(
        &self,
        attempt: &Attempt<'_>,
        price_factor: f64,
    ) -> Result<Result<HeldReservation, BudgetRefusal>, ModelError> {
        let settings = &self.inner.settings;
        let price = settings
            .price(attempt.model)
            .copied()
            .unwrap_or(crate::config::Price {
                input: 0.0,
                cached_input: None,
                output: 0.0,
            });
        let texts = [attempt.prompt.system, attempt.prompt.prompt];
        let worst = |prompt_tokens: u64| {
            price.cost(prompt_tokens, 0, attempt.prompt.max_tokens) * price_factor
        };
        let budget = &self.inner.budget;
        // The bound first: it never undercounts, and it keeps the
        // tokenizer's tables (tens of MiB) out of memory while the budget is
        // comfortable. Only a refusal is worth an exact count.
        let estimate = conservative_prompt_tokens(&texts);
        let first = budget
            .reserve(worst(estimate))
            .await
            .map_err(ModelError::Ledger)?;
        if first.is_ok() {
            return Ok(first);
        }
        let kind = settings.providers[&attempt.model.provider].kind;
        match count_prompt_tokens(kind, &attempt.model.model, &texts) {
            Some(exact) if exact < estimate => budget
                .reserve(worst(exact))
                .await
                .map_err(ModelError::Ledger),
            _ => Ok(first),
        }
    }
}
