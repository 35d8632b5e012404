//! The `[models]` settings: providers, the fallback chain of each tier, the
//! price of every model, and what each flow cost label allows.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use super::{Secret, string_list};
use crate::domain::{CostLabel, Tier};

#[derive(Debug, Clone, Deserialize)]
pub struct ModelsSettings {
    /// One model call may take this long before it counts as failed.
    pub timeout_secs: u64,
    /// The first retry waits this long; each further retry twice as long.
    pub backoff_ms: u64,
    /// A `retry-after` longer than this moves on to the next model instead.
    pub max_retry_after_secs: u64,
    /// Under this router confidence the bot asks which flow was meant.
    pub route_confidence: f64,
    pub cache_ttl_secs: u64,
    pub cache_capacity: u64,
    pub providers: BTreeMap<String, ProviderSettings>,
    pub tiers: TierChains,
    /// USD per million tokens, by `provider/model`.
    pub prices: BTreeMap<String, Price>,
    pub labels: BTreeMap<CostLabel, LabelPolicy>,
    pub batch: BatchSettings,
}

/// Non-urgent calls wait to be sent together through the provider's batch
/// API (OpenAI's, at half price).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct BatchSettings {
    /// Send when this many calls are queued for a provider…
    pub max_items: u32,
    /// …or when the oldest has waited this long.
    pub max_wait_secs: u64,
    /// How often submitted batches are checked.
    pub poll_secs: u64,
    /// The batch price as a share of the interactive price.
    pub price_factor: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI or any endpoint speaking its `/chat/completions` (Ollama,
    /// OpenRouter, vLLM).
    Openai,
    Anthropic,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProviderSettings {
    pub kind: ProviderKind,
    pub base_url: String,
    pub api_key: Secret,
}

impl ProviderSettings {
    /// A provider can be called when it has a key, or a base URL (a local
    /// Ollama or vLLM needs no key).
    pub fn is_configured(&self) -> bool {
        self.api_key.is_set() || !self.base_url.trim().is_empty()
    }

    /// Where requests go: the configured base URL or the provider's own.
    pub fn endpoint(&self) -> &str {
        match (self.base_url.trim(), self.kind) {
            ("", ProviderKind::Openai) => "https://api.openai.com/v1",
            ("", ProviderKind::Anthropic) => "https://api.anthropic.com",
            (url, _) => url,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct TierChains {
    #[serde(deserialize_with = "model_list")]
    pub router: Vec<ModelRef>,
    #[serde(deserialize_with = "model_list")]
    pub fast: Vec<ModelRef>,
    #[serde(deserialize_with = "model_list")]
    pub quality: Vec<ModelRef>,
}

impl TierChains {
    pub fn chain(&self, tier: Tier) -> &[ModelRef] {
        match tier {
            Tier::Router => &self.router,
            Tier::Fast => &self.fast,
            Tier::Quality => &self.quality,
        }
    }
}

/// `provider/model`, split at the first slash (OpenRouter model names have
/// slashes of their own, Ollama's have colons).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelRef {
    pub provider: String,
    pub model: String,
}

impl FromStr for ModelRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().split_once('/') {
            Some((provider, model)) if !provider.is_empty() && !model.is_empty() => Ok(ModelRef {
                provider: provider.to_string(),
                model: model.to_string(),
            }),
            _ => Err(format!(
                "'{s}' is not provider/model (e.g. openai/gpt-4o-mini)"
            )),
        }
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

fn model_list<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<ModelRef>, D::Error> {
    string_list(deserializer)?
        .iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Price {
    pub input: f64,
    #[serde(default)]
    pub cached_input: Option<f64>,
    pub output: f64,
}

impl Price {
    /// USD for a call with these token counts (`cached` is part of `input`).
    pub fn cost(&self, input: u64, cached: u64, output: u64) -> f64 {
        let uncached = input.saturating_sub(cached) as f64;
        let cached_price = self.cached_input.unwrap_or(self.input);
        (uncached * self.input + cached as f64 * cached_price + output as f64 * self.output) / 1e6
    }
}

/// What to do when a call would cross the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBudget {
    /// Try the next cheaper tier that fits; stop if none does.
    Downgrade,
    /// Do not call; tell the operator.
    Stop,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct LabelPolicy {
    /// The highest tier a flow with this label may use.
    pub tier_cap: Tier,
    /// Scales each step's max_tokens (and so its worst-case cost).
    pub max_tokens_factor: f64,
    /// Retries per model before moving down the chain.
    pub retries: u32,
    /// Whether deterministic calls may be answered from the response cache.
    pub cache: bool,
    pub on_budget: OnBudget,
}

impl ModelsSettings {
    /// Every tier's models name a known provider and have a price, and
    /// every label has a policy: a typo is a start-up error, never a silent
    /// zero in the ledger.
    pub fn validate(&self) -> Result<(), String> {
        for tier in [Tier::Router, Tier::Fast, Tier::Quality] {
            let chain = self.tiers.chain(tier);
            if chain.is_empty() {
                return Err(format!("models.tiers.{tier} names no model"));
            }
            for model in chain {
                if !self.providers.contains_key(&model.provider) {
                    return Err(format!(
                        "models.tiers.{tier}: '{model}' names provider '{}', which is not in [models.providers]",
                        model.provider
                    ));
                }
                if !self.prices.contains_key(&model.to_string()) {
                    return Err(format!(
                        "models.tiers.{tier}: '{model}' has no price; add [models.prices.\"{model}\"] with input and output in USD per million tokens (0 for a local model)"
                    ));
                }
            }
        }
        for label in [
            CostLabel::LowCost,
            CostLabel::Balanced,
            CostLabel::HighQuality,
        ] {
            if !self.labels.contains_key(&label) {
                return Err(format!("models.labels.{} is missing", label.as_str()));
            }
        }
        Ok(())
    }

    pub fn price(&self, model: &ModelRef) -> Option<&Price> {
        self.prices.get(&model.to_string())
    }

    pub fn policy(&self, label: CostLabel) -> LabelPolicy {
        self.labels[&label]
    }

    /// The models of a tier whose provider is configured, in order.
    pub fn usable_chain(&self, tier: Tier) -> Vec<ModelRef> {
        self.tiers
            .chain(tier)
            .iter()
            .filter(|m| {
                self.providers
                    .get(&m.provider)
                    .is_some_and(ProviderSettings::is_configured)
            })
            .cloned()
            .collect()
    }

    /// Whether any model of any tier can be called.
    pub fn any_configured(&self) -> bool {
        self.providers.values().any(ProviderSettings::is_configured)
    }
}
