//! Embedders: `memory.embedder = "provider/model"` calls an OpenAI-
//! compatible `/embeddings` endpoint through rig-core. An embedding is a
//! model call like any other: its worst case is reserved against the
//! budget before the request leaves (refused: nothing is sent and the
//! ledger says `blocked`), and every request leaves a ledger row with the
//! provider's token count and its price.
//!
//! Vectors are cached by the text's content hash (see [`super::vectors`]):
//! this module only talks to the provider.

use std::time::{Duration, Instant};

use rig_core::providers::openai::{OpenAI, OpenAIConfig};

use crate::agents::{BudgetGate, conservative_prompt_tokens};
use crate::config::{ModelRef, Price, ProviderKind, Settings};
use crate::store::{LedgerEntry, Store};

/// Texts per request: providers take many inputs at once (OpenAI up to
/// 2,048); a bounded batch keeps one failure from losing much work.
pub const BATCH: usize = 64;

/// Why texts were not embedded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    #[error(
        "embedding was not sent: it would cross {which} budget (needs ${needed:.6}); /budget shows it"
    )]
    Blocked { which: &'static str, needed: f64 },
    #[error("the embedding model {model} {reason}")]
    Call { model: String, reason: String },
    #[error("could not record the embedding's cost: {0}")]
    Ledger(String),
}

/// A configured embedder; cheap to clone.
#[derive(Clone)]
pub struct Embedder {
    model: ModelRef,
    client: Box<OpenAI>,
    price: Price,
    budget: BudgetGate,
    store: Store,
    timeout: Duration,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("model", &self.model.to_string())
            .finish()
    }
}

/// What `memory.embedder` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbedderChoice {
    None,
    Remote(ModelRef),
}

/// Reads `memory.embedder` against the model settings: the provider must
/// exist, speak OpenAI's protocol and be configured, and the model must
/// have a price (a typo is never a silent zero in the ledger).
pub fn choice(settings: &Settings) -> Result<EmbedderChoice, String> {
    let name = settings.memory.embedder.trim();
    if name.is_empty() || name == "none" {
        return Ok(EmbedderChoice::None);
    }
    if name == "local" {
        return Err(
            "memory.embedder = \"local\" needs the local-embeddings build, which is not in this version; use \"provider/model\" (an OpenAI-compatible /embeddings endpoint) or \"none\""
                .into(),
        );
    }
    let model: ModelRef = name.parse().map_err(|e| format!("memory.embedder: {e}"))?;
    let provider = settings.models.providers.get(&model.provider).ok_or_else(|| {
        format!(
            "memory.embedder: '{model}' names provider '{}', which is not in [models.providers]",
            model.provider
        )
    })?;
    if provider.kind != ProviderKind::Openai {
        return Err(format!(
            "memory.embedder: '{model}': provider '{}' does not speak OpenAI's /embeddings",
            model.provider
        ));
    }
    if !provider.is_configured() {
        return Err(format!(
            "memory.embedder: provider '{}' has no API key or base URL",
            model.provider
        ));
    }
    if settings.models.price(&model).is_none() {
        return Err(format!(
            "memory.embedder: '{model}' has no price; add [models.prices.\"{model}\"] with input in USD per million tokens (output = 0)"
        ));
    }
    Ok(EmbedderChoice::Remote(model))
}

impl Embedder {
    /// The embedder `settings` configure, None for `"none"`, or why the
    /// setting cannot be used.
    pub fn from_settings(settings: &Settings, store: Store) -> Result<Option<Embedder>, String> {
        let EmbedderChoice::Remote(model) = choice(settings)? else {
            return Ok(None);
        };
        let provider = &settings.models.providers[&model.provider];
        let price = *settings.models.price(&model).ok_or("no price")?;
        let timezone: chrono_tz::Tz = settings.business.timezone.parse().unwrap_or(chrono_tz::UTC);
        // Local servers (Ollama, vLLM) take any key; rig wants one.
        let key = provider.api_key.expose().unwrap_or("no-key").to_string();
        let endpoint = provider.endpoint().trim_end_matches('/');
        let client = Box::new(OpenAIConfig::new(key).with_base_url(endpoint).client());
        Ok(Some(Embedder {
            model,
            client,
            price,
            budget: BudgetGate::new(store.clone(), &settings.policy, timezone),
            store,
            timeout: Duration::from_secs(settings.models.timeout_secs.max(1)),
        }))
    }

    /// `provider/model`: what the vectors are stored under.
    pub fn name(&self) -> String {
        self.model.to_string()
    }

    /// One vector per text, in order, sent `BATCH` texts per request.
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            vectors.extend(self.embed_batch(batch).await?);
        }
        Ok(vectors)
    }

    /// One request: reserve, call, settle with its ledger row.
    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let estimate = conservative_prompt_tokens(&refs);
        let worst = self.price.cost(estimate, 0, 0);
        let held = match self.budget.reserve(worst).await {
            Ok(Ok(held)) => held,
            Ok(Err(refusal)) => {
                self.record(self.entry("blocked", 0, None, Duration::ZERO))
                    .await?;
                return Err(EmbedError::Blocked {
                    which: refusal.which,
                    needed: refusal.needed_usd,
                });
            }
            Err(error) => return Err(EmbedError::Ledger(error.to_string())),
        };
        let started = Instant::now();
        let model = self.client.embedding(self.model.model.clone(), None);
        let sent = tokio::time::timeout(self.timeout, model.call(texts.to_vec())).await;
        let latency = started.elapsed();
        let result = match sent {
            Err(_) => Err(format!(
                "did not answer within {} s",
                self.timeout.as_secs()
            )),
            Ok(Err(error)) => Err(crate::domain::clip(
                &crate::config::redact_urls_in(&error.to_string()),
                160,
            )),
            Ok(Ok(response)) if response.embeddings.len() != texts.len() => Err(format!(
                "returned {} vectors for {} texts",
                response.embeddings.len(),
                texts.len()
            )),
            Ok(Ok(response)) => Ok(response),
        };
        match result {
            Ok(response) => {
                let tokens = response.usage.input_tokens.unwrap_or(estimate);
                let cost = self.price.cost(tokens, 0, 0);
                let entry = self.entry("ok", tokens as i64, Some(cost), latency);
                held.settle(Some(&entry))
                    .await
                    .map_err(|e| EmbedError::Ledger(e.to_string()))?;
                Ok(response
                    .embeddings
                    .into_iter()
                    .map(|e| e.vec.into_iter().map(|x| x as f32).collect())
                    .collect())
            }
            Err(reason) => {
                let entry = self.entry("error", 0, Some(0.0), latency);
                held.settle(Some(&entry))
                    .await
                    .map_err(|e| EmbedError::Ledger(e.to_string()))?;
                Err(EmbedError::Call {
                    model: self.name(),
                    reason,
                })
            }
        }
    }

    fn entry(
        &self,
        outcome: &str,
        input_tokens: i64,
        cost_usd: Option<f64>,
        latency: Duration,
    ) -> LedgerEntry {
        LedgerEntry {
            provider: self.model.provider.clone(),
            model: self.model.model.clone(),
            tier: "embedding".into(),
            input_tokens,
            cost_usd,
            latency_ms: latency.as_millis() as i64,
            outcome: outcome.to_string(),
            ..LedgerEntry::default()
        }
    }

    async fn record(&self, entry: LedgerEntry) -> Result<(), EmbedError> {
        self.store
            .record_call(&entry)
            .await
            .map_err(|e| EmbedError::Ledger(e.to_string()))
    }
}
