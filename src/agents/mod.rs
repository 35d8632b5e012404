//! Model calls. One OpenAI-compatible provider through rig-core (OpenAI,
//! Ollama, OpenRouter, vLLM: anything that speaks `/chat/completions`), three
//! tiers naming a model each, and the cost ledger: every call, failed or
//! not, lands there with the provider's own token counts.

use std::time::{Duration, Instant};

use rig_core::completion::CompletionRequest;
use rig_core::providers::openai::{OpenAI, OpenAIConfig};

use crate::config::ModelSettings;
use crate::domain::RunId;
use crate::flows::Tier;
use crate::store::{LedgerEntry, Store, StoreError};

/// One model call, and where it belongs in the ledger.
#[derive(Debug, Clone)]
pub struct ModelCall {
    pub tier: Tier,
    pub system: String,
    pub prompt: String,
    pub max_tokens: u64,
    pub temperature: Option<f64>,
    pub run_id: Option<RunId>,
    pub flow: Option<String>,
    pub step: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    pub model: String,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("no model provider is configured")]
    NotConfigured,
    #[error("the model provider did not answer within {0} s")]
    Timeout(u64),
    #[error("the model provider answered HTTP {status}: {detail}")]
    Status { status: u16, detail: String },
    #[error("the model provider rejected the API key")]
    Unauthorized,
    #[error("the model provider could not be reached: {0}")]
    Unreachable(String),
    #[error("the model provider sent a reply soloist could not read: {0}")]
    Malformed(String),
    #[error("the model returned no text")]
    Empty,
    #[error("the cost ledger could not be written")]
    Ledger(#[source] StoreError),
}

impl ModelError {
    /// A short name for the ledger's outcome column.
    pub fn kind(&self) -> String {
        match self {
            ModelError::NotConfigured => "not_configured".into(),
            ModelError::Timeout(_) => "timeout".into(),
            ModelError::Status { status, .. } => format!("http_{status}"),
            ModelError::Unauthorized => "unauthorized".into(),
            ModelError::Unreachable(_) => "unreachable".into(),
            ModelError::Malformed(_) => "malformed".into(),
            ModelError::Empty => "empty".into(),
            ModelError::Ledger(_) => "ledger".into(),
        }
    }

    /// What the operator can do about it, in one sentence.
    pub fn advice(&self) -> &'static str {
        match self {
            ModelError::NotConfigured => HOW_TO_CONFIGURE,
            ModelError::Timeout(_) => {
                "The provider may be overloaded; try again in a minute, or raise model.timeout_secs."
            }
            ModelError::Status { status, .. } if *status == 429 => {
                "The provider is rate limiting you; wait a minute and try again."
            }
            ModelError::Status { status, .. } if *status >= 500 => {
                "The provider is having trouble; try again later."
            }
            ModelError::Status { .. } => {
                "Check the model name and provider settings (soloist doctor helps)."
            }
            ModelError::Unauthorized => "Check OPENAI_API_KEY (soloist doctor helps).",
            ModelError::Unreachable(_) => {
                "Check OPENAI_BASE_URL and that the provider is running (soloist doctor helps)."
            }
            ModelError::Malformed(_) | ModelError::Empty => {
                "Try again; if it keeps happening, the endpoint may not be OpenAI-compatible."
            }
            ModelError::Ledger(_) => "Check the database (soloist doctor helps).",
        }
    }
}

/// The one sentence a flow that needs a model answers with when none is set.
pub const HOW_TO_CONFIGURE: &str = "No model is configured: set OPENAI_API_KEY (and OPENAI_BASE_URL for Ollama, OpenRouter or vLLM, e.g. http://localhost:11434/v1), then start soloist again.";

/// The model provider and the ledger it writes to.
#[derive(Clone)]
pub struct Agents {
    settings: ModelSettings,
    client: Option<OpenAI>,
    store: Store,
}

impl std::fmt::Debug for Agents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agents")
            .field("endpoint", &self.settings.endpoint())
            .field("configured", &self.client.is_some())
            .finish()
    }
}

impl Agents {
    pub fn new(settings: ModelSettings, store: Store) -> Self {
        let client = settings.is_configured().then(|| {
            // Local servers (Ollama, vLLM) take any key; rig wants one.
            let key = settings.api_key.expose().unwrap_or("no-key").to_string();
            OpenAIConfig::new(key)
                .with_base_url(settings.endpoint().trim_end_matches('/'))
                .client()
        });
        Agents {
            settings,
            client,
            store,
        }
    }

    pub fn is_configured(&self) -> bool {
        self.client.is_some()
    }

