//! Model calls, and the money they cost. A call names a tier and its flow's
//! cost label; the router walks the tier's fallback chain, and for each
//! model: answers from the response cache when it may, reserves the call's
//! worst-case cost against the daily and monthly budget *before* any HTTP
//! request, retries with backoff (honouring `retry-after`), and records
//! every attempt in the cost ledger with the provider's token counts.

mod batch;
mod budget;
mod cache;
mod providers;
mod tokens;

pub use batch::{BatchError, Batcher};
pub use budget::{BudgetGate, period_keys};
pub use cache::ResponseCache;
pub use providers::{CallError, Prompt, Provider, Reply};
pub use tokens::{conservative_prompt_tokens, count_prompt_tokens};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{LabelPolicy, ModelRef, ModelsSettings, OnBudget, Policy};
use crate::domain::{CostLabel, RunId, Tier};
use crate::store::{BudgetRefusal, LedgerEntry, NewBatchItem, Reservation, Store, StoreError};

/// One model call, and where it belongs in the ledger.
#[derive(Debug, Clone)]
pub struct ModelCall {
    pub tier: Tier,
    pub label: CostLabel,
    pub system: String,
    pub prompt: String,
    pub max_tokens: u64,
    pub temperature: Option<f64>,
    pub run_id: Option<RunId>,
    pub flow: Option<String>,
    pub step: Option<String>,
    /// POLICY: how many personal-data items were replaced by placeholders
    /// before the call left the process. Set inside [`Agents::complete`]
    /// (callers pass 0); recorded in the ledger row.
    pub redacted_items: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    pub model: String,
    pub tier: Tier,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: Option<f64>,
    pub cache_hit: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("no model provider is configured")]
    NotConfigured,
    #[error(
        "not run: it could cost up to ${:.4}, and {} budget has ${:.4} left (today ${:.2} of ${:.2} used, this month ${:.2} of ${:.2}). Nothing was spent",
        .0.needed_usd, .0.which, if .0.which == "today's" { .0.day.left_usd() } else { .0.month.left_usd() },
        .0.day.spent_usd + .0.day.reserved_usd, .0.day.cap_usd, .0.month.spent_usd + .0.month.reserved_usd, .0.month.cap_usd
    )]
    Blocked(BudgetRefusal),
    #[error("every model of the {tier} tier failed; the last, {model}, {error}")]
    Exhausted {
        tier: Tier,
        model: String,
        error: CallError,
    },
    #[error("the cost ledger could not be written")]
    Ledger(#[source] StoreError),
}

impl ModelError {
    /// What the operator can do about it, in one sentence.
    pub fn advice(&self) -> &'static str {
        match self {
            ModelError::NotConfigured => HOW_TO_CONFIGURE,
            ModelError::Blocked(_) => "Raise today's cap once, retry later, or cancel.",
            ModelError::Exhausted { error, .. } => match error {
                CallError::Timeout(_) => {
                    "The provider may be overloaded; retry in a minute, or switch to the fast tier."
                }
                CallError::Status { status: 429, .. } => {
                    "The provider is rate limiting you; retry in a minute."
                }
                CallError::Status { status, .. } if *status >= 500 => {
                    "The provider is having trouble; retry later or switch tier."
                }
                CallError::Status { .. } => {
                    "Check the model names and provider settings (soloist doctor helps)."
                }
                CallError::Unauthorized => "Check the provider's API key (soloist doctor helps).",
                CallError::Unreachable(_) => {
                    "Check OPENAI_BASE_URL and that the provider is running (soloist doctor helps)."
                }
                CallError::Malformed(_) | CallError::Empty => {
                    "Retry; if it keeps happening, the endpoint may not be OpenAI-compatible."
                }
            },
            ModelError::Ledger(_) => "Check the database (soloist doctor helps).",
        }
    }
}

/// The one sentence a flow that needs a model answers with when none is set.
pub const HOW_TO_CONFIGURE: &str = "No model is configured: set OPENAI_API_KEY (and OPENAI_BASE_URL for Ollama, OpenRouter or vLLM, e.g. http://localhost:11434/v1) or ANTHROPIC_API_KEY, then start soloist again.";

/// The model router; cheap to clone.
#[derive(Clone)]
pub struct Agents {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ModelsSettings,
    providers: BTreeMap<String, Provider>,
    store: Store,
    cache: ResponseCache,
    budget: BudgetGate,
    /// POLICY HOOK: replaces personal data before every call.
    redactor: crate::policy::Redactor,
}

