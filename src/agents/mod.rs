//! Model calls, and the money they cost. A call names a tier and its flow's
//! cost label; the router walks the tier's fallback chain, and for each
//! model: answers from the response cache when it may, reserves the call's
//! worst-case cost against the daily and monthly budget *before* any HTTP
//! request, retries with backoff (honouring `retry-after`), and records
//! every attempt in the cost ledger with the provider's token counts.
//!
//! One job per file: `router` (fallback chain and retries), `budget` (the
//! gate, reservations and their sweeper), `ledger` (the row each attempt
//! leaves), `batch` (queueing for and talking to batch APIs), `cache`,
//! `providers` (one HTTP call), `tokens` (prompt size bounds), `error`.

mod batch;
mod budget;
mod cache;
mod error;
mod ledger;
mod providers;
mod router;
mod tokens;

pub use batch::{BatchError, Batcher};
pub use budget::{BudgetGate, longest_call, period_keys};
pub use cache::ResponseCache;
pub use error::{HOW_TO_CONFIGURE, ModelError};
pub use providers::{CallError, Prompt, Provider, Reply};
pub use tokens::{conservative_prompt_tokens, count_prompt_tokens};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{LabelPolicy, ModelRef, ModelsSettings, Policy};
use crate::domain::{CostLabel, RunId, Tier};
use crate::store::Store;

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
    /// A JSON schema the reply must follow, sent as structured output to
    /// providers that support it (the router's guess).
    pub reply_schema: Option<serde_json::Value>,
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
                reply_schema: call.reply_schema.as_ref(),
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
        Agents {
            inner: Arc::new(Inner {
                settings,
                providers,
                store,
                cache,
                budget,
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
                crate::config::redact_url(
                    self.inner.settings.providers[&model.provider].endpoint()
                )
            ),
            None => "none configured".into(),
        }
    }

    /// The batcher for this configuration.
    pub fn batcher(&self) -> Batcher {
        Batcher::new(self.inner.settings.clone(), self.inner.store.clone())
    }
}
