//! The fallback chain and retries: a call walks its tier's models in
//! order, tries each up to `1 + retries` times (honouring `retry-after`),
//! and, when its label allows, steps down to a cheaper tier when the budget
//! is short. Every attempt is reserved first and lands in the ledger after.

use std::time::{Duration, Instant};

use super::providers::{CallError, Reply};
use super::{Agents, Attempt, Completion, ModelCall, ModelError, ResponseCache, scaled_max_tokens};
use crate::config::OnBudget;
use crate::domain::Tier;
use crate::store::HeldReservation;

impl Agents {
    /// Calls a model of the call's tier (capped by its label), falling back
    /// down the chain and, when the label allows, to cheaper tiers when the
    /// budget is short.
    #[tracing::instrument(skip_all, fields(run = ?call.run_id, step = ?call.step, tier = %call.tier))]
    pub async fn complete(&self, call: &ModelCall) -> Result<Completion, ModelError> {
        if !self.is_configured() {
            return Err(ModelError::NotConfigured);
        }
        let policy = self.inner.settings.policy(call.label);
        let mut tier = call.tier.min(policy.tier_cap);
        let max_tokens = scaled_max_tokens(call, &policy);
        loop {
            match self
                .complete_on_tier(call, tier, max_tokens, policy.retries, policy.cache)
                .await
            {
                Err(ModelError::Blocked(refusal)) => match (policy.on_budget, tier.cheaper()) {
                    (OnBudget::Downgrade, Some(cheaper)) => {
                        tracing::info!(from = %tier, to = %cheaper, "budget short; downgrading");
                        tier = cheaper;
                    }
                    _ => return Err(ModelError::Blocked(refusal)),
                },
                other => return other,
            }
        }
    }

    async fn complete_on_tier(
        &self,
        call: &ModelCall,
        tier: Tier,
        max_tokens: u64,
        retries: u32,
        may_cache: bool,
    ) -> Result<Completion, ModelError> {
        let chain = self.inner.settings.usable_chain(tier);
        let mut blocked = None;
        let mut last_failure = None;
        for model in &chain {
            let attempt = Attempt::new(call, model, tier, max_tokens);
            let cache_key = (may_cache && ResponseCache::is_cacheable(&attempt.prompt))
                .then(|| ResponseCache::key(model, &attempt.prompt));
            if let Some(key) = &cache_key
                && let Some(reply) = self.inner.cache.get(key).await
            {
                return self.record_cache_hit(&attempt, &reply).await;
            }
            let reservation = match self.reserve(&attempt).await? {
                Ok(reservation) => reservation,
                Err(refusal) => {
                    self.record(&attempt, "blocked", None, Duration::ZERO)
                        .await?;
                    blocked = Some(refusal);
                    continue;
                }
            };
            match self
                .attempt_with_retries(&attempt, &reservation, retries)
                .await?
            {
                Ok(completion) => {
                    if let Some(key) = cache_key {
                        self.inner.cache.insert(key, completion.1).await;
                    }
                    return Ok(completion.0);
                }
                Err(error) => last_failure = Some((model.to_string(), error)),
            }
        }
        match (last_failure, blocked) {
            (Some((model, error)), _) => Err(ModelError::Exhausted { tier, model, error }),
            (None, Some(refusal)) => Err(ModelError::Blocked(refusal)),
            (None, None) => Err(ModelError::NotConfigured),
        }
    }

    /// Tries one model up to `1 + retries` times and settles its
    /// reservation. The outer Result is a ledger failure (the reservation
    /// is given back then, not left to hold the budget); the inner one the
    /// call's outcome. Dropped mid-call, the reservation's guard releases it.
    async fn attempt_with_retries(
        &self,
        attempt: &Attempt<'_>,
        reservation: &HeldReservation,
        retries: u32,
    ) -> Result<Result<(Completion, Reply), CallError>, ModelError> {
        let outcome = self.try_model(attempt, reservation, retries).await;
        if outcome.is_err()
            && let Err(error) = reservation
                .abandon("the cost ledger could not be written")
                .await
        {
            tracing::warn!(error = ?error, "could not release a reservation; the sweeper will");
        }
        outcome
    }

    async fn try_model(
        &self,
        attempt: &Attempt<'_>,
        reservation: &HeldReservation,
        retries: u32,
    ) -> Result<Result<(Completion, Reply), CallError>, ModelError> {
        let provider = &self.inner.providers[&attempt.model.provider];
        let timeout = Duration::from_secs(self.inner.settings.timeout_secs.max(1));
        let mut tries = 0;
        loop {
            let started = Instant::now();
            let outcome = provider
                .call(&attempt.model.model, &attempt.prompt, timeout)
                .await;
            let latency = started.elapsed();
            match outcome {
                Ok(reply) => {
                    let completion = self.completion_from(attempt, &reply, false);
                    let entry = self.entry(attempt, "ok", Some(&completion), latency);
                    reservation
                        .settle(Some(&entry))
                        .await
                        .map_err(ModelError::Ledger)?;
                    return Ok(Ok((completion, reply)));
                }
                Err(error) => {
                    tracing::warn!(model = %attempt.model, %error, tries, "model call failed");
                    let entry = self.entry(attempt, &error.kind(), None, latency);
                    match self.wait_before_retry(&error, tries, retries) {
                        Some(wait) => {
                            self.record_entry(&entry).await?;
                            tokio::time::sleep(wait).await;
                            tries += 1;
                        }
                        None => {
                            // The last failure's row and the release: one
                            // transaction.
                            reservation
                                .settle(Some(&entry))
                                .await
                                .map_err(ModelError::Ledger)?;
                            return Ok(Err(error));
                        }
                    }
                }
            }
        }
    }

    /// How long to wait before retrying, or None to move on: the provider's
    /// `retry-after` when it gave one (and it is not too long), else
    /// exponential backoff.
    fn wait_before_retry(&self, error: &CallError, tries: u32, retries: u32) -> Option<Duration> {
        if !error.is_retryable() || tries >= retries {
            return None;
        }
        let settings = &self.inner.settings;
        match error.retry_after() {
            Some(wait) if wait > Duration::from_secs(settings.max_retry_after_secs) => None,
            Some(wait) => Some(wait),
            None => Some(backoff(settings.backoff_ms, tries)),
        }
    }
}

/// The exponential backoff before retry number `tries + 1`.
pub(super) fn backoff(backoff_ms: u64, tries: u32) -> Duration {
    Duration::from_millis(backoff_ms.saturating_mul(1 << tries.min(10)))
}