impl std::fmt::Debug for Agents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agents")
            .field(
                "providers",
                &self.inner.providers.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Where one attempt stands: what it costs and where it goes.
struct Attempt<'a> {
    call: &'a ModelCall,
    model: &'a ModelRef,
    tier: Tier,
    prompt: Prompt<'a>,
}

impl<'a> Attempt<'a> {
    fn new(call: &'a ModelCall, model: &'a ModelRef, tier: Tier, max_tokens: u64) -> Self {
        Attempt {
            call,
            model,
            tier,
            prompt: Prompt {
                system: &call.system,
                prompt: &call.prompt,
                max_tokens,
                temperature: call.temperature,
            },
        }
    }
}

/// The step's max_tokens scaled by its label's factor (at least one).
fn scaled_max_tokens(call: &ModelCall, policy: &LabelPolicy) -> u64 {
    ((call.max_tokens as f64) * policy.max_tokens_factor)
        .ceil()
        .max(1.0) as u64
}

impl Agents {
    pub fn new(
        settings: ModelsSettings,
        policy: &Policy,
        timezone: chrono_tz::Tz,
        store: Store,
    ) -> Self {
        let providers = settings
            .providers
            .iter()
            .filter(|(_, p)| p.is_configured())
            .map(|(name, p)| (name.clone(), Provider::connect(p)))
            .collect();
        let cache = ResponseCache::new(
            settings.cache_capacity,
            Duration::from_secs(settings.cache_ttl_secs),
        );
        let budget = BudgetGate::new(store.clone(), policy, timezone);
        let redactor =
            crate::policy::Redactor::new(&policy.guard.pii_kinds, &policy.guard.own_contacts);
        Agents {
            inner: Arc::new(Inner {
                settings,
                providers,
                store,
                cache,
                budget,
                redactor,
            }),
        }
    }

    pub fn is_configured(&self) -> bool {
        !self.inner.providers.is_empty()
    }

    pub fn settings(&self) -> &ModelsSettings {
        &self.inner.settings
    }

    pub fn budget(&self) -> &BudgetGate {
        &self.inner.budget
    }

    /// "openai/gpt-4o at https://…", for the chat banner.
    pub fn describe(&self) -> String {
        let chain = self.inner.settings.usable_chain(Tier::Quality);
        match chain.first() {
            Some(model) => format!(
                "{model} at {}",
                self.inner.settings.providers[&model.provider].endpoint()
            ),
            None => "none configured".into(),
        }
    }

    /// The batcher for this configuration.
    pub fn batcher(&self) -> Batcher {
        Batcher::new(self.inner.settings.clone(), self.inner.store.clone())
    }

    /// Prepares a non-urgent call for the next batch: the tier's first
    /// model, when its provider has a batch API (OpenAI kind), with its
    /// worst case reserved at the batch price. None means: no batch API
    /// here, call it now.
    pub async fn queue_for_batch(
        &self,
        call: &ModelCall,
        step: &str,
    ) -> Result<Option<NewBatchItem>, ModelError> {
        // POLICY HOOK: the batch request carries placeholders, not PII.
        let (redacted, _) = self.redacted(call);
        let call = &redacted;
        let settings = &self.inner.settings;
        let policy = settings.policy(call.label);
        let tier = call.tier.min(policy.tier_cap);
        let Some(model) = settings.usable_chain(tier).into_iter().next() else {
            return Err(ModelError::NotConfigured);
        };
        if settings.providers[&model.provider].kind != crate::config::ProviderKind::Openai {
            return Ok(None);
        }
        let max_tokens = scaled_max_tokens(call, &policy);
        let attempt = Attempt::new(call, &model, tier, max_tokens);
        let reservation = match self
            .reserve_at(&attempt, settings.batch.price_factor)
            .await?
        {
            Ok(reservation) => reservation,
            Err(refusal) => {
                self.record(&attempt, "blocked", None, Duration::ZERO)
                    .await?;
                return Err(ModelError::Blocked(refusal));
            }
        };
        let mut request = serde_json::json!({
            "model": model.model,
            "messages": [
                {"role": "system", "content": call.system},
                {"role": "user", "content": call.prompt},
            ],
            "max_tokens": max_tokens,
        });
        if let Some(temperature) = call.temperature {
            request["temperature"] = serde_json::json!(temperature);
        }
        Ok(Some(NewBatchItem {
            id: uuid::Uuid::new_v4().simple().to_string(),
            step: step.to_string(),
            flow: call.flow.clone().unwrap_or_default(),
            provider: model.provider.clone(),
            model: model.model.clone(),
            tier: tier.as_str().to_string(),
            request,
            reservation,
        }))
    }

