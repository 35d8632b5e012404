//! Ledger rows for model calls: what a reply cost at the model's price, and
//! the row every attempt leaves (answered, failed, blocked, from cache).

use std::time::Duration;

use super::providers::Reply;
use super::{Agents, Attempt, Completion, ModelError};
use crate::store::LedgerEntry;

impl Agents {
    pub(super) fn completion_from(
        &self,
        attempt: &Attempt<'_>,
        reply: &Reply,
        cache_hit: bool,
    ) -> Completion {
        let cost = if cache_hit {
            Some(0.0)
        } else {
            self.inner.settings.price(attempt.model).map(|p| {
                p.cost(
                    reply.input_tokens,
                    reply.cached_input_tokens,
                    reply.output_tokens,
                )
            })
        };
        let tokens = |n: u64| if cache_hit { 0 } else { n as i64 };
        Completion {
            text: reply.text.clone(),
            model: attempt.model.to_string(),
            tier: attempt.tier,
            input_tokens: tokens(reply.input_tokens),
            cached_input_tokens: tokens(reply.cached_input_tokens),
            output_tokens: tokens(reply.output_tokens),
            cost_usd: cost,
            cache_hit,
        }
    }

    pub(super) async fn record_cache_hit(
        &self,
        attempt: &Attempt<'_>,
        reply: &Reply,
    ) -> Result<Completion, ModelError> {
        let completion = self.completion_from(attempt, reply, true);
        let entry = self.entry(attempt, "ok", Some(&completion), Duration::ZERO);
        self.record_entry(&entry).await?;
        Ok(completion)
    }

    pub(super) async fn record(
        &self,
        attempt: &Attempt<'_>,
        outcome: &str,
        completion: Option<&Completion>,
        latency: Duration,
    ) -> Result<(), ModelError> {
        self.record_entry(&self.entry(attempt, outcome, completion, latency))
            .await
    }

    /// The row of a call that may have been paid: a database that is away
    /// for a moment is waited for, so the answer is not thrown away and
    /// paid for again when the step retries.
    pub(super) async fn record_entry(&self, entry: &LedgerEntry) -> Result<(), ModelError> {
        crate::store::waiting_out_an_outage("recording a call's cost", || {
            self.inner.store.record_call(entry)
        })
        .await
        .map_err(ModelError::Ledger)
    }

    pub(super) fn entry(
        &self,
        attempt: &Attempt<'_>,
        outcome: &str,
        completion: Option<&Completion>,
        latency: Duration,
    ) -> LedgerEntry {
        LedgerEntry {
            run_id: attempt.call.run_id,
            step: attempt.call.step.clone(),
            flow: attempt.call.flow.clone(),
            provider: attempt.model.provider.clone(),
            model: attempt.model.model.clone(),
            tier: attempt.tier.as_str().to_string(),
            input_tokens: completion.map_or(0, |c| c.input_tokens),
            cached_input_tokens: completion.map_or(0, |c| c.cached_input_tokens),
            output_tokens: completion.map_or(0, |c| c.output_tokens),
            cost_usd: completion.and_then(|c| c.cost_usd),
            latency_ms: latency.as_millis() as i64,
            cache_hit: completion.is_some_and(|c| c.cache_hit),
            outcome: outcome.to_string(),
            batched: false,
            saved_usd: 0.0,
            redacted_items: attempt.call.redacted_items as i64,
        }
    }
}