    /// "gpt-4o-mini at https://…", for the chat banner and doctor.
    pub fn describe(&self) -> String {
        if self.is_configured() {
            format!("{} at {}", self.settings.quality, self.settings.endpoint())
        } else {
            "none configured".into()
        }
    }

    pub fn model_for(&self, tier: Tier) -> &str {
        match tier {
            Tier::Router => &self.settings.router,
            Tier::Fast => &self.settings.fast,
            Tier::Quality => &self.settings.quality,
        }
    }

    /// Calls the model and records the call in the ledger, whatever the
    /// outcome.
    #[tracing::instrument(skip_all, fields(run = ?call.run_id, step = ?call.step, tier = call.tier.as_str()))]
    pub async fn complete(&self, call: &ModelCall) -> Result<Completion, ModelError> {
        let Some(client) = &self.client else {
            return Err(ModelError::NotConfigured);
        };
        let model = self.model_for(call.tier).to_string();
        let started = Instant::now();
        let outcome = self.send(client, &model, call).await;
        let latency_ms = started.elapsed().as_millis() as i64;
        let mut entry = LedgerEntry {
            run_id: call.run_id,
            step: call.step.clone(),
            flow: call.flow.clone(),
            provider: self.settings.provider.clone(),
            model: model.clone(),
            tier: call.tier.as_str().to_string(),
            latency_ms,
            ..LedgerEntry::default()
        };
        match &outcome {
            Ok(completion) => {
                entry.input_tokens = completion.input_tokens;
                entry.cached_input_tokens = completion.cached_input_tokens;
                entry.output_tokens = completion.output_tokens;
                entry.cost_usd = completion.cost_usd;
                entry.outcome = "ok".into();
            }
            Err(error) => {
                tracing::warn!(error = %error, latency_ms, "model call failed");
                entry.outcome = error.kind();
            }
        }
        self.store
            .record_call(&entry)
            .await
            .map_err(ModelError::Ledger)?;
        outcome
    }

    async fn send(
        &self,
        client: &OpenAI,
        model: &str,
        call: &ModelCall,
    ) -> Result<Completion, ModelError> {
        let request = CompletionRequest::new(call.prompt.clone())
            .preamble(call.system.clone())
            .max_tokens(call.max_tokens)
            .temperature(call.temperature);
        let timeout = Duration::from_secs(self.settings.timeout_secs.max(1));
        let response = tokio::time::timeout(timeout, client.chat(model).call(request))
            .await
            .map_err(|_| ModelError::Timeout(timeout.as_secs()))?
            .map_err(classify)?;
        let text = response.text();
        if text.trim().is_empty() {
            return Err(ModelError::Empty);
        }
        let usage = response.usage;
        let input = usage.input_tokens.unwrap_or(0) as i64;
        let cached = usage.cached_input_tokens.unwrap_or(0) as i64;
        let output = usage.output_tokens.unwrap_or(0) as i64;
        Ok(Completion {
            text,
            model: model.to_string(),
            input_tokens: input,
            cached_input_tokens: cached,
            output_tokens: output,
            cost_usd: self.price(model, input, cached, output),
        })
    }

    /// USD for a call, from the price table; None when the model has no
    /// price there.
    fn price(&self, model: &str, input: i64, cached: i64, output: i64) -> Option<f64> {
        let price = self.settings.prices.get(model)?;
        let uncached = (input - cached).max(0) as f64;
        let cached_price = price.cached_input.unwrap_or(price.input);
        Some(
            (uncached * price.input + cached as f64 * cached_price + output as f64 * price.output)
                / 1e6,
        )
    }
}

/// Sorts rig's errors into the ones the operator can act on.
fn classify(error: rig_core::error::ProviderError) -> ModelError {
    use rig_core::error::ProviderError as E;
    match error {
        E::InvalidAuthentication(_) => ModelError::Unauthorized,
        E::ProviderResponse(reply) => match reply.status {
            Some(status) if status.as_u16() == 401 || status.as_u16() == 403 => {
                ModelError::Unauthorized
            }
            Some(status) => ModelError::Status {
                status: status.as_u16(),
                detail: excerpt(&reply.body),
            },
            None => ModelError::Malformed(excerpt(&reply.body)),
        },
        E::Http(error) => ModelError::Unreachable(error.to_string()),
        E::Json(error) => ModelError::Malformed(error.to_string()),
        other => ModelError::Malformed(excerpt(&other.to_string())),
    }
}

/// The first line of a provider's error body, short enough for a chat
/// message.
fn excerpt(body: &str) -> String {
    let line = body.lines().next().unwrap_or_default().trim();
    let mut short: String = line.chars().take(160).collect();
    if line.chars().count() > 160 {
        short.push('…');
    }
    short
}