    /// Calls a model of the call's tier (capped by its label), falling back
    /// down the chain and, when the label allows, to cheaper tiers when the
    /// budget is short.
    #[tracing::instrument(skip_all, fields(run = ?call.run_id, step = ?call.step, tier = %call.tier))]
    pub async fn complete(&self, call: &ModelCall) -> Result<Completion, ModelError> {
        // POLICY HOOK: personal data leaves as placeholders ([EMAIL_1]) and
        // is put back in the answer the operator sees.
        let (redacted, redaction) = self.redacted(call);
        if redaction.count() > 0 {
            let detail = format!(
                "{} personal-data items replaced by placeholders before the model call",
                redaction.count()
            );
            self.inner
                .store
                .record_guardrail(call.run_id, "redacted", &detail)
                .await
                .map_err(ModelError::Ledger)?;
        }
        let mut completion = self.complete_redacted(&redacted).await?;
        completion.text = redaction.restore(&completion.text);
        Ok(completion)
    }

    /// The call with personal data replaced, and the placeholders used.
    fn redacted(&self, call: &ModelCall) -> (ModelCall, crate::policy::Redaction<'_>) {
        let mut redaction = self.inner.redactor.redaction();
        let redacted = ModelCall {
            system: redaction.redact(&call.system),
            prompt: redaction.redact(&call.prompt),
            redacted_items: redaction.count(),
            ..call.clone()
        };
        (redacted, redaction)
    }

    /// POLICY: `text` with the placeholders that redacting `system` and
    /// `prompt` hands out put back (for batch answers, which come back
    /// after the call's own placeholders are gone).
    pub fn restore_redacted(&self, system: &str, prompt: &str, text: &str) -> String {
        let mut redaction = self.inner.redactor.redaction();
        let _ = redaction.redact(system);
        let _ = redaction.redact(prompt);
        redaction.restore(text)
    }

    async fn complete_redacted(&self, call: &ModelCall) -> Result<Completion, ModelError> {
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

    /// Reserves the attempt's worst case: the prompt's tokens at the input
    /// price plus every allowed output token at the output price.
    async fn reserve(
        &self,
        attempt: &Attempt<'_>,
    ) -> Result<Result<Reservation, BudgetRefusal>, ModelError> {
        self.reserve_at(attempt, 1.0).await
    }

    /// Reserves the worst case at `price_factor` times the model's price.
    async fn reserve_at(
        &self,
        attempt: &Attempt<'_>,
        price_factor: f64,
    ) -> Result<Result<Reservation, BudgetRefusal>, ModelError> {
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
        // The high estimate first: it never undercounts, and it keeps the
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

    /// Tries one model up to `1 + retries` times. The outer Result is a
    /// ledger failure; the inner one the call's outcome.
    async fn attempt_with_retries(
        &self,
        attempt: &Attempt<'_>,
        reservation: &Reservation,
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
                    self.inner
                        .budget
                        .settle(reservation, Some(&entry))
                        .await
                        .map_err(ModelError::Ledger)?;
                    return Ok(Ok((completion, reply)));
                }
                Err(error) => {
                    tracing::warn!(model = %attempt.model, %error, tries, "model call failed");
                    self.record(attempt, &error.kind(), None, latency).await?;
                    let wait = self.wait_before_retry(&error, tries, retries);
                    match wait {
                        Some(wait) => {
                            tokio::time::sleep(wait).await;
                            tries += 1;
                        }
                        None => {
                            self.inner
                                .budget
                                .settle(reservation, None)
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
            None => Some(Duration::from_millis(
                settings.backoff_ms.saturating_mul(1 << tries.min(10)),
            )),
        }
    }

    fn completion_from(&self, attempt: &Attempt<'_>, reply: &Reply, cache_hit: bool) -> Completion {
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

    async fn record_cache_hit(
        &self,
        attempt: &Attempt<'_>,
        reply: &Reply,
    ) -> Result<Completion, ModelError> {
        let completion = self.completion_from(attempt, reply, true);
        let entry = self.entry(attempt, "ok", Some(&completion), Duration::ZERO);
        self.inner
            .store
            .record_call(&entry)
            .await
            .map_err(ModelError::Ledger)?;
        Ok(completion)
    }

    async fn record(
        &self,
        attempt: &Attempt<'_>,
        outcome: &str,
        completion: Option<&Completion>,
        latency: Duration,
    ) -> Result<(), ModelError> {
        let entry = self.entry(attempt, outcome, completion, latency);
        self.inner
            .store
            .record_call(&entry)
            .await
            .map_err(ModelError::Ledger)
    }

    fn entry(
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
